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
//! bounded ([`defaults::MAX_SEEN_JOBS`]); when full of unexpired jobs, new ones are refused
//! ("busy") rather than risk forgetting one that could be delivered again.

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

/// Why the seen-set could not take a job.
#[derive(Debug, thiserror::Error)]
pub enum SeenError {
    #[error(
        "this agent remembers {0} unexpired jobs, as many as it can; it refuses new ones rather than \
         risk running one twice; push again later"
    )]
    Full(usize),
    #[error("{0}")]
    Store(#[from] wtd_store::IoError),
}

/// The durable seen-set: `jobs/seen` (the entries, replaced atomically on every change) and
/// `jobs/<caller><id>.outcome` (each finished job's outcome, to answer a repeat).
#[derive(Debug)]
pub struct SeenJobs {
    dir: PathBuf,
    entries: HashMap<([u8; 32], [u8; 16]), Seen>,
    limit: usize,
}

impl SeenJobs {
    /// Opens (creating if absent) the seen-set in `dir`. A damaged file is refused: running
    /// jobs again is worse than not running new ones; the error says what to do.
    pub fn open(dir: &Path, limit: usize) -> anyhow::Result<SeenJobs> {
        wtd_store::atomic::ensure_dir(dir, 0o700)?;
        let path = dir.join("seen");
        let entries = match std::fs::read(&path) {
            Ok(bytes) => {
                let list: Vec<Seen> =
                    wtd_wire::codec::decode_with_limit(&bytes, usize::MAX).map_err(|e| {
                        anyhow::anyhow!(
                            "{} is damaged ({e}); it records which queued calls this agent ran, so they \
                             never run twice. Move it aside and restart: jobs delivered again may then \
                             run a second time",
                            path.display()
                        )
                    })?;
                list.into_iter().map(|s| ((s.caller, s.id), s)).collect()
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => HashMap::new(),
            Err(e) => return Err(anyhow::anyhow!("could not read {}: {e}", path.display())),
        };
        Ok(SeenJobs {
            dir: dir.to_path_buf(),
            entries,
            limit,
        })
    }

    fn outcome_path(&self, caller: &[u8; 32], id: &[u8; 16]) -> PathBuf {
        let name = format!("{}{}.outcome", data_hex(&caller[..8]), data_hex(id));
        self.dir.join(name)
    }

    fn save(&self) -> Result<(), wtd_store::IoError> {
        let list: Vec<&Seen> = self.entries.values().collect();
        wtd_store::atomic::write_atomic(&self.dir.join("seen"), &wtd_wire::encode(&list), 0o600)
    }

    /// Forgets expired jobs (and their outcomes).
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
    }

    /// What is known of a job: `None` never seen; `Some(None)` seen, not finished;
    /// `Some(Some(outcome))` finished.
    pub fn lookup(&self, caller: &[u8; 32], id: &[u8; 16]) -> Option<Option<JobOutcome>> {
        let seen = self.entries.get(&(*caller, *id))?;
        if !seen.finished {
            return Some(None);
        }
        let bytes = std::fs::read(self.outcome_path(caller, id)).ok();
        Some(bytes.and_then(|b| wtd_wire::codec::decode_with_limit(&b, usize::MAX).ok()))
    }

    /// Records that the job is about to run. Durable when it returns Ok.
    pub fn start(&mut self, job: &SignedJob, now: Timestamp) -> Result<(), SeenError> {
        self.prune(now);
        if self.entries.len() >= self.limit {
            return Err(SeenError::Full(self.limit));
        }
        let j = job.job();
        let key = (*j.caller.key().as_bytes(), j.request_id.0);
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

    /// Stores a finished job's outcome, then marks it finished.
    pub fn finish(&mut self, job: &SignedJob, outcome: &JobOutcome) -> Result<(), SeenError> {
        let j = job.job();
        let key = (*j.caller.key().as_bytes(), j.request_id.0);
        wtd_store::atomic::write_atomic(
            &self.outcome_path(&key.0, &key.1),
            &wtd_wire::encode(outcome),
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
}

fn data_hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn now() -> Timestamp {
    Timestamp(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
    )
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
    let job = match check_job(&delivery.job, &delivery.args, &me, tags, now()) {
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
    match seen.lookup(j.caller.key().as_bytes(), &id) {
        Some(Some(outcome)) => {
            log::info!(agent:% = me; "job {} delivered again: sending its stored outcome, not running it twice", j.request_id);
            return Some((id, caller, outcome));
        }
        Some(None) => {
            log::warn!(agent:% = me; "job {} delivered again, but this agent stopped while it ran: not running it twice", j.request_id);
            let detail = "this agent stopped while the job ran (it may or may not have finished); it is not run a second time".to_string();
            let outcome = JobOutcome::Ran {
                status: Status::Failed,
                output: Vec::new(),
                detail,
                signed: calls.sign_job_result(&job, CallStatus::Failed, &[]),
            };
            let _ = seen.finish(&job, &outcome);
            return Some((id, caller, outcome));
        }
        None => {}
    }
    // Authorize now; over the rate (or concurrency) limit, wait for a turn until expiry.
    let permit = loop {
        match calls.authorize_job(&job) {
            Ok(p) => break p,
            Err(r) if r.kind == "rate_limited" || r.kind == "concurrency" => {
                let wait = r.retry_after_ms.unwrap_or(1000).clamp(100, 60_000);
                if now().plus_ms(wait) > j.expires_at {
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
    if let Err(e) = seen.start(&job, now()) {
        calls.release_job(permit);
        let kind = if matches!(e, SeenError::Full(_)) {
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
        let mut seen = SeenJobs::open(dir.path(), 2).unwrap();
        let (a, b) = (job(5000), job(9000));
        let key = |j: &SignedJob| (*j.job().caller.key().as_bytes(), j.job().request_id.0);
        seen.start(&a, Timestamp(2000)).unwrap();
        let outcome = refusal("x", "y".into());
        seen.finish(&a, &outcome).unwrap();
        seen.start(&b, Timestamp(2000)).unwrap();
        // Full of unexpired jobs: a third is refused.
        assert!(matches!(
            seen.start(&job(9000), Timestamp(2000)),
            Err(SeenError::Full(2))
        ));
        drop(seen);
        let mut seen = SeenJobs::open(dir.path(), 2).unwrap();
        let (ka, kb) = (key(&a), key(&b));
        assert_eq!(seen.lookup(&ka.0, &ka.1), Some(Some(outcome)));
        assert_eq!(seen.lookup(&kb.0, &kb.1), Some(None));
        // Once a has expired, it is forgotten and there is room again.
        seen.start(&job(9000), Timestamp(6000)).unwrap();
        assert_eq!(seen.lookup(&ka.0, &ka.1), None);
        assert_eq!(seen.len(), 2);
    }

    #[test]
    fn a_damaged_seen_set_is_refused_with_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("seen"), b"\xff\xff\xff").unwrap();
        let err = SeenJobs::open(dir.path(), 2).unwrap_err().to_string();
        assert!(err.contains("Move it aside"), "{err}");
    }
}
