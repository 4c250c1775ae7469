//! Jobs: calls that wait in the proxy's queue until an agent can run them
//! (`wtd push`, `wtd call --async`).
//!
//! A live call is authenticated by its end-to-end session (see `wtd_wire::call`). A job
//! has no session: it is written down, held by the proxy for minutes or hours, and handed
//! to an agent that may not have been online when it was sent. So it travels in the
//! *signed* form of a call, and the proxy, which holds it all that time, cannot forge one,
//! alter one, or change where it may run:
//!
//! 1. Bob's CLI builds a [`Job`]: the function, the hash of the argument bytes, a fresh
//!    [`RequestId`], optionally the one agent it is for, when it was made and until when it
//!    may run. It signs it; the record and the argument bytes travel side by side.
//! 2. When an agent receives it, it runs [`check_job`] (signature, its own id if one is
//!    named, the arguments, the time window), then asks whether it ran this request
//!    already (its durable seen-set), then authorizes it *now*, as any call: grant,
//!    revocation, rate. A grant revoked while the job waited means it never runs.
//! 3. The agent signs a [`CallResult`] naming the job's hash ([`result_for`]); the CLI runs
//!    [`verify_job_result`] before believing the output. The proxy stores the result, and
//!    cannot forge or alter it either.
//!
//! ```text
//! job    = kind(7) version(1)
//!          1 caller       user key (32)
//!          2 agent        agent key (32), optional: absent = any agent that may run it
//!          3 mission      canonical name
//!          4 function     canonical name
//!          5 args_hash    SHA-256("wtd call args" || 0 || argument bytes)   (32)
//!          6 request_id   16 random bytes
//!          7 issued_at    u64 ms since epoch
//!          8 expires_at   u64 ms since epoch: no agent runs it after this
//!          9 keep_result  u8: 1 = keep the result for `wtd result`, 0 = fire and forget
//!         10 owner        owner key (32): whose authority it runs under (her grant, or her own)
//!         11 tag          canonical name, optional (version 2 only): only an agent with this tag
//!         12 order        u8 (version 2 only): 0 least loaded, 1 coolest
//!        255 signature    by caller, domain "wtd job v1"
//! job_hash(job) = SHA-256("wtd job hash v1" || 0 || job bytes)
//! ```
//!
//! # Selectors, and the two versions
//! A job with the default selector (no tag, least loaded) is written as version 1, byte
//! for byte as before selectors existed, so every agent that runs jobs runs it. A job with
//! a tag or `--coolest` is version 2: fields 11 and 12 are signed with the rest, so the
//! proxy cannot drop the tag and send a `--tag gpu` job to a Pi without one: the agent
//! checks the tag against its own ([`check_job`]) and refuses it otherwise. The order
//! (least loaded or coolest) is signed too, but only the proxy can apply it (no agent
//! knows the others' loads); like delivery itself, it is trusted to. A version-2 record
//! with neither a tag nor `--coolest` is refused: it would be a second encoding of a
//! version-1 job. An agent of before version 2 (protocol version 5) cannot decode one,
//! so the proxy never delivers one to it (`wtd_wire::JOB_SELECTORS_VERSION`).
//!
//! A job is its own record kind and domain, not a call with an empty session: a job can
//! never be passed off as a live call's receipt, nor the reverse.
//!
//! # Why the agent's seen-set can forget
//! No agent runs a job after its `expires_at`, and that is checked before the seen-set is
//! asked. So a request id may be forgotten once its job has expired: a copy delivered later
//! is refused as expired anyway. [`MAX_JOB_LIFETIME_MS`] bounds how long that is.

use std::fmt;

use sha2::{Digest, Sha256};

use crate::call::{args_hash, output_hash, CallResult, CallStatus, RequestId, ResultError, SignedResult};
use crate::defaults::{CALL_FRESHNESS_MS, MAX_JOB_LIFETIME_MS, MAX_RECORD_LEN};
use crate::encoding::{fixed, key_value, Reader, Writer};
use crate::identity::{AgentId, Domain, OwnerKey, SecretKey, UserKey};
use crate::names::{FunctionName, MissionName};
use crate::record::{self, RecordError, SIGNATURE_TAG};
use crate::time::{human_duration, Timestamp};

