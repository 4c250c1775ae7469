//! Every number the telemetry code uses, with its reason.

use std::time::Duration;

/// The broker port when the URL names none: MQTT's registered port.
pub const MQTT_PORT: u16 = 1883;

/// The broker port for `mqtts://` when the URL names none: MQTT over TLS's registered port.
pub const MQTTS_PORT: u16 = 8883;

/// The first topic level when the config says nothing: short, and says whose topics these are.
pub const TOPIC_ROOT: &str = "wtd";

/// The cluster name when the config says nothing (topics are `wtd/<cluster>/...`).
pub const CLUSTER: &str = "home";

/// Home Assistant's default discovery prefix.
pub const DISCOVERY_PREFIX: &str = "homeassistant";

/// Events (calls, grants, mission events) held while the broker is away or slow. At
/// ~300 bytes each this is ~300 KB at worst; past it the oldest are dropped, because a
/// dashboard wants what happens now more than what happened during an outage.
pub const QUEUE: usize = 1000;

/// Agents send a heartbeat every second; Home Assistant records every state change in its
/// database. One state message per agent every 5 s keeps graphs smooth without filling
/// a Pi-hosted Home Assistant's SD card. Joins, leaves and advert changes go out at once.
pub const STATE_INTERVAL: Duration = Duration::from_secs(5);

/// An agent offline this long is taken out of Home Assistant (its discovery configs and
/// retained topics are cleared). Shorter absences only mark it unavailable: a Pi unplugged
/// for the weekend comes back with its history.
pub const FORGET_AFTER: Duration = Duration::from_secs(7 * 24 * 3600);

/// MQTT keep-alive: a dead TCP connection to the broker is noticed within 1.5x this, and
/// then the broker publishes our last will. 5 s keeps "the bridge is down" prompt.
pub const KEEP_ALIVE: Duration = Duration::from_secs(5);

/// How long one connection attempt (TCP, TLS, CONNACK) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// First wait before reconnecting to the broker.
pub const BACKOFF_BASE: Duration = Duration::from_millis(250);

/// Longest wait between two connection attempts. A home broker restarts in seconds, and
/// an attempt every 5 s costs nothing; with jitter, many agents publishing directly do
/// not all come back in the same instant.
pub const BACKOFF_CAP: Duration = Duration::from_secs(5);

/// Messages handed to rumqttc but not yet written. Small on purpose: our own [`QUEUE`]
/// decides what to drop, and what sits in rumqttc's queue cannot be chosen.
pub const CLIENT_CHANNEL: usize = 16;

/// On shutdown, how long we wait for "offline" to reach the broker.
pub const SHUTDOWN_GRACE: Duration = Duration::from_millis(500);

/// Largest MQTT packet we send or accept. A discovery config is ~1 KB and a mission event
/// is capped far lower; this leaves room without letting a broker push us megabytes.
pub const MAX_PACKET: usize = 64 * 1024;

/// Longest mission event line published, in bytes; the rest is cut. An event is a fact
/// ("door open"), not a file.
pub const MAX_EVENT_LINE: usize = wtd_wire::defaults::MAX_EVENT_LINE;

/// The longest HTTP request head the metrics endpoint reads: a scrape's is ~200 bytes.
pub const MAX_HTTP_REQUEST: usize = 8 * 1024;

/// A metrics scrape must send its request within this time, or the connection is closed.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(5);

/// Scrapes served at once; more wait. Prometheus scrapes one at a time.
pub const HTTP_CONNECTIONS: usize = 8;
