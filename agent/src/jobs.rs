//! Running the jobs the proxy delivers (`wtd push`, `wtd call --async`), each at most once.
//!
//! The proxy delivers a job at least once: again after it was killed mid-delivery, again
//! when this agent reconnects before answering. So before a job runs, this agent writes
//! down that it is running it, in a durable *seen-set* keyed by (caller, request id); a
//! second delivery of the same job never runs it again, and is answered with the outcome
//! stored the first time. For each delivered job, in this order:
//!
//! 1. `wtd_keys::job::check_job`: the caller's signature over the job, this agent if it
//!    names one, this agent's tags if it names one (`wtd push --tag gpu`: the proxy cannot
//!    drop the tag, it is signed, and a Pi without it refuses the job, which then waits
//!    for one with it), the argument bytes, the time window (refused: never run, reported);
//! 2. the seen-set: seen and finished, send the stored outcome again; seen and not
//!    finished (this agent stopped while it ran), say so in a signed result; never rerun;
//! 3. authorization *now* (`CallService::authorize_job`): grant, revocation, adoption and
//!    the owner the job names. A grant revoked while the job waited means it never runs.
//!    Over the rate limit, it waits here for its turn (until its expiry), like a queue;
//! 4. the seen-set records it (atomically, fsynced), the proxy is told it runs, it runs;
//! 5. the outcome, with this agent's signed result, is stored and then sent.
//!
//! The seen-set may forget a job once it has expired: step 1 refuses any later copy. It is
//! bounded ([`defaults::MAX_SEEN_JOBS`] in all, [`defaults::MAX_SEEN_JOBS_PER_CALLER`] per
//! caller, [`defaults::MAX_STORED_JOB_OUTPUT`] of each output); when full of unexpired
//! jobs, new ones are refused ("busy", saying when the first expires: the proxy tries
//! another agent, then gives up with that reason) rather than forget one that could be
//! delivered again. Its files are checksummed; a damaged record is handled in
//! [`SeenJobs::open`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use wtd_keys::call::CallStatus;
use wtd_keys::job::{check_job, SignedJob};
use wtd_keys::Timestamp;
use wtd_wire::call::{Refused, Status};
use wtd_wire::jobs::{JobDelivery, JobOutcome, JobUpdate};
use wtd_wire::Key;

use crate::calls::{wire_status, CallService};
use crate::defaults;

/// One job this agent accepted to run.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Seen {
    caller: [u8; 32],
    id: [u8; 16],
    /// After this, a copy is refused as expired, so the entry may go.
    expires_at: u64,
    /// Whether its outcome file was written.
    finished: bool,
}

/// `jobs/seen` as written: the entries, and the horizon of a record that was lost.
#[derive(Debug, Default, Serialize, Deserialize)]
struct SeenFile {
    entries: Vec<Seen>,
    /// Ms since the epoch, 0 if none: this agent lost its record of the jobs it ran (the
    /// file was damaged) and refuses every job issued up to then; see [`SeenJobs::open`].
    lost_before: u64,
}

/// The seen-set's file: `WTDSEEN2`, the first 8 bytes of SHA-256 of the body, the body
/// (postcard [`SeenFile`]). The checksum is what lets damage be told from a record: a
/// zeroed or cut file must not read as a shorter list (a job forgotten could run twice).
/// Before it, the file was a bare postcard list of entries, still read.
const SEEN_MAGIC: &[u8; 8] = b"WTDSEEN2";
/// An outcome file: `WTDOUT01`, the checksum, the postcard `JobOutcome`.
const OUTCOME_MAGIC: &[u8; 8] = b"WTDOUT01";

fn seal_file(magic: &[u8; 8], body: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    let mut out = Vec::with_capacity(16 + body.len());
    out.extend_from_slice(magic);
    out.extend_from_slice(&sha2::Sha256::digest(body)[..8]);
    out.extend_from_slice(body);
    out
}