pub const KIND: u8 = 7;
/// The format of a job with the default selector (and of every job before selectors).
pub const VERSION: u8 = 1;
/// The format of a job with a tag or an order other than least loaded.
pub const SELECTOR_VERSION: u8 = 2;
pub const DOMAIN: Domain = Domain("wtd job v1");
const KNOWN: &[u8] = &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, SIGNATURE_TAG];
const KNOWN_V2: &[u8] = &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, SIGNATURE_TAG];

/// How the proxy picks among the agents that may run a job (a queued call's share of the
/// live selectors of `wtd call`; `--all`, `--random` and `--round-robin` make no sense for
/// one job that runs once, and the CLI refuses them).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Order {
    /// Lowest reported load at delivery time (the default); throttled Pis last.
    #[default]
    LeastLoaded,
    /// Lowest reported temperature at delivery time; throttled Pis last.
    Coolest,
}

/// Which agents may run a job, and which of them is preferred. Signed with the job.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JobSelector {
    /// Only an agent with this tag (`wtd push --tag gpu`); checked by the agent itself.
    pub tag: Option<MissionName>,
    /// Which of the suitable agents online the proxy hands it to.
    pub order: Order,
}

impl JobSelector {
    /// Whether this is the default (no tag, least loaded): a version-1 job.
    pub fn is_default(&self) -> bool {
        self.tag.is_none() && self.order == Order::LeastLoaded
    }
}
const JOB_HASH_DOMAIN: &[u8] = b"wtd job hash v1\0";

/// The content of a job. Sign it with [`Job::sign`].
#[derive(Clone, PartialEq, Eq)]
pub struct Job {
    /// Who asks, and signs. The agent authorizes this key, whoever delivers the job.
    pub caller: UserKey,
    /// The one agent that may run it; `None`: any agent that offers the function and holds
    /// a grant for the caller.
    pub agent: Option<AgentId>,
    pub mission: MissionName,
    pub function: FunctionName,
    /// [`args_hash`] of the argument bytes, which travel next to the record.
    pub args_hash: [u8; 32],
    pub request_id: RequestId,
    /// When the caller signed it, by the caller's clock.
    pub issued_at: Timestamp,
    /// No agent runs it after this (and the proxy drops it then).
    pub expires_at: Timestamp,
    /// Whether the proxy keeps the result for `wtd result` (`wtd call --async`), or only
    /// the job's state (`wtd push`).
    pub keep_result: bool,
    /// The owner whose authority it runs under: the issuer of the caller's grant, or the
    /// caller herself as an owner. The agent runs it only under exactly that owner's
    /// authority, and the proxy bounds the jobs queued per owner by it.
    pub owner: OwnerKey,
    /// Which agents may run it (a tag), and which the proxy prefers.
    pub selector: JobSelector,
}

impl fmt::Debug for Job {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Job")
            .field("caller", &self.caller)
            .field("agent", &self.agent)
            .field("mission", &self.mission)
            .field("function", &self.function)
            .field("request_id", &self.request_id)
            .field("issued_at", &self.issued_at)
            .field("expires_at", &self.expires_at)
            .field("keep_result", &self.keep_result)
            .field("owner", &self.owner)
            .field("selector", &self.selector)
            .finish()
    }
}

