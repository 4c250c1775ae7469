//! The job queue: calls pushed while no agent could take them (`wtd push`, `wtd call
//! --async`), held on disk until an agent that offers the function is online, then
//! delivered, and their outcomes kept for `wtd result`.
//!
//! The proxy is trusted with delivery only. A job is its caller's signed record
//! (`wtd_keys::job`) and a result the agent's signed record; this module stores both as
//! bytes and never needs to believe them. What it decides is *when* and *to whom* a job is
//! handed, and what it keeps:
//!
//! - **Durable.** Every change is one record appended to `jobs.log` (the crash-safe record
//!   file of `wtd_store::records`, fsynced) *before* it is acknowledged or acted on: a job
//!   is stored before `wtd push` hears "queued", and marked delivered before it is sent. A
//!   torn last record is cut off on open; it was never acknowledged.
//! - **To the best suitable agent online.** A job goes only to an agent that offers its
//!   function, names its owner, has the tag its caller signed (if any) and can check it
//!   (protocol [`JOB_SELECTORS_VERSION`] for a job with a selector), and has a free slot.
//!   Among those online at delivery time, the least loaded gets it (or the coolest, if
//!   the caller signed `--coolest`); Pis throttled right now come last, as in live
//!   dispatch (`wtd_caller::dispatch`). An agent that refused it for a reason of its own
//!   is passed over while another can take it. If none is online, it waits.
//! - **At least once, never on two agents.** A job marked delivered whose outcome never
//!   came back (the agent vanished, the proxy was killed) goes back to the queue, but only
//!   for the agent it was first delivered to: that agent's seen-set answers a repeat with
//!   the stored outcome, and no other agent can run it a second time. If that agent never
//!   returns, the job expires.
//! - **Bounded.** Per caller, per owner (the owner whose authority the job names) and in
//!   all, by count and by bytes, with numbers in [`crate::defaults`]; each owner's share
//!   ([`OwnerRetention`]: jobs waiting, bytes held, how long finished jobs are kept) may be
//!   set apart in proxy.toml (`[jobs]`, `[[jobs.owner]]`). A push over a bound is refused
//!   with what is queued and since when; nothing queued is ever dropped to make room. An
//!   output over a bound is not kept, and its job's detail says which bound. A job no
//!   agent took before its expiry is marked expired. Final jobs are kept for their
//!   owner's `keep_finished` ([`JOB_RETENTION`] by default), counted from when they
//!   finished (that time is on disk), then forgotten.
//!
//! The logic is pure (every method takes `now_ms`); the sessions in `session` and
//! `requests` do the I/O.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use wtd_keys::call::RequestId;
use wtd_keys::job::{check_lifetime, SignedJob};
use wtd_keys::time::human_duration;
use wtd_keys::{Timestamp, UserKey};
use wtd_store::records::RecordFile;
use wtd_wire::call::Status;
use wtd_wire::jobs::{JobAnswer, JobDelivery, JobId, JobInfo, JobOutcome, JobState, JobUpdate};
use wtd_wire::{Advert, Key, Load, JOBS_VERSION, JOB_SELECTORS_VERSION};

use crate::defaults::{
    JOB_RETENTION, JOB_RETRY_AFTER, MAX_JOBS, MAX_JOBS_IN_FLIGHT_PER_AGENT, MAX_JOBS_PER_CALLER,
    MAX_JOBS_PER_OWNER, MAX_JOB_ARGS, MAX_JOB_BYTES_PER_OWNER, MAX_JOB_OUTPUT, MAX_JOB_REFUSALS,
    MAX_QUEUE_BYTES,
};

const MAGIC: [u8; 8] = *b"WTDJOBS1";
/// Largest record: a job, its arguments, or an outcome with its output, plus framing.
const MAX_RECORD: usize = MAX_JOB_ARGS + MAX_JOB_OUTPUT + 64 * 1024;

/// One change to the queue, as it is written to disk (postcard).
#[derive(Debug, Serialize, Deserialize)]
enum Change {
    /// A job was pushed.
    Queued {
        job: Vec<u8>,
        args: Vec<u8>,
        queued_at_ms: u64,
    },
    /// A job moved to `state`, at or for `agent`, with `detail`.
    State {
        caller: Key,
        id: JobId,
        state: JobState,
        agent: Option<Key>,
        detail: String,
    },
    /// A job's outcome arrived.
    Outcome {
        caller: Key,
        id: JobId,
        agent: Key,
        outcome: JobOutcome,
    },
    /// An agent refused a job for a reason of its own (not adopted yet, no such function,
    /// busy): it did not run there, so it waits again, for any agent, from `retry_at_ms`.
    Retry {
        caller: Key,
        id: JobId,
        detail: String,
        refusals: u32,
        retry_at_ms: u64,
    },
    /// A job's outcome arrived at `at_ms` (from which its retention counts, across
    /// restarts). Written in place of `Outcome`, which older proxies wrote and which is
    /// still read (see [`JobQueue::open`]). New variants go last: postcard numbers them.
    OutcomeAt {
        caller: Key,
        id: JobId,
        agent: Key,
        outcome: JobOutcome,
        at_ms: u64,
    },
}

/// A job as the queue holds it.
#[derive(Debug)]
struct Entry {
    job: SignedJob,
    args: Vec<u8>,
    queued_at_ms: u64,
    state: JobState,
    /// The agent it was delivered to: from then on, the only one it goes to.
    agent: Option<Key>,
    detail: String,
    outcome: Option<JobOutcome>,
    /// When it became final, for retention.
    final_at_ms: u64,
    /// Refusals by agents for reasons of their own, and when it may be delivered again.
    refusals: u32,
    retry_at_ms: u64,
    /// The agents that refused it for a reason of their own, passed over while another
    /// can take it. Memory only (at most [`MAX_JOB_REFUSALS`]): after a restart they are
    /// simply tried again.
    refused_by: Vec<Key>,
}

impl Entry {
    fn caller(&self) -> Key {
        Key::from(*self.job.job().caller.key())
    }

    fn bytes(&self) -> usize {
        self.job.bytes().len() + self.args.len() + outcome_bytes(&self.outcome)
    }

    fn info(&self) -> JobInfo {
        let j = self.job.job();
        JobInfo {
            id: j.request_id.0,
            mission: j.mission.to_string(),
            function: j.function.to_string(),
            for_agent: j.agent.map(|a| Key::from(*a.key())),
            agent: self.agent,
            state: self.state,
            detail: self.detail.clone(),
            queued_at_ms: self.queued_at_ms,
            expires_at_ms: j.expires_at.0,
            keep_result: j.keep_result,
        }
    }
}

fn outcome_bytes(o: &Option<JobOutcome>) -> usize {
    match o {
        Some(JobOutcome::Ran { output, signed, .. }) => output.len() + signed.len(),
        Some(JobOutcome::Refused(r)) => r.message.len(),
        None => 0,
    }
}

/// Why a push was refused. Each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("the job is not a valid signed job: {0}")]
    Malformed(String),
    #[error("the job is signed by another key than the one that sent it; push your own jobs")]
    NotYours,
    #[error("{0}")]
    Lifetime(String),
    #[error("the job has already expired; push it again with a later --expires")]
    Expired,
    #[error("the arguments are not the ones the job was signed with")]
    ArgsMismatch,
    #[error("the arguments are {len} bytes; a queued call takes at most {max}")]
    ArgsTooLarge { len: usize, max: usize },
    #[error("this job is already queued (request id {0})")]
    Duplicate(RequestId),
    /// A bound was hit: who, how many, since when.
    #[error(
        "queue full for {whose}: {count} jobs waiting, the oldest queued {oldest_ago} ago (expires in \
         {oldest_expires_in}); wait for them to run or expire, or check them with `wtd jobs`"
    )]
    Full {
        whose: String,
        count: usize,
        oldest_ago: String,
        oldest_expires_in: String,
    },
    #[error(
        "the proxy's queue holds {bytes} bytes of jobs, as much as it keeps; wait for some to run or expire"
    )]
    FullBytes { bytes: usize },
    /// The owner's byte share is used up, by waiting jobs and kept results.
    #[error(
        "queue full for the owner {owner}: her jobs hold {bytes} bytes of the {max} this proxy keeps for her \
         ({waiting} waiting, {kept} finished with their results kept for {keep_for}); wait for them to run, \
         or for old results to go, or ask the proxy's operator to raise her max_bytes in [[jobs.owner]]"
    )]
    OwnerBytes {
        owner: String,
        bytes: usize,
        max: usize,
        waiting: usize,
        kept: usize,
        keep_for: String,
    },
    #[error("the proxy could not store the job ({0}); try again later")]
    Store(String),
}

