//! The proxy's MQTT bridge: the roster, mirrored to the broker for Home Assistant and
//! Node-RED (topics and payloads: `wtd_telemetry::topics`).
//!
//! One task follows the roster's batches of changes (subscribed under the roster lock with a
//! snapshot, like a watcher, so no change is missed) and feeds the pure
//! [`wtd_telemetry::Mirror`]; what it returns goes into the bridge's bounded outbox. The
//! roster lock is never held across a publish, and a publish never waits for the broker.
//!
//! The agents the mirror published are saved in `<state_dir>/mqtt-mirror.json` when that
//! set changed (checked once a second, so thirty Pis joining at once cost one write, not
//! thirty fsyncs; never on heartbeats), and restored on start: an agent that never comes
//! back after a proxy restart is still marked offline, and cleared from Home Assistant
//! `forget_after` after it went (see `wtd_telemetry::mirror`).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;
use wtd_telemetry::mirror::{now_ms, Saved};
use wtd_telemetry::{BridgeHandle, Mirror, Mode, MqttConfig, Topics};
use wtd_wire::RosterEvent;

use crate::shared::Shared;

/// Follows the roster until `shutdown`, publishing through `bridge`.
pub(crate) async fn follow_roster(
    shared: Arc<Shared>,
    config: MqttConfig,
    bridge: BridgeHandle,
    shutdown: CancellationToken,
) {
    let topics = Topics::new(&config.cluster, &config.discovery_prefix);
    let mut mirror = Mirror::new(topics, Mode::Proxy, config.state_interval, config.forget_after);
    let path = shared.config.state_dir.join(SAVED_FILE);
    restore(&mut mirror, &path, &bridge);
    let mut saved_version = mirror.version();
    let (mut batches, snapshot) = {
        let state = shared.roster();
        (shared.subscribe(&state), state.roster.snapshot())
    };
    bridge.publish_all(mirror.apply(&RosterEvent::Snapshot(snapshot), now_ms()));
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let batch = tokio::select! {
            _ = shutdown.cancelled() => {
                // What changed in the last second, kept for the next start.
                save_if_changed(&mirror, &path, &mut saved_version).await;
                return;
            }
            _ = tick.tick() => {
                bridge.publish_all(mirror.tick(now_ms()));
                save_if_changed(&mirror, &path, &mut saved_version).await;
                continue;
            }
            b = batches.recv() => b,
        };
        match batch {
            Ok(batch) => {
                for event in &batch.events {
                    bridge.publish_all(mirror.apply(event, now_ms()));
                }
            }
            // Fell behind: start again from a snapshot.
            Err(RecvError::Lagged(_)) => {
                let snapshot = {
                    let state = shared.roster();
                    batches = shared.subscribe(&state);
                    state.roster.snapshot()
                };
                bridge.publish_all(mirror.apply(&RosterEvent::Snapshot(snapshot), now_ms()));
            }
            Err(RecvError::Closed) => return,
        }
    }
}

/// Where the mirror's agents are saved, in the proxy's state directory.
const SAVED_FILE: &str = "mqtt-mirror.json";

/// Takes back the agents a previous run published. The file is a cache: if it cannot be
/// read, the proxy says so and goes on (agents it cannot remember stay in Home Assistant
/// until removed by hand there).
fn restore(mirror: &mut Mirror, path: &Path, bridge: &BridgeHandle) {
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
        Err(e) => {
            log::warn!(
                "could not read {}: {e}; agents published before this start are not remembered",
                path.display()
            );
            return;
        }
    };
    match serde_json::from_slice::<Saved>(&text) {
        Ok(saved) => {
            let n = saved.agents.len();
            match mirror.restore(saved, now_ms()) {
                (true, out) => {
                    log::info!("MQTT: remembering {n} agents published before this start (offline until they reconnect)");
                    bridge.publish_all(out);
                }
                (false, _) => log::info!(
                    "MQTT: {} was saved for other topics (the cluster or discovery prefix changed); not restored",
                    path.display()
                ),
            }
        }
        Err(e) => log::warn!(
            "{} is damaged ({e}); agents published before this start are not remembered",
            path.display()
        ),
    }
}

/// Saves the mirror's agents if they changed since the last save (atomically, off the
/// async thread).
async fn save_if_changed(mirror: &Mirror, path: &Path, saved_version: &mut u64) {
    if mirror.version() == *saved_version {
        return;
    }
    *saved_version = mirror.version();
    let Ok(bytes) = serde_json::to_vec(&mirror.saved()) else {
        return;
    };
    let path = path.to_path_buf();
    let written =
        tokio::task::spawn_blocking(move || wtd_store::atomic::write_atomic(&path, &bytes, 0o600)).await;
    if let Ok(Err(e)) = written {
        log::warn!("could not save the MQTT mirror: {e}");
    }
}