impl Job {
    /// A new job with a fresh random request id.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        caller: UserKey,
        agent: Option<AgentId>,
        mission: MissionName,
        function: FunctionName,
        args: &[u8],
        now: Timestamp,
        expires_at: Timestamp,
        keep_result: bool,
        owner: OwnerKey,
    ) -> Job {
        Job {
            caller,
            agent,
            mission,
            function,
            args_hash: args_hash(args),
            request_id: RequestId::random(),
            issued_at: now,
            expires_at,
            keep_result,
            owner,
            selector: JobSelector::default(),
        }
    }

    /// The same job with `selector` (a tag, an order).
    pub fn with_selector(mut self, selector: JobSelector) -> Job {
        self.selector = selector;
        self
    }

    /// The record format this job is written in: 1 unless it has a selector.
    pub fn format_version(&self) -> u8 {
        if self.selector.is_default() {
            VERSION
        } else {
            SELECTOR_VERSION
        }
    }

    /// Signs the job. Panics if `caller` is not the signer's key: a programming error.
    pub fn sign(self, caller: &SecretKey) -> SignedJob {
        assert_eq!(
            caller.public(),
            *self.caller.key(),
            "a job is signed by its caller"
        );
        let mut w = Writer::new(KIND, self.format_version());
        w.key(1, self.caller.key());
        if let Some(agent) = &self.agent {
            w.key(2, agent.key());
        }
        w.str(3, self.mission.as_str())
            .str(4, self.function.as_str())
            .bytes(5, &self.args_hash)
            .bytes(6, &self.request_id.0)
            .u64(7, self.issued_at.0)
            .u64(8, self.expires_at.0)
            .u8(9, u8::from(self.keep_result))
            .key(10, self.owner.key());
        if !self.selector.is_default() {
            if let Some(tag) = &self.selector.tag {
                w.str(11, tag.as_str());
            }
            w.u8(
                12,
                match self.selector.order {
                    Order::LeastLoaded => 0,
                    Order::Coolest => 1,
                },
            );
        }
        let bytes = record::seal(w, DOMAIN, caller);
        SignedJob { job: self, bytes }
    }
}

/// A job whose signature by its caller has been verified (and nothing else: an agent uses
/// [`check_job`]). It keeps its exact bytes, which its result's `call_hash` covers.
#[derive(Clone, PartialEq, Eq)]
pub struct SignedJob {
    job: Job,
    bytes: Vec<u8>,
}

impl fmt::Debug for SignedJob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("SignedJob").field(&self.job).finish()
    }
}