/// One owner's share of the queue: the jobs under her authority, from every caller
/// (`[jobs]` and `[[jobs.owner]]` in proxy.toml).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OwnerRetention {
    /// Jobs waiting (queued, delivered or running) at once.
    pub max_waiting: usize,
    /// Bytes held: waiting jobs with their arguments, and the outputs kept for `wtd
    /// result`. A push over it is refused; an output over it is not kept (and its job's
    /// detail says so).
    pub max_bytes: usize,
    /// How long a finished (done, failed, expired, refused) job is listed and its result
    /// kept.
    pub keep_finished: std::time::Duration,
}

impl Default for OwnerRetention {
    fn default() -> Self {
        OwnerRetention {
            max_waiting: MAX_JOBS_PER_OWNER,
            max_bytes: MAX_JOB_BYTES_PER_OWNER,
            keep_finished: JOB_RETENTION,
        }
    }
}

/// How many jobs may wait at once (queued, delivered or running), by whom, and how much
/// is kept per owner and for how long.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobLimits {
    pub per_caller: usize,
    /// Every owner's share, unless `owners` gives her another.
    pub per_owner: OwnerRetention,
    /// Owners with a share of their own (`[[jobs.owner]]`).
    pub owners: std::collections::HashMap<wtd_keys::OwnerKey, OwnerRetention>,
    pub total: usize,
    /// Bytes of jobs, arguments and kept outputs.
    pub bytes: usize,
}

impl JobLimits {
    /// The share of `owner`.
    pub fn of(&self, owner: &wtd_keys::OwnerKey) -> OwnerRetention {
        self.owners.get(owner).copied().unwrap_or(self.per_owner)
    }
}

impl Default for JobLimits {
    fn default() -> Self {
        JobLimits {
            per_caller: MAX_JOBS_PER_CALLER,
            per_owner: OwnerRetention::default(),
            owners: std::collections::HashMap::new(),
            total: MAX_JOBS,
            bytes: MAX_QUEUE_BYTES,
        }
    }
}

/// The proxy's jobs, in memory and on disk.
#[derive(Debug)]
pub struct JobQueue {
    limits: JobLimits,
    file: RecordFile,
    jobs: BTreeMap<([u8; 32], JobId), Entry>,
    /// Bytes of jobs, arguments and outcomes held (what `MAX_QUEUE_BYTES` bounds).
    bytes: usize,
}

/// What opening the queue found, for the log.
#[derive(Debug, Default)]
pub struct QueueReport {
    pub jobs: usize,
    pub torn_tail_bytes: u64,
    /// Records that did not decode or name no known job (skipped, never fatal).
    pub skipped: usize,
    /// Jobs that were out for delivery when the proxy stopped, queued again.
    pub requeued: usize,
}

impl JobQueue {
    /// Opens (creating if absent) the queue in `dir/jobs.log`. Jobs that were delivered but
    /// not answered are queued again for the agent they went to.
    pub fn open(dir: &Path, limits: JobLimits, now_ms: u64) -> anyhow::Result<(JobQueue, QueueReport)> {
        wtd_store::atomic::ensure_dir(dir, 0o700)?;
        let (file, records, opened) = RecordFile::open(&dir.join("jobs.log"), MAGIC, MAX_RECORD)?;
        let mut q = JobQueue {
            limits,
            file,
            jobs: BTreeMap::new(),
            bytes: 0,
        };
        let mut report = QueueReport {
            torn_tail_bytes: opened.torn_tail_bytes,
            ..QueueReport::default()
        };
        for bytes in &records {
            match wtd_wire::codec::decode_with_limit::<Change>(bytes, MAX_RECORD) {
                Ok(change) => {
                    if !q.apply(change) {
                        report.skipped += 1;
                    }
                }
                Err(_) => report.skipped += 1,
            }
        }
        for e in q.jobs.values_mut() {
            if matches!(e.state, JobState::Delivered | JobState::Running) {
                e.state = JobState::Queued;
                report.requeued += 1;
            }
            if e.state.is_final() && e.final_at_ms == 0 {
                // Finished at an unknown time (an `Outcome` written by an older proxy):
                // count from its expiry, by which it had finished, or from now if that
                // is sooner. Records written now carry the time (`OutcomeAt`).
                e.final_at_ms = e.job.job().expires_at.0.min(now_ms);
            }
        }
        q.bytes = q.jobs.values().map(Entry::bytes).sum();
        q.sweep(now_ms);
        report.jobs = q.jobs.len();
        // Start from a compact file: only what is live, as of now.
        q.compact()
            .map_err(|e| anyhow::anyhow!("{}: {e}", dir.join("jobs.log").display()))?;
        Ok((q, report))
    }

    /// Applies one change in memory. False if it names no known job (or is a bad job).
    fn apply(&mut self, change: Change) -> bool {
        match change {
            Change::Queued {
                job,
                args,
                queued_at_ms,
            } => {
                // Stored only after it verified; one that no longer does was altered on disk.
                let Ok(job) = SignedJob::decode(&job) else {
                    return false;
                };
                let key = (*job.job().caller.key().as_bytes(), job.job().request_id.0);
                self.jobs.insert(
                    key,
                    Entry {
                        job,
                        args,
                        queued_at_ms,
                        state: JobState::Queued,
                        agent: None,
                        detail: String::new(),
                        outcome: None,
                        final_at_ms: 0,
                        refusals: 0,
                        retry_at_ms: 0,
                        refused_by: Vec::new(),
                    },
                );
                true
            }
            Change::State {
                caller,
                id,
                state,
                agent,
                detail,
            } => {
                let Some(e) = self.jobs.get_mut(&(caller.0, id)) else {
                    return false;
                };
                e.state = state;
                if agent.is_some() {
                    e.agent = agent;
                }
                e.detail = detail;
                true
            }
            Change::Outcome {
                caller,
                id,
                agent,
                outcome,
            } => self.apply_outcome(caller, id, agent, outcome, 0),
            Change::OutcomeAt {
                caller,
                id,
                agent,
                outcome,
                at_ms,
            } => self.apply_outcome(caller, id, agent, outcome, at_ms),
            Change::Retry {
                caller,
                id,
                detail,
                refusals,
                retry_at_ms,
            } => {
                let Some(e) = self.jobs.get_mut(&(caller.0, id)) else {
                    return false;
                };
                e.state = JobState::Queued;
                e.agent = None;
                e.detail = detail;
                e.refusals = refusals;
                e.retry_at_ms = retry_at_ms;
                true
            }
        }
    }

    /// Applies an outcome that arrived at `at_ms` (0: unknown, see [`Change::OutcomeAt`]).
    fn apply_outcome(&mut self, caller: Key, id: JobId, agent: Key, outcome: JobOutcome, at_ms: u64) -> bool {
        let Some(e) = self.jobs.get_mut(&(caller.0, id)) else {
            return false;
        };
        e.agent = Some(agent);
        (e.state, e.detail) = match &outcome {
            JobOutcome::Ran { status, detail, .. } => (
                if *status == Status::Ok {
                    JobState::Done
                } else {
                    JobState::Failed
                },
                detail.clone(),
            ),
            JobOutcome::Refused(r) => (JobState::Refused, r.message.clone()),
        };
        e.outcome = Some(outcome);
        e.final_at_ms = at_ms;
        true
    }

