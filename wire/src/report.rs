//! Call reports: an agent telling the proxy's dashboard about a call it answered
//! (protocol version 5 on; [`crate::FromAgent::CallReport`]).
//!
//! Calls travel end to end encrypted, so the proxy sees only that a caller's session was
//! relayed to an agent. What the classroom projector shows about a call beyond that (which
//! function, how long it took, allowed or denied and why) can only come from the agent, and
//! only when its owner opted in (`report_calls = true` in agent.toml). A report never
//! carries the call's arguments or result, and it names no agent: the proxy attributes it
//! to the agent whose control stream it came on, and checks that the caller it names
//! really had a session relayed to that agent (so an agent can report only its own calls).

use serde::{Deserialize, Serialize};

use crate::defaults::MAX_TEXT;
use crate::roster::Key;

/// One call an agent answered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallReport {
    /// Who called, as the end-to-end handshake proved it.
    pub caller: Key,
    pub mission: String,
    pub function: String,
    /// From the call's arrival to its answer, in milliseconds.
    pub latency_ms: u32,
    /// Whether the agent's checks let the call run (it may still have failed).
    pub allowed: bool,
    /// A stable word: `ok`, `failed`, `timed_out`, `cancelled`, `output_too_large` for a
    /// call that ran; the refusal's kind (`no_grant`, `revoked`, `rate_limited`, ...) for one
    /// that did not.
    pub outcome: String,
    /// For a refusal, the agent's explanation for a person (at most [`MAX_TEXT`] bytes);
    /// empty for a call that ran (a failure's detail may quote the function's output).
    pub reason: String,
}

/// Longest outcome word.
const MAX_OUTCOME: usize = 32;

impl CallReport {
    /// Checks the names and sizes; the proxy closes the stream of an agent that sends a
    /// report failing this (a real agent never does).
    pub fn validate(&self) -> Result<(), String> {
        wtd_keys::MissionName::new(&self.mission).map_err(|e| format!("mission: {e}"))?;
        wtd_keys::FunctionName::new(&self.function).map_err(|e| format!("function: {e}"))?;
        self.caller.parse().map_err(|e| format!("caller key: {e}"))?;
        let word_ok = !self.outcome.is_empty()
            && self.outcome.len() <= MAX_OUTCOME
            && self.outcome.chars().all(|c| c.is_ascii_lowercase() || c == '_');
        if !word_ok {
            return Err(format!(
                "the outcome must be 1 to {MAX_OUTCOME} lowercase letters and underscores"
            ));
        }
        if self.reason.len() > MAX_TEXT || self.reason.chars().any(char::is_control) {
            return Err(format!(
                "the reason must be at most {MAX_TEXT} bytes of printable text"
            ));
        }
        Ok(())
    }
}

/// Cuts `text` to at most [`MAX_TEXT`] bytes on a character boundary, control characters
/// replaced by spaces, so an agent's report always validates.
pub fn report_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(MAX_TEXT));
    for c in text.chars() {
        let c = if c.is_control() { ' ' } else { c };
        if out.len() + c.len_utf8() > MAX_TEXT {
            break;
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> CallReport {
        CallReport {
            caller: Key(*wtd_keys::SecretKey::from_seed(&[3; 32]).public().as_bytes()),
            mission: "demo".into(),
            function: "echo".into(),
            latency_ms: 4,
            allowed: false,
            outcome: "no_grant".into(),
            reason: "no grant for demo".into(),
        }
    }

    #[test]
    fn a_real_report_validates_and_a_bad_one_says_why() {
        assert_eq!(report().validate(), Ok(()));
        let bad = |f: fn(&mut CallReport)| {
            let mut r = report();
            f(&mut r);
            r.validate().unwrap_err()
        };
        assert!(bad(|r| r.mission = "Demo!".into()).starts_with("mission"));
        assert!(bad(|r| r.function = "".into()).starts_with("function"));
        assert!(bad(|r| r.caller = Key([0; 32])).starts_with("caller key"));
        assert!(bad(|r| r.outcome = "<script>".into()).contains("outcome"));
        assert!(bad(|r| r.reason = "x".repeat(MAX_TEXT + 1)).contains("reason"));
        assert!(bad(|r| r.reason = "a\nb".into()).contains("reason"));
    }

    #[test]
    fn report_text_always_fits() {
        let long = "é".repeat(MAX_TEXT);
        let cut = report_text(&long);
        assert!(cut.len() <= MAX_TEXT && cut.chars().all(|c| c == 'é'));
        assert_eq!(report_text("a\nb"), "a b");
        let mut r = report();
        r.reason = report_text(&format!("{}\u{7}", "z".repeat(1000)));
        assert_eq!(r.validate(), Ok(()));
    }
}