impl SignedJob {
    pub fn job(&self) -> &Job {
        &self.job
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The hash a result names to say which job it answers.
    pub fn hash(&self) -> [u8; 32] {
        Sha256::new_with_prefix(JOB_HASH_DOMAIN)
            .chain_update(&self.bytes)
            .finalize()
            .into()
    }

    /// Decodes a job and verifies its signature by the caller it names. Checks nothing
    /// else: see [`check_job`].
    pub fn decode(bytes: &[u8]) -> Result<SignedJob, RecordError> {
        // Two formats: version 2 adds the selector fields (see the module doc).
        let (version, known) = match bytes.get(1) {
            Some(&SELECTOR_VERSION) => (SELECTOR_VERSION, KNOWN_V2),
            _ => (VERSION, KNOWN),
        };
        let mut r = Reader::new(bytes, MAX_RECORD_LEN, "job", KIND, version, known)?;
        let caller = UserKey(r.key(1, "caller")?);
        let agent = match r.optional(2, "agent")? {
            Some(v) => Some(AgentId(key_value(v, "agent")?)),
            None => None,
        };
        let mut job = Job {
            caller,
            agent,
            mission: r.name(3, "mission")?,
            function: r.name(4, "function")?,
            args_hash: fixed(r.field(5, "args_hash")?, "args_hash")?,
            request_id: RequestId(fixed(r.field(6, "request_id")?, "request_id")?),
            issued_at: Timestamp(r.u64(7, "issued_at")?),
            expires_at: Timestamp(r.u64(8, "expires_at")?),
            keep_result: match r.u8(9, "keep_result")? {
                0 => false,
                1 => true,
                _ => {
                    return Err(crate::encoding::DecodeError::BadValue {
                        field: "keep_result",
                        reason: "must be 0 or 1",
                    }
                    .into())
                }
            },
            owner: OwnerKey(r.key(10, "owner")?),
            selector: JobSelector::default(),
        };
        if version == SELECTOR_VERSION {
            let tag = match r.optional(11, "tag")? {
                Some(v) => Some(crate::encoding::name_value(v, "tag")?),
                None => None,
            };
            let order = match r.u8(12, "order")? {
                0 => Order::LeastLoaded,
                1 => Order::Coolest,
                _ => {
                    return Err(crate::encoding::DecodeError::BadValue {
                        field: "order",
                        reason: "must be 0 (least loaded) or 1 (coolest)",
                    }
                    .into())
                }
            };
            job.selector = JobSelector { tag, order };
            if job.selector.is_default() {
                // One meaning, one encoding: a default selector is written as version 1.
                return Err(crate::encoding::DecodeError::BadValue {
                    field: "order",
                    reason: "a version-2 job must carry a tag or a non-default order",
                }
                .into());
            }
        }
        record::open(r, DOMAIN, caller.key())?;
        Ok(SignedJob {
            job,
            bytes: bytes.to_vec(),
        })
    }
}

/// Why a job was refused before authorization. Each says the likely cause.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JobError {
    /// Not a well-formed job, or its signature does not verify with the caller key it
    /// names: it was altered while it waited (most likely by the proxy), or forged.
    #[error("refused a queued call: {0}; the proxy holding it may have altered it")]
    Record(#[from] RecordError),
    /// Signed for another agent: the proxy delivered it to the wrong one.
    #[error(
        "this queued call was signed for agent {}, not this one ({}): the proxy delivered it to the wrong agent",
        .intended.key().short(), .me.key().short()
    )]
    WrongAgent { intended: AgentId, me: AgentId },
    /// Signed for agents with a tag this one does not have: the proxy delivered it to the
    /// wrong agent (or this agent's tags changed since it was chosen).
    #[error(
        "this queued call was signed for agents tagged `{tag}`, and this agent ({}) has no such tag: the proxy \
         delivered it to the wrong agent",
        .me.key().short()
    )]
    WrongTag { tag: MissionName, me: AgentId },
    /// The argument bytes are not the ones the caller signed.
    #[error("the arguments of this queued call are not the ones the caller signed: they were altered while it waited")]
    ArgsMismatch,
    /// Its time to run has passed.
    #[error(
        "this queued call expired {} ago, before an agent could run it; push it again with a longer --expires",
        human_duration(*.ago_ms)
    )]
    Expired { ago_ms: u64 },
    /// Dated further in the future than clocks may disagree: the caller's clock is ahead.
    #[error(
        "this queued call is dated {} in the future: the caller's clock is ahead (or this agent's is behind)",
        human_duration(*.ahead_ms)
    )]
    FromTheFuture { ahead_ms: u64 },
    /// Asks to wait longer than any job may.
    #[error(
        "this queued call asks to wait {}, longer than the {} any may; push it with a shorter --expires",
        human_duration(*.asked_ms), human_duration(MAX_JOB_LIFETIME_MS)
    )]
    TooLong { asked_ms: u64 },
}

impl JobError {
    /// A stable word for scripts and for `wtd jobs`.
    pub fn kind(&self) -> &'static str {
        match self {
            JobError::Record(_) => "bad_call",
            JobError::WrongAgent { .. } => "not_for_this_agent",
            JobError::WrongTag { .. } => "not_for_this_agent",
            JobError::ArgsMismatch => "bad_call",
            JobError::Expired { .. } => "expired",
            JobError::FromTheFuture { .. } => "not_yet_valid",
            JobError::TooLong { .. } => "bad_call",
        }
    }
}

/// The shape of a job, before it is queued or run: its lifetime is within
/// [`MAX_JOB_LIFETIME_MS`] and it does not end before it starts. Pure; the proxy checks it
/// when a job is pushed, the agent again when it is delivered.
pub fn check_lifetime(job: &Job) -> Result<(), JobError> {
    let asked_ms = job.issued_at.until(job.expires_at);
    if asked_ms > MAX_JOB_LIFETIME_MS || job.expires_at < job.issued_at {
        return Err(JobError::TooLong { asked_ms });
    }
    Ok(())
}

