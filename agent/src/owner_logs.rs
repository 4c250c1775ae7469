//! The agent's copies of its owners' logs: verified entry by entry, kept on disk, and
//! shared read-only with the rest of the agent.
//!
//! The proxy relays each owner's log to the agent (`ToAgent::Log`), but the proxy is not
//! trusted: every entry must be signed by the owner, carry the next sequence number and
//! name the previous entry's hash (see `wtd_keys::log`). So an entry the proxy forged,
//! altered, reordered or sent after dropping one is refused, with everything good before
//! it kept. Entries we already hold are skipped if identical and refused if not (a fork).
//!
//! ```text
//! <state_dir>/logs/<owner id>.log     one file per owner, fsynced on every append
//! ```
//!
//! The rest of the agent (authorization, later) reads a [`LogsHandle`]: a watch channel
//! holding an immutable snapshot of every verified log. Readers never wait on a disk write,
//! and can `changed().await` to react to a new revocation at once.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::watch;
use wtd_keys::log::LogError;
use wtd_keys::seal::SealKey;
use wtd_keys::{AdoptionBook, Grant, OwnerKey, OwnerLog, PublicId, Revocation, SignedEntry};
use wtd_store::atomic::ensure_dir;
use wtd_store::logfile::{LogFile, LogFileError};
use wtd_store::IoError;
use wtd_wire::{Key, LogHead};

/// A read-only view of the verified owner logs, always the latest snapshot.
///
/// ```no_run
/// # async fn demo(mut logs: wtd_agent::LogsHandle) {
/// // Wait for the next change, then look at the grants.
/// logs.changed().await.ok();
/// let snapshot = logs.borrow().clone();
/// println!("{} grants", snapshot.grants().count());
/// # }
/// ```
pub type LogsHandle = watch::Receiver<Arc<VerifiedLogs>>;

/// Every owner's verified log at one moment. Cheap to clone: each log is shared.
#[derive(Debug, Clone, Default)]
pub struct VerifiedLogs {
    logs: BTreeMap<OwnerKey, Arc<OwnerLog>>,
    /// Who adopted whom, read from `logs` once per change rather than once per call.
    adoptions: Arc<AdoptionBook>,
}

impl VerifiedLogs {
    /// The owners this agent obeys.
    pub fn owners(&self) -> impl Iterator<Item = &OwnerKey> {
        self.logs.keys()
    }

    /// One owner's log, if this agent obeys that owner.
    pub fn log(&self, owner: &OwnerKey) -> Option<&OwnerLog> {
        self.logs.get(owner).map(|log| &**log)
    }

    /// The sequence number of the last entry held for `owner` (0 if none, or not an owner).
    pub fn head(&self, owner: &OwnerKey) -> u64 {
        self.log(owner).map_or(0, |log| log.head().seq)
    }

    /// Every grant in every log, each signed by the owner whose log holds it, revoked or
    /// not: pass these and [`VerifiedLogs::revocations`] to `wtd_keys::authz` together.
    pub fn grants(&self) -> impl Iterator<Item = &Grant> {
        self.logs.values().flat_map(|log| log.grants().map(|g| g.grant()))
    }

    /// The adoptions and disownings in the owners' logs: an owner's grants count here only
    /// while her log adopts this agent (`wtd_keys::adoption`).
    pub fn adoptions(&self) -> &AdoptionBook {
        &self.adoptions
    }

    fn with_logs(logs: BTreeMap<OwnerKey, Arc<OwnerLog>>) -> Self {
        let adoptions = Arc::new(AdoptionBook::from_logs(logs.values().map(|l| &**l)));
        VerifiedLogs { logs, adoptions }
    }

    /// Every revocation in every log, each signed by the owner whose log holds it.
    pub fn revocations(&self) -> impl Iterator<Item = &Revocation> {
        self.logs
            .values()
            .flat_map(|log| log.revocations().map(|r| r.revocation()))
    }
}

