//! The proxy's MQTT bridge: the roster, mirrored to the broker for Home Assistant and
//! Node-RED (topics and payloads: `wtd_telemetry::topics`).
//!
//! One task follows the roster's event stream (subscribed under the roster lock with a
//! snapshot, like a watcher, so no change is missed) and feeds the pure
//! [`wtd_telemetry::Mirror`]; what it returns goes into the bridge's bounded outbox. The
//! roster lock is never held across a publish, and a publish never waits for the broker.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;
use wtd_telemetry::mirror::now_ms;
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
    let (mut events, snapshot) = {
        let state = shared.roster();
        (shared.subscribe(&state), state.roster.snapshot())
    };
    bridge.publish_all(mirror.apply(&RosterEvent::Snapshot(snapshot), now_ms()));
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let event = tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {
                bridge.publish_all(mirror.tick(now_ms()));
                continue;
            }
            e = events.recv() => e,
        };
        let event = match event {
            Ok(e) => e,
            // Fell behind (a burst of 500 joins): start again from a snapshot.
            Err(RecvError::Lagged(_)) => {
                let state = shared.roster();
                events = shared.subscribe(&state);
                RosterEvent::Snapshot(state.roster.snapshot())
            }
            Err(RecvError::Closed) => return,
        };
        bridge.publish_all(mirror.apply(&event, now_ms()));
    }
}
