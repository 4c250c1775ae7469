//! Messages inside an end-to-end session (caller <-> agent, through the proxy's relay,
//! encrypted and authenticated by the session's TLS).
//!
//! # Protocol flow
//!
//! ```text
//! caller                                          agent
//!   |== TLS 1.3 handshake, both keys pinned ==========|  the caller proves its key here
//!   |-- Call{id: 1, demo/echo, args} ---------------->|  function exists? grant? rate? run
//!   |-- Call{id: 2, sys/ping, args} ----------------->|  (many calls in flight at once)
//!   |<-- Done{id: 2, ok, output} ---------------------|
//!   |<-- Event{id: 1, "50% done"} --------------------|  progress while it runs
//!   |-- Cancel{id: 1} ------------------------------->|  the caller gave up: stop it
//!   |<-- Done{id: 1, cancelled} | Refused{id: 1, ..} -|
//! ```
//!
//! A session carries many calls at once, each named by a request number the caller picks;
//! numbers only go up within a session (the agent refuses a number it has already seen,
//! which also bounds what it must remember). Answers come back in whatever order the calls
//! finish.
//!
//! # Why a live call carries no signature
//!
//! The TLS 1.3 handshake already proves the caller's key: its CertificateVerify is an
//! ed25519 signature by that key over the handshake, and the agent reads the caller's key
//! from it. Neither side resumes a session or accepts 0-RTT data, so every session starts
//! with a fresh full handshake, and both ends contribute fresh randomness to its keys.
//! After the handshake every record is sealed with the session's AEAD keys under a
//! sequence number. So the agent can authorize each call against the key the session
//! proved, and what the proxy (which relays the ciphertext) can do is:
//!
//! | the proxy tries to | what happens |
//! |---|---|
//! | read a call or a result | it cannot: it never holds a session key |
//! | alter a byte of a call, an event or a result | the AEAD tag fails; the session ends, nothing runs |
//! | inject a call of its own | it cannot seal a record; the session ends |
//! | replay a record inside a session | the sequence number is wrong; the session ends |
//! | replay a recorded session (or its records) into a new one | the new session has new keys (the agent's fresh random), so the old records do not open; nothing runs |
//! | send Bob's session to another agent | the caller pinned the agent's key: the handshake fails before any call is sent |
//! | pass Mallory's key off as Bob's | the handshake proves the key; Mallory cannot sign as Bob |
//! | drop or delay calls or answers | it can: the caller times out, and a call that may have run says so |
//!
//! What a live call does not give is *evidence for a third party*: the agent knows Bob
//! called, but cannot prove it to anyone else, and Bob cannot prove what the agent
//! answered. When that matters, the caller asks for a receipt: it signs the call
//! (`wtd_keys::call::Call`, bound to this session) and the agent signs the result; both
//! records are kept and anyone with the two public ids can check them later. A call that
//! travels without a live session (queued, forwarded) must take that signed form.
//!
//! # Messages
//! - [`CallerMsg::Call`]: run `mission/function` with `args`; with a receipt request, the
//!   signed call record as well.
//! - [`CallerMsg::Cancel`]: the caller no longer waits for a call; the agent stops it.
//! - [`CallerMsg::CallCaused`] (version 6): a call made because of events, its *cause*
//!   (`wtd_keys::cause`); every event the function emits depends on them. Sent only when
//!   the agent chose the session ALPN `wtd/1 v6`; an older agent is sent a plain `Call`.
//! - [`AgentMsg::Event`]: a progress line of a running call.
//! - [`AgentMsg::Done`]: the call ran (or failed, timed out, was cancelled).
//! - [`AgentMsg::Refused`]: the call did not run, and why.

use serde::{Deserialize, Serialize};

/// A call's number within its session, chosen by the caller: each new call takes a number
/// higher than any before it in the session.
pub type CallNumber = u64;

/// Caller to agent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CallerMsg {
    /// Run `mission/function` with `args` (JSON bytes).
    Call {
        id: CallNumber,
        mission: String,
        function: String,
        args: Vec<u8>,
        /// Asks for a receipt: the caller's signed call (`wtd_keys::call::SignedCall`
        /// bytes) for exactly this mission, function and arguments, bound to this session.
        /// The agent then answers with its signed result.
        signed: Option<Vec<u8>>,
    },
    /// The caller no longer waits for call `id`: stop it if it still runs.
    Cancel { id: CallNumber },
    /// Version 6: [`CallerMsg::Call`], made because of the events in `cause` (at most
    /// `wtd_keys::defaults::MAX_CAUSE`, one per log, each `seq` at least 1): every event
    /// the function emits depends on them, and the function sees them in `WTD_CAUSE`.
    /// Appended last, so the older variants encode as before; never sent to an agent that
    /// did not choose the session ALPN `wtd/1 v6` (it would end the session on it).
    CallCaused {
        id: CallNumber,
        mission: String,
        function: String,
        args: Vec<u8>,
        signed: Option<Vec<u8>>,
        cause: Vec<crate::events::LogPosition>,
    },
}

/// How a call that ran ended; the same values as `wtd_keys::call::CallStatus`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Status {
    /// The function ran and succeeded; the output is its answer.
    Ok,
    /// The function ran and reported a failure; `detail` says why.
    Failed,
    /// The function ran out of time and was stopped.
    TimedOut,
    /// Stopped before it finished: its grant was revoked, or the caller cancelled it.
    Cancelled,
    /// The function's output was larger than the agent sends back; the output is empty.
    OutputTooLarge,
}