    fn write(&mut self, change: &Change) -> Result<(), PushError> {
        let bytes = wtd_wire::encode(change);
        self.file
            .append(&bytes)
            .map_err(|e| PushError::Store(e.to_string()))
    }

    /// Writes the change, then applies it: nothing is acted on before it is on disk.
    fn commit(&mut self, change: Change) -> Result<(), PushError> {
        self.write(&change)?;
        let key = match &change {
            Change::Queued { .. } => None,
            Change::State { caller, id, .. }
            | Change::Outcome { caller, id, .. }
            | Change::OutcomeAt { caller, id, .. }
            | Change::Retry { caller, id, .. } => Some((caller.0, *id)),
        };
        let before = key.and_then(|k| self.jobs.get(&k)).map_or(0, Entry::bytes);
        let queued = matches!(change, Change::Queued { .. });
        self.apply(change);
        if queued {
            self.bytes = self.jobs.values().map(Entry::bytes).sum();
        } else {
            let after = key.and_then(|k| self.jobs.get(&k)).map_or(0, Entry::bytes);
            self.bytes = self.bytes + after - before;
        }
        if self.file.len() as usize > 2 * self.bytes + 1024 * 1024 {
            self.compact()?;
        }
        Ok(())
    }

    /// Rewrites the file from what is live (atomically).
    fn compact(&mut self) -> Result<(), PushError> {
        let mut records = Vec::new();
        for e in self.jobs.values() {
            records.push(wtd_wire::encode(&Change::Queued {
                job: e.job.bytes().to_vec(),
                args: e.args.clone(),
                queued_at_ms: e.queued_at_ms,
            }));
            if e.state != JobState::Queued || e.agent.is_some() {
                records.push(wtd_wire::encode(&Change::State {
                    caller: e.caller(),
                    id: e.job.job().request_id.0,
                    state: e.state,
                    agent: e.agent,
                    detail: e.detail.clone(),
                }));
            }
            if e.refusals > 0 && e.state == JobState::Queued && e.agent.is_none() {
                records.push(wtd_wire::encode(&Change::Retry {
                    caller: e.caller(),
                    id: e.job.job().request_id.0,
                    detail: e.detail.clone(),
                    refusals: e.refusals,
                    retry_at_ms: e.retry_at_ms,
                }));
            }
            if let (Some(outcome), Some(agent)) = (&e.outcome, e.agent) {
                records.push(wtd_wire::encode(&Change::OutcomeAt {
                    caller: e.caller(),
                    id: e.job.job().request_id.0,
                    agent,
                    outcome: outcome.clone(),
                    at_ms: e.final_at_ms,
                }));
            }
        }
        self.file
            .rewrite(records.iter().map(Vec::as_slice))
            .map_err(|e| PushError::Store(e.to_string()))
    }

    /// Queues a job pushed by `peer` (the key its connection proved). Checks, in order: it
    /// decodes and its signature verifies; `peer` signed it; its lifetime is allowed and
    /// it has not expired; the arguments are the signed ones and not too large; it is not
    /// queued already; the bounds per caller, per owner, in all and in bytes. Then it is
    /// stored (fsynced) and its expiry returned.
    pub fn push(&mut self, peer: &UserKey, job: &[u8], args: Vec<u8>, now_ms: u64) -> Result<u64, PushError> {
        self.sweep(now_ms);
        let signed = SignedJob::decode(job).map_err(|e| PushError::Malformed(e.to_string()))?;
        let j = signed.job();
        if j.caller != *peer {
            return Err(PushError::NotYours);
        }
        check_lifetime(j).map_err(|e| PushError::Lifetime(e.to_string()))?;
        if j.expires_at.0 <= now_ms {
            return Err(PushError::Expired);
        }
        if args.len() > MAX_JOB_ARGS {
            return Err(PushError::ArgsTooLarge {
                len: args.len(),
                max: MAX_JOB_ARGS,
            });
        }
        if j.args_hash != wtd_keys::call::args_hash(&args) {
            return Err(PushError::ArgsMismatch);
        }
        if self.jobs.contains_key(&(*peer.key().as_bytes(), j.request_id.0)) {
            return Err(PushError::Duplicate(j.request_id));
        }
        let waiting = |e: &&Entry| !e.state.is_final();
        let of_caller: Vec<&Entry> = self
            .jobs
            .values()
            .filter(waiting)
            .filter(|e| e.job.job().caller == *peer)
            .collect();
        if of_caller.len() >= self.limits.per_caller {
            return Err(full("your key", &of_caller, now_ms));
        }
        let share = self.limits.of(&j.owner);
        let of_owner: Vec<&Entry> = self
            .jobs
            .values()
            .filter(waiting)
            .filter(|e| e.job.job().owner == j.owner)
            .collect();
        if of_owner.len() >= share.max_waiting {
            return Err(full(
                &format!("the owner {}", j.owner.key().short()),
                &of_owner,
                now_ms,
            ));
        }
        let owner_bytes = self.owner_bytes(&j.owner);
        if owner_bytes + job.len() + args.len() > share.max_bytes {
            return Err(PushError::OwnerBytes {
                owner: j.owner.key().short(),
                bytes: owner_bytes,
                max: share.max_bytes,
                waiting: of_owner.len(),
                kept: self.kept_results(&j.owner),
                keep_for: human_duration(share.keep_finished.as_millis() as u64),
            });
        }
        let all: Vec<&Entry> = self.jobs.values().filter(waiting).collect();
        if all.len() >= self.limits.total {
            return Err(full("this proxy", &all, now_ms));
        }
        if self.bytes + job.len() + args.len() > self.limits.bytes {
            return Err(PushError::FullBytes { bytes: self.bytes });
        }
        let expires = j.expires_at.0;
        self.commit(Change::Queued {
            job: job.to_vec(),
            args,
            queued_at_ms: now_ms,
        })?;
        Ok(expires)
    }

    /// Bytes held under `owner`'s authority: waiting jobs and kept results.
    fn owner_bytes(&self, owner: &wtd_keys::OwnerKey) -> usize {
        self.jobs
            .values()
            .filter(|e| e.job.job().owner == *owner)
            .map(Entry::bytes)
            .sum()
    }

    /// Finished jobs of `owner` still listed.
    fn kept_results(&self, owner: &wtd_keys::OwnerKey) -> usize {
        self.jobs
            .values()
            .filter(|e| e.job.job().owner == *owner && e.state.is_final())
            .count()
    }

    /// Marks expired every waiting job past its expiry, and forgets final jobs older than
    /// the retention. Only memory: an expiry needs no record (it is recomputed on open).
    pub fn sweep(&mut self, now_ms: u64) {
        for e in self.jobs.values_mut() {
            if matches!(e.state, JobState::Queued) && e.job.job().expires_at.0 < now_ms {
                e.state = JobState::Expired;
                e.final_at_ms = e.job.job().expires_at.0;
                e.detail = match e.agent {
                    Some(_) => "it was delivered, but its agent went away before answering, and did not come back before the job expired; it may or may not have run".into(),
                    None => format!(
                        "no agent that offers {}/{} came online before it expired",
                        e.job.job().mission,
                        e.job.job().function
                    ),
                };
            }
            if e.state.is_final() && e.final_at_ms == 0 {
                e.final_at_ms = now_ms;
            }
        }
        let before = self.jobs.len();
        let limits = &self.limits;
        self.jobs.retain(|_, e| {
            let keep = limits.of(&e.job.job().owner).keep_finished.as_millis() as u64;
            !(e.state.is_final() && now_ms.saturating_sub(e.final_at_ms) > keep)
        });
        if self.jobs.len() != before {
            self.bytes = self.jobs.values().map(Entry::bytes).sum();
        }
    }