/// The body of a sealed file, if `bytes` is one whose checksum holds; `Err` if it starts
/// with the magic but is damaged; `Ok(None)` if it does not start with it (the old form).
fn open_file<'a>(magic: &[u8; 8], bytes: &'a [u8]) -> Result<Option<&'a [u8]>, &'static str> {
    use sha2::Digest;
    if bytes.len() < 8 || &bytes[..8] != magic {
        return Ok(None);
    }
    let Some((sum, body)) = bytes[8..].split_at_checked(8) else {
        return Err("cut short");
    };
    if sha2::Sha256::digest(body)[..8] != *sum {
        return Err("checksum mismatch");
    }
    Ok(Some(body))
}

/// Why the seen-set could not take a job.
#[derive(Debug, thiserror::Error)]
pub enum SeenError {
    /// As many unexpired jobs as it keeps ([`defaults::MAX_SEEN_JOBS`]): forgetting one
    /// could let it run twice, so new jobs are refused (the proxy tries another agent,
    /// then gives up with this reason) until the first expires.
    #[error(
        "this agent remembers {limit} unexpired jobs it ran, as many as it keeps; it refuses new ones \
         rather than forget one (which could then run twice); the first of them expires in {frees_in}: \
         push again then, or to another agent"
    )]
    Full { limit: usize, frees_in: String },
    /// As many unexpired jobs of this caller as it keeps for one caller (a quarter of the
    /// whole), so one caller's flood does not lock everyone else out for a week.
    #[error(
        "this agent remembers {limit} unexpired jobs of yours, as many as it keeps for one caller; it \
         refuses more rather than forget one (which could then run twice); the first of yours expires \
         in {frees_in}: push again then, and give jobs a shorter --expires so they are forgotten sooner"
    )]
    CallerFull { limit: usize, frees_in: String },
    #[error("{0}")]
    Store(#[from] wtd_store::IoError),
}

/// What the seen-set knows of a delivered job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Known {
    /// Never seen: it may run (after authorization).
    New,
    /// Seen and finished: send this stored outcome again.
    Finished(JobOutcome),
    /// Seen, not finished: this agent stopped while it ran. Never run again.
    Unfinished,
    /// Seen and finished, but its stored outcome is gone or damaged. Never run again.
    OutcomeLost,
    /// Not in the record, but the record was lost since this job was issued: it may have
    /// run here. Never run (refused for good, so no other agent runs it either).
    MayHaveRun { lost_at: Timestamp },
}

/// The durable seen-set: `jobs/seen` (the entries, replaced atomically on every change) and
/// `jobs/<caller><id>.outcome` (each finished job's outcome, to answer a repeat).
#[derive(Debug)]
pub struct SeenJobs {
    dir: PathBuf,
    entries: HashMap<([u8; 32], [u8; 16]), Seen>,
    limit: usize,
    /// Entries one caller may hold ([`SeenJobs::with_per_caller`]; `limit` unless set).
    per_caller: usize,
    /// Jobs issued up to this time are refused: the record of what ran was lost then.
    lost_before: Option<Timestamp>,
}

