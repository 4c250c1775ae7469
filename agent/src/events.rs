//! Mission events: a handler prints `wtd-event: {"door": "open"}` on stderr, and the line is
//! published on MQTT under its mission (`wtd/<cluster>/missions/<mission>/events`), either
//! through the proxy's bridge (`FromAgent::MissionEvent`) or by this agent's own `[mqtt]`.
//!
//! Default deny, and bounded:
//! - only missions the owner lists in `mission_events` (agent.toml) publish; the lines of
//!   any other mission are dropped here and never leave the Pi;
//! - a token bucket ([`defaults::MISSION_EVENTS_PER_S`], a burst of
//!   [`defaults::MISSION_EVENTS_BURST`]) and a small queue bound a flood: [`MissionEvents::emit`]
//!   never waits, so a handler printing events in a loop cannot slow a call or a
//!   heartbeat; what does not fit is dropped and counted.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use tokio::sync::mpsc;
use wtd_telemetry::budget::Budget;
use wtd_wire::MissionEvent;

use crate::defaults;

/// What became of one event line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Emitted {
    /// Queued for the proxy or the broker.
    Queued,
    /// The owner's config does not let this mission publish.
    NotAllowed,
    /// Over the budget, or the queue is full (the broker or proxy is away): dropped.
    Dropped,
}

/// The sending side: shared by every call (see the module docs).
#[derive(Debug)]
pub struct MissionEvents {
    allowed: Vec<String>,
    tx: mpsc::Sender<MissionEvent>,
    budget: Mutex<Budget>,
    queued: AtomicU64,
    dropped: AtomicU64,
    not_allowed: AtomicU64,
}

impl MissionEvents {
    /// A sink letting `allowed` missions publish, and the receiver its events come out of.
    pub fn new(allowed: Vec<String>) -> (MissionEvents, mpsc::Receiver<MissionEvent>) {
        let (tx, rx) = mpsc::channel(defaults::MISSION_EVENT_QUEUE);
        let sink = MissionEvents {
            allowed,
            tx,
            budget: Mutex::new(Budget::new(
                defaults::MISSION_EVENTS_PER_S,
                defaults::MISSION_EVENTS_BURST,
                now_ms(),
            )),
            queued: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            not_allowed: AtomicU64::new(0),
        };
        (sink, rx)
    }

    /// Offers one line a handler of `mission/function` emitted. Never waits.
    pub fn emit(&self, mission: &str, function: &str, line: &str) -> Emitted {
        if !self.allowed.iter().any(|m| m == mission) {
            self.not_allowed.fetch_add(1, Ordering::Relaxed);
            return Emitted::NotAllowed;
        }
        let within = self
            .budget
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take(now_ms());
        let event = MissionEvent {
            mission: mission.to_string(),
            function: function.to_string(),
            line: wtd_telemetry::events::cut(line, wtd_wire::defaults::MAX_EVENT_LINE).to_string(),
        };
        if within && self.tx.try_send(event).is_ok() {
            self.queued.fetch_add(1, Ordering::Relaxed);
            Emitted::Queued
        } else {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            Emitted::Dropped
        }
    }

    /// Events waiting for the proxy or the broker.
    pub fn waiting(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }

    /// (queued, dropped, not allowed) since start, for the metrics.
    pub fn counts(&self) -> (u64, u64, u64) {
        (
            self.queued.load(Ordering::Relaxed),
            self.dropped.load(Ordering::Relaxed),
            self.not_allowed.load(Ordering::Relaxed),
        )
    }
}

fn now_ms() -> u64 {
    wtd_telemetry::mirror::now_ms()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_listed_missions_publish_and_a_flood_is_cut() {
        let (sink, mut rx) = MissionEvents::new(vec!["door".into()]);
        assert_eq!(sink.emit("noisy", "run", "x"), Emitted::NotAllowed);
        assert!(rx.try_recv().is_err(), "nothing of a mission not listed");
        let results: Vec<Emitted> = (0..10_000).map(|_| sink.emit("door", "watch", "open")).collect();
        let queued = results.iter().filter(|e| **e == Emitted::Queued).count();
        assert!(queued >= 1, "the first events go through");
        assert!(
            queued <= defaults::MISSION_EVENT_QUEUE.min(defaults::MISSION_EVENTS_BURST as usize + 10),
            "bounded by the burst and the queue: {queued}"
        );
        let (q, d, n) = sink.counts();
        assert_eq!((q as usize, q + d, n), (queued, 10_000, 1));
        let first = rx.try_recv().unwrap();
        assert_eq!((first.mission.as_str(), first.line.as_str()), ("door", "open"));
    }

    #[test]
    fn long_lines_are_cut_to_the_wire_limit() {
        let (sink, mut rx) = MissionEvents::new(vec!["door".into()]);
        sink.emit("door", "watch", &"é".repeat(4000));
        let e = rx.try_recv().unwrap();
        assert!(e.line.len() <= wtd_wire::defaults::MAX_EVENT_LINE);
        assert!(e.validate().is_ok());
    }
}
