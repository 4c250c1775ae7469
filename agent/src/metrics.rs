//! The agent's own Prometheus metrics, on an opt-in local port (`metrics = "127.0.0.1:9465"`
//! in agent.toml; off by default): calls served by outcome, function durations as a
//! histogram, and queue depths. The proxy exports the cluster view (agents online, load,
//! relayed bytes); these are what only the agent sees.
//!
//! The counters are always kept (an atomic add per call costs nothing); only the endpoint
//! is opt-in. Labels are bounded: a mission and function label only for functions this
//! agent offers (anything else a stranger sends is counted as `mission=""`), and an outcome
//! from a fixed set.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use wtd_wire::call::{AgentMsg, Status};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    pub mission: String,
    pub function: String,
    /// `ok`, `failed`, `timed_out`, `cancelled`, `output_too_large`, or a refusal's kind
    /// (`unknown_function`, `bad_call`, `busy`, `no_grant`, `rate_limited`, ...).
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FunctionLabels {
    pub mission: String,
    pub function: String,
}

fn duration_histogram() -> Histogram {
    // 1 ms to ~65 s, doubling: a ping to the longest allowed call (600 s lands in +Inf).
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

/// Every metric the agent exports.
#[derive(Debug)]
pub struct AgentMetrics {
    pub calls: Family<CallLabels, Counter>,
    pub durations: Family<FunctionLabels, Histogram, fn() -> Histogram>,
    pub sessions: Counter,
    pub sessions_open: Gauge,
    pub calls_running: Gauge,
    pub mission_events: Family<OutcomeLabel, Counter>,
    pub mission_event_queue: Gauge,
    pub mqtt_connected: Gauge,
    pub mqtt_queued: Gauge,
    pub mqtt_dropped: Gauge,
    pub up_since: Gauge<f64, AtomicU64>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: String,
}

impl Default for AgentMetrics {
    fn default() -> Self {
        AgentMetrics {
            calls: Family::default(),
            durations: Family::new_with_constructor(duration_histogram),
            sessions: Counter::default(),
            sessions_open: Gauge::default(),
            calls_running: Gauge::default(),
            mission_events: Family::default(),
            mission_event_queue: Gauge::default(),
            mqtt_connected: Gauge::default(),
            mqtt_queued: Gauge::default(),
            mqtt_dropped: Gauge::default(),
            up_since: Gauge::default(),
        }
    }
}

impl AgentMetrics {
    /// Counts one answered call of `mission/function` (empty names: not one we offer).
    pub fn answered(&self, mission: &str, function: &str, answer: &AgentMsg) {
        let outcome = match answer {
            AgentMsg::Done { status, .. } => status_label(*status),
            AgentMsg::Refused { refused, .. } => refused.kind.as_str(),
            AgentMsg::Event { .. } => return,
        };
        self.calls
            .get_or_create(&CallLabels {
                mission: mission.to_string(),
                function: function.to_string(),
                outcome: outcome.to_string(),
            })
            .inc();
    }

    pub fn registry(&self) -> Registry {
        let mut r = Registry::with_prefix("wtd_agent");
        r.register(
            "calls",
            "Calls answered, by function and outcome",
            self.calls.clone(),
        );
        r.register(
            "function_duration_seconds",
            "How long exec functions ran, start to answer",
            self.durations.clone(),
        );
        r.register(
            "sessions",
            "Callers' end-to-end sessions accepted",
            self.sessions.clone(),
        );
        r.register(
            "sessions_open",
            "Callers' sessions open now",
            self.sessions_open.clone(),
        );
        r.register(
            "calls_running",
            "Exec calls running now",
            self.calls_running.clone(),
        );
        r.register(
            "mission_events",
            "Mission event lines from handlers, by what became of them (queued, dropped, not_allowed)",
            self.mission_events.clone(),
        );
        r.register(
            "mission_event_queue",
            "Mission events waiting for the proxy or the broker",
            self.mission_event_queue.clone(),
        );
        r.register(
            "mqtt_connected",
            "1 while this agent's own [mqtt] publisher is connected (absent without [mqtt])",
            self.mqtt_connected.clone(),
        );
        r.register(
            "mqtt_queued",
            "Messages waiting for this agent's broker",
            self.mqtt_queued.clone(),
        );
        r.register(
            "mqtt_dropped",
            "Events this agent's publisher dropped because its broker was away",
            self.mqtt_dropped.clone(),
        );
        r.register(
            "start_time_seconds",
            "When this agent started, in seconds since the epoch",
            self.up_since.clone(),
        );
        r
    }
}

fn status_label(s: Status) -> &'static str {
    match s {
        Status::Ok => "ok",
        Status::Failed => "failed",
        Status::TimedOut => "timed_out",
        Status::Cancelled => "cancelled",
        Status::OutputTooLarge => "output_too_large",
    }
}

/// The exposition text for one scrape: the gauges read now, then everything encoded.
pub(crate) fn render(
    calls: &crate::calls::CallService,
    mqtt: Option<&wtd_telemetry::BridgeHandle>,
) -> String {
    let m = calls.metrics();
    m.calls_running.set(calls.running() as i64);
    let events = calls.mission_events();
    m.mission_event_queue.set(events.waiting() as i64);
    let (queued, dropped, not_allowed) = events.counts();
    for (outcome, total) in [
        ("queued", queued),
        ("dropped", dropped),
        ("not_allowed", not_allowed),
    ] {
        let c = m.mission_events.get_or_create(&OutcomeLabel {
            outcome: outcome.into(),
        });
        c.inc_by(total.saturating_sub(c.get()));
    }
    if let Some(h) = mqtt.map(|b| b.health()) {
        m.mqtt_connected.set(i64::from(h.connected));
        m.mqtt_queued.set(h.queued as i64);
        m.mqtt_dropped.set(h.dropped as i64);
    }
    let mut out = String::new();
    if prometheus_client::encoding::text::encode(&mut out, &m.registry()).is_err() {
        return "# could not encode metrics\n# EOF\n".into();
    }
    out
}
