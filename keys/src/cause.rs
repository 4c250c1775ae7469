//! A call's *cause*: the events it was made because of.
//!
//! A subscribed handler runs because of an event; when it calls another function (on any
//! agent, of any mission), the events that function emits should come after that event for
//! every subscriber, as if the handler had emitted them itself. So the agent hands each
//! handler its cause in the `WTD_CAUSE` variable, `wtd call` sends it with the call, and the
//! agent that runs the call records it as the dependencies of every event the function
//! emits (and hands it on in `WTD_CAUSE` again: causality is transitive).
//!
//! ```text
//! WTD_CAUSE=<publisher>:<mission>:<seq>,<publisher>:<mission>:<seq>,...
//! ```
//!
//! Each entry is a position as `wtd subscribe` prints it (`position`, `deps`): "event `seq`
//! of `publisher`'s log of `mission`". At most [`MAX_CAUSE`] entries, one per log.
//!
//! A cause is only the caller's claim, and that is safe: it can make a subscriber *wait* for
//! an event (on a log the subscriber reads, until that event is delivered), never hide or
//! forge one, since events are signed by their publisher and a subscriber checks each log's
//! chain. A made-up cause naming an event that never comes holds back the called function's
//! events (and the later events of their log) at subscribers that read the named log, up to
//! `MAX_HELD_EVENTS`, when they stop and say which event they wait for.

use std::collections::BTreeMap;

use crate::defaults::{MAX_CAUSE, MAX_CAUSE_TEXT};
use crate::event::{Dep, LogId};
use crate::identity::AgentId;
use crate::names::MissionName;

/// The environment variable that carries a cause from the agent to a handler, and from a
/// handler to `wtd call`.
pub const CAUSE_VAR: &str = "WTD_CAUSE";

/// Why a cause could not be read. Each says which entry, and the form it must take.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CauseError {
    /// The text is longer than any cause of [`MAX_CAUSE`] entries.
    #[error("the cause is {0} bytes, more than the {MAX_CAUSE_TEXT} a cause of {MAX_CAUSE} events takes")]
    TooLong(usize),
    /// More than [`MAX_CAUSE`] different logs.
    #[error("the cause names {0} logs; at most {MAX_CAUSE} (an event depends on at most that many)")]
    TooMany(usize),
    /// One entry is not `<publisher>:<mission>:<seq>`, or a part of it is invalid.
    #[error("`{entry}` is not an event: {why}; write <publisher>:<mission>:<seq> as `wtd subscribe` prints a position")]
    BadEntry { entry: String, why: String },
}

/// One entry per log (the highest event), sorted, none with `seq` 0: the form a cause
/// travels in, whatever order or repetitions it was made from.
pub fn normalize(cause: impl IntoIterator<Item = Dep>) -> Vec<Dep> {
    let mut by_log: BTreeMap<LogId, u64> = BTreeMap::new();
    for d in cause {
        if d.seq == 0 {
            continue;
        }
        let seq = by_log.entry(d.log).or_default();
        *seq = (*seq).max(d.seq);
    }
    by_log.into_iter().map(|(log, seq)| Dep { log, seq }).collect()
}

/// Checks a cause: at most [`MAX_CAUSE`] logs once normalized. Returns it normalized.
pub fn check(cause: impl IntoIterator<Item = Dep>) -> Result<Vec<Dep>, CauseError> {
    let cause = normalize(cause);
    if cause.len() > MAX_CAUSE {
        return Err(CauseError::TooMany(cause.len()));
    }
    Ok(cause)
}

/// Reads `WTD_CAUSE` text. Empty (or only spaces) is no cause.
pub fn parse(text: &str) -> Result<Vec<Dep>, CauseError> {
    if text.len() > MAX_CAUSE_TEXT {
        return Err(CauseError::TooLong(text.len()));
    }
    let mut deps = Vec::new();
    for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let bad = |why: String| CauseError::BadEntry {
            entry: entry.to_string(),
            why,
        };
        let mut parts = entry.split(':');
        let (Some(p), Some(m), Some(seq), None) = (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad("it has not three parts".into()));
        };
        let publisher: AgentId = p.parse().map_err(|e| bad(format!("publisher `{p}`: {e}")))?;
        let mission = MissionName::new(m).map_err(|e| bad(format!("mission `{m}`: {e}")))?;
        let seq: u64 = seq
            .parse()
            .ok()
            .filter(|s| *s > 0)
            .ok_or_else(|| bad(format!("`{seq}` is not an event number (1, 2, 3...)")))?;
        deps.push(Dep {
            log: LogId { publisher, mission },
            seq,
        });
    }
    check(deps)
}