impl SeenJobs {
    /// Opens (creating if absent) the seen-set in `dir`, at `now` (the agent passes the
    /// later of its clock and its time floor, so a Pi that booted with a clock behind
    /// does not place the horizon too early).
    ///
    /// A damaged `seen` (cut short, zeroed, not what this agent wrote) is not read as a
    /// shorter record, which could run a job twice. It is moved aside to `seen.damaged`,
    /// and the agent starts with an empty record and a *horizon*: it refuses every job
    /// issued up to `now` (plus the clock skew a job may have), since it may have run
    /// them, with a reason the caller sees in `wtd jobs` ("push it again"). Jobs issued
    /// after run as usual. The horizon is kept until every job issued before it has
    /// expired (at most a week). The warning is logged, naming the file.
    pub fn open(dir: &Path, limit: usize, now: Timestamp) -> anyhow::Result<SeenJobs> {
        wtd_store::atomic::ensure_dir(dir, 0o700)?;
        let path = dir.join("seen");
        let mut seen = SeenJobs {
            dir: dir.to_path_buf(),
            entries: HashMap::new(),
            limit,
            per_caller: limit,
            lost_before: None,
        };
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(seen),
            Err(e) => return Err(anyhow::anyhow!("could not read {}: {e}", path.display())),
        };
        let decoded: Result<SeenFile, String> = match open_file(SEEN_MAGIC, &bytes) {
            Ok(Some(body)) => wtd_wire::codec::decode_with_limit(body, usize::MAX).map_err(|e| e.to_string()),
            // The form before the checksum: a bare list. Read it as it was written.
            Ok(None) => wtd_wire::codec::decode_with_limit::<Vec<Seen>>(&bytes, usize::MAX)
                .map(|entries| SeenFile {
                    entries,
                    lost_before: 0,
                })
                .map_err(|e| e.to_string()),
            Err(why) => Err(why.to_string()),
        };
        match decoded {
            Ok(file) => {
                seen.entries = file.entries.into_iter().map(|s| ((s.caller, s.id), s)).collect();
                seen.lost_before = (file.lost_before != 0).then_some(Timestamp(file.lost_before));
            }
            Err(why) => {
                let aside = dir.join("seen.damaged");
                std::fs::rename(&path, &aside).map_err(|e| {
                    anyhow::anyhow!(
                        "{} is damaged ({why}) and could not be moved aside ({e}); it records which queued calls \
                         this agent ran, so they never run twice. Move it aside by hand and restart: the agent \
                         then refuses every job issued before it started",
                        path.display()
                    )
                })?;
                let horizon = now.plus_ms(wtd_keys::defaults::CALL_FRESHNESS_MS);
                seen.lost_before = Some(horizon);
                seen.save()
                    .map_err(|e| anyhow::anyhow!("could not write a new {}: {e}", path.display()))?;
                log::warn!(
                    "{} was damaged ({why}); moved it to {}. This agent no longer knows which queued calls \
                     it ran, so it refuses every job issued before {} (it may have run them) until they \
                     expire; callers see \"may have run\" in `wtd jobs` and can push again. Jobs issued \
                     later run as usual",
                    path.display(),
                    aside.display(),
                    when(horizon)
                );
            }
        }
        Ok(seen)
    }

    /// The same seen-set, keeping at most `n` unexpired jobs per caller (the agent uses
    /// [`defaults::MAX_SEEN_JOBS_PER_CALLER`]).
    pub fn with_per_caller(mut self, n: usize) -> SeenJobs {
        self.per_caller = n.max(1);
        self
    }

    fn outcome_path(&self, caller: &[u8; 32], id: &[u8; 16]) -> PathBuf {
        let name = format!("{}{}.outcome", data_hex(&caller[..8]), data_hex(id));
        self.dir.join(name)
    }

    fn save(&self) -> Result<(), wtd_store::IoError> {
        let file = SeenFile {
            entries: self.entries.values().cloned().collect(),
            lost_before: self.lost_before.map_or(0, |t| t.0),
        };
        let bytes = seal_file(SEEN_MAGIC, &wtd_wire::encode(&file));
        wtd_store::atomic::write_atomic(&self.dir.join("seen"), &bytes, 0o600)
    }

    /// Forgets expired jobs (and their outcomes), and the horizon once every job issued
    /// before it has expired.
    fn prune(&mut self, now: Timestamp) {
        let gone: Vec<([u8; 32], [u8; 16])> = self
            .entries
            .iter()
            .filter(|(_, s)| s.expires_at < now.0)
            .map(|(k, _)| *k)
            .collect();
        for k in &gone {
            self.entries.remove(k);
            let _ = std::fs::remove_file(self.outcome_path(&k.0, &k.1));
        }
        if self
            .lost_before
            .is_some_and(|h| h.plus_ms(wtd_keys::defaults::MAX_JOB_LIFETIME_MS) < now)
        {
            self.lost_before = None;
        }
    }

    /// What is known of `job`.
    pub fn known(&self, job: &SignedJob) -> Known {
        let j = job.job();
        let (caller, id) = (j.caller.key().as_bytes(), &j.request_id.0);
        let Some(seen) = self.entries.get(&(*caller, *id)) else {
            return match self.lost_before {
                Some(lost_at) if j.issued_at <= lost_at => Known::MayHaveRun { lost_at },
                _ => Known::New,
            };
        };
        if !seen.finished {
            return Known::Unfinished;
        }
        let Ok(bytes) = std::fs::read(self.outcome_path(caller, id)) else {
            return Known::OutcomeLost;
        };
        let body = match open_file(OUTCOME_MAGIC, &bytes) {
            Ok(Some(body)) => body,
            Ok(None) => &bytes[..],
            Err(_) => return Known::OutcomeLost,
        };
        match wtd_wire::codec::decode_with_limit(body, usize::MAX) {
            Ok(outcome) => Known::Finished(outcome),
            Err(_) => Known::OutcomeLost,
        }
    }

    /// Records that the job is about to run. Durable when it returns Ok.
    pub fn start(&mut self, job: &SignedJob, now: Timestamp) -> Result<(), SeenError> {
        self.prune(now);
        let j = job.job();
        let key = (*j.caller.key().as_bytes(), j.request_id.0);
        // The first to expire among `of`, for when room comes back.
        let frees_in = |of: &mut dyn Iterator<Item = &Seen>| {
            let first = of.map(|s| s.expires_at).min().unwrap_or(now.0);
            wtd_keys::time::human_duration(now.until(Timestamp(first)))
        };
        if self.entries.len() >= self.limit {
            return Err(SeenError::Full {
                limit: self.limit,
                frees_in: frees_in(&mut self.entries.values()),
            });
        }
        let mine = self.entries.values().filter(|s| s.caller == key.0);
        if mine.clone().count() >= self.per_caller {
            return Err(SeenError::CallerFull {
                limit: self.per_caller,
                frees_in: frees_in(&mut mine.into_iter()),
            });
        }
        self.entries.insert(
            key,
            Seen {
                caller: key.0,
                id: key.1,
                expires_at: j.expires_at.0,
                finished: false,
            },
        );
        if let Err(e) = self.save() {
            self.entries.remove(&key);
            return Err(e.into());
        }
        Ok(())
    }

    /// Stores a finished job's outcome, then marks it finished. An output over
    /// [`defaults::MAX_STORED_JOB_OUTPUT`] is not stored (a repeat delivery is answered
    /// with the signed result and a detail saying so), which bounds the record's disk.
    pub fn finish(&mut self, job: &SignedJob, outcome: &JobOutcome) -> Result<(), SeenError> {
        let j = job.job();
        let key = (*j.caller.key().as_bytes(), j.request_id.0);
        let mut stored = outcome.clone();
        if let JobOutcome::Ran { output, detail, .. } = &mut stored {
            if output.len() > defaults::MAX_STORED_JOB_OUTPUT {
                *detail = format!(
                    "{detail} (delivered again: its {}-byte output was sent once and not kept on the agent, which \
                     keeps at most {} bytes of a job's output to answer a repeat)",
                    output.len(),
                    defaults::MAX_STORED_JOB_OUTPUT
                )
                .trim_start()
                .to_string();
                output.clear();
            }
        }
        wtd_store::atomic::write_atomic(
            &self.outcome_path(&key.0, &key.1),
            &seal_file(OUTCOME_MAGIC, &wtd_wire::encode(&stored)),
            0o600,
        )?;
        if let Some(s) = self.entries.get_mut(&key) {
            s.finished = true;
        }
        self.save()?;
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The horizon of a lost record, if there is one (see [`SeenJobs::open`]).
    pub fn lost_before(&self) -> Option<Timestamp> {
        self.lost_before
    }
}

