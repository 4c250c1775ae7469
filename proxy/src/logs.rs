//! The owner logs the proxy keeps and hands to agents.
//!
//! The proxy is not trusted with these: every entry is the owner's signed bytes, and
//! agents verify them again. The proxy still verifies what it stores, for two reasons:
//! garbage must not take disk space, and an owner who publishes a broken log should hear
//! so at once rather than from every agent later.
//!
//! One file per owner, `logs/<owner id>.log`, in the same crash-safe format the owner
//! keeps (`wtd_store::logfile`), so a restarted proxy still has every log.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use wtd_keys::log::SignedEntry;
use wtd_keys::record::RecordError;
use wtd_keys::{AdoptionBook, AgentId, MissionName, OwnerKey, PublicId, Timestamp};
use wtd_store::logfile::{LogFile, LogFileError};
use wtd_wire::defaults::MAX_LOG_BATCH_BYTES;

use crate::defaults::{MAX_LOG_ENTRIES, MAX_OWNER_LOGS};

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("no entries to publish")]
    Empty,
    #[error("a log entry is invalid: {0}")]
    Entry(#[from] RecordError),
    #[error("all entries in one publish must belong to one owner")]
    MixedOwners,
    #[error("the proxy stores at most {MAX_OWNER_LOGS} owners' logs and is full")]
    TooManyLogs,
    #[error("this owner log is over the proxy's limit of {MAX_LOG_ENTRIES} entries")]
    TooManyEntries,
    #[error("the proxy could not store the log: {0}")]
    Store(#[from] LogFileError),
}

#[derive(Debug)]
pub struct LogStore {
    dir: PathBuf,
    logs: HashMap<OwnerKey, LogFile>,
}

impl LogStore {
    /// Opens every log in `dir` (creating `dir` if needed).
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        wtd_store::atomic::ensure_dir(dir, 0o700)?;
        let mut logs = HashMap::new();
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            let Some(owner) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".log"))
                .and_then(|n| n.parse::<OwnerKey>().ok())
            else {
                continue;
            };
            let (file, report) = LogFile::open(&path, owner)?;
            if report.torn_tail_bytes > 0 {
                log::warn!(
                    "{}: cut off a torn last record ({} bytes)",
                    path.display(),
                    report.torn_tail_bytes
                );
            }
            logs.insert(owner, file);
        }
        Ok(LogStore {
            dir: dir.to_path_buf(),
            logs,
        })
    }

    /// How many entries the proxy holds for `owner`.
    pub fn head(&self, owner: &OwnerKey) -> u64 {
        self.logs.get(owner).map_or(0, |f| f.log().head().seq)
    }

    /// Does `owner`'s log, as stored here, adopt `agent` (latest word wins)? The proxy
    /// checks this for `--allow`; agents and callers check it again themselves.
    pub fn adopts(&self, owner: &OwnerKey, agent: &AgentId) -> bool {
        self.logs
            .get(owner)
            .is_some_and(|f| AdoptionBook::from_logs([f.log()]).adopts(owner, agent))
    }

    /// The owners whose logs (as stored here) adopt `agent`.
    pub fn adopters(&self, agent: &AgentId) -> Vec<OwnerKey> {
        let mut owners: Vec<OwnerKey> = self
            .logs
            .keys()
            .filter(|o| self.adopts(o, agent))
            .copied()
            .collect();
        owners.sort();
        owners
    }

    /// May `reader` read the events of `mission` that `publisher` publishes? Yes for the
    /// publisher itself and for an owner who adopted it; otherwise only with a grant for
    /// the mission, to the reader, from an owner who adopted the publisher, that covers
    /// it, is valid at `now` and is not revoked (the same grant that lets the reader call
    /// the mission there). `Err` says why not, for the subscriber.
    pub fn may_read(
        &self,
        reader: &PublicId,
        mission: &MissionName,
        publisher: &AgentId,
        now: Timestamp,
    ) -> Result<(), String> {
        if reader == publisher.key() {
            return Ok(());
        }
        let adopters = self.adopters(publisher);
        if adopters.iter().any(|o| o.key() == reader) {
            return Ok(());
        }
        let mut why = format!("no grant to you for mission {mission} from an owner of that agent");
        for owner in &adopters {
            let Some(file) = self.logs.get(owner) else {
                continue;
            };
            for g in file.log().grants() {
                let grant = g.grant();
                if grant.subject.key() != reader || &grant.mission != mission {
                    continue;
                }
                if !grant.audience.covers(publisher) {
                    why = format!("your grant for {mission} does not cover that agent");
                    continue;
                }
                if now < grant.not_before {
                    why = format!("your grant for {mission} is not valid yet");
                    continue;
                }
                if now >= grant.expires {
                    why = format!("your grant for {mission} expired; ask its owner to renew it");
                    continue;
                }
                if file.log().revocations().any(|r| r.revocation().revokes(grant)) {
                    why = format!("your grant for {mission} was revoked");
                    continue;
                }
                return Ok(());
            }
        }
        Err(why)
    }

    /// Entries after `seq`, in batches that each fit one message.
    pub fn batches_after(&self, owner: &OwnerKey, seq: u64) -> Vec<Vec<Vec<u8>>> {
        let Some(file) = self.logs.get(owner) else {
            return Vec::new();
        };
        let mut batches = Vec::new();
        let mut batch = Vec::new();
        let mut size = 0;
        for e in file.log().entries().iter().skip(seq as usize) {
            if size + e.bytes().len() > MAX_LOG_BATCH_BYTES && !batch.is_empty() {
                batches.push(std::mem::take(&mut batch));
                size = 0;
            }
            size += e.bytes().len();
            batch.push(e.bytes().to_vec());
        }
        if !batch.is_empty() {
            batches.push(batch);
        }
        batches
    }

    /// Stores entries of one owner's log. Entries the proxy already has must match; new
    /// ones must chain on. Returns the owner and the new head.
    pub fn publish(&mut self, entries: &[Vec<u8>]) -> Result<(OwnerKey, u64), PublishError> {
        let decoded = entries
            .iter()
            .map(|b| SignedEntry::decode(b))
            .collect::<Result<Vec<_>, _>>()?;
        let owner = decoded.first().ok_or(PublishError::Empty)?.owner;
        if decoded.iter().any(|e| e.owner != owner) {
            return Err(PublishError::MixedOwners);
        }
        if !self.logs.contains_key(&owner) {
            if self.logs.len() >= MAX_OWNER_LOGS {
                return Err(PublishError::TooManyLogs);
            }
            let path = self.dir.join(format!("{owner}.log"));
            let (file, _) = LogFile::open(&path, owner)?;
            self.logs.insert(owner, file);
        }
        let file = self.logs.get_mut(&owner).expect("inserted above");
        let last = decoded.last().map_or(0, |e| e.seq);
        if last > MAX_LOG_ENTRIES {
            return Err(PublishError::TooManyEntries);
        }
        file.sync(decoded)?;
        Ok((owner, file.log().head().seq))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wtd_keys::log::Record;
    use wtd_keys::{
        Action, Adoption, Audience, Grant, GrantId, OwnerLog, Rate, Revocation, SecretKey, Target, UserKey,
    };

    fn key(n: u8) -> SecretKey {
        SecretKey::from_seed(&[n; 32])
    }

    const NOW: Timestamp = Timestamp(1_900_000_000_000);

    fn grant(
        alice: &SecretKey,
        to: &SecretKey,
        mission: &str,
        audience: Audience,
        id: u8,
        expires: Timestamp,
    ) -> Grant {
        Grant {
            id: GrantId([id; 16]),
            issuer: OwnerKey(alice.public()),
            subject: UserKey(to.public()),
            audience,
            mission: MissionName::new(mission).unwrap(),
            rate: Rate {
                calls: 10,
                period_ms: 60_000,
            },
            burst: 10,
            concurrency: 1,
            not_before: NOW.minus_ms(1000),
            expires,
            issued_at: NOW.minus_ms(1000),
        }
    }

    /// Alice (1) adopts agent 10; grants Bob (2) `social` on all agents, Carol (3) `social`
    /// on agent 11 only, Dave (4) `social` expired, Erin (5) `social` then revokes it.
    fn store(dir: &Path) -> LogStore {
        let alice = key(1);
        let owner = OwnerKey(alice.public());
        let mut log = OwnerLog::new(owner);
        let adopt = Adoption {
            issuer: owner,
            agent: AgentId(key(10).public()),
            action: Action::Adopt,
            token: None,
            issued_at: NOW.minus_ms(2000),
        }
        .sign(&alice);
        let mut records = vec![Record::Adoption(adopt)];
        let later = NOW.plus_ms(3_600_000);
        for g in [
            grant(&alice, &key(2), "social", Audience::AllAgents, 1, later),
            grant(
                &alice,
                &key(3),
                "social",
                Audience::agents(vec![AgentId(key(11).public())]),
                2,
                later,
            ),
            grant(
                &alice,
                &key(4),
                "social",
                Audience::AllAgents,
                3,
                NOW.minus_ms(10),
            ),
            grant(&alice, &key(5), "social", Audience::AllAgents, 4, later),
        ] {
            records.push(Record::Grant(g.sign(&alice)));
        }
        let revoke = Revocation {
            issuer: owner,
            target: Target::Grant(GrantId([4; 16])),
            issued_at: NOW.minus_ms(500),
        }
        .sign(&alice);
        records.push(Record::Revocation(revoke));
        let mut entries = Vec::new();
        for r in records {
            let e = log.next_entry(&alice, r).unwrap();
            log.append(e.clone()).unwrap();
            entries.push(e.bytes().to_vec());
        }
        let mut store = LogStore::open(dir).unwrap();
        store.publish(&entries).unwrap();
        store
    }

    #[test]
    fn who_may_read_an_agents_events() {
        let dir = tempfile::tempdir().unwrap();
        let logs = store(dir.path());
        let social = MissionName::new("social").unwrap();
        let photos = MissionName::new("photos").unwrap();
        let agent = AgentId(key(10).public());
        let stranger = AgentId(key(12).public());
        let may = |reader: u8, mission: &MissionName, publisher: &AgentId| {
            logs.may_read(&key(reader).public(), mission, publisher, NOW)
        };
        assert_eq!(may(10, &social, &agent), Ok(()), "the publisher itself");
        assert_eq!(may(1, &social, &agent), Ok(()), "the owner who adopted it");
        assert_eq!(may(2, &social, &agent), Ok(()), "a grant holder");
        let why = may(2, &photos, &agent).unwrap_err();
        assert!(why.contains("no grant"), "{why}");
        let why = may(2, &social, &stranger).unwrap_err();
        assert!(why.contains("no grant"), "an agent nobody adopted: {why}");
        let why = may(3, &social, &agent).unwrap_err();
        assert!(why.contains("does not cover"), "{why}");
        let why = may(4, &social, &agent).unwrap_err();
        assert!(why.contains("expired"), "{why}");
        let why = may(5, &social, &agent).unwrap_err();
        assert!(why.contains("revoked"), "{why}");
        let why = logs
            .may_read(&key(2).public(), &social, &agent, NOW.minus_ms(3_600_000))
            .unwrap_err();
        assert!(why.contains("not valid yet"), "{why}");
        assert_eq!(logs.adopters(&agent), vec![OwnerKey(key(1).public())]);
    }
}