/// The text form [`parse`] reads (normalized: one entry per log, sorted).
pub fn format(cause: &[Dep]) -> String {
    normalize(cause.iter().cloned())
        .iter()
        .map(|d| format!("{}:{}:{}", d.log.publisher, d.log.mission, d.seq))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::SecretKey;

    fn dep(seed: u8, mission: &str, seq: u64) -> Dep {
        Dep {
            log: LogId {
                publisher: AgentId(SecretKey::from_seed(&[seed; 32]).public()),
                mission: MissionName::new(mission).unwrap(),
            },
            seq,
        }
    }

    #[test]
    fn a_cause_round_trips_through_its_text() {
        let cause = vec![dep(1, "social", 4), dep(2, "photos", 1)];
        let text = format(&cause);
        assert_eq!(parse(&text).unwrap(), normalize(cause));
        assert_eq!(text.split(',').count(), 2);
        assert!(parse("").unwrap().is_empty());
        assert!(parse("  ").unwrap().is_empty());
    }

    #[test]
    fn one_entry_per_log_the_highest_wins() {
        let cause = vec![dep(1, "social", 4), dep(1, "social", 9), dep(1, "social", 2)];
        assert_eq!(normalize(cause.clone()), vec![dep(1, "social", 9)]);
        let text = cause
            .iter()
            .map(|d| format!("{}:{}:{}", d.log.publisher, d.log.mission, d.seq))
            .collect::<Vec<_>>()
            .join(" , ");
        assert_eq!(parse(&text).unwrap(), vec![dep(1, "social", 9)]);
    }

    #[test]
    fn malformed_entries_are_refused_saying_which() {
        let id = dep(1, "social", 1).log.publisher.to_string();
        let cases = [
            ("social:3".to_string(), "three parts"),
            (format!("{id}:social:3:4"), "three parts"),
            ("wtd1nope:social:3".to_string(), "publisher"),
            (format!("{id}:Bad Name:3"), "mission"),
            (format!("{id}:social:x"), "event number"),
            (format!("{id}:social:0"), "event number"),
            (format!("{id}:social:-1"), "event number"),
        ];
        for (text, says) in cases {
            match parse(&text) {
                Err(e @ CauseError::BadEntry { .. }) => {
                    let msg = e.to_string();
                    assert!(msg.contains(says), "{text}: {msg}");
                    assert!(msg.contains("<publisher>:<mission>:<seq>"), "{msg}");
                }
                other => panic!("{text}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_cause_is_bounded() {
        let many: Vec<Dep> = (0..=MAX_CAUSE as u8).map(|i| dep(i + 1, "social", 1)).collect();
        assert_eq!(check(many.clone()), Err(CauseError::TooMany(MAX_CAUSE + 1)));
        assert_eq!(parse(&format(&many)), Err(CauseError::TooMany(MAX_CAUSE + 1)));
        assert_eq!(check(many[..MAX_CAUSE].to_vec()).unwrap().len(), MAX_CAUSE);
        // The longest cause that may be sent fits the text bound.
        let longest: Vec<Dep> = (0..MAX_CAUSE as u8)
            .map(|i| dep(i + 1, &"m".repeat(64), u64::MAX))
            .collect();
        let text = format(&longest);
        assert!(text.len() <= MAX_CAUSE_TEXT, "{}", text.len());
        assert_eq!(parse(&text).unwrap().len(), MAX_CAUSE);
        let huge = "x".repeat(MAX_CAUSE_TEXT + 1);
        assert_eq!(parse(&huge), Err(CauseError::TooLong(MAX_CAUSE_TEXT + 1)));
    }
}
