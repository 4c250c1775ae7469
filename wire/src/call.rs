//! Messages inside an end-to-end session (caller <-> agent, through the proxy's relay,
//! encrypted and authenticated by the session's TLS). One call at a time per session;
//! a session is reused for the next call.
//!
//! ```text
//! caller                                   agent
//!   |-- Invoke{call, args} ------------------>|  check signature, grant, rate; run
//!   |<-- Event{line} ... ----------------------|  progress while it runs
//!   |<-- Done{result, output} | Denied{...} ---|  the result is signed by the agent
//! ```

use serde::{Deserialize, Serialize};

/// Caller to agent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CallerMsg {
    /// A signed call (`wtd_keys::call`) and its JSON arguments (hashed into the call).
    Invoke { call: Vec<u8>, args: Vec<u8> },
}

/// Why the agent refused a call, in words a person can act on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refused {
    /// A stable word for scripts: `no_grant`, `expired`, `revoked`, `rate_limited`,
    /// `concurrency`, `not_yet_valid`, `not_for_this_agent`, `issuer_not_owner`,
    /// `unknown_function`, `bad_call`, `too_large`.
    pub kind: String,
    pub message: String,
    /// For `rate_limited`: when to try again.
    pub retry_after_ms: Option<u64>,
}

/// Agent to caller.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AgentMsg {
    /// A progress line from the running function.
    Event { line: String },
    /// The call ran (or failed, timed out, was cancelled): the agent's signed result
    /// (`wtd_keys::call`) and the output it covers.
    Done {
        result: Vec<u8>,
        output: Vec<u8>,
        detail: String,
    },
    /// The call did not run.
    Refused(Refused),
}