/// A time for people: `2026-12-03T17:35:36Z` (UTC).
fn when(t: Timestamp) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_millis(t.0))
        .to_string()
}

fn data_hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn refusal(kind: &str, message: String) -> JobOutcome {
    JobOutcome::Refused(Refused {
        kind: kind.into(),
        message,
        retry_after_ms: None,
    })
}

/// Runs delivered jobs one after another until `shutdown`. Owned by the agent's run (joined,
/// never spawned). `deliveries` come from the link; `updates` go back to it, and wait
/// there across reconnections, so an outcome reached while the proxy was away is sent
/// once it is back.
pub async fn run(
    calls: Arc<CallService>,
    tags: Vec<String>,
    mut seen: SeenJobs,
    mut deliveries: mpsc::Receiver<JobDelivery>,
    updates: mpsc::Sender<JobUpdate>,
    shutdown: CancellationToken,
) {
    loop {
        let delivery = tokio::select! {
            _ = shutdown.cancelled() => return,
            d = deliveries.recv() => match d {
                Some(d) => d,
                None => return,
            },
        };
        let Some((id, caller, outcome)) =
            handle(&calls, &tags, &mut seen, delivery, &updates, &shutdown).await
        else {
            continue;
        };
        if updates
            .send(JobUpdate {
                id,
                caller,
                outcome: Some(outcome),
            })
            .await
            .is_err()
        {
            return;
        }
    }
}