/// The agent's check of a delivered job, before the seen-set and authorization. In this
/// order: it decodes and its signature verifies; if it names an agent, that is `me`; if its
/// selector names a tag, `my_tags` has it; `args` are the bytes it was signed with; its
/// lifetime is allowed; it is not dated in the future (beyond [`CALL_FRESHNESS_MS`] of
/// clock skew); it has not expired at `now`.
pub fn check_job(
    bytes: &[u8],
    args: &[u8],
    me: &AgentId,
    my_tags: &[String],
    now: Timestamp,
) -> Result<SignedJob, JobError> {
    let signed = SignedJob::decode(bytes)?;
    let job = &signed.job;
    if let Some(intended) = job.agent {
        if intended != *me {
            return Err(JobError::WrongAgent { intended, me: *me });
        }
    }
    if let Some(tag) = &job.selector.tag {
        if !my_tags.iter().any(|t| t == tag.as_str()) {
            return Err(JobError::WrongTag {
                tag: tag.clone(),
                me: *me,
            });
        }
    }
    if job.args_hash != args_hash(args) {
        return Err(JobError::ArgsMismatch);
    }
    check_lifetime(job)?;
    let ahead_ms = now.until(job.issued_at);
    if ahead_ms > CALL_FRESHNESS_MS {
        return Err(JobError::FromTheFuture { ahead_ms });
    }
    if now > job.expires_at {
        return Err(JobError::Expired {
            ago_ms: job.expires_at.until(now),
        });
    }
    Ok(signed)
}

/// The result of `job`, which this agent ran, to sign with [`CallResult::sign`]. The agent
/// in it is `me` (a job may name none).
pub fn result_for(
    job: &SignedJob,
    me: AgentId,
    status: CallStatus,
    output: &[u8],
    finished_at: Timestamp,
) -> CallResult {
    CallResult {
        agent: me,
        request_id: job.job.request_id,
        call_hash: job.hash(),
        status,
        output_hash: output_hash(output),
        finished_at,
    }
}

