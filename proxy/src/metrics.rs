//! The proxy's Prometheus metrics (`wtd proxy --metrics 127.0.0.1:9464`), in the
//! OpenMetrics text format written by `prometheus-client`.
//!
//! Counters move where things happen (a connection, a relayed session); the per-agent
//! gauges and the bridge's health are read from the roster and the bridge at scrape time,
//! so an agent that left disappears from the next scrape instead of lingering.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AgentLabels {
    pub agent: String,
    pub name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabels {
    pub direction: String,
}

/// Every metric the proxy exports.
#[derive(Debug, Default)]
pub struct ProxyMetrics {
    pub connections: Counter,
    pub relays: Counter,
    pub relays_failed: Counter,
    pub relay_bytes: Family<DirectionLabels, Counter>,
    pub relays_open: Gauge,
    pub watchers: Gauge,
    pub agents_online: Gauge,
    pub agent_load: Family<AgentLabels, Gauge<f64, AtomicU64>>,
    pub agent_cpu: Family<AgentLabels, Gauge<f64, AtomicU64>>,
    pub agent_temperature: Family<AgentLabels, Gauge<f64, AtomicU64>>,
    pub owner_logs_published: Counter,
    pub mission_events: Counter,
    pub mission_events_dropped: Counter,
    pub call_reports: Counter,
    pub call_reports_dropped: Counter,
    pub dashboard_pages: Gauge,
    pub bridge_enabled: Gauge,
    pub bridge_connected: Gauge,
    pub bridge_queued: Gauge,
    pub bridge_dropped: Gauge,
    pub bridge_published: Gauge,
    pub bridge_connects: Gauge,
    /// Jobs (`wtd push`) waiting: queued, delivered or running.
    pub jobs_waiting: Gauge,
    /// Jobs pushed, and pushes refused over a bound.
    pub jobs_pushed: Counter,
    pub jobs_refused: Counter,
    /// Signed events stored (`Request::PublishEvents`).
    pub events_stored: Counter,
    /// Open event subscriptions.
    pub subscribers: Gauge,
}

impl ProxyMetrics {
    pub fn registry(&self) -> Registry {
        let mut r = Registry::with_prefix("wtd_proxy");
        r.register(
            "connections",
            "Client connections accepted (agents and people)",
            self.connections.clone(),
        );
        r.register(
            "relays",
            "Caller sessions relayed to an agent",
            self.relays.clone(),
        );
        r.register(
            "relays_failed",
            "Relay requests for an agent that was gone or did not answer",
            self.relays_failed.clone(),
        );
        r.register(
            "relay_bytes",
            "Bytes relayed, counted when a session ends",
            self.relay_bytes.clone(),
        );
        r.register(
            "relays_open",
            "Caller sessions being relayed now",
            self.relays_open.clone(),
        );
        r.register(
            "roster_watchers",
            "Dashboards following the roster (wtd ls --watch)",
            self.watchers.clone(),
        );
        r.register(
            "agents_online",
            "Agents in the roster",
            self.agents_online.clone(),
        );
        r.register(
            "jobs_waiting",
            "Queued calls (wtd push) not finished yet: queued, delivered or running",
            self.jobs_waiting.clone(),
        );
        r.register(
            "jobs_pushed",
            "Queued calls accepted (wtd push, wtd call --async)",
            self.jobs_pushed.clone(),
        );
        r.register(
            "jobs_refused",
            "Pushes refused: over a bound, expired, malformed or not the sender's",
            self.jobs_refused.clone(),
        );
        r.register(
            "agent_load1",
            "An agent's 1-minute load average",
            self.agent_load.clone(),
        );
        r.register(
            "agent_cpu_percent",
            "An agent's CPU busy, 0-100",
            self.agent_cpu.clone(),
        );
        r.register(
            "agent_temperature_celsius",
            "An agent's SoC temperature (Pis only)",
            self.agent_temperature.clone(),
        );
        r.register(
            "signed_events_stored",
            "Signed events agents published and the proxy stored",
            self.events_stored.clone(),
        );
        r.register(
            "event_subscribers",
            "Open event subscriptions (wtd subscribe, agents' subscribed handlers)",
            self.subscribers.clone(),
        );
        r.register(
            "owner_logs_published",
            "Owner log publishes stored (grants and revocations)",
            self.owner_logs_published.clone(),
        );
        r.register(
            "mission_events",
            "Mission events from agents handed to the MQTT bridge",
            self.mission_events.clone(),
        );
        r.register(
            "mission_events_dropped",
            "Mission events dropped: over the agent's budget, or of a mission it does not offer",
            self.mission_events_dropped.clone(),
        );
        r.register(
            "call_reports",
            "Call reports from agents shown on the dashboard",
            self.call_reports.clone(),
        );
        r.register(
            "call_reports_dropped",
            "Call reports not shown: over the agent's budget, of a mission it does not offer, or of a \
             caller whose session was never relayed to it",
            self.call_reports_dropped.clone(),
        );
        r.register(
            "dashboard_pages",
            "Dashboard pages connected now (their event streams)",
            self.dashboard_pages.clone(),
        );
        r.register(
            "mqtt_bridge_enabled",
            "1 if the MQTT bridge is configured",
            self.bridge_enabled.clone(),
        );
        r.register(
            "mqtt_bridge_connected",
            "1 while connected to the MQTT broker",
            self.bridge_connected.clone(),
        );
        r.register(
            "mqtt_bridge_queued",
            "Messages waiting for the broker",
            self.bridge_queued.clone(),
        );
        r.register(
            "mqtt_bridge_dropped",
            "Events dropped because the broker was away too long",
            self.bridge_dropped.clone(),
        );
        r.register(
            "mqtt_bridge_published",
            "Messages written to the broker",
            self.bridge_published.clone(),
        );
        r.register(
            "mqtt_bridge_connects",
            "Successful connections to the broker",
            self.bridge_connects.clone(),
        );
        r
    }
}

/// The exposition text for one scrape: per-agent gauges from the roster and the bridge's
/// health read now, then everything encoded.
pub(crate) fn render(shared: &crate::shared::Shared) -> String {
    let m = &shared.metrics;
    let snapshot = shared.roster().roster.snapshot();
    m.agents_online.set(snapshot.len() as i64);
    m.jobs_waiting.set(shared.jobs().waiting() as i64);
    m.agent_load.clear();
    m.agent_cpu.clear();
    m.agent_temperature.clear();
    for a in &snapshot {
        let labels = AgentLabels {
            agent: wtd_telemetry::topics::agent_id_text(&a.id),
            name: a.advert.name.clone(),
        };
        m.agent_load.get_or_create(&labels).set(f64::from(a.load.load1));
        m.agent_cpu
            .get_or_create(&labels)
            .set(f64::from(a.load.cpu_percent));
        if let Some(t) = a.load.temperature_c {
            m.agent_temperature.get_or_create(&labels).set(f64::from(t));
        }
    }
    if let Some(bridge) = &shared.bridge {
        let h = bridge.health();
        m.bridge_enabled.set(1);
        m.bridge_connected.set(i64::from(h.connected));
        m.bridge_queued.set(h.queued as i64);
        m.bridge_dropped.set(h.dropped as i64);
        m.bridge_published.set(h.published as i64);
        m.bridge_connects.set(h.connects as i64);
    }
    let mut out = String::new();
    if prometheus_client::encoding::text::encode(&mut out, &m.registry()).is_err() {
        return "# could not encode metrics\n# EOF\n".into();
    }
    out
}