/// One delivery, to its outcome. `None`: nothing to say (a record that does not verify
/// names no job we can answer for; the agent logs it).
async fn handle(
    calls: &Arc<CallService>,
    tags: &[String],
    seen: &mut SeenJobs,
    delivery: JobDelivery,
    updates: &mpsc::Sender<JobUpdate>,
    shutdown: &CancellationToken,
) -> Option<([u8; 16], Key, JobOutcome)> {
    let me = calls.agent_id();
    let job = match check_job(&delivery.job, &delivery.args, &me, tags, calls.now()) {
        Ok(job) => job,
        Err(e) => {
            // If it still decodes, we can say which job it was and why it did not run.
            log::warn!(agent:% = me; "refused a queued call: {e}");
            let named = SignedJob::decode(&delivery.job).ok()?;
            let j = named.job();
            return Some((
                j.request_id.0,
                Key::from(*j.caller.key()),
                refusal(e.kind(), e.to_string()),
            ));
        }
    };
    let j = job.job();
    let (id, caller) = (j.request_id.0, Key::from(*j.caller.key()));
    let again = |detail: &str| JobOutcome::Ran {
        status: Status::Failed,
        output: Vec::new(),
        detail: detail.to_string(),
        signed: calls.sign_job_result(&job, CallStatus::Failed, &[]),
    };
    match seen.known(&job) {
        Known::New => {}
        Known::Finished(outcome) => {
            log::info!(agent:% = me; "job {} delivered again: sending its stored outcome, not running it twice", j.request_id);
            return Some((id, caller, outcome));
        }
        Known::Unfinished => {
            log::warn!(agent:% = me; "job {} delivered again, but this agent stopped while it ran: not running it twice", j.request_id);
            let outcome = again("this agent stopped while the job ran (it may or may not have finished); it is not run a second time");
            let _ = seen.finish(&job, &outcome);
            return Some((id, caller, outcome));
        }
        Known::OutcomeLost => {
            log::warn!(agent:% = me; "job {} delivered again; it ran here, but its stored outcome is damaged or gone: not running it twice", j.request_id);
            let outcome = again("this agent ran the job, but its stored outcome was damaged or lost; it is not run a second time");
            let _ = seen.finish(&job, &outcome);
            return Some((id, caller, outcome));
        }
        Known::MayHaveRun { lost_at } => {
            log::warn!(agent:% = me; "job {} was issued before this agent lost its record of the jobs it ran: not running it (it may have run)", j.request_id);
            return Some((
                id,
                caller,
                refusal(
                    "may_have_run",
                    format!(
                        "this agent lost its record of the queued calls it ran (its jobs/seen file was damaged; the \
                         agent's log says more), and this one was issued before {}, so it may have run \
                         already; it is not run (nor passed to another agent). Push it again if it should run",
                        when(lost_at)
                    ),
                ),
            ));
        }
    }
    // Authorize now; over the rate (or concurrency) limit, wait for a turn until expiry.
    let permit = loop {
        match calls.authorize_job(&job) {
            Ok(p) => break p,
            Err(r) if r.kind == "rate_limited" || r.kind == "concurrency" => {
                let wait = r.retry_after_ms.unwrap_or(1000).clamp(100, 60_000);
                if calls.now().plus_ms(wait) > j.expires_at {
                    return Some((id, caller, JobOutcome::Refused(r)));
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return None,
                    _ = tokio::time::sleep(std::time::Duration::from_millis(wait)) => {}
                }
            }
            Err(r) => return Some((id, caller, JobOutcome::Refused(r))),
        }
    };
    if let Err(e) = seen.start(&job, calls.now()) {
        calls.release_job(permit);
        let kind = if matches!(e, SeenError::Full { .. } | SeenError::CallerFull { .. }) {
            "busy"
        } else {
            "store"
        };
        return Some((id, caller, refusal(kind, e.to_string())));
    }
    let _ = updates
        .send(JobUpdate {
            id,
            caller,
            outcome: None,
        })
        .await;
    let (mut status, mut output, mut detail) = calls.run_job(&job, &delivery.args, permit, shutdown).await;
    if output.len() > defaults::MAX_JOB_OUTPUT {
        detail = format!(
            "{}/{} printed {} bytes; a queued call sends back at most {}",
            j.mission,
            j.function,
            output.len(),
            defaults::MAX_JOB_OUTPUT
        );
        status = CallStatus::OutputTooLarge;
        output = Vec::new();
    }
    let outcome = JobOutcome::Ran {
        status: wire_status(status),
        signed: calls.sign_job_result(&job, status, &output),
        output,
        detail,
    };
    if let Err(e) = seen.finish(&job, &outcome) {
        log::warn!(agent:% = me; "could not store job {}'s outcome ({e}); a repeat delivery will say it may have run", j.request_id);
    }
    Some((id, caller, outcome))
}