    /// Claims up to `room` queued jobs for agent `me`, one of the online job agents
    /// `peers` (each with its advert, load and protocol version): [`JobQueue::pick`], then
    /// [`JobQueue::deliver`]. The second value says whether jobs this agent was best for
    /// were left for lack of room: other agents should look again.
    pub fn claim(
        &mut self,
        me: &Key,
        peers: &[Peer<'_>],
        room: usize,
        now_ms: u64,
    ) -> (Vec<JobDelivery>, bool) {
        let picked = self.pick(me, peers, room, now_ms);
        self.deliver(me, picked)
    }

    /// Which queued jobs agent `me` should take now, oldest first, without changing
    /// anything (no disk, so the caller may hold the roster lock for it): those it suits
    /// and is the best suitable agent online for (see [`best_for`]), up to `room`.
    pub fn pick(&mut self, me: &Key, peers: &[Peer<'_>], room: usize, now_ms: u64) -> Picked {
        self.sweep(now_ms);
        let Some(my) = peers.iter().find(|p| p.id == *me) else {
            return Picked::default();
        };
        let mut busy: std::collections::HashMap<Key, usize> = std::collections::HashMap::new();
        for e in self.jobs.values() {
            if let (Some(a), JobState::Delivered | JobState::Running) = (e.agent, e.state) {
                *busy.entry(a).or_default() += 1;
            }
        }
        let free: Vec<&Peer<'_>> = peers
            .iter()
            .filter(|p| busy.get(&p.id).copied().unwrap_or(0) < MAX_JOBS_IN_FLIGHT_PER_AGENT)
            .collect();
        let mut mine: Vec<(u64, [u8; 32], JobId)> = self
            .jobs
            .iter()
            .filter(|(_, e)| e.state == JobState::Queued && e.retry_at_ms <= now_ms)
            .filter(|(_, e)| suits(e, my))
            .filter(|(_, e)| best_for(e, &free).is_none_or(|best| best == *me))
            .map(|(k, e)| (e.queued_at_ms, k.0, k.1))
            .collect();
        mine.sort();
        let left_over = mine.len() > room;
        Picked {
            jobs: mine.into_iter().take(room).map(|(_, c, id)| (c, id)).collect(),
            left_over,
        }
    }

    /// Marks the `picked` jobs delivered to `me` (fsynced, each before it is returned to
    /// send), skipping any that is no longer queued.
    pub fn deliver(&mut self, me: &Key, picked: Picked) -> (Vec<JobDelivery>, bool) {
        let mut out = Vec::new();
        for (caller, id) in picked.jobs {
            if self
                .jobs
                .get(&(caller, id))
                .is_none_or(|e| e.state != JobState::Queued)
            {
                continue;
            }
            let change = Change::State {
                caller: Key(caller),
                id,
                state: JobState::Delivered,
                agent: Some(*me),
                detail: String::new(),
            };
            if let Err(e) = self.commit(change) {
                log::warn!("could not mark a job delivered, so it is not sent: {e}");
                break;
            }
            let e = &self.jobs[&(caller, id)];
            out.push(JobDelivery {
                job: e.job.bytes().to_vec(),
                args: e.args.clone(),
            });
        }
        let claimed_some = !out.is_empty();
        (out, picked.left_over && claimed_some)
    }

    /// Jobs delivered to `agent` and not answered yet.
    pub fn in_flight(&self, agent: &Key) -> usize {
        self.jobs
            .values()
            .filter(|e| e.agent == Some(*agent) && matches!(e.state, JobState::Delivered | JobState::Running))
            .count()
    }

    /// An update from `agent` about a job it was delivered. Ignored (false) if it names
    /// no job delivered to that agent, or one already final.
    pub fn update(&mut self, agent: &Key, u: JobUpdate, now_ms: u64) -> bool {
        let key = (u.caller.0, u.id);
        let Some(e) = self.jobs.get(&key) else {
            return false;
        };
        if e.agent != Some(*agent) || e.state.is_final() {
            return false;
        }
        let keep = e.job.job().keep_result;
        let owner = e.job.job().owner;
        let share = self.limits.of(&owner);
        let owner_bytes = self.owner_bytes(&owner);
        let change = match u.outcome {
            None => Change::State {
                caller: u.caller,
                id: u.id,
                state: JobState::Running,
                agent: None,
                detail: String::new(),
            },
            Some(JobOutcome::Refused(r)) if AGENT_REASONS.contains(&r.kind.as_str()) && e.refusals + 1 < MAX_JOB_REFUSALS => {
                Change::Retry {
                    caller: u.caller,
                    id: u.id,
                    detail: format!(
                        "an agent ({}) refused it for a reason of its own, so it waits for another or a retry: {}",
                        agent_short(agent),
                        r.message
                    ),
                    refusals: e.refusals + 1,
                    retry_at_ms: now_ms + JOB_RETRY_AFTER.as_millis() as u64,
                }
            }
            Some(mut outcome) => {
                if let JobOutcome::Ran { output, detail, .. } = &mut outcome {
                    if !keep {
                        // Fire and forget: the state is kept, the output is not.
                        output.clear();
                    } else if output.len() > MAX_JOB_OUTPUT {
                        *detail = format!(
                            "{detail} (its {}-byte output is more than the proxy keeps, {MAX_JOB_OUTPUT} bytes)",
                            output.len()
                        );
                        output.clear();
                    } else if owner_bytes + output.len() > share.max_bytes {
                        *detail = format!(
                            "{detail} (its {}-byte output was not kept: the jobs of the owner {} hold {owner_bytes} \
                             bytes, and this proxy keeps at most {} for her)",
                            output.len(),
                            owner.key().short(),
                            share.max_bytes
                        );
                        output.clear();
                    } else if self.bytes + output.len() > self.limits.bytes {
                        *detail = format!(
                            "{detail} (its {}-byte output was not kept: the proxy holds {} bytes of jobs, as much as it keeps)",
                            output.len(),
                            self.bytes
                        );
                        output.clear();
                    }
                }
                Change::OutcomeAt {
                    caller: u.caller,
                    id: u.id,
                    agent: *agent,
                    outcome,
                    at_ms: now_ms,
                }
            }
        };
        let retry = matches!(change, Change::Retry { .. });
        match self.commit(change) {
            Ok(()) => {
                if retry {
                    if let Some(e) = self.jobs.get_mut(&key) {
                        if !e.refused_by.contains(agent) && e.refused_by.len() < MAX_JOB_REFUSALS as usize {
                            e.refused_by.push(*agent);
                        }
                    }
                }
                true
            }
            Err(e) => {
                log::warn!("could not store a job's outcome: {e}; it is delivered again later");
                false
            }
        }
    }

    /// An agent's session ended: what was out to it waits for it to come back.
    pub fn agent_left(&mut self, agent: &Key) {
        for e in self.jobs.values_mut() {
            if e.agent == Some(*agent) && matches!(e.state, JobState::Delivered | JobState::Running) {
                // Memory only: on disk it stays delivered, which reopening treats the same.
                e.state = JobState::Queued;
            }
        }
    }

    /// The jobs of `caller`, newest first.
    pub fn list(&mut self, caller: &UserKey, now_ms: u64) -> Vec<JobInfo> {
        self.sweep(now_ms);
        let mut all: Vec<JobInfo> = self
            .jobs
            .values()
            .filter(|e| e.job.job().caller == *caller)
            .map(Entry::info)
            .collect();
        all.sort_by_key(|j| std::cmp::Reverse(j.queued_at_ms));
        all
    }

    /// One job of `caller`, with its outcome if it is final and kept.
    pub fn answer(&mut self, caller: &UserKey, id: &JobId, now_ms: u64) -> Option<JobAnswer> {
        self.sweep(now_ms);
        let e = self.jobs.get(&(*caller.key().as_bytes(), *id))?;
        Some(JobAnswer {
            info: e.info(),
            job: e.job.bytes().to_vec(),
            outcome: e.outcome.clone().filter(|_| e.state.is_final()),
        })
    }

    /// Whether a job refused earlier is due for another delivery at `now_ms` (so the
    /// sweeper wakes the agent sessions).
    pub fn retry_due(&self, now_ms: u64) -> bool {
        self.jobs
            .values()
            .any(|e| e.state == JobState::Queued && e.retry_at_ms != 0 && e.retry_at_ms <= now_ms)
    }

    /// Waiting (not final) jobs, for metrics.
    pub fn waiting(&self) -> usize {
        self.jobs.values().filter(|e| !e.state.is_final()).count()
    }
}

/// Refusals that say something about the agent, not about the caller's right: the job did
/// not run, and another agent (or the same one a little later: an owner adopting it, a
/// mission being installed) may take it.
const AGENT_REASONS: &[&str] = &[
    "not_adopted",
    "disowned",
    "not_for_this_agent",
    "issuer_not_owner",
    "unknown_function",
    "busy",
    "store",
];

/// What [`JobQueue::pick`] chose, for [`JobQueue::deliver`].
#[derive(Debug, Default)]
pub struct Picked {
    /// (caller, id) of each job, oldest first.
    jobs: Vec<([u8; 32], JobId)>,
    /// Jobs it was best for were left over for lack of room.
    left_over: bool,
}

/// An online agent as the queue sees it when it hands out jobs: what it offers and claims
/// (its advert), how busy and hot it is (its last heartbeat), and which protocol version
/// its session speaks (what jobs it can check).
#[derive(Clone, Copy, Debug)]
pub struct Peer<'a> {
    pub id: Key,
    pub advert: &'a Advert,
    pub load: &'a Load,
    pub version: u16,
}

/// Whether `peer` may be handed this job at all: it speaks jobs (and selectors, for a job
/// with one); it is the agent the job names, and the one it went to before, if any; it
/// offers the function; it names the job's owner (it runs jobs under that owner's
/// authority only); it has the tag the caller signed, if any.
fn suits(e: &Entry, peer: &Peer<'_>) -> bool {
    let j = e.job.job();
    let version_ok = if j.selector.is_default() {
        peer.version >= JOBS_VERSION
    } else {
        peer.version >= JOB_SELECTORS_VERSION
    };
    version_ok
        && e.agent.is_none_or(|a| a == peer.id)
        && j.agent.is_none_or(|a| Key::from(*a.key()) == peer.id)
        && peer.advert.missions.iter().any(|m| {
            m.name == j.mission.as_str() && m.functions.iter().any(|f| f.name == j.function.as_str())
        })
        && peer.advert.owners.contains(&Key::from(*j.owner.key()))
        && j.selector
            .tag
            .as_ref()
            .is_none_or(|t| peer.advert.tags.iter().any(|have| have == t.as_str()))
}

/// The agent among `free` (online, with a free slot) a job should go to now: `None` if none
/// suits it (then whoever suits it and asks may take it: it has no better place). A job
/// bound to one agent (named by its caller, or delivered there before) has only that one.
/// Otherwise by the signed order, as live dispatch orders candidates: throttled Pis last;
/// then least loaded (load average, then CPU), or coolest (Pis with no sensor after those
/// with one, then the less loaded); ties by id, so every session computes the same answer.
/// Agents that refused the job for a reason of their own come after every other.
fn best_for(e: &Entry, free: &[&Peer<'_>]) -> Option<Key> {
    let order = e.job.job().selector.order;
    let mut cands: Vec<&&Peer<'_>> = free.iter().filter(|p| suits(e, p)).collect();
    let key = |p: &Peer<'_>| {
        let t = p.load.temperature_c.filter(|t| t.is_finite());
        (
            e.refused_by.contains(&p.id),
            p.load.throttled_now(),
            order == wtd_keys::job::Order::Coolest && t.is_none(),
            if order == wtd_keys::job::Order::Coolest {
                t.unwrap_or(0.0)
            } else {
                0.0
            },
        )
    };
    cands.sort_by(|a, b| {
        let (ka, kb) = (key(a), key(b));
        ka.0.cmp(&kb.0)
            .then(ka.1.cmp(&kb.1))
            .then(ka.2.cmp(&kb.2))
            .then(ka.3.total_cmp(&kb.3))
            .then(a.load.load1.total_cmp(&b.load.load1))
            .then(a.load.cpu_percent.total_cmp(&b.load.cpu_percent))
            .then(a.id.0.cmp(&b.id.0))
    });
    cands.first().map(|p| p.id)
}

fn agent_short(k: &Key) -> String {
    let key: Result<wtd_keys::PublicId, _> = k.parse();
    key.map_or_else(|_| "?".into(), |k| k.short())
}

fn full(whose: &str, jobs: &[&Entry], now_ms: u64) -> PushError {
    let oldest = jobs.iter().min_by_key(|e| e.queued_at_ms);
    PushError::Full {
        whose: whose.to_string(),
        count: jobs.len(),
        oldest_ago: oldest.map_or_else(String::new, |e| {
            human_duration(now_ms.saturating_sub(e.queued_at_ms))
        }),
        oldest_expires_in: oldest.map_or_else(String::new, |e| {
            human_duration(Timestamp(now_ms).until(e.job.job().expires_at))
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wtd_keys::job::Job;
    use wtd_keys::{AgentId, FunctionName, MissionName, OwnerKey, SecretKey};
    use wtd_wire::call::Refused;

    const T0: u64 = 1_700_000_000_000;
    const HOUR: u64 = 3_600_000;

    fn key(n: u8) -> SecretKey {
        SecretKey::from_seed(&[n; 32])
    }

    fn job_for(caller: &SecretKey, owner: u8, agent: Option<AgentId>, keep: bool) -> Vec<u8> {
        Job::new(
            UserKey(caller.public()),
            agent,
            MissionName::new("demo").unwrap(),
            FunctionName::new("echo").unwrap(),
            b"{}",
            Timestamp(T0),
            Timestamp(T0 + HOUR),
            keep,
            OwnerKey(key(owner).public()),
        )
        .sign(caller)
        .bytes()
        .to_vec()
    }

    fn id_of(job: &[u8]) -> JobId {
        SignedJob::decode(job).unwrap().job().request_id.0
    }

    /// An agent's advert: it names owners 1 and 2, and offers demo/echo if `offers`.
    fn advert(tags: &[&str], offers: bool) -> Advert {
        Advert {
            name: "pi".into(),
            owners: vec![Key::from(key(1).public()), Key::from(key(2).public())],
            missions: if offers {
                vec![wtd_wire::MissionInfo {
                    name: "demo".into(),
                    version: "1".into(),
                    description: String::new(),
                    functions: vec![wtd_wire::FunctionInfo {
                        name: "echo".into(),
                        description: String::new(),
                        idempotent: false,
                    }],
                }]
            } else {
                vec![]
            },
            tags: tags.iter().map(|t| t.to_string()).collect(),
            model: None,
            software: String::new(),
            warnings: vec![],
            enrollment: None,
        }
    }

    fn peer<'a>(id: Key, advert: &'a Advert, load: &'a Load, version: u16) -> Peer<'a> {
        Peer {
            id,
            advert,
            load,
            version,
        }
    }

    fn load(load1: f32) -> Load {
        Load {
            load1,
            ..Load::default()
        }
    }

    /// A claim by `agent` when it is the only agent online.
    fn solo(q: &mut JobQueue, agent: &Key, offers: bool, room: usize, now: u64) -> Vec<JobDelivery> {
        let (a, l) = (advert(&[], offers), Load::default());
        let peer = Peer {
            id: *agent,
            advert: &a,
            load: &l,
            version: wtd_wire::PROTOCOL_VERSION,
        };
        q.claim(agent, &[peer], room, now).0
    }

    #[test]
    fn a_job_waits_is_claimed_once_and_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let bob = key(2);
        let (pi, other) = (Key([10; 32]), Key([11; 32]));
        let (mut q, _) = JobQueue::open(dir.path(), JobLimits::default(), T0).unwrap();
        let job = job_for(&bob, 1, None, true);
        assert_eq!(
            q.push(&UserKey(bob.public()), &job, b"{}".to_vec(), T0).unwrap(),
            T0 + HOUR
        );
        // An agent that does not offer it gets nothing.
        assert!(solo(&mut q, &pi, false, 4, T0).is_empty());
        let sent = solo(&mut q, &pi, true, 4, T0);
        assert_eq!(sent.len(), 1);
        assert!(solo(&mut q, &pi, true, 4, T0).is_empty(), "delivered once");
        // Killed before an answer: on reopen it waits again, for the same agent only.
        drop(q);
        let (mut q, report) = JobQueue::open(dir.path(), JobLimits::default(), T0 + 1).unwrap();
        assert_eq!(report.requeued, 1);
        assert!(
            solo(&mut q, &other, true, 4, T0 + 1).is_empty(),
            "never to a second agent"
        );
        assert_eq!(solo(&mut q, &pi, true, 4, T0 + 1).len(), 1);
        let id = id_of(&job);
        let caller = Key::from(bob.public());
        // Updates from another agent are ignored.
        assert!(!q.update(
            &other,
            JobUpdate {
                id,
                caller,
                outcome: None
            },
            T0
        ));
        assert!(q.update(
            &pi,
            JobUpdate {
                id,
                caller,
                outcome: None
            },
            T0
        ));
        let outcome = JobOutcome::Ran {
            status: Status::Ok,
            output: b"{}".to_vec(),
            detail: String::new(),
            signed: vec![1],
        };
        assert!(q.update(
            &pi,
            JobUpdate {
                id,
                caller,
                outcome: Some(outcome.clone())
            },
            T0
        ));
        drop(q);
        let (mut q, _) = JobQueue::open(dir.path(), JobLimits::default(), T0 + 2).unwrap();
        let a = q.answer(&UserKey(bob.public()), &id, T0 + 2).unwrap();
        assert_eq!(a.info.state, JobState::Done);
        assert_eq!(a.outcome, Some(outcome));
        // Another caller cannot read it.
        assert!(q.answer(&UserKey(key(3).public()), &id, T0 + 2).is_none());
        // Forgotten after the retention.
        let later = T0 + 2 + JOB_RETENTION.as_millis() as u64 + 1;
        assert!(q.answer(&UserKey(bob.public()), &id, later).is_none());
    }

    fn job_with(caller: &SecretKey, selector: wtd_keys::job::JobSelector) -> Vec<u8> {
        let signed = SignedJob::decode(&job_for(caller, 1, None, true)).unwrap();
        signed
            .job()
            .clone()
            .with_selector(selector)
            .sign(caller)
            .bytes()
            .to_vec()
    }

    #[test]
    fn a_job_goes_to_the_best_suitable_agent_online() {
        use wtd_keys::job::{JobSelector, Order};
        let dir = tempfile::tempdir().unwrap();
        let bob = key(2);
        let bob_key = UserKey(bob.public());
        let (mut q, _) = JobQueue::open(dir.path(), JobLimits::default(), T0).unwrap();
        let (busy, idle, hot, old) = (Key([10; 32]), Key([11; 32]), Key([12; 32]), Key([13; 32]));
        let (plain, gpu) = (advert(&[], true), advert(&["gpu"], true));
        let (high, low) = (load(3.0), load(0.5));
        let mut throttled = load(0.1);
        throttled.throttled = Some(0x4);
        throttled.temperature_c = Some(40.0);
        let mut warm = load(2.0);
        warm.temperature_c = Some(50.0);
        let v = wtd_wire::PROTOCOL_VERSION;
        // Least loaded by default: the idle agent, not the busy one nor the throttled one
        // (least loaded of all, but slowed down now).
        let peers = [
            peer(busy, &gpu, &high, v),
            peer(idle, &plain, &low, v),
            peer(hot, &plain, &throttled, v),
        ];
        q.push(&bob_key, &job_for(&bob, 1, None, true), b"{}".to_vec(), T0)
            .unwrap();
        assert!(q.claim(&busy, &peers, 4, T0).0.is_empty());
        assert!(q.claim(&hot, &peers, 4, T0).0.is_empty());
        assert_eq!(q.claim(&idle, &peers, 4, T0).0.len(), 1);
        // With the idle agent gone, the busy one (unthrottled) is preferred to the hot one.
        let without_idle = [peers[0], peers[2]];
        q.push(&bob_key, &job_for(&bob, 1, None, true), b"{}".to_vec(), T0)
            .unwrap();
        assert!(q.claim(&hot, &without_idle, 4, T0).0.is_empty());
        assert_eq!(q.claim(&busy, &without_idle, 4, T0).0.len(), 1);
        // Alone, the throttled one serves.
        q.push(&bob_key, &job_for(&bob, 1, None, true), b"{}".to_vec(), T0)
            .unwrap();
        assert_eq!(q.claim(&hot, &peers[2..], 4, T0).0.len(), 1);

        // A tag: only the gpu agent, however loaded, and it waits while that one is away.
        let tagged = job_with(
            &bob,
            JobSelector {
                tag: Some(MissionName::new("gpu").unwrap()),
                order: Order::LeastLoaded,
            },
        );
        q.push(&bob_key, &tagged, b"{}".to_vec(), T0).unwrap();
        assert!(
            q.claim(&idle, &peers[1..], 4, T0).0.is_empty(),
            "no gpu agent online"
        );
        assert!(q.claim(&idle, &peers, 4, T0).0.is_empty());
        // An agent of protocol version 5 cannot check the tag: never given it.
        let gpu_old = [peer(old, &gpu, &low, wtd_wire::JOBS_VERSION)];
        assert!(q.claim(&old, &gpu_old, 4, T0).0.is_empty());
        assert_eq!(q.claim(&busy, &peers, 4, T0).0.len(), 1);

        // Coolest: the cooler of two unthrottled agents, a sensorless one after both.
        let coolest = job_with(
            &bob,
            JobSelector {
                tag: None,
                order: Order::Coolest,
            },
        );
        let mut cool = load(3.5);
        cool.temperature_c = Some(35.0);
        let nosensor = load(0.0);
        let peers = [
            peer(busy, &plain, &warm, v),
            peer(idle, &plain, &cool, v),
            peer(hot, &plain, &nosensor, v),
        ];
        q.push(&bob_key, &coolest, b"{}".to_vec(), T0).unwrap();
        assert!(q.claim(&hot, &peers, 4, T0).0.is_empty());
        assert!(q.claim(&busy, &peers, 4, T0).0.is_empty());
        assert_eq!(q.claim(&idle, &peers, 4, T0).0.len(), 1);

        // An agent that does not name the job's owner is never a candidate.
        let mut strange = advert(&[], true);
        strange.owners = vec![Key::from(key(9).public())];
        let peers = [peer(idle, &strange, &low, v), peer(busy, &plain, &high, v)];
        q.push(&bob_key, &job_for(&bob, 1, None, true), b"{}".to_vec(), T0)
            .unwrap();
        assert!(q.claim(&idle, &peers, 4, T0).0.is_empty());
        assert_eq!(q.claim(&busy, &peers, 4, T0).0.len(), 1);
    }

    #[test]
    fn a_full_agent_leaves_its_jobs_to_the_next_best() {
        let dir = tempfile::tempdir().unwrap();
        let bob = key(2);
        let bob_key = UserKey(bob.public());
        let (mut q, _) = JobQueue::open(dir.path(), JobLimits::default(), T0).unwrap();
        let (idle, busy) = (Key([11; 32]), Key([10; 32]));
        let a = advert(&[], true);
        let (low, high) = (load(0.1), load(5.0));
        let v = wtd_wire::PROTOCOL_VERSION;
        let peers = [peer(idle, &a, &low, v), peer(busy, &a, &high, v)];
        for _ in 0..MAX_JOBS_IN_FLIGHT_PER_AGENT + 2 {
            q.push(&bob_key, &job_for(&bob, 1, None, true), b"{}".to_vec(), T0)
                .unwrap();
        }
        assert!(q.claim(&busy, &peers, 4, T0).0.is_empty());
        let (sent, left_over) = q.claim(&idle, &peers, MAX_JOBS_IN_FLIGHT_PER_AGENT, T0);
        assert_eq!(sent.len(), MAX_JOBS_IN_FLIGHT_PER_AGENT);
        assert!(left_over, "the others are told to look again");
        // The idle agent is full: the rest go to the busy one.
        assert_eq!(q.claim(&busy, &peers, 4, T0).0.len(), 2);
    }

    #[test]
    fn an_agent_that_refused_a_job_is_passed_over_while_another_can_take_it() {
        let dir = tempfile::tempdir().unwrap();
        let bob = key(2);
        let bob_key = UserKey(bob.public());
        let (mut q, _) = JobQueue::open(dir.path(), JobLimits::default(), T0).unwrap();
        let (idle, busy) = (Key([11; 32]), Key([10; 32]));
        let a = advert(&[], true);
        let (low, high) = (load(0.1), load(5.0));
        let v = wtd_wire::PROTOCOL_VERSION;
        let both = [peer(idle, &a, &low, v), peer(busy, &a, &high, v)];
        let job = job_for(&bob, 1, None, true);
        q.push(&bob_key, &job, b"{}".to_vec(), T0).unwrap();
        assert_eq!(q.claim(&idle, &both, 4, T0).0.len(), 1);
        q.update(
            &idle,
            JobUpdate {
                id: id_of(&job),
                caller: Key::from(bob.public()),
                outcome: Some(JobOutcome::Refused(Refused {
                    kind: "not_adopted".into(),
                    message: "not adopted yet".into(),
                    retry_after_ms: None,
                })),
            },
            T0,
        );
        let later = T0 + JOB_RETRY_AFTER.as_millis() as u64;
        // The idle agent refused it: the busy one gets it, though more loaded.
        assert!(q.claim(&idle, &both, 4, later).0.is_empty());
        assert_eq!(q.claim(&busy, &both, 4, later).0.len(), 1);
    }

    #[test]
    fn an_owner_s_own_share_bounds_her_jobs_and_how_long_they_are_kept() {
        use std::time::Duration;
        let dir = tempfile::tempdir().unwrap();
        let bob = key(2);
        let bob_key = UserKey(bob.public());
        let caller = Key::from(bob.public());
        let (alice, carol) = (OwnerKey(key(1).public()), OwnerKey(key(2).public()));
        let mut limits = JobLimits::default();
        // Alice: two jobs waiting at most, 100 KiB, finished jobs kept an hour; Carol:
        // 100 KiB, and the default count and retention (a day).
        limits.owners.insert(
            alice,
            OwnerRetention {
                max_waiting: 2,
                max_bytes: 100 * 1024,
                keep_finished: Duration::from_secs(3600),
            },
        );
        limits.owners.insert(
            carol,
            OwnerRetention {
                max_bytes: 100 * 1024,
                ..OwnerRetention::default()
            },
        );
        let (mut q, _) = JobQueue::open(dir.path(), limits.clone(), T0).unwrap();
        let first = job_for(&bob, 1, None, true);
        q.push(&bob_key, &first, b"{}".to_vec(), T0).unwrap();
        // (Later: the claim below, oldest first, takes `first`.)
        q.push(&bob_key, &job_for(&bob, 1, None, true), b"{}".to_vec(), T0 + 1)
            .unwrap();
        let err = q
            .push(&bob_key, &job_for(&bob, 1, None, true), b"{}".to_vec(), T0 + 1)
            .unwrap_err();
        assert!(
            err.to_string().contains(&format!(
                "queue full for the owner {}: 2 jobs waiting",
                alice.key().short()
            )),
            "{err}"
        );
        // Carol's jobs are not bounded by Alice's share.
        for _ in 0..3 {
            q.push(&bob_key, &job_for(&bob, 2, None, true), b"{}".to_vec(), T0 + 1)
                .unwrap();
        }
        // A big output over Alice's bytes is not kept, and her job says why.
        assert_eq!(solo(&mut q, &Key([10; 32]), true, 1, T0).len(), 1);
        let big = vec![b'x'; 120 * 1024];
        assert!(q.update(
            &Key([10; 32]),
            JobUpdate {
                id: id_of(&first),
                caller,
                outcome: Some(JobOutcome::Ran {
                    status: Status::Ok,
                    output: big,
                    detail: String::new(),
                    signed: vec![1],
                }),
            },
            T0,
        ));
        let a = q.answer(&bob_key, &id_of(&first), T0).unwrap();
        assert!(a.info.detail.contains("output was not kept"), "{}", a.info.detail);
        assert!(
            a.info.detail.contains("at most 102400 for her"),
            "{}",
            a.info.detail
        );
        assert!(matches!(a.outcome, Some(JobOutcome::Ran { output, .. }) if output.is_empty()));
        // Pushes over her bytes are refused with what holds them.
        let fat = b"\""
            .iter()
            .chain(vec![b'y'; 60 * 1024].iter())
            .chain(b"\"")
            .copied()
            .collect::<Vec<u8>>();
        let fat_job = |caller: &SecretKey, owner: OwnerKey| {
            let j = Job::new(
                UserKey(caller.public()),
                None,
                MissionName::new("demo").unwrap(),
                FunctionName::new("echo").unwrap(),
                &fat,
                Timestamp(T0),
                Timestamp(T0 + HOUR),
                true,
                owner,
            );
            j.sign(caller).bytes().to_vec()
        };
        q.push(&bob_key, &fat_job(&bob, carol), fat.clone(), T0).unwrap();
        let err = q
            .push(&bob_key, &fat_job(&bob, carol), fat.clone(), T0)
            .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("of the 102400 this proxy keeps for her"), "{text}");
        assert!(
            text.contains("(4 waiting, 0 finished with their results kept for 24 h)"),
            "{text}"
        );
        // Alice's share has room in bytes for one (her big output was not kept), then not
        // in count.
        q.push(&bob_key, &fat_job(&bob, alice), fat.clone(), T0).unwrap();
        let err = q
            .push(&bob_key, &fat_job(&bob, alice), fat.clone(), T0)
            .unwrap_err();
        assert!(err.to_string().contains("2 jobs waiting"), "{err}");
        // After her hour, her finished job is forgotten; Carol's would be kept a day.
        assert!(q.answer(&bob_key, &id_of(&first), T0 + HOUR + 1).is_none());
        drop(q);
        // The share applies the same after a restart.
        let (mut q, _) = JobQueue::open(dir.path(), limits, T0 + HOUR + 2).unwrap();
        assert!(q.answer(&bob_key, &id_of(&first), T0 + HOUR + 2).is_none());
    }

    #[test]
    fn every_refused_push() {
        let dir = tempfile::tempdir().unwrap();
        let (bob, eve) = (key(2), key(3));
        let bob_key = UserKey(bob.public());
        let (mut q, _) = JobQueue::open(dir.path(), JobLimits::default(), T0).unwrap();
        let job = job_for(&bob, 1, None, true);
        assert!(matches!(
            q.push(&bob_key, b"junk", vec![], T0),
            Err(PushError::Malformed(_))
        ));
        assert!(matches!(
            q.push(&UserKey(eve.public()), &job, b"{}".to_vec(), T0),
            Err(PushError::NotYours)
        ));
        assert!(matches!(
            q.push(&bob_key, &job, b"{}".to_vec(), T0 + HOUR + 1),
            Err(PushError::Expired)
        ));
        assert!(matches!(
            q.push(&bob_key, &job, b"{\"x\":1}".to_vec(), T0),
            Err(PushError::ArgsMismatch)
        ));
        assert!(matches!(
            q.push(&bob_key, &job, vec![b' '; MAX_JOB_ARGS + 1], T0),
            Err(PushError::ArgsTooLarge { .. })
        ));
        q.push(&bob_key, &job, b"{}".to_vec(), T0).unwrap();
        assert!(matches!(
            q.push(&bob_key, &job, b"{}".to_vec(), T0),
            Err(PushError::Duplicate(_))
        ));
        for _ in 1..MAX_JOBS_PER_CALLER {
            q.push(&bob_key, &job_for(&bob, 1, None, true), b"{}".to_vec(), T0)
                .unwrap();
        }
        let err = q
            .push(
                &bob_key,
                &job_for(&bob, 1, None, true),
                b"{}".to_vec(),
                T0 + 60_000,
            )
            .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains(&format!(
                "queue full for your key: {MAX_JOBS_PER_CALLER} jobs waiting"
            )),
            "{text}"
        );
        assert!(text.contains("the oldest queued 60s ago"), "{text}");
        // Too long a lifetime.
        let mut j = SignedJob::decode(&job).unwrap().job().clone();
        j.expires_at = Timestamp(T0 + wtd_keys::defaults::MAX_JOB_LIFETIME_MS + 1);
        let long = j.sign(&bob);
        assert!(matches!(
            q.push(&bob_key, long.bytes(), b"{}".to_vec(), T0),
            Err(PushError::Lifetime(_))
        ));
    }

    #[test]
    fn the_owner_bound_counts_every_caller() {
        let dir = tempfile::tempdir().unwrap();
        let (mut q, _) = JobQueue::open(dir.path(), JobLimits::default(), T0).unwrap();
        let mut n = 0;
        'fill: for c in 20..=255u8 {
            let caller = key(c);
            for _ in 0..MAX_JOBS_PER_CALLER {
                if n == MAX_JOBS_PER_OWNER {
                    break 'fill;
                }
                q.push(
                    &UserKey(caller.public()),
                    &job_for(&caller, 1, None, false),
                    b"{}".to_vec(),
                    T0,
                )
                .unwrap();
                n += 1;
            }
        }
        let late = key(5);
        let err = q
            .push(
                &UserKey(late.public()),
                &job_for(&late, 1, None, false),
                b"{}".to_vec(),
                T0,
            )
            .unwrap_err();
        assert!(err.to_string().contains("queue full for the owner"), "{err}");
        // Another owner's jobs still fit.
        q.push(
            &UserKey(late.public()),
            &job_for(&late, 2, None, false),
            b"{}".to_vec(),
            T0,
        )
        .unwrap();
    }

