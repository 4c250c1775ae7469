//! The payloads on `wtd/<cluster>/events` and `wtd/<cluster>/missions/<m>/events`.
//!
//! Metadata only. The proxy relays end-to-end encrypted sessions and never sees a call's
//! function, arguments or result, so a call event says who reached which agent, when, for
//! how long and how many bytes; a grant event says who may call which mission until when.
//! Keys are shown in their short form (`wtd1abcdefgh`), as `wtd ls` shows them.

use serde_json::{json, Value};

use crate::defaults::MAX_EVENT_LINE;

/// A caller's session to an agent was relayed and has ended.
// One flat event, one argument per field: a struct would only rename them.
#[allow(clippy::too_many_arguments)]
pub fn session(
    caller: &str,
    agent: &str,
    agent_name: &str,
    at_ms: u64,
    duration_ms: u64,
    bytes_up: u64,
    bytes_down: u64,
    outcome: &str,
) -> Value {
    json!({
        "type": "call_session",
        "at_ms": at_ms,
        "caller": caller,
        "agent": agent,
        "agent_name": agent_name,
        "duration_ms": duration_ms,
        "bytes_to_agent": bytes_up,
        "bytes_from_agent": bytes_down,
        "outcome": outcome,
    })
}

/// An owner published a grant.
pub fn grant(owner: &str, grantee: &str, mission: &str, expires_ms: u64, at_ms: u64) -> Value {
    json!({
        "type": "grant",
        "at_ms": at_ms,
        "owner": owner,
        "grantee": grantee,
        "mission": mission,
        "expires_ms": expires_ms,
    })
}

/// An owner published a revocation.
pub fn revocation(owner: &str, what: &str, at_ms: u64) -> Value {
    json!({
        "type": "revocation",
        "at_ms": at_ms,
        "owner": owner,
        "revokes": what,
    })
}

/// An owner adopted (`adopt` true) or disowned an agent.
pub fn adoption(owner: &str, agent: &str, adopt: bool, at_ms: u64) -> Value {
    json!({
        "type": if adopt { "adoption" } else { "disown" },
        "at_ms": at_ms,
        "owner": owner,
        "agent": agent,
    })
}

/// A line a mission's handler emitted. A line that is JSON is passed as JSON, anything else
/// as a string; either way cut to [`MAX_EVENT_LINE`] bytes.
pub fn mission(
    agent: &str,
    agent_name: &str,
    mission: &str,
    function: &str,
    line: &str,
    at_ms: u64,
) -> Value {
    let line = cut(line.trim(), MAX_EVENT_LINE);
    let event = serde_json::from_str::<Value>(line).unwrap_or_else(|_| Value::String(line.to_string()));
    json!({
        "type": "mission_event",
        "at_ms": at_ms,
        "agent": agent,
        "agent_name": agent_name,
        "mission": mission,
        "function": function,
        "event": event,
    })
}

/// `s` cut to at most `max` bytes, on a character boundary.
pub fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines_stay_json_and_long_lines_are_cut() {
        let v = mission("wtd1a", "pi", "door", "watch", r#"{"open": true}"#, 5);
        assert_eq!(v["event"]["open"], true);
        let v = mission("wtd1a", "pi", "door", "watch", "door opened", 5);
        assert_eq!(v["event"], "door opened");
        let long = "é".repeat(1000);
        let v = mission("wtd1a", "pi", "door", "watch", &long, 5);
        assert!(v["event"].as_str().unwrap().len() <= MAX_EVENT_LINE);
    }
}