#[cfg(test)]
mod tests {
    use super::*;
    use wtd_keys::job::Job;
    use wtd_keys::{FunctionName, MissionName, OwnerKey, SecretKey, UserKey};

    const HOUR: u64 = 3_600_000;

    fn job(expires: u64) -> SignedJob {
        let bob = SecretKey::from_seed(&[2; 32]);
        Job::new(
            UserKey(bob.public()),
            None,
            MissionName::new("demo").unwrap(),
            FunctionName::new("echo").unwrap(),
            b"{}",
            Timestamp(1000),
            Timestamp(expires),
            true,
            OwnerKey(SecretKey::from_seed(&[1; 32]).public()),
        )
        .sign(&bob)
    }

    #[test]
    fn the_seen_set_survives_a_restart_and_forgets_only_expired_jobs() {
        let dir = tempfile::tempdir().unwrap();
        let mut seen = SeenJobs::open(dir.path(), 2, Timestamp(2000)).unwrap();
        let (a, b) = (job(5000), job(9000));
        seen.start(&a, Timestamp(2000)).unwrap();
        let outcome = refusal("x", "y".into());
        seen.finish(&a, &outcome).unwrap();
        seen.start(&b, Timestamp(2000)).unwrap();
        // Full of unexpired jobs: a third is refused.
        assert!(matches!(
            seen.start(&job(9000), Timestamp(2000)),
            Err(SeenError::Full { limit: 2, .. })
        ));
        drop(seen);
        let mut seen = SeenJobs::open(dir.path(), 2, Timestamp(2000)).unwrap();
        assert_eq!(seen.known(&a), Known::Finished(outcome));
        assert_eq!(seen.known(&b), Known::Unfinished);
        // Once a has expired, it is forgotten and there is room again.
        seen.start(&job(9000), Timestamp(6000)).unwrap();
        assert_eq!(seen.known(&a), Known::New);
        assert_eq!(seen.len(), 2);
    }