    #[test]
    fn jobs_expire_and_refusals_and_fire_and_forget_are_kept_as_such() {
        let dir = tempfile::tempdir().unwrap();
        let bob = key(2);
        let bob_key = UserKey(bob.public());
        let caller = Key::from(bob.public());
        let pi = Key([10; 32]);
        let (mut q, _) = JobQueue::open(dir.path(), JobLimits::default(), T0).unwrap();
        let waits = job_for(&bob, 1, None, true);
        q.push(&bob_key, &waits, b"{}".to_vec(), T0).unwrap();
        let list = q.list(&bob_key, T0 + HOUR + 1);
        assert_eq!(list[0].state, JobState::Expired);
        assert!(list[0].detail.contains("no agent"), "{}", list[0].detail);
        assert!(solo(&mut q, &pi, true, 4, T0 + HOUR + 1).is_empty());

        let refused = job_for(&bob, 1, None, true);
        q.push(&bob_key, &refused, b"{}".to_vec(), T0).unwrap();
        let forget = job_for(&bob, 1, Some(AgentId(key(10).public())), false);
        q.push(&bob_key, &forget, b"{}".to_vec(), T0).unwrap();
        // A job for another agent is not given to this one.
        assert_eq!(solo(&mut q, &pi, true, 4, T0).len(), 1);
        let pi10 = Key::from(key(10).public());
        assert_eq!(solo(&mut q, &pi10, true, 4, T0).len(), 1);
        q.update(
            &pi,
            JobUpdate {
                id: id_of(&refused),
                caller,
                outcome: Some(JobOutcome::Refused(Refused {
                    kind: "revoked".into(),
                    message: "the grant was revoked".into(),
                    retry_after_ms: None,
                })),
            },
            T0,
        );
        q.update(
            &pi10,
            JobUpdate {
                id: id_of(&forget),
                caller,
                outcome: Some(JobOutcome::Ran {
                    status: Status::Ok,
                    output: b"big".to_vec(),
                    detail: String::new(),
                    signed: vec![1],
                }),
            },
            T0,
        );
        let a = q.answer(&bob_key, &id_of(&refused), T0).unwrap();
        assert_eq!(a.info.state, JobState::Refused);
        assert_eq!(a.info.detail, "the grant was revoked");
        let a = q.answer(&bob_key, &id_of(&forget), T0).unwrap();
        assert_eq!(a.info.state, JobState::Done);
        assert!(matches!(a.outcome, Some(JobOutcome::Ran { output, .. }) if output.is_empty()));
    }

