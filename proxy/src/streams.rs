//! The event store: every agent's signed event logs as the proxy keeps them, and the
//! positions of durable subscribers.
//!
//! The proxy is not trusted with events: each is the publisher's signed, chained bytes,
//! and every subscriber verifies them again. The proxy verifies what it stores anyway, so
//! garbage takes no disk and a broken publisher hears at once what was dropped and why.
//!
//! On disk, in `<state dir>/events/`:
//! - `<publisher id>.<mission>.events`: one log, in the crash-safe frames of
//!   `wtd_store::eventfile` (fsynced appends, a torn tail cut off on open);
//! - `<same>.trim`: why the events before the first kept one are gone (retention);
//! - `positions.json`: where each named subscription acknowledged, per log.
//!
//! Bounded: at most [`MAX_EVENT_LOGS`] logs, and per owner (the owner whose log adopts the
//! publisher; agents nobody adopted share one budget) at most `max_bytes` of events, none
//! older than `max_age`, as [`Retention`] says for that owner. Past a bound the oldest
//! events go first (never a log's last event, which the next one chains to), and the log
//! remembers "events before N were dropped because ..." for its subscribers.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::time::Duration;

use wtd_keys::event::{ChainError, LogId, SignedEvent};
use wtd_keys::{AgentId, MissionName, OwnerKey, PublicId};
use wtd_store::eventfile::{EventFile, EventFileError};

use crate::defaults::{
    EVENTS_MAX_AGE, EVENTS_MAX_BYTES, EVENTS_TRIM_TO_PERCENT, MAX_EVENT_LOGS, MAX_EVENT_LOGS_PER_AGENT,
    MAX_SUBSCRIPTION_POSITIONS,
};

/// How long and how much of an owner's agents' events the proxy keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    /// Bytes of events, over all logs of the owner's agents.
    pub max_bytes: u64,
    /// Events older than this (by when the proxy received them) are dropped.
    pub max_age: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            max_bytes: EVENTS_MAX_BYTES,
            max_age: EVENTS_MAX_AGE,
        }
    }
}

/// Retention for everyone, and per owner (`[events]` and `[[events.owner]]` in proxy.toml).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EventsConfig {
    pub default: Retention,
    pub owners: HashMap<OwnerKey, Retention>,
}