    #[test]
    fn a_damaged_seen_set_is_moved_aside_and_every_job_it_may_have_run_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut seen = SeenJobs::open(dir.path(), 8, Timestamp(2000)).unwrap();
        let ran = job(HOUR);
        seen.start(&ran, Timestamp(2000)).unwrap();
        seen.finish(&ran, &refusal("x", "y".into())).unwrap();
        drop(seen);
        let path = dir.path().join("seen");
        let good = std::fs::read(&path).unwrap();
        // Cut short, zeroed anywhere, or junk: never read as a shorter record.
        let mut damaged: Vec<Vec<u8>> = (0..good.len()).map(|n| good[..n].to_vec()).collect();
        for at in 0..good.len() {
            let mut b = good.clone();
            b[at] = if b[at] == 0 { 1 } else { 0 };
            damaged.push(b);
        }
        damaged.push(b"\xff\xff\xff".to_vec());
        for (n, bytes) in damaged.iter().enumerate() {
            std::fs::write(&path, bytes).unwrap();
            let _ = std::fs::remove_file(dir.path().join("seen.damaged"));
            let now = Timestamp(3000);
            let seen = SeenJobs::open(dir.path(), 8, now).unwrap();
            match seen.known(&ran) {
                Known::Finished(_) => {
                    // Only an empty file (cut at 0) is read as "no record"... which must
                    // not happen for a job that ran: an empty file is not a record.
                    panic!("case {n}: a damaged file read as whole")
                }
                Known::MayHaveRun { lost_at } => {
                    assert!(lost_at >= now, "case {n}");
                    assert!(dir.path().join("seen.damaged").exists(), "case {n}: moved aside");
                }
                other => panic!("case {n}: a job that ran would be {other:?}"),
            }
            // A job issued after the agent started again runs as usual.
            let mut later = job(HOUR).job().clone();
            later.issued_at = Timestamp(3000 + wtd_keys::defaults::CALL_FRESHNESS_MS + 1);
            let later = later.sign(&SecretKey::from_seed(&[2; 32]));
            assert_eq!(seen.known(&later), Known::New, "case {n}");
            // The horizon survives a restart, and goes once every job before it expired.
            drop(seen);
            let mut seen = SeenJobs::open(dir.path(), 8, Timestamp(4000)).unwrap();
            assert!(matches!(seen.known(&ran), Known::MayHaveRun { .. }), "case {n}");
            let week = wtd_keys::defaults::MAX_JOB_LIFETIME_MS;
            seen.start(&later, Timestamp(3000 + week / 2)).unwrap();
            assert!(seen.lost_before().is_some());
            let mut last = job(HOUR).job().clone();
            last.issued_at = Timestamp(3000 + 2 * week);
            last.expires_at = Timestamp(3000 + 2 * week + HOUR);
            seen.start(
                &last.sign(&SecretKey::from_seed(&[2; 32])),
                Timestamp(3000 + 2 * week),
            )
            .unwrap();
            assert!(seen.lost_before().is_none(), "case {n}");
            std::fs::remove_file(&path).unwrap();
        }
    }

    /// A job from caller `c`, issued at 1000, expiring at `expires`.
    fn job_of(c: u8, expires: u64) -> SignedJob {
        let key = SecretKey::from_seed(&[c; 32]);
        let mut j = job(expires).job().clone();
        j.caller = UserKey(key.public());
        j.sign(&key)
    }

    #[test]
    fn a_flood_of_unexpired_jobs_is_refused_never_forgotten() {
        use crate::defaults::{MAX_SEEN_JOBS, MAX_SEEN_JOBS_PER_CALLER};
        // On tmpfs where there is one: 4,096 atomic rewrites of a growing file.
        let dir = tempfile::tempdir_in("/dev/shm")
            .or_else(|_| tempfile::tempdir())
            .unwrap();
        let now = Timestamp(2000);
        let mut seen = SeenJobs::open(dir.path(), MAX_SEEN_JOBS, now)
            .unwrap()
            .with_per_caller(MAX_SEEN_JOBS_PER_CALLER);
        let callers = (MAX_SEEN_JOBS / MAX_SEEN_JOBS_PER_CALLER) as u8;
        let mut ran = Vec::new();
        for c in 0..callers {
            for n in 0..MAX_SEEN_JOBS_PER_CALLER {
                // The first caller's first job expires first (in an hour); the rest later.
                let j = job_of(10 + c, 2 * HOUR + (c as u64 * 10_000) + n as u64);
                seen.start(&j, now).unwrap();
                ran.push(j);
            }
            if c + 1 == callers {
                break;
            }
            // This caller's share is used up: one more is refused, saying when room comes.
            let err = seen.start(&job_of(10 + c, 3 * HOUR), now).unwrap_err();
            assert!(matches!(err, SeenError::CallerFull { .. }), "{err}");
            let text = err.to_string();
            assert!(text.contains("1024 unexpired jobs of yours"), "{text}");
            assert!(text.contains("shorter --expires"), "{text}");
        }
        assert_eq!(seen.len(), MAX_SEEN_JOBS);
        // Full: a new caller is refused too, with when the first expires.
        let err = seen.start(&job_of(99, 3 * HOUR), now).unwrap_err();
        assert!(matches!(err, SeenError::Full { .. }), "{err}");
        let text = err.to_string();
        assert!(text.contains("4096 unexpired jobs"), "{text}");
        assert!(text.contains("expires in 119 min"), "{text}");
        assert_eq!(seen.len(), MAX_SEEN_JOBS, "bounded");
        // Not one of those it ran was forgotten to make room, now or after a restart.
        let check = |seen: &SeenJobs| {
            for j in &ran {
                assert_eq!(seen.known(j), Known::Unfinished);
            }
        };
        check(&seen);
        drop(seen);
        let mut seen = SeenJobs::open(dir.path(), MAX_SEEN_JOBS, now)
            .unwrap()
            .with_per_caller(MAX_SEEN_JOBS_PER_CALLER);
        check(&seen);
        // Once the first has expired, there is room for one more, and only it was forgotten.
        let later = Timestamp(2 * HOUR + 1);
        seen.start(&job_of(99, 3 * HOUR), later).unwrap();
        assert_eq!(seen.known(&ran[0]), Known::New);
        for j in &ran[1..] {
            assert_eq!(seen.known(j), Known::Unfinished);
        }
    }

    #[test]
    fn a_big_output_is_not_kept_to_answer_a_repeat() {
        let dir = tempfile::tempdir().unwrap();
        let mut seen = SeenJobs::open(dir.path(), 8, Timestamp(2000)).unwrap();
        let (small, big) = (job(HOUR), job(HOUR));
        for (j, len) in [(&small, 10), (&big, crate::defaults::MAX_STORED_JOB_OUTPUT + 1)] {
            seen.start(j, Timestamp(2000)).unwrap();
            let outcome = JobOutcome::Ran {
                status: Status::Ok,
                output: vec![b'x'; len],
                detail: String::new(),
                signed: vec![1],
            };
            seen.finish(j, &outcome).unwrap();
        }
        let Known::Finished(JobOutcome::Ran { output, .. }) = seen.known(&small) else {
            panic!("small")
        };
        assert_eq!(output.len(), 10);
        let Known::Finished(JobOutcome::Ran {
            output,
            detail,
            signed,
            ..
        }) = seen.known(&big)
        else {
            panic!("big")
        };
        assert!(output.is_empty());
        assert_eq!(signed, vec![1], "the signed result is kept");
        assert!(detail.contains("not kept on the agent"), "{detail}");
    }

    #[test]
    fn a_damaged_outcome_is_never_sent_nor_a_reason_to_run_again() {
        let dir = tempfile::tempdir().unwrap();
        let mut seen = SeenJobs::open(dir.path(), 8, Timestamp(2000)).unwrap();
        let ran = job(HOUR);
        seen.start(&ran, Timestamp(2000)).unwrap();
        seen.finish(&ran, &refusal("x", "y".into())).unwrap();
        let k = (*ran.job().caller.key().as_bytes(), ran.job().request_id.0);
        let path = seen.outcome_path(&k.0, &k.1);
        let good = std::fs::read(&path).unwrap();
        for at in 0..good.len() {
            let mut b = good.clone();
            b[at] ^= 0x40;
            std::fs::write(&path, &b).unwrap();
            assert_eq!(seen.known(&ran), Known::OutcomeLost, "byte {at}");
            std::fs::write(&path, &good[..at]).unwrap();
            assert_eq!(seen.known(&ran), Known::OutcomeLost, "cut at {at}");
        }
        std::fs::remove_file(&path).unwrap();
        assert_eq!(seen.known(&ran), Known::OutcomeLost);
    }

    #[test]
    fn a_seen_set_of_the_older_form_is_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let ran = job(HOUR);
        let old = vec![Seen {
            caller: *ran.job().caller.key().as_bytes(),
            id: ran.job().request_id.0,
            expires_at: HOUR,
            finished: false,
        }];
        std::fs::write(dir.path().join("seen"), wtd_wire::encode(&old)).unwrap();
        let seen = SeenJobs::open(dir.path(), 8, Timestamp(2000)).unwrap();
        assert_eq!(seen.known(&ran), Known::Unfinished);
        assert!(seen.lost_before().is_none());
    }
}
