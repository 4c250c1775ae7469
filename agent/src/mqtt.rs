//! Publishing this agent to an MQTT broker itself (`[mqtt]` in agent.toml), for a home
//! with a broker but no proxy bridging to it. The topics and payloads are the proxy
//! bridge's (`wtd_telemetry::topics`), so Home Assistant and Node-RED see the same thing
//! either way; only the availability differs: the agent's own topic is its MQTT last will,
//! so a Pi that loses power reads `offline` once the broker notices (1.5x the keep-alive).
//!
//! One future, joined into the agent's life (nothing spawned): the bridge (rumqttc,
//! reconnects, bounded outbox) and a loop that samples the load every state interval and
//! publishes it, and publishes mission events as they come. Publishing never waits for the
//! broker, so a broker that is down or slow costs a call or a heartbeat nothing.

use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use wtd_keys::AgentId;
use wtd_telemetry::bridge::BridgeError;
use wtd_telemetry::mirror::now_ms;
use wtd_telemetry::topics::agent_id_text;
use wtd_telemetry::{Bridge, BridgeHandle, Mirror, Mode, MqttConfig, Publication, Topics};
use wtd_wire::{Advert, AgentInfo, Key, LeaveReason, MissionEvent, RosterEvent};

use crate::load::LoadSampler;
use crate::sensors::PiSensors;

/// How long a stopping agent waits for its last state and `offline` to reach the broker.
const DRAIN_GRACE: Duration = Duration::from_millis(500);

/// The agent's own publisher; see the module docs.
#[derive(Debug)]
pub(crate) struct Direct {
    bridge: Bridge,
    handle: BridgeHandle,
    mirror: Mirror,
    info: AgentInfo,
    topics: Topics,
    sampler: LoadSampler,
    sensors: watch::Receiver<PiSensors>,
    interval: Duration,
    events: mpsc::Receiver<MissionEvent>,
}

impl Direct {
    pub(crate) fn new(
        config: &MqttConfig,
        id: AgentId,
        advert: Advert,
        sampler: LoadSampler,
        sensors: watch::Receiver<PiSensors>,
        events: mpsc::Receiver<MissionEvent>,
    ) -> Result<Direct, BridgeError> {
        let key = Key::from(*id.key());
        let topics = Topics::new(&config.cluster, &config.discovery_prefix);
        let client_id = format!("wtd-agent-{}", id.key().short());
        // The last will goes on our availability topic: a dead agent reads offline.
        let (bridge, handle) = Bridge::new(
            config,
            &client_id,
            topics.agent_availability(&agent_id_text(&key)),
        )?;
        let mirror = Mirror::new(
            topics.clone(),
            Mode::Agent,
            config.state_interval,
            config.forget_after,
        );
        Ok(Direct {
            bridge,
            handle,
            mirror,
            info: AgentInfo {
                id: key,
                advert,
                load: Default::default(),
                last_seen_ms: now_ms(),
            },
            topics,
            sampler,
            sensors,
            interval: config.state_interval,
            events,
        })
    }

    /// A handle for the metrics (the publisher's health).
    pub(crate) fn handle(&self) -> BridgeHandle {
        self.handle.clone()
    }

    /// Publishes until `shutdown`; then the last state (`online: false`) and `offline`.
    pub(crate) async fn run(self, shutdown: CancellationToken) {
        let Direct {
            bridge,
            handle,
            mut mirror,
            mut info,
            topics,
            mut sampler,
            sensors,
            interval,
            mut events,
        } = self;
        let stop_bridge = CancellationToken::new();
        let publish = async {
            info.load = sampler.sample(&sensors.borrow());
            handle.publish_all(mirror.apply(&RosterEvent::Upsert(info.clone()), now_ms()));
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await;
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = ticks.tick() => {
                        let load = sampler.sample(&sensors.borrow());
                        let event = RosterEvent::Load { id: info.id, load, last_seen_ms: now_ms() };
                        handle.publish_all(mirror.apply(&event, now_ms()));
                        handle.publish_all(mirror.tick(now_ms()));
                    }
                    Some(e) = events.recv() => {
                        let payload = wtd_telemetry::events::mission(
                            &agent_id_text(&info.id),
                            &info.advert.name,
                            &e.mission,
                            &e.function,
                            &e.line,
                            now_ms(),
                        );
                        handle.publish(Publication::event(topics.mission_events(&e.mission), payload.to_string()));
                    }
                }
            }
            let leave = RosterEvent::Left {
                id: info.id,
                reason: LeaveReason::Graceful,
            };
            handle.publish_all(mirror.apply(&leave, now_ms()));
            // Bounded: a broker that is away gets our last will instead.
            let _ = tokio::time::timeout(DRAIN_GRACE, async {
                while handle.health().connected && handle.health().queued > 0 {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
            .await;
            stop_bridge.cancel();
        };
        tokio::join!(bridge.run(stop_bridge.clone()), publish);
    }
}