/// Why events were not stored. Each message says what was dropped and why.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("dropped: an event does not verify ({0})")]
    Bad(#[from] wtd_keys::record::RecordError),
    #[error("dropped: events of {found} in a publish for {expected}; publish one log at a time")]
    WrongLog { expected: String, found: String },
    #[error("dropped: only agent {publisher} may publish its own events")]
    NotThePublisher { publisher: String },
    #[error("dropped: {0}")]
    Chain(#[from] ChainError),
    #[error("dropped: the proxy holds at most {MAX_EVENT_LOGS} event logs, and {MAX_EVENT_LOGS_PER_AGENT} per agent; it is full")]
    TooManyLogs,
    #[error("dropped: the proxy could not store the events: {0}")]
    Disk(#[from] EventFileError),
}

/// One log as held: its file and its events (oldest first, with when each arrived).
#[derive(Debug)]
struct Held {
    file: EventFile,
    events: VecDeque<(SignedEvent, u64)>,
    bytes: u64,
    /// Events before this seq are gone, and why.
    trimmed: Option<(u64, String)>,
}

impl Held {
    fn first_seq(&self) -> u64 {
        self.events.front().map_or(1, |(e, _)| e.event().seq)
    }
}

/// Events the store could not keep, for the proxy's log.
#[derive(Debug, PartialEq, Eq)]
pub struct Trimmed {
    pub log: LogId,
    pub before: u64,
    pub reason: String,
}

#[derive(Debug)]
pub struct EventStore {
    dir: PathBuf,
    config: EventsConfig,
    logs: BTreeMap<LogId, Held>,
    /// (subscriber key, subscription name) -> position per log.
    positions: HashMap<(PublicId, String), HashMap<LogId, u64>>,
    /// Whose budget each publisher's logs count against, as of its last publish (agents
    /// not heard from since a restart count as nobody's until they publish again).
    buckets: HashMap<AgentId, Option<OwnerKey>>,
    /// Bumped on every stored event, so waiting subscribers look again.
    version: tokio::sync::watch::Sender<u64>,
}

fn file_name(id: &LogId) -> String {
    format!("{}.{}.events", id.publisher, id.mission)
}

fn parse_name(name: &str) -> Option<LogId> {
    let stem = name.strip_suffix(".events")?;
    let (publisher, mission) = stem.split_once('.')?;
    Some(LogId {
        publisher: publisher.parse().ok()?,
        mission: MissionName::new(mission).ok()?,
    })
}

#[derive(serde::Serialize, serde::Deserialize)]
struct TrimNote {
    before: u64,
    reason: String,
}

#[derive(serde::Serialize, serde::Deserialize, Default)]
struct PositionsFile {
    subscriptions: Vec<PositionsEntry>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct PositionsEntry {
    subscriber: String,
    name: String,
    logs: Vec<(String, String, u64)>,
}

impl EventStore {
    /// Opens every log in `dir` (creating it): verified, torn tails cut off. A damaged log
    /// is moved aside (`.damaged`) and reported, so one bad file never stops the proxy.
    pub fn open(dir: &Path, config: EventsConfig, now_ms: u64) -> anyhow::Result<EventStore> {
        wtd_store::atomic::ensure_dir(dir, 0o700)?;
        let mut logs = BTreeMap::new();
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            let Some(id) = path.file_name().and_then(|n| n.to_str()).and_then(parse_name) else {
                continue;
            };
            match EventFile::open(&path, id.clone()) {
                Ok(opened) => {
                    if opened.torn_tail_bytes > 0 {
                        log::warn!(
                            "{}: cut off a torn last event ({} bytes); it was never acknowledged",
                            path.display(),
                            opened.torn_tail_bytes
                        );
                    }
                    let trimmed = std::fs::read(path.with_extension("trim"))
                        .ok()
                        .and_then(|b| serde_json::from_slice::<TrimNote>(&b).ok())
                        .map(|n| (n.before, n.reason));
                    // When each arrived is not stored: count from now, so a restart never
                    // drops events early (it may keep them up to one max_age longer).
                    let events: VecDeque<(SignedEvent, u64)> =
                        opened.events.into_iter().map(|e| (e, now_ms)).collect();
                    let bytes = events.iter().map(|(e, _)| e.bytes().len() as u64).sum();
                    let mut held = Held {
                        file: opened.file,
                        events,
                        bytes,
                        trimmed,
                    };
                    if held.trimmed.is_none() && held.first_seq() > 1 {
                        held.trimmed = Some((held.first_seq(), "dropped by retention".into()));
                    }
                    logs.insert(id, held);
                }
                Err(e) => {
                    let aside = path.with_extension("events.damaged");
                    log::error!("{e}; moved to {}", aside.display());
                    let _ = std::fs::rename(&path, &aside);
                }
            }
        }
        let positions = std::fs::read(dir.join("positions.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<PositionsFile>(&b).ok())
            .unwrap_or_default();
        let positions = positions
            .subscriptions
            .into_iter()
            .filter_map(|s| {
                let who: PublicId = s.subscriber.parse().ok()?;
                let logs = s
                    .logs
                    .into_iter()
                    .filter_map(|(p, m, seq)| {
                        Some((
                            LogId {
                                publisher: p.parse().ok()?,
                                mission: MissionName::new(&m).ok()?,
                            },
                            seq,
                        ))
                    })
                    .collect();
                Some(((who, s.name), logs))
            })
            .collect();
        Ok(EventStore {
            dir: dir.to_path_buf(),
            config,
            logs,
            positions,
            buckets: HashMap::new(),
            version: tokio::sync::watch::channel(0).0,
        })
    }

    /// Notified after every stored event.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.version.subscribe()
    }

    /// Where the proxy's copy of `id` ends.
    pub fn head(&self, id: &LogId) -> u64 {
        self.logs.get(id).map_or(0, |h| h.file.log().head().0)
    }

    /// The logs of `mission` held now.
    pub fn logs_of(&self, mission: &MissionName) -> Vec<LogId> {
        self.logs
            .keys()
            .filter(|l| &l.mission == mission)
            .cloned()
            .collect()
    }

    /// Stores events `sender` published for its log of `mission`: each verified and chained
    /// onto the proxy's copy (events it already holds are skipped). Returns the new head,
    /// which is lower than the last event sent when one was missing: the sender resends from
    /// there. `owner` picks the retention (see the module docs).
    pub fn publish(
        &mut self,
        sender: &AgentId,
        mission: &MissionName,
        entries: &[Vec<u8>],
        owner: Option<OwnerKey>,
        now_ms: u64,
    ) -> Result<(u64, Vec<Trimmed>), StoreError> {
        let id = LogId {
            publisher: *sender,
            mission: mission.clone(),
        };
        let mut decoded = Vec::with_capacity(entries.len());
        for bytes in entries {
            let e = SignedEvent::decode(bytes)?;
            if e.event().log.publisher != *sender {
                return Err(StoreError::NotThePublisher {
                    publisher: e.event().log.publisher.to_string(),
                });
            }
            if e.event().log != id {
                return Err(StoreError::WrongLog {
                    expected: id.to_string(),
                    found: e.event().log.to_string(),
                });
            }
            decoded.push(e);
        }
        if !self.logs.contains_key(&id) {
            let of_agent = self.logs.keys().filter(|l| l.publisher == *sender).count();
            if self.logs.len() >= MAX_EVENT_LOGS || of_agent >= MAX_EVENT_LOGS_PER_AGENT {
                return Err(StoreError::TooManyLogs);
            }
            let opened = EventFile::open(&self.dir.join(file_name(&id)), id.clone())?;
            self.logs.insert(
                id.clone(),
                Held {
                    file: opened.file,
                    events: VecDeque::new(),
                    bytes: 0,
                    trimmed: None,
                },
            );
        }
        self.buckets.insert(*sender, owner);
        let held = self.logs.get_mut(&id).expect("inserted above");
        let mut next = held.file.log().head().0 + 1;
        let mut fresh = Vec::new();
        for e in decoded {
            if e.event().seq < next {
                continue; // already held (a resend); the chain was checked when it came
            }
            if e.event().seq > next {
                break; // a gap: the answer tells the sender where to resend from
            }
            next += 1;
            fresh.push(e);
        }
        // One write and one fsync for the batch; the file checks that each chains on.
        held.file.append_all(&fresh)?;
        let stored = fresh.len();
        for e in fresh {
            held.bytes += e.bytes().len() as u64;
            held.events.push_back((e, now_ms));
        }
        let head = held.file.log().head().0;
        let trimmed = if stored > 0 {
            self.version.send_modify(|v| *v += 1);
            self.enforce(owner, now_ms)
        } else {
            Vec::new()
        };
        Ok((head, trimmed))
    }

    /// Applies retention to the logs of `owner`'s bucket (and to the whole store's log count).
    fn enforce(&mut self, owner: Option<OwnerKey>, now_ms: u64) -> Vec<Trimmed> {
        let retention = owner
            .and_then(|o| self.config.owners.get(&o).copied())
            .unwrap_or(self.config.default);
        // The logs sharing this owner's budget: those of agents it adopted.
        let bucket: Vec<LogId> = self
            .logs
            .keys()
            .filter(|l| self.bucket_of(l) == owner)
            .cloned()
            .collect();
        let mut cut: HashMap<LogId, String> = HashMap::new();
        // Age first, then size, oldest arrival first across the bucket.
        let max_age_ms = retention.max_age.as_millis() as u64;
        for l in &bucket {
            let held = self.logs.get_mut(l).expect("listed");
            while held.events.len() > 1 && now_ms.saturating_sub(held.events[0].1) > max_age_ms {
                let (e, _) = held.events.pop_front().expect("len > 1");
                held.bytes -= e.bytes().len() as u64;
                cut.insert(
                    l.clone(),
                    format!(
                        "older than the {} this proxy keeps events for",
                        humantime::format_duration(retention.max_age)
                    ),
                );
            }
        }
        let total = |logs: &BTreeMap<LogId, Held>| bucket.iter().map(|l| logs[l].bytes).sum::<u64>();
        if total(&self.logs) > retention.max_bytes {
            let target = retention.max_bytes * EVENTS_TRIM_TO_PERCENT / 100;
            while total(&self.logs) > target {
                let oldest = bucket
                    .iter()
                    .filter(|l| self.logs[*l].events.len() > 1)
                    .min_by_key(|l| self.logs[*l].events[0].1)
                    .cloned();
                let Some(l) = oldest else { break };
                let held = self.logs.get_mut(&l).expect("listed");
                let (e, _) = held.events.pop_front().expect("len > 1");
                held.bytes -= e.bytes().len() as u64;
                cut.insert(
                    l,
                    format!(
                        "over the {} bytes of events this proxy keeps for {}",
                        retention.max_bytes,
                        owner.map_or("agents nobody adopted".to_string(), |o| format!(
                            "owner {}",
                            o.key().short()
                        ))
                    ),
                );
            }
        }
        let mut out = Vec::new();
        for (l, reason) in cut {
            let held = self.logs.get_mut(&l).expect("listed");
            let before = held.first_seq();
            let keep: Vec<SignedEvent> = held.events.iter().map(|(e, _)| e.clone()).collect();
            let note = serde_json::to_vec(&TrimNote {
                before,
                reason: reason.clone(),
            })
            .expect("plain data");
            // The note first: a crash between the two leaves a note for events still held,
            // which only words the reason early.
            let path = self.dir.join(file_name(&l)).with_extension("trim");
            if let Err(e) = wtd_store::atomic::write_atomic(&path, &note, 0o600)
                .map_err(EventFileError::from)
                .and_then(|()| held.file.trim(&keep))
            {
                log::error!("could not trim the event log of {l}: {e}");
            }
            held.trimmed = Some((before, reason.clone()));
            out.push(Trimmed {
                log: l,
                before,
                reason,
            });
        }
        out
    }

    fn bucket_of(&self, l: &LogId) -> Option<OwnerKey> {
        self.buckets.get(&l.publisher).copied().flatten()
    }

    /// Events of `id` after `seq`, at most `max` of them, and the trim note if some of the
    /// asked-for events are gone.
    pub fn after(&self, id: &LogId, seq: u64, max: usize) -> (Vec<SignedEvent>, Option<(u64, String)>) {
        let Some(held) = self.logs.get(id) else {
            return (Vec::new(), None);
        };
        let first = held.first_seq();
        let gone = held
            .trimmed
            .clone()
            .filter(|(before, _)| seq + 1 < *before && seq + 1 < first);
        let events = held
            .events
            .iter()
            .map(|(e, _)| e)
            .filter(|e| e.event().seq > seq)
            .take(max)
            .cloned()
            .collect();
        (events, gone)
    }

    /// A named subscription's acknowledged positions.
    pub fn position(&self, subscriber: &PublicId, name: &str) -> HashMap<LogId, u64> {
        self.positions
            .get(&(*subscriber, name.to_string()))
            .cloned()
            .unwrap_or_default()
    }

    /// Records an acknowledgement, durably (an atomic rewrite of `positions.json`).
    pub fn acknowledge(
        &mut self,
        subscriber: &PublicId,
        name: &str,
        log: LogId,
        seq: u64,
    ) -> Result<(), String> {
        let key = (*subscriber, name.to_string());
        if !self.positions.contains_key(&key) && self.positions.len() >= MAX_SUBSCRIPTION_POSITIONS {
            return Err(format!(
                "the proxy keeps positions for at most {MAX_SUBSCRIPTION_POSITIONS} named subscriptions and is full"
            ));
        }
        let entry = self.positions.entry(key).or_default();
        let pos = entry.entry(log).or_default();
        if seq <= *pos {
            return Ok(());
        }
        *pos = seq;
        let file = PositionsFile {
            subscriptions: self
                .positions
                .iter()
                .map(|((who, name), logs)| PositionsEntry {
                    subscriber: who.to_string(),
                    name: name.clone(),
                    logs: logs
                        .iter()
                        .map(|(l, s)| (l.publisher.to_string(), l.mission.to_string(), *s))
                        .collect(),
                })
                .collect(),
        };
        let bytes = serde_json::to_vec(&file).expect("plain data");
        wtd_store::atomic::write_atomic(&self.dir.join("positions.json"), &bytes, 0o600)
            .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wtd_keys::event::EventLog;
    use wtd_keys::{SecretKey, Timestamp, TopicName};

    fn agent(n: u8) -> (SecretKey, AgentId) {
        let k = SecretKey::from_seed(&[n; 32]);
        let id = AgentId(k.public());
        (k, id)
    }

    fn mission() -> MissionName {
        MissionName::new("social").unwrap()
    }

    /// `n` chained events of `k`'s `social` log, with bodies of `size` bytes.
    fn events(k: &SecretKey, n: usize, size: usize) -> Vec<Vec<u8>> {
        let mut log = EventLog::new(LogId {
            publisher: AgentId(k.public()),
            mission: mission(),
        });
        (0..n)
            .map(|_| {
                let body = format!("\"{}\"", "x".repeat(size));
                let e = log
                    .next(k, Timestamp(1), TopicName::new("t").unwrap(), body, Vec::new())
                    .unwrap();
                log.appended(&e);
                e.bytes().to_vec()
            })
            .collect()
    }

    fn store(dir: &Path, config: EventsConfig) -> EventStore {
        EventStore::open(dir, config, 0).unwrap()
    }

    #[test]
    fn events_are_stored_resent_events_skipped_and_a_gap_answered_with_the_head() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = store(dir.path(), EventsConfig::default());
        let (k, id) = agent(1);
        let e = events(&k, 4, 10);
        assert_eq!(s.publish(&id, &mission(), &e[..2], None, 0).unwrap().0, 2);
        assert_eq!(
            s.publish(&id, &mission(), &e[..2], None, 0).unwrap().0,
            2,
            "a resend"
        );
        assert_eq!(
            s.publish(&id, &mission(), &e[3..], None, 0).unwrap().0,
            2,
            "a gap: resend from 3"
        );
        assert_eq!(s.publish(&id, &mission(), &e[1..], None, 0).unwrap().0, 4);
        let log = LogId {
            publisher: id,
            mission: mission(),
        };
        assert_eq!(s.after(&log, 1, 10).0.len(), 3);
        drop(s);
        let s = store(dir.path(), EventsConfig::default());
        assert_eq!(s.head(&log), 4, "survives a reopen");
    }

    #[test]
    fn events_of_someone_else_or_another_log_or_altered_are_dropped_saying_why() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = store(dir.path(), EventsConfig::default());
        let (k, id) = agent(1);
        let (_, other) = agent(2);
        let e = events(&k, 1, 10);
        let err = s.publish(&other, &mission(), &e, None, 0).unwrap_err();
        assert!(matches!(err, StoreError::NotThePublisher { .. }), "{err}");
        let err = s
            .publish(&id, &MissionName::new("photos").unwrap(), &e, None, 0)
            .unwrap_err();
        assert!(matches!(err, StoreError::WrongLog { .. }), "{err}");
        let mut bad = e[0].clone();
        let n = bad.len();
        bad[n - 3] ^= 1;
        let err = s.publish(&id, &mission(), &[bad], None, 0).unwrap_err();
        assert!(matches!(err, StoreError::Bad(_)), "{err}");
        assert!(err.to_string().starts_with("dropped"), "{err}");
    }

    #[test]
    fn too_many_logs_per_agent_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = store(dir.path(), EventsConfig::default());
        let (k, id) = agent(1);
        for i in 0..MAX_EVENT_LOGS_PER_AGENT {
            let m = MissionName::new(&format!("m{i}")).unwrap();
            let log = EventLog::new(LogId {
                publisher: id,
                mission: m.clone(),
            });
            let e = log
                .next(
                    &k,
                    Timestamp(1),
                    TopicName::new("t").unwrap(),
                    "1".into(),
                    Vec::new(),
                )
                .unwrap();
            s.publish(&id, &m, &[e.bytes().to_vec()], None, 0).unwrap();
        }
        let err = s
            .publish(&id, &mission(), &events(&k, 1, 1), None, 0)
            .unwrap_err();
        assert!(matches!(err, StoreError::TooManyLogs), "{err}");
    }

    #[test]
    fn over_its_owners_bytes_the_oldest_go_and_subscribers_are_told_why() {
        let dir = tempfile::tempdir().unwrap();
        let (owner_key, _) = agent(7);
        let owner = OwnerKey(owner_key.public());
        let mut config = EventsConfig::default();
        config.owners.insert(
            owner,
            Retention {
                max_bytes: 10_000,
                max_age: Duration::from_secs(3600),
            },
        );
        let mut s = store(dir.path(), config.clone());
        let (k, id) = agent(1);
        let e = events(&k, 40, 900);
        let (head, trimmed) = s.publish(&id, &mission(), &e, Some(owner), 0).unwrap();
        assert_eq!(head, 40);
        assert_eq!(trimmed.len(), 1);
        assert!(
            trimmed[0].reason.contains("over the 10000 bytes"),
            "{}",
            trimmed[0].reason
        );
        let log = LogId {
            publisher: id,
            mission: mission(),
        };
        let (kept, gone) = s.after(&log, 0, 100);
        assert!(kept.len() < 40 && !kept.is_empty());
        let (before, reason) = gone.expect("the subscriber is told");
        assert_eq!(before, kept[0].event().seq);
        assert!(reason.contains("bytes"));
        // The trimmed file and its note survive a restart; the chain goes on.
        drop(s);
        let mut s = store(dir.path(), config);
        let (kept2, gone2) = s.after(&log, 0, 100);
        assert_eq!(kept2.len(), kept.len());
        assert_eq!(gone2.map(|g| g.0), Some(before));
        let more = events(&k, 41, 900);
        assert_eq!(
            s.publish(&id, &mission(), &more[40..], Some(owner), 0).unwrap().0,
            41
        );
    }

    #[test]
    fn events_older_than_the_max_age_go() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = EventsConfig::default();
        config.default.max_age = Duration::from_secs(60);
        let mut s = store(dir.path(), config);
        let (k, id) = agent(1);
        let e = events(&k, 3, 10);
        s.publish(&id, &mission(), &e[..2], None, 0).unwrap();
        let (_, trimmed) = s.publish(&id, &mission(), &e[2..], None, 61_000).unwrap();
        assert_eq!(trimmed.len(), 1);
        assert_eq!(trimmed[0].before, 3, "never the last event");
        assert!(trimmed[0].reason.contains("older than"), "{}", trimmed[0].reason);
    }

    #[test]
    fn positions_are_kept_across_a_restart_and_never_go_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = store(dir.path(), EventsConfig::default());
        let (_, id) = agent(1);
        let reader = SecretKey::from_seed(&[3; 32]).public();
        let log = LogId {
            publisher: id,
            mission: mission(),
        };
        s.acknowledge(&reader, "inbox", log.clone(), 5).unwrap();
        s.acknowledge(&reader, "inbox", log.clone(), 3).unwrap();
        drop(s);
        let s = store(dir.path(), EventsConfig::default());
        assert_eq!(s.position(&reader, "inbox").get(&log), Some(&5));
        assert!(s.position(&reader, "other").is_empty());
    }

    #[test]
    fn a_damaged_log_is_moved_aside_and_the_proxy_starts() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = store(dir.path(), EventsConfig::default());
        let (k, id) = agent(1);
        s.publish(&id, &mission(), &events(&k, 3, 10), None, 0).unwrap();
        drop(s);
        let path = dir.path().join(file_name(&LogId {
            publisher: id,
            mission: mission(),
        }));
        let mut data = std::fs::read(&path).unwrap();
        data[20] ^= 0xff;
        std::fs::write(&path, data).unwrap();
        let s = store(dir.path(), EventsConfig::default());
        assert!(s.logs_of(&mission()).is_empty());
        assert!(path.with_extension("events.damaged").exists());
    }
}