/// Opening the owner logs failed: the agent cannot start without them.
#[derive(Debug, thiserror::Error)]
pub enum OpenLogsError {
    /// The logs directory could not be created (permissions? read-only filesystem?).
    #[error(transparent)]
    Dir(#[from] IoError),
    /// A log file is unreadable; the message says which and why.
    #[error(transparent)]
    File(#[from] LogFileError),
    /// A log file is damaged. It is only this agent's copy of what the proxy holds, so
    /// there is no backup to restore: moved aside, it is fetched again.
    #[error("the owner log {} is damaged ({detail}); it is this agent's copy of what the proxy holds: move it aside and restart the agent, which fetches the log again", path.display())]
    Damaged { path: PathBuf, detail: String },
}

/// Entries from the proxy that were not (all) accepted. Whatever came before the refused
/// entry was kept.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The proxy sent a log for a key this agent does not obey. Nothing was stored: only
    /// the owners in the agent's config can grant or revoke anything here.
    #[error(
        "the proxy sent a bad owner log: {owner} is not an owner of this agent, so its entries were refused"
    )]
    UnknownOwner { owner: String },
    /// An entry is forged, altered, out of order, or follows a dropped one. The proxy (or
    /// the network before TLS, which cannot happen) misbehaved; the owner's next publish
    /// through an honest proxy repairs it.
    #[error("the proxy sent a bad owner log for {owner}: entry {position} of {count} refused, {accepted} good entries before it kept: {source}")]
    BadEntry {
        owner: OwnerKey,
        /// 1-based position of the refused entry in the message.
        position: usize,
        count: usize,
        /// New entries stored before the refused one.
        accepted: usize,
        /// Boxed: it holds two keys, and errors should be cheap to move around.
        #[source]
        source: Box<LogError>,
    },
    /// A good entry could not be written (disk full? SD card failing?). It was not
    /// acknowledged, so the proxy resends it on the next connection.
    #[error("could not store an owner log entry: {0}")]
    Store(#[source] LogFileError),
}

/// What a batch of entries did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    /// New entries verified and stored.
    pub added: usize,
    /// Entries we already held, identical.
    pub skipped: usize,
    /// The log's last sequence number afterwards.
    pub head: u64,
}

/// The owners' log files, open and locked for the life of the agent.
#[derive(Debug)]
pub struct OwnerLogs {
    files: BTreeMap<OwnerKey, LogFile>,
    /// Publishes a new snapshot after every change. A dropped receiver is fine: the agent
    /// may simply have nothing reading the logs yet.
    published: watch::Sender<Arc<VerifiedLogs>>,
}

impl OwnerLogs {
    /// Opens (creating if needed) one log file per owner in `dir`, verifying every entry
    /// already stored, except those up to a head this agent sealed with `seal` before
    /// (`wtd_keys::seal`): a Pi does not verify its owners' whole logs again at every boot.
    pub fn open(dir: &Path, owners: &[OwnerKey], seal: &SealKey) -> Result<OwnerLogs, OpenLogsError> {
        ensure_dir(dir, 0o700)?;
        let mut files = BTreeMap::new();
        for owner in owners {
            let path = log_path(dir, owner);
            let (file, report) = LogFile::open_sealed(&path, *owner, seal).map_err(|e| match e {
                LogFileError::Corrupt { offset, reason, .. } => OpenLogsError::Damaged {
                    path: path.clone(),
                    detail: format!("at byte {offset}: {reason}"),
                },
                LogFileError::Entry { source, .. } => OpenLogsError::Damaged {
                    path: path.clone(),
                    detail: source.to_string(),
                },
                other => OpenLogsError::File(other),
            })?;
            if report.torn_tail_bytes > 0 {
                log::warn!(
                    owner:% = owner, file:% = path.display();
                    "cut off {} bytes of an entry that was being written when the agent last stopped; \
                     the proxy will send it again",
                    report.torn_tail_bytes
                );
            }
            log::debug!(owner:% = owner, seq = file.log().head().seq; "owner log opened");
            files.insert(*owner, file);
        }
        let snapshot = VerifiedLogs::with_logs(
            files
                .iter()
                .map(|(owner, file)| (*owner, Arc::new(file.log().clone())))
                .collect(),
        );
        let (published, _) = watch::channel(Arc::new(snapshot));
        Ok(OwnerLogs { files, published })
    }

    /// A handle that always sees the latest verified logs.
    pub fn handle(&self) -> LogsHandle {
        self.published.subscribe()
    }

