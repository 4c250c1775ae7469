//! Call reports for the proxy's dashboard: after answering a call, the agent tells the
//! proxy who called which function, how long it took, and whether it was allowed (and if
//! not, why). Only when the owner set `report_calls = true` in agent.toml: calls are end to
//! end encrypted, and what the proxy's projector shows about them is the owner's choice.
//!
//! Never the arguments or the result, nor a failed function's detail (it may quote the
//! function's output); a refusal's reason is the agent's own sentence. Bounded like mission
//! events: a token bucket and a small queue, and [`CallReports::answered`] never waits, so a
//! caller in a tight loop is never slowed by the dashboard.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::mpsc;
use wtd_telemetry::budget::Budget;
use wtd_wire::call::{AgentMsg, Status};
use wtd_wire::report::report_text;
use wtd_wire::{CallReport, Key};

use crate::defaults;

/// The sending side, shared by every call session.
#[derive(Debug)]
pub struct CallReports {
    /// `None`: the owner did not opt in; nothing is reported.
    tx: Option<mpsc::Sender<CallReport>>,
    budget: Mutex<Budget>,
    sent: AtomicU64,
    dropped: AtomicU64,
}

impl CallReports {
    /// A sink (reporting only if `enabled`) and the receiver its reports come out of.
    pub fn new(enabled: bool) -> (CallReports, Option<mpsc::Receiver<CallReport>>) {
        let (tx, rx) = if enabled {
            let (tx, rx) = mpsc::channel(defaults::CALL_REPORT_QUEUE);
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let sink = CallReports {
            tx,
            budget: Mutex::new(Budget::new(
                defaults::CALL_REPORTS_PER_S,
                defaults::CALL_REPORTS_BURST,
                wtd_telemetry::mirror::now_ms(),
            )),
            sent: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        };
        (sink, rx)
    }

    /// Notes the answer to a call of `mission/function` from `caller` that took `took`.
    /// Progress lines are not answers and are ignored. Never waits.
    pub fn answered(&self, caller: Key, mission: &str, function: &str, answer: &AgentMsg, took: Duration) {
        let Some(tx) = &self.tx else { return };
        let Some(report) = report_of(caller, mission, function, answer, took) else {
            return;
        };
        let within = self
            .budget
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take(wtd_telemetry::mirror::now_ms());
        if within && tx.try_send(report).is_ok() {
            self.sent.fetch_add(1, Ordering::Relaxed);
        } else {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// (queued, dropped) since start.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.sent.load(Ordering::Relaxed),
            self.dropped.load(Ordering::Relaxed),
        )
    }
}

/// The report of one answer, or `None` for a progress line or a call of a function this
/// agent does not offer (its names are whatever a stranger typed; the caller already got
/// its "no such function").
pub fn report_of(
    caller: Key,
    mission: &str,
    function: &str,
    answer: &AgentMsg,
    took: Duration,
) -> Option<CallReport> {
    let (allowed, outcome, reason) = match answer {
        AgentMsg::Event { .. } => return None,
        AgentMsg::Done { status, .. } => (true, status_word(*status), String::new()),
        AgentMsg::Refused { refused, .. } => {
            if refused.kind == "unknown_function" {
                return None;
            }
            (false, refused.kind.clone(), report_text(&refused.message))
        }
    };
    let report = CallReport {
        caller,
        mission: mission.to_string(),
        function: function.to_string(),
        latency_ms: took.as_millis().min(u32::MAX as u128) as u32,
        allowed,
        outcome,
        reason,
    };
    // Anything the proxy would refuse is not sent (a kind that is not a plain word, names
    // that are not names): the proxy would close the control stream over it.
    report.validate().ok()?;
    Some(report)
}

fn status_word(s: Status) -> String {
    match s {
        Status::Ok => "ok",
        Status::Failed => "failed",
        Status::TimedOut => "timed_out",
        Status::Cancelled => "cancelled",
        Status::OutputTooLarge => "output_too_large",
    }
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use wtd_wire::call::Refused;

    fn caller() -> Key {
        Key(*wtd_keys::SecretKey::from_seed(&[5; 32]).public().as_bytes())
    }

    fn done(status: Status) -> AgentMsg {
        AgentMsg::Done {
            id: 1,
            status,
            output: b"the secret result".to_vec(),
            detail: "stderr: the secret".into(),
            signed: None,
        }
    }

    fn refusal(kind: &str) -> AgentMsg {
        AgentMsg::Refused {
            id: 1,
            refused: Refused {
                kind: kind.into(),
                message: "no grant for demo from you".into(),
                retry_after_ms: None,
            },
        }
    }

    #[test]
    fn a_report_says_what_happened_and_never_what_was_said() {
        let ok = report_of(
            caller(),
            "demo",
            "echo",
            &done(Status::Failed),
            Duration::from_millis(12),
        )
        .unwrap();
        assert_eq!(
            (ok.allowed, ok.outcome.as_str(), ok.latency_ms),
            (true, "failed", 12)
        );
        assert!(
            ok.reason.is_empty(),
            "a failure's detail may quote the output: not sent"
        );
        let text = format!("{ok:?}");
        assert!(!text.contains("secret"), "{text}");

        let denied = report_of(caller(), "demo", "echo", &refusal("no_grant"), Duration::ZERO).unwrap();
        assert_eq!((denied.allowed, denied.outcome.as_str()), (false, "no_grant"));
        assert_eq!(denied.reason, "no grant for demo from you");

        let progress = AgentMsg::Event {
            id: 1,
            line: "50%".into(),
        };
        assert!(report_of(caller(), "demo", "echo", &progress, Duration::ZERO).is_none());
        assert!(report_of(
            caller(),
            "demo",
            "echo",
            &refusal("unknown_function"),
            Duration::ZERO
        )
        .is_none());
        assert!(report_of(caller(), "Not A Name", "echo", &done(Status::Ok), Duration::ZERO).is_none());
    }

    #[test]
    fn off_unless_opted_in_and_a_flood_is_cut() {
        let (off, rx) = CallReports::new(false);
        assert!(rx.is_none());
        off.answered(caller(), "demo", "echo", &done(Status::Ok), Duration::ZERO);
        assert_eq!(off.counts(), (0, 0));

        let (on, rx) = CallReports::new(true);
        let mut rx = rx.unwrap();
        for _ in 0..10_000 {
            on.answered(caller(), "demo", "echo", &done(Status::Ok), Duration::ZERO);
        }
        let (sent, dropped) = on.counts();
        assert_eq!(sent + dropped, 10_000);
        assert!(
            sent >= 1 && sent as usize <= defaults::CALL_REPORT_QUEUE,
            "{sent}"
        );
        assert_eq!(rx.try_recv().unwrap().outcome, "ok");
    }
}