    #[test]
    fn an_agent_that_refuses_for_its_own_reason_lets_the_job_wait_for_another_try() {
        let dir = tempfile::tempdir().unwrap();
        let bob = key(2);
        let caller = Key::from(bob.public());
        let (pi, other) = (Key([10; 32]), Key([11; 32]));
        let (mut q, _) = JobQueue::open(dir.path(), JobLimits::default(), T0).unwrap();
        let job = job_for(&bob, 1, None, true);
        q.push(&UserKey(bob.public()), &job, b"{}".to_vec(), T0).unwrap();
        let not_adopted = |n| JobUpdate {
            id: id_of(&job),
            caller,
            outcome: Some(JobOutcome::Refused(Refused {
                kind: "not_adopted".into(),
                message: format!("not adopted {n}"),
                retry_after_ms: None,
            })),
        };
        assert_eq!(solo(&mut q, &pi, true, 4, T0).len(), 1);
        assert!(q.update(&pi, not_adopted(1), T0));
        // Not at once, and then to any agent (it never ran on pi).
        assert!(solo(&mut q, &other, true, 4, T0).is_empty());
        let later = T0 + JOB_RETRY_AFTER.as_millis() as u64;
        assert!(q.retry_due(later));
        drop(q);
        let (mut q, _) = JobQueue::open(dir.path(), JobLimits::default(), later).unwrap();
        assert_eq!(solo(&mut q, &other, true, 4, later).len(), 1);
        // After enough refusals it is final, with the last reason.
        let mut t = later;
        for n in 2..MAX_JOB_REFUSALS {
            assert!(q.update(&other, not_adopted(n), t));
            t += JOB_RETRY_AFTER.as_millis() as u64;
            assert_eq!(solo(&mut q, &other, true, 4, t).len(), 1, "try {n}");
        }
        assert!(q.update(&other, not_adopted(99), t));
        let a = q.answer(&UserKey(bob.public()), &id_of(&job), t).unwrap();
        assert_eq!(a.info.state, JobState::Refused);
        assert_eq!(a.info.detail, "not adopted 99");
    }

    #[test]
    fn a_torn_tail_loses_only_the_unacknowledged_change() {
        let dir = tempfile::tempdir().unwrap();
        let bob = key(2);
        let (mut q, _) = JobQueue::open(dir.path(), JobLimits::default(), T0).unwrap();
        q.push(
            &UserKey(bob.public()),
            &job_for(&bob, 1, None, true),
            b"{}".to_vec(),
            T0,
        )
        .unwrap();
        q.push(
            &UserKey(bob.public()),
            &job_for(&bob, 1, None, true),
            b"{}".to_vec(),
            T0,
        )
        .unwrap();
        drop(q);
        let path = dir.path().join("jobs.log");
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 3]).unwrap();
        let (mut q, report) = JobQueue::open(dir.path(), JobLimits::default(), T0).unwrap();
        assert!(report.torn_tail_bytes > 0);
        assert_eq!(q.list(&UserKey(bob.public()), T0).len(), 1);
    }
}