    /// Where each log ends, for the hello: the proxy then sends only what is new.
    pub fn heads(&self) -> Vec<LogHead> {
        self.files
            .iter()
            .map(|(owner, file)| LogHead {
                owner: Key::from(*owner.key()),
                seq: file.log().head().seq,
            })
            .collect()
    }

    /// Verifies and stores `entries` (the owner's signed bytes, in order) for `owner`.
    /// Stops at the first bad entry, keeping and publishing the good ones before it.
    pub fn apply(&mut self, owner: &Key, entries: &[Vec<u8>]) -> Result<Applied, ApplyError> {
        let unknown = || ApplyError::UnknownOwner {
            owner: owner
                .parse()
                .map_or_else(|_| "an invalid key".to_string(), |k: PublicId| k.to_string()),
        };
        let owner = OwnerKey(owner.parse().map_err(|_| unknown())?);
        let file = self.files.get_mut(&owner).ok_or_else(unknown)?;
        let mut applied = Applied {
            added: 0,
            skipped: 0,
            head: file.log().head().seq,
        };
        let mut result = Ok(());
        for (i, bytes) in entries.iter().enumerate() {
            let refused = |source| ApplyError::BadEntry {
                owner,
                position: i + 1,
                count: entries.len(),
                accepted: applied.added,
                source: Box::new(source),
            };
            match accept(file, owner, bytes) {
                Ok(Accepted::Added) => applied.added += 1,
                Ok(Accepted::AlreadyHeld) => applied.skipped += 1,
                Err(AcceptError::Refused(e)) => {
                    result = Err(refused(e));
                    break;
                }
                Err(AcceptError::Store(e)) => {
                    result = Err(ApplyError::Store(e));
                    break;
                }
            }
        }
        applied.head = file.log().head().seq;
        if applied.added > 0 {
            let log = Arc::new(file.log().clone());
            self.published.send_modify(|snapshot| {
                let mut logs = snapshot.logs.clone();
                logs.insert(owner, log);
                *snapshot = Arc::new(VerifiedLogs::with_logs(logs));
            });
        }
        result.map(|()| applied)
    }
}

/// `<dir>/<owner id>.log`: the owner's text id is already safe as a file name
/// (lowercase letters and digits only).
pub fn log_path(dir: &Path, owner: &OwnerKey) -> PathBuf {
    dir.join(format!("{owner}.log"))
}

enum Accepted {
    Added,
    AlreadyHeld,
}

enum AcceptError {
    Refused(LogError),
    Store(LogFileError),
}