/// The caller's check of a job's result: it decodes and its signature verifies with the
/// agent key it names; that agent is the one the job names, if it names one; it answers
/// this request id and exactly this job; `output` is what the agent signed. Returns the
/// verified result, whose `agent` says who ran it.
pub fn verify_job_result(
    result_bytes: &[u8],
    output: &[u8],
    job: &SignedJob,
) -> Result<SignedResult, ResultError> {
    let signed = SignedResult::decode(result_bytes)?;
    let r = signed.result();
    if let Some(expected) = job.job.agent {
        if r.agent != expected {
            return Err(ResultError::WrongAgent {
                expected,
                found: r.agent,
            });
        }
    }
    if r.request_id != job.job.request_id {
        return Err(ResultError::WrongRequest {
            expected: job.job.request_id,
            found: r.request_id,
        });
    }
    if r.call_hash != job.hash() {
        return Err(ResultError::WrongCall);
    }
    if r.output_hash != output_hash(output) {
        return Err(ResultError::OutputMismatch);
    }
    Ok(signed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::call::{Call, SignedCall};

    const T0: Timestamp = Timestamp(1_700_000_000_000);
    const HOUR: u64 = 3_600_000;

    fn key(n: u8) -> SecretKey {
        SecretKey::from_seed(&[n; 32])
    }

    fn job(agent: Option<AgentId>) -> (SecretKey, SignedJob) {
        let bob = key(2);
        let j = Job::new(
            UserKey(bob.public()),
            agent,
            MissionName::new("demo").unwrap(),
            FunctionName::new("echo").unwrap(),
            b"{}",
            T0,
            T0.plus_ms(HOUR),
            true,
            OwnerKey(key(1).public()),
        );
        let signed = j.sign(&bob);
        (bob, signed)
    }

    #[test]
    fn a_job_round_trips_with_and_without_an_agent() {
        let pi = AgentId(key(10).public());
        for agent in [None, Some(pi)] {
            let (_, signed) = job(agent);
            let back = SignedJob::decode(signed.bytes()).unwrap();
            assert_eq!(back, signed);
            assert_eq!(
                check_job(signed.bytes(), b"{}", &pi, &[], T0.plus_ms(1000)).unwrap(),
                signed
            );
        }
    }

    #[test]
    fn every_rejecting_branch() {
        let (pi, other) = (AgentId(key(10).public()), AgentId(key(11).public()));
        let (_, for_pi) = job(Some(pi));
        let now = T0.plus_ms(1000);
        // Altered anywhere: the signature fails.
        for i in 2..for_pi.bytes().len() {
            let mut bytes = for_pi.bytes().to_vec();
            bytes[i] ^= 1;
            assert!(check_job(&bytes, b"{}", &pi, &[], now).is_err(), "byte {i}");
        }
        assert!(matches!(
            check_job(for_pi.bytes(), b"{}", &other, &[], now),
            Err(JobError::WrongAgent { .. })
        ));
        assert_eq!(
            check_job(for_pi.bytes(), b"{\"x\":1}", &pi, &[], now),
            Err(JobError::ArgsMismatch)
        );
        assert!(matches!(
            check_job(for_pi.bytes(), b"{}", &pi, &[], T0.plus_ms(HOUR + 1)),
            Err(JobError::Expired { ago_ms: 1 })
        ));
        assert!(matches!(
            check_job(
                for_pi.bytes(),
                b"{}",
                &pi,
                &[],
                T0.minus_ms(CALL_FRESHNESS_MS + 1)
            ),
            Err(JobError::FromTheFuture { .. })
        ));
        // Too long a life, or one that ends before it starts.
        let bob = key(2);
        for expires in [T0.plus_ms(MAX_JOB_LIFETIME_MS + 1), T0.minus_ms(1)] {
            let mut j = for_pi.job().clone();
            j.expires_at = expires;
            let s = j.sign(&bob);
            assert!(matches!(
                check_job(s.bytes(), b"{}", &pi, &[], T0),
                Err(JobError::TooLong { .. })
            ));
        }
        // Signed by someone else than the caller it names.
        let mut forged = for_pi.job().clone();
        forged.caller = UserKey(key(3).public());
        let bytes = std::panic::catch_unwind(|| forged.clone().sign(&bob));
        assert!(bytes.is_err(), "sign refuses a foreign caller");
    }

    #[test]
    fn a_default_selector_keeps_the_version_1_bytes() {
        let (_, plain) = job(None);
        assert_eq!(plain.bytes()[1], VERSION);
        // The same job with the default selector spelled out is the same record.
        let bob = key(2);
        let again = plain
            .job()
            .clone()
            .with_selector(JobSelector::default())
            .sign(&bob);
        assert_eq!(again.bytes(), plain.bytes());
    }

    #[test]
    fn a_selector_is_signed_and_the_agent_checks_the_tag() {
        let bob = key(2);
        let pi = AgentId(key(10).public());
        let now = T0.plus_ms(1000);
        let (_, plain) = job(None);
        let gpu = MissionName::new("gpu").unwrap();
        for selector in [
            JobSelector {
                tag: Some(gpu.clone()),
                order: Order::LeastLoaded,
            },
            JobSelector {
                tag: Some(gpu.clone()),
                order: Order::Coolest,
            },
            JobSelector {
                tag: None,
                order: Order::Coolest,
            },
        ] {
            let signed = plain.job().clone().with_selector(selector.clone()).sign(&bob);
            assert_eq!(signed.bytes()[1], SELECTOR_VERSION);
            let back = SignedJob::decode(signed.bytes()).unwrap();
            assert_eq!(back.job().selector, selector);
            // Altered anywhere (the tag dropped or changed included): the signature fails.
            for i in 0..signed.bytes().len() {
                let mut bytes = signed.bytes().to_vec();
                bytes[i] ^= 1;
                assert!(SignedJob::decode(&bytes).is_err(), "byte {i}");
            }
            let tagged = vec!["lab".to_string(), "gpu".to_string()];
            assert_eq!(
                check_job(signed.bytes(), b"{}", &pi, &tagged, now).unwrap(),
                signed
            );
            let untagged = check_job(signed.bytes(), b"{}", &pi, &["lab".to_string()], now);
            if selector.tag.is_some() {
                let err = untagged.unwrap_err();
                assert!(matches!(err, JobError::WrongTag { .. }), "{err}");
                assert_eq!(err.kind(), "not_for_this_agent");
                assert!(err.to_string().contains("tagged `gpu`"), "{err}");
            } else {
                assert!(untagged.is_ok(), "an order alone constrains no agent");
            }
        }
        // A version-2 record without a selector is a second encoding: refused.
        let mut w = Writer::new(KIND, SELECTOR_VERSION);
        let j = plain.job();
        w.key(1, j.caller.key())
            .str(3, j.mission.as_str())
            .str(4, j.function.as_str())
            .bytes(5, &j.args_hash)
            .bytes(6, &j.request_id.0)
            .u64(7, j.issued_at.0)
            .u64(8, j.expires_at.0)
            .u8(9, 1)
            .key(10, j.owner.key())
            .u8(12, 0);
        let bytes = record::seal(w, DOMAIN, &bob);
        assert!(SignedJob::decode(&bytes).is_err());
        // Nor may a version-1 record carry the selector fields.
        let tagged = plain
            .job()
            .clone()
            .with_selector(JobSelector {
                tag: Some(gpu),
                order: Order::LeastLoaded,
            })
            .sign(&bob);
        let mut v1 = tagged.bytes().to_vec();
        v1[1] = VERSION;
        assert!(SignedJob::decode(&v1).is_err());
    }

    #[test]
    fn a_live_call_is_not_a_job_nor_the_reverse() {
        let bob = key(2);
        let pi = AgentId(key(10).public());
        let call = Call::new(
            UserKey(bob.public()),
            pi,
            MissionName::new("demo").unwrap(),
            FunctionName::new("echo").unwrap(),
            b"{}",
            [0; 32],
            T0,
        )
        .sign(&bob);
        assert!(SignedJob::decode(call.bytes()).is_err());
        let (_, j) = job(Some(pi));
        assert!(SignedCall::decode(j.bytes()).is_err());
    }

    #[test]
    fn results_are_checked_against_the_job() {
        let (pi_key, other_key) = (key(10), key(11));
        let pi = AgentId(pi_key.public());
        let (_, j) = job(None);
        let out = b"{\"ok\":true}";
        let r = result_for(&j, pi, CallStatus::Ok, out, T0).sign(&pi_key);
        let v = verify_job_result(r.bytes(), out, &j).unwrap();
        assert_eq!(v.result().agent, pi);
        assert_eq!(
            verify_job_result(r.bytes(), b"{}", &j),
            Err(ResultError::OutputMismatch)
        );
        // Another job's result.
        let (_, j2) = job(None);
        let r2 = result_for(&j2, pi, CallStatus::Ok, out, T0).sign(&pi_key);
        assert!(matches!(
            verify_job_result(r2.bytes(), out, &j),
            Err(ResultError::WrongRequest { .. })
        ));
        // Same request id, another job (altered): the hash differs.
        let mut r3 = result_for(&j, pi, CallStatus::Ok, out, T0);
        r3.call_hash = [0; 32];
        assert_eq!(
            verify_job_result(r3.sign(&pi_key).bytes(), out, &j),
            Err(ResultError::WrongCall)
        );
        // A job for pi, answered by another agent.
        let (_, for_pi) = job(Some(pi));
        let other = AgentId(other_key.public());
        let r4 = result_for(&for_pi, other, CallStatus::Ok, out, T0).sign(&other_key);
        assert!(matches!(
            verify_job_result(r4.bytes(), out, &for_pi),
            Err(ResultError::WrongAgent { .. })
        ));
        // Altered result bytes.
        let mut bad = r.bytes().to_vec();
        let n = bad.len();
        bad[n - 1] ^= 1;
        assert!(matches!(
            verify_job_result(&bad, out, &j),
            Err(ResultError::Record(_))
        ));
    }
}
