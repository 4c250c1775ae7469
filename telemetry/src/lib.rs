//! How a wtd cluster shows up in the tools people already run at home: an MQTT bridge
//! (for Home Assistant, Node-RED, anything that speaks MQTT) and a Prometheus `/metrics`
//! endpoint (for Grafana).
//!
//! The proxy runs the bridge for the whole cluster (`wtd proxy --mqtt mqtt://host:1883`);
//! an agent can run it for itself when there is a broker but no bridging proxy. Both feed
//! the same pure [`Mirror`], so the topics and payloads are the same either way:
//!
//! ```text
//!  roster events ──► Mirror (pure: what to publish) ──► Outbox (bounded) ──► Bridge ──► broker
//!                                                        never blocks          rumqttc, reconnects
//! ```
//!
//! Nothing here can slow a call or a heartbeat: publishing is a push into the bounded
//! [`Outbox`] under a short lock, and while the broker is away the oldest events are
//! dropped first, and each retained topic keeps only its latest value.
//!
//! # Layout
//! - [`defaults`]: queue sizes, intervals, backoff, each with its reason.
//! - [`config`]: the `[mqtt]` section of `proxy.toml` / `agent.toml` ([`MqttConfig`]).
//! - [`topics`]: every topic, in one place (the README's table is made from it).
//! - [`discovery`]: Home Assistant MQTT discovery payloads (pure).
//! - [`mirror`]: roster events in, publications out (pure, clock passed in).
//! - [`events`]: call, grant and mission event payloads (pure).
//! - [`budget`]: a token bucket that bounds mission events (pure, clock passed in).
//! - [`outbox`]: the bounded queue between publishers and the broker (pure).
//! - [`bridge`]: the rumqttc connection: TLS, auth, last will, reconnects with backoff.
//! - [`exposition`]: a tiny HTTP server for `GET /metrics`.
#![forbid(unsafe_code)]

pub mod bridge;
pub mod budget;
pub mod config;
pub mod defaults;
pub mod discovery;
pub mod events;
pub mod exposition;
pub mod mirror;
pub mod outbox;
pub mod topics;

pub use bridge::{Bridge, BridgeHandle, BridgeHealth, BrokerError};
pub use config::{MqttConfig, MqttConfigError};
pub use mirror::{Mirror, Mode};
pub use outbox::{Outbox, Publication};
pub use topics::Topics;
