//! Jobs: calls the proxy holds until an agent can run them (protocol version 5; a job with
//! a selector, `--tag` or `--coolest`, only to agents of version 6, [`crate::JOB_SELECTORS_VERSION`]).
//!
//! # Protocol flow
//!
//! ```text
//! caller (wtd push)            proxy (durable queue)                     agent
//!   |-- Request::Push{job, args} -->|  checks shape and bounds, fsyncs      |
//!   |<-- Response::JobQueued -------|                                        |
//!   |                               |   ... an agent that offers it is online ...
//!   |                               |-- ToAgent::Job{job, args} ---------->|  signature, seen-set,
//!   |                               |   (state: delivered, fsynced first)   |  grant, revocation, rate
//!   |                               |<-- FromAgent::JobUpdate{running} -----|
//!   |                               |<-- FromAgent::JobUpdate{finished} ----|  signed result
//!   |-- Request::Jobs ------------->|                                        |
//!   |<-- Response::Jobs(list) ------|                                        |
//!   |-- Request::JobResult{id,wait}>|                                        |
//!   |<-- Response::JobResult -------|  the CLI checks the agent's signature  |
//! ```
//!
//! The job is the caller's signed record (`wtd_keys::job`), so the proxy cannot forge or
//! alter one; the result is the agent's signed record, so it cannot forge that either. The
//! proxy can drop or delay a job (and is trusted to say so in `wtd jobs`), nothing more.
//!
//! Delivery is at least once: a job delivered to an agent that then vanished, or delivered
//! just before the proxy was killed, is delivered again. The agent remembers what it ran
//! (a durable seen-set, by caller and request id) and answers a repeat with the stored
//! outcome instead of running it again.
//!
//! Who can read a job's arguments: the proxy stores them in the clear (it needs nothing
//! from them, but holds them for hours), and so does the agent that runs it. `wtd push`
//! says so. The end-to-end sealing of a live call does not apply: there is no session.

use serde::{Deserialize, Serialize};

use crate::call::{Refused, Status};
use crate::roster::Key;

/// A job's 16-byte request id (`wtd_keys::call::RequestId`; printed `req-...`).
pub type JobId = [u8; 16];

/// Where a job is. Each later state replaces the one before; the last four are final.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobState {
    /// Stored by the proxy, waiting for an agent that can run it.
    Queued,
    /// Handed to an agent; no word back yet.
    Delivered,
    /// The agent checked it (signature, grant, rate) and started it.
    Running,
    /// It ran and succeeded.
    Done,
    /// It ran and failed (or timed out, or was cancelled, or printed too much).
    Failed,
    /// No agent took it before its expiry; it never ran.
    Expired,
    /// The agent refused to run it (no grant, revoked, altered, ...); `detail` says why.
    Refused,
}

impl JobState {
    /// Whether nothing more happens to the job.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobState::Done | JobState::Failed | JobState::Expired | JobState::Refused
        )
    }

    /// The word `wtd jobs` prints.
    pub fn word(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Delivered => "delivered",
            JobState::Running => "running",
            JobState::Done => "done",
            JobState::Failed => "failed",
            JobState::Expired => "expired",
            JobState::Refused => "refused",
        }
    }
}

/// One job as `wtd jobs` lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobInfo {
    pub id: JobId,
    pub mission: String,
    pub function: String,
    /// The agent it is for, if the caller named one.
    pub for_agent: Option<Key>,
    /// The agent it was delivered to, if any.
    pub agent: Option<Key>,
    pub state: JobState,
    /// Why it was refused, failed, dropped or expired; empty otherwise.
    pub detail: String,
    pub queued_at_ms: u64,
    pub expires_at_ms: u64,
    /// Whether a result is kept for `wtd result`.
    pub keep_result: bool,
}

/// A job's outcome, as the agent reported it and the proxy keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobOutcome {
    /// It ran: the agent's signed result (`wtd_keys::call::SignedResult` bytes over this
    /// status and output; the output is empty for a fire-and-forget job on the proxy).
    Ran {
        status: Status,
        output: Vec<u8>,
        detail: String,
        signed: Vec<u8>,
    },
    /// The agent refused it, and why.
    Refused(Refused),
}

/// Proxy to agent: run this job (the caller's signed record and the argument bytes).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobDelivery {
    pub job: Vec<u8>,
    pub args: Vec<u8>,
}

/// Agent to proxy: what became of a delivered job.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobUpdate {
    pub id: JobId,
    /// The caller, so the proxy finds the job (ids are unique per caller).
    pub caller: Key,
    /// `None`: started; `Some`: finished, or refused.
    pub outcome: Option<JobOutcome>,
}

/// The proxy's answer to `Request::JobResult`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobAnswer {
    pub info: JobInfo,
    /// The caller's own signed job, so the CLI checks the result against exactly it.
    pub job: Vec<u8>,
    /// Present once the job is final and its outcome was kept.
    pub outcome: Option<JobOutcome>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{decode, encode, FromAgent, Request, Response, ToAgent};

    #[test]
    fn job_messages_round_trip() {
        let info = JobInfo {
            id: [7; 16],
            mission: "demo".into(),
            function: "echo".into(),
            for_agent: None,
            agent: Some(Key([1; 32])),
            state: JobState::Refused,
            detail: "revoked".into(),
            queued_at_ms: 1,
            expires_at_ms: 2,
            keep_result: true,
        };
        let outcome = JobOutcome::Ran {
            status: Status::Ok,
            output: b"{}".to_vec(),
            detail: String::new(),
            signed: vec![1, 2],
        };
        let msgs = [
            Response::JobQueued {
                id: [7; 16],
                expires_at_ms: 9,
            },
            Response::Jobs(vec![info.clone()]),
            Response::JobResult(JobAnswer {
                info,
                job: vec![3],
                outcome: Some(outcome.clone()),
            }),
        ];
        for m in msgs {
            assert_eq!(decode::<Response>(&encode(&m)).unwrap(), m);
        }
        let r = Request::Push {
            job: vec![1],
            args: vec![2],
        };
        assert_eq!(decode::<Request>(&encode(&r)).unwrap(), r);
        let t = ToAgent::Job(JobDelivery {
            job: vec![1],
            args: vec![2],
        });
        assert_eq!(decode::<ToAgent>(&encode(&t)).unwrap(), t);
        let f = FromAgent::JobUpdate(JobUpdate {
            id: [1; 16],
            caller: Key([2; 32]),
            outcome: Some(outcome),
        });
        assert_eq!(decode::<FromAgent>(&encode(&f)).unwrap(), f);
    }

    #[test]
    fn older_messages_encode_as_before() {
        // The new variants are last: an old message keeps its tag.
        assert_eq!(encode(&Request::Roster), vec![0]);
        assert_eq!(encode(&Request::Waiting)[0], 5);
        assert_eq!(encode(&Request::Jobs)[0], 7);
    }
}