/// Why the agent refused a call, in words a person can act on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refused {
    /// A stable word for scripts: `no_grant`, `expired`, `revoked`, `rate_limited`,
    /// `concurrency`, `not_yet_valid`, `not_for_this_agent`, `issuer_not_owner`,
    /// `unknown_function`, `bad_call`, `busy`.
    pub kind: String,
    pub message: String,
    /// For `rate_limited`: when to try again.
    pub retry_after_ms: Option<u64>,
}

/// Agent to caller.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AgentMsg {
    /// A progress line from call `id`'s running function.
    Event { id: CallNumber, line: String },
    /// Call `id` ran (or failed, timed out, was cancelled).
    Done {
        id: CallNumber,
        status: Status,
        output: Vec<u8>,
        /// Why it did not succeed, for a person; empty on success.
        detail: String,
        /// When the call asked for a receipt: the agent's signed result
        /// (`wtd_keys::call::SignedResult` bytes), covering `status` and `output`.
        signed: Option<Vec<u8>>,
    },
    /// Call `id` did not run.
    Refused { id: CallNumber, refused: Refused },
}

impl AgentMsg {
    /// The call this message is about.
    pub fn id(&self) -> CallNumber {
        match self {
            AgentMsg::Event { id, .. } | AgentMsg::Done { id, .. } | AgentMsg::Refused { id, .. } => *id,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{decode, encode};
    use proptest::prelude::*;

    #[test]
    fn a_small_call_is_small() {
        // The hot path moves these; keep an eye on their size.
        let call = encode(&CallerMsg::Call {
            id: 7,
            mission: "sys".into(),
            function: "ping".into(),
            args: b"{}".to_vec(),
            signed: None,
        });
        assert!(call.len() <= 16, "{} bytes", call.len());
        let done = encode(&AgentMsg::Done {
            id: 7,
            status: Status::Ok,
            output: br#"{"pong":true}"#.to_vec(),
            detail: String::new(),
            signed: None,
        });
        assert!(done.len() <= 24, "{} bytes", done.len());
    }

    /// `CallerMsg` as every agent before version 6 knows it, to check what such an agent
    /// makes of what a version-6 caller sends.
    #[derive(Debug, PartialEq, Deserialize)]
    enum CallerMsgV5 {
        Call {
            id: CallNumber,
            mission: String,
            function: String,
            args: Vec<u8>,
            signed: Option<Vec<u8>>,
        },
        Cancel {
            id: CallNumber,
        },
    }

    #[test]
    fn an_older_agent_reads_every_message_but_the_caused_call() {
        let call = CallerMsg::Call {
            id: 3,
            mission: "photos".into(),
            function: "post".into(),
            args: b"{}".to_vec(),
            signed: Some(vec![1, 2]),
        };
        assert_eq!(
            decode::<CallerMsgV5>(&encode(&call)).unwrap(),
            CallerMsgV5::Call {
                id: 3,
                mission: "photos".into(),
                function: "post".into(),
                args: b"{}".to_vec(),
                signed: Some(vec![1, 2]),
            }
        );
        assert_eq!(
            decode::<CallerMsgV5>(&encode(&CallerMsg::Cancel { id: 3 })).unwrap(),
            CallerMsgV5::Cancel { id: 3 }
        );
        // Which is why a caller sends it only to an agent that said it reads it.
        let caused = CallerMsg::CallCaused {
            id: 4,
            mission: "photos".into(),
            function: "post".into(),
            args: b"{}".to_vec(),
            signed: None,
            cause: vec![crate::LogPosition {
                publisher: crate::Key([9; 32]),
                mission: "social".into(),
                seq: 1,
            }],
        };
        assert!(decode::<CallerMsgV5>(&encode(&caused)).is_err());
        assert_eq!(decode::<CallerMsg>(&encode(&caused)).unwrap(), caused);
    }

    proptest! {
        #[test]
        fn messages_round_trip(id: u64, line in ".{0,40}", args in proptest::collection::vec(any::<u8>(), 0..64)) {
            let msgs = [
                AgentMsg::Event { id, line: line.clone() },
                AgentMsg::Done { id, status: Status::Failed, output: args.clone(), detail: line.clone(), signed: Some(args.clone()) },
                AgentMsg::Refused { id, refused: Refused { kind: "no_grant".into(), message: line.clone(), retry_after_ms: Some(id) } },
            ];
            for m in msgs {
                prop_assert_eq!(m.id(), id);
                prop_assert_eq!(decode::<AgentMsg>(&encode(&m)).unwrap(), m);
            }
            let c = CallerMsg::Call { id, mission: line.clone(), function: line.clone(), args: args.clone(), signed: None };
            prop_assert_eq!(decode::<CallerMsg>(&encode(&c)).unwrap(), c);
            let cause = vec![crate::LogPosition { publisher: crate::Key([id as u8; 32]), mission: line.clone(), seq: id }];
            let c = CallerMsg::CallCaused { id, mission: line.clone(), function: line, args, signed: None, cause };
            prop_assert_eq!(decode::<CallerMsg>(&encode(&c)).unwrap(), c);
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode::<CallerMsg>(&bytes);
            let _ = decode::<AgentMsg>(&bytes);
        }
    }
}