/// Verifies one entry and appends it unless it is one we already hold.
fn accept(file: &mut LogFile, owner: OwnerKey, bytes: &[u8]) -> Result<Accepted, AcceptError> {
    let entry = SignedEntry::decode(bytes).map_err(|e| AcceptError::Refused(LogError::Record(e)))?;
    if entry.owner != owner {
        return Err(AcceptError::Refused(LogError::WrongOwner {
            expected: owner,
            found: entry.owner,
        }));
    }
    let held = file.log().head().seq;
    if entry.seq >= 1 && entry.seq <= held {
        let ours = &file.log().entries()[(entry.seq - 1) as usize];
        return if ours.hash() == entry.hash() {
            Ok(Accepted::AlreadyHeld)
        } else {
            Err(AcceptError::Refused(LogError::Fork { seq: entry.seq }))
        };
    }
    match file.append(entry) {
        Ok(()) => Ok(Accepted::Added),
        Err(LogFileError::Entry { source, .. }) => Err(AcceptError::Refused(source)),
        Err(e) => Err(AcceptError::Store(e)),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use wtd_keys::log::Record;
    use wtd_keys::{Audience, GrantId, MissionName, Rate, SecretKey, Timestamp, UserKey};

    fn alice() -> SecretKey {
        SecretKey::from_seed(&[1; 32])
    }
    fn mallory() -> SecretKey {
        SecretKey::from_seed(&[4; 32])
    }
    fn owner(k: &SecretKey) -> OwnerKey {
        OwnerKey(k.public())
    }

    /// `n` entries of `issuer`'s log, each a grant to Bob for `demo`; `salt` makes a
    /// different (forked) log with the same sequence numbers.
    fn chain(issuer: &SecretKey, n: u8, salt: u8) -> Vec<SignedEntry> {
        let mut log = OwnerLog::new(owner(issuer));
        (1..=n)
            .map(|i| {
                let grant = Grant {
                    id: GrantId([i ^ salt; 16]),
                    issuer: owner(issuer),
                    subject: UserKey(SecretKey::from_seed(&[2; 32]).public()),
                    audience: Audience::AllAgents,
                    mission: MissionName::new("demo").unwrap(),
                    rate: Rate {
                        calls: 10,
                        period_ms: 60_000,
                    },
                    burst: 2,
                    concurrency: 1,
                    not_before: Timestamp(1_750_000_000_000),
                    expires: Timestamp(1_750_007_200_000),
                    issued_at: Timestamp(1_750_000_000_000 + u64::from(salt)),
                };
                let entry = log.next_entry(issuer, Record::Grant(grant.sign(issuer))).unwrap();
                log.append(entry.clone()).unwrap();
                entry
            })
            .collect()
    }

    fn bytes(entries: &[SignedEntry]) -> Vec<Vec<u8>> {
        entries.iter().map(|e| e.bytes().to_vec()).collect()
    }

    fn key(k: &SecretKey) -> Key {
        Key::from(k.public())
    }

    fn open(dir: &Path) -> OwnerLogs {
        OwnerLogs::open(
            dir,
            &[owner(&alice())],
            &SealKey::derive(&SecretKey::from_seed(&[9; 32])),
        )
        .unwrap()
    }

    #[test]
    fn good_entries_are_stored_published_and_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let mut logs = open(dir.path());
        let mut handle = logs.handle();
        assert_eq!(
            logs.heads(),
            [LogHead {
                owner: key(&alice()),
                seq: 0
            }]
        );

        let entries = chain(&alice(), 3, 0);
        let applied = logs.apply(&key(&alice()), &bytes(&entries)).unwrap();
        assert_eq!(
            applied,
            Applied {
                added: 3,
                skipped: 0,
                head: 3
            }
        );
        assert!(handle.has_changed().unwrap(), "a change is published");
        assert_eq!(handle.borrow_and_update().grants().count(), 3);
        assert_eq!(logs.heads()[0].seq, 3);

        drop(logs);
        let logs = open(dir.path());
        assert_eq!(logs.heads()[0].seq, 3, "stored on disk");
        assert_eq!(
            logs.handle().borrow().log(&owner(&alice())).unwrap().entries(),
            &entries[..]
        );
    }

    #[test]
    fn entries_already_held_are_skipped_and_new_ones_added() {
        let dir = tempfile::tempdir().unwrap();
        let mut logs = open(dir.path());
        let entries = chain(&alice(), 3, 0);
        logs.apply(&key(&alice()), &bytes(&entries[..2])).unwrap();
        let applied = logs.apply(&key(&alice()), &bytes(&entries)).unwrap();
        assert_eq!(
            applied,
            Applied {
                added: 1,
                skipped: 2,
                head: 3
            }
        );
        let again = logs.apply(&key(&alice()), &bytes(&entries)).unwrap();
        assert_eq!(
            again,
            Applied {
                added: 0,
                skipped: 3,
                head: 3
            }
        );
    }

    #[test]
    fn logs_of_strangers_are_refused_and_not_stored() {
        let dir = tempfile::tempdir().unwrap();
        let mut logs = open(dir.path());
        let err = logs
            .apply(&key(&mallory()), &bytes(&chain(&mallory(), 1, 0)))
            .unwrap_err();
        assert!(matches!(err, ApplyError::UnknownOwner { .. }), "{err}");
        assert!(err.to_string().contains("bad owner log"), "{err}");
        assert!(!log_path(dir.path(), &owner(&mallory())).exists());
        let err = logs.apply(&Key([0; 32]), &[]).unwrap_err();
        assert!(err.to_string().contains("an invalid key"), "{err}");
    }

    /// Sends `offered` as Alice's log after `good` was accepted; expects `check` to match
    /// the refusal, and the good entries to remain.
    fn refused(good: &[SignedEntry], offered: Vec<Vec<u8>>, check: fn(&LogError) -> bool) {
        let dir = tempfile::tempdir().unwrap();
        let mut logs = open(dir.path());
        logs.apply(&key(&alice()), &bytes(good)).unwrap();
        let err = logs.apply(&key(&alice()), &offered).unwrap_err();
        let ApplyError::BadEntry { source, .. } = &err else {
            panic!("expected a bad entry, got {err}");
        };
        assert!(check(source), "{source:?}");
        assert!(
            err.to_string().starts_with("the proxy sent a bad owner log"),
            "{err}"
        );
        assert_eq!(logs.heads()[0].seq, good.len() as u64, "good entries are kept");
        drop(logs);
        assert_eq!(
            open(dir.path()).heads()[0].seq,
            good.len() as u64,
            "and only they are stored"
        );
    }

    #[test]
    fn an_entry_signed_by_someone_else_is_refused() {
        refused(&[], bytes(&chain(&mallory(), 1, 0)), |e| {
            matches!(e, LogError::WrongOwner { .. })
        });
    }

    #[test]
    fn an_altered_entry_is_refused() {
        let entries = chain(&alice(), 3, 0);
        let mut offered = bytes(&entries[1..]);
        let middle = offered[0].len() / 2;
        offered[0][middle] ^= 0x01;
        refused(&entries[..1], offered, |e| matches!(e, LogError::Record(_)));
    }

    #[test]
    fn a_dropped_or_reordered_entry_is_refused() {
        let entries = chain(&alice(), 3, 0);
        refused(&entries[..1], bytes(&entries[2..]), |e| {
            matches!(
                e,
                LogError::Gap {
                    expected: 2,
                    found: 3
                }
            )
        });
        let reordered = vec![entries[1].bytes().to_vec(), entries[0].bytes().to_vec()];
        refused(&[], reordered, |e| {
            matches!(
                e,
                LogError::Gap {
                    expected: 1,
                    found: 2
                }
            )
        });
    }

    #[test]
    fn a_fork_is_refused() {
        let ours = chain(&alice(), 2, 0);
        let theirs = chain(&alice(), 2, 0x80);
        refused(&ours, bytes(&theirs), |e| matches!(e, LogError::Fork { seq: 1 }));
    }

    #[test]
    fn adoptions_are_published_with_the_log_and_the_latest_wins() {
        let dir = tempfile::tempdir().unwrap();
        let mut logs = open(dir.path());
        let handle = logs.handle();
        let me = wtd_keys::AgentId(SecretKey::from_seed(&[7; 32]).public());
        let mut log = OwnerLog::new(owner(&alice()));
        let mut entries = Vec::new();
        for (i, action) in [wtd_keys::Action::Adopt, wtd_keys::Action::Disown]
            .into_iter()
            .enumerate()
        {
            let record = wtd_keys::Adoption {
                issuer: owner(&alice()),
                agent: me,
                action,
                token: None,
                issued_at: Timestamp(1_750_000_000_000 + i as u64),
            }
            .sign(&alice());
            let e = log.next_entry(&alice(), Record::Adoption(record)).unwrap();
            log.append(e.clone()).unwrap();
            entries.push(e);
        }
        assert!(!handle.borrow().adoptions().adopts(&owner(&alice()), &me));
        logs.apply(&key(&alice()), &bytes(&entries[..1])).unwrap();
        assert!(
            handle.borrow().adoptions().adopts(&owner(&alice()), &me),
            "adopted"
        );
        logs.apply(&key(&alice()), &bytes(&entries)).unwrap();
        assert!(
            !handle.borrow().adoptions().adopts(&owner(&alice()), &me),
            "then disowned"
        );
        drop(logs);
        let reopened = open(dir.path());
        assert!(
            !reopened
                .handle()
                .borrow()
                .adoptions()
                .adopts(&owner(&alice()), &me),
            "and so after a restart"
        );
    }

    #[test]
    fn the_good_prefix_of_a_bad_batch_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let mut logs = open(dir.path());
        let mut handle = logs.handle();
        let entries = chain(&alice(), 3, 0);
        let offered = vec![entries[0].bytes().to_vec(), entries[2].bytes().to_vec()];
        let err = logs.apply(&key(&alice()), &offered).unwrap_err();
        assert!(
            matches!(
                err,
                ApplyError::BadEntry {
                    position: 2,
                    count: 2,
                    accepted: 1,
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(
            handle.borrow_and_update().head(&owner(&alice())),
            1,
            "the good one is published"
        );
    }
}
