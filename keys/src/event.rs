//! Signed event streams: each agent keeps, per mission, an append-only, hash-chained log
//! of the events its handlers emitted, every entry signed by the agent.
//!
//! It is the owner log's mechanism ([`crate::log`]) applied to events: an entry names its
//! log (publisher and mission), its number (1, 2, 3, ...) and the hash of the entry before
//! it. So the proxy that stores and forwards events can drop or delay them, but it cannot
//! forge one (it would need the agent's key), alter one (the signature breaks), reorder
//! them or hide one in the middle (the next one would not chain): [`Chain`] notices.
//!
//! Each event also names the events it *depends on*: when an agent's handler emits an event
//! while it handles another one, the agent records the handled event (and what it depended
//! on) as dependencies. [`CausalOrder`] holds an event back until every event it depends on
//! has been delivered, and lets independent events through at once.
//!
//! ```text
//! event = kind(7) version(1)
//!         1 publisher   agent key (32)
//!         2 mission     mission name
//!         3 seq         u64, first event is 1
//!         4 prev        32-byte hash of the previous event of this log, zeros for the first
//!         5 at          u64 ms since the epoch (the agent's clock; informative)
//!         6 topic       topic name
//!         7 body        UTF-8 JSON, at most MAX_EVENT_BODY bytes
//!         8 deps        dependency*, sorted, one per log: publisher(32) seq(8) len(1) mission
//!       255 signature   by publisher, domain "wtd event v1"
//! hash(event) = SHA-256("wtd event hash v1" || 0 || event bytes)
//! ```
//!
//! This module is pure: no clock, no disk. `wtd-store` keeps the bytes on disk; the agent,
//! the proxy and the subscriber call the checks.

use std::collections::HashMap;
use std::fmt;

use sha2::{Digest, Sha256};

use crate::defaults::{MAX_EVENT_BODY, MAX_EVENT_DEPS, MAX_EVENT_LEN, MAX_HELD_EVENTS};
use crate::encoding::{fixed, key_value, name_value, DecodeError, Reader, Writer};
use crate::identity::{AgentId, Domain, SecretKey};
use crate::names::{MissionName, TopicName};
use crate::record::{self, RecordError, SIGNATURE_TAG};
use crate::time::Timestamp;

// 7 is a job's (`crate::job`): each signed record has a kind of its own, so one can never
// be read as another even before its domain is checked.
pub const KIND: u8 = 8;
pub const VERSION: u8 = 1;
pub const DOMAIN: Domain = Domain("wtd event v1");
const HASH_DOMAIN: &[u8] = b"wtd event hash v1\0";
const KNOWN: &[u8] = &[1, 2, 3, 4, 5, 6, 7, 8, SIGNATURE_TAG];

/// Which log an event belongs to: one publisher's events of one mission.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LogId {
    pub publisher: AgentId,
    pub mission: MissionName,
}

impl fmt::Display for LogId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.mission, self.publisher.key().short())
    }
}

impl fmt::Debug for LogId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LogId({self})")
    }
}

/// "This event comes after event `seq` of `log`."
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Dep {
    pub log: LogId,
    pub seq: u64,
}

/// The hash that links an event to the next one of its log.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct EventHash(pub [u8; 32]);

impl fmt::Debug for EventHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EventHash({})", data_encoding::HEXLOWER.encode(&self.0[..6]))
    }
}

/// What an event says, before it is signed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub log: LogId,
    pub seq: u64,
    pub prev: EventHash,
    pub at: Timestamp,
    pub topic: TopicName,
    /// JSON text, as the handler printed it (checked to be JSON by the agent).
    pub body: String,
    /// Sorted by log, at most one per log (the highest seq wins), never this event's own log.
    pub deps: Vec<Dep>,
}

/// A verified event, with its bytes and hash.
#[derive(Clone, PartialEq, Eq)]
pub struct SignedEvent {
    event: Event,
    bytes: Vec<u8>,
    hash: EventHash,
}

impl fmt::Debug for SignedEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignedEvent")
            .field("log", &self.event.log)
            .field("seq", &self.event.seq)
            .field("topic", &self.event.topic)
            .finish()
    }
}

/// Normalizes a dependency list: one per log (the highest seq), none on `own`, sorted.
pub fn normalize_deps(own: &LogId, deps: impl IntoIterator<Item = Dep>) -> Vec<Dep> {
    crate::cause::normalize(deps.into_iter().filter(|d| &d.log != own))
}

impl SignedEvent {
    pub fn event(&self) -> &Event {
        &self.event
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub fn hash(&self) -> EventHash {
        self.hash
    }

    /// This event as a dependency of another.
    pub fn as_dep(&self) -> Dep {
        Dep {
            log: self.event.log.clone(),
            seq: self.event.seq,
        }
    }

    fn hash_of(bytes: &[u8]) -> EventHash {
        EventHash(
            Sha256::new_with_prefix(HASH_DOMAIN)
                .chain_update(bytes)
                .finalize()
                .into(),
        )
    }

    /// Signs `event` as its publisher. Refuses what [`SignedEvent::decode`] would refuse, so
    /// an agent never publishes an event its subscribers cannot read.
    pub fn sign(event: Event, publisher: &SecretKey) -> Result<SignedEvent, DecodeError> {
        assert_eq!(
            publisher.public(),
            *event.log.publisher.key(),
            "only the publisher signs its log"
        );
        let bad = |field, reason| Err(DecodeError::BadValue { field, reason });
        if event.seq == 0 {
            return bad("seq", "sequence numbers start at 1");
        }
        if event.body.len() > MAX_EVENT_BODY {
            return bad("body", "an event body is at most MAX_EVENT_BODY bytes");
        }
        if event.deps.len() > MAX_EVENT_DEPS {
            return bad("deps", "an event depends on at most MAX_EVENT_DEPS logs");
        }
        if normalize_deps(&event.log, event.deps.clone()) != event.deps {
            return bad(
                "deps",
                "dependencies must be sorted, one per log, none on the event's own log",
            );
        }
        let mut w = Writer::new(KIND, VERSION);
        w.key(1, event.log.publisher.key())
            .str(2, event.log.mission.as_str())
            .u64(3, event.seq)
            .bytes(4, &event.prev.0)
            .u64(5, event.at.0)
            .str(6, event.topic.as_str())
            .str(7, &event.body)
            .bytes(8, &encode_deps(&event.deps));
        let bytes = record::seal(w, DOMAIN, publisher);
        if bytes.len() > MAX_EVENT_LEN {
            return bad("event", "the event is over MAX_EVENT_LEN bytes");
        }
        Ok(SignedEvent {
            hash: Self::hash_of(&bytes),
            bytes,
            event,
        })
    }

    /// Decodes an event and verifies its publisher's signature. Chaining is checked by
    /// [`Chain`] (or [`EventLog`] for the publisher's own log).
    pub fn decode(bytes: &[u8]) -> Result<SignedEvent, RecordError> {
        let mut r = Reader::new(bytes, MAX_EVENT_LEN, "event", KIND, VERSION, KNOWN)?;
        let publisher = AgentId(r.key(1, "publisher")?);
        let mission: MissionName = r.name(2, "mission")?;
        let seq = r.u64(3, "seq")?;
        let prev = EventHash(fixed(r.field(4, "prev")?, "prev")?);
        let at = Timestamp(r.u64(5, "at")?);
        let topic: TopicName = r.name(6, "topic")?;
        let body = std::str::from_utf8(r.field(7, "body")?)
            .map_err(|_| DecodeError::BadValue {
                field: "body",
                reason: "not UTF-8",
            })?
            .to_string();
        let deps = decode_deps(r.field(8, "deps")?)?;
        let log = LogId { publisher, mission };
        let bad = |field, reason| Err(DecodeError::BadValue { field, reason }.into());
        if seq == 0 {
            return bad("seq", "sequence numbers start at 1");
        }
        if body.len() > MAX_EVENT_BODY {
            return bad("body", "over the event body limit");
        }
        if deps.len() > MAX_EVENT_DEPS {
            return bad("deps", "too many dependencies");
        }
        if normalize_deps(&log, deps.clone()) != deps {
            return bad("deps", "not sorted, repeated, or on the event's own log");
        }
        record::open(r, DOMAIN, publisher.key())?;
        Ok(SignedEvent {
            event: Event {
                log,
                seq,
                prev,
                at,
                topic,
                body,
                deps,
            },
            hash: Self::hash_of(bytes),
            bytes: bytes.to_vec(),
        })
    }
}

fn encode_deps(deps: &[Dep]) -> Vec<u8> {
    let mut v = Vec::new();
    for d in deps {
        v.extend_from_slice(d.log.publisher.key().as_bytes());
        v.extend_from_slice(&d.seq.to_be_bytes());
        let m = d.log.mission.as_str().as_bytes();
        v.push(m.len() as u8); // names are at most 64 bytes
        v.extend_from_slice(m);
    }
    v
}

fn decode_deps(mut v: &[u8]) -> Result<Vec<Dep>, DecodeError> {
    let mut deps = Vec::new();
    let truncated = DecodeError::Truncated { what: "deps" };
    while !v.is_empty() {
        if v.len() < 41 {
            return Err(truncated);
        }
        let publisher = AgentId(key_value(&v[..32], "deps")?);
        let seq = u64::from_be_bytes(v[32..40].try_into().expect("8 bytes"));
        let len = v[40] as usize;
        let name = v.get(41..41 + len).ok_or(truncated.clone())?;
        let mission: MissionName = name_value(name, "deps")?;
        deps.push(Dep {
            log: LogId { publisher, mission },
            seq,
        });
        v = &v[41 + len..];
        if deps.len() > MAX_EVENT_DEPS {
            return Err(DecodeError::BadValue {
                field: "deps",
                reason: "too many dependencies",
            });
        }
    }
    Ok(deps)
}

/// Why an event does not follow what a reader has seen of its log. Each says what the
/// proxy (or the disk) did, since the publisher never signs two events with one number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    /// The event's bytes or signature are bad: altered on the way, or not from its publisher.
    #[error("an event was altered or forged: {0}")]
    Record(#[from] RecordError),
    /// An event is missing before this one.
    #[error("events of {log} have a gap: expected event {expected}, got {found}; the proxy dropped, reordered or held back event {expected} (resubscribe with --from to try again)")]
    Gap { log: LogId, expected: u64, found: u64 },
    /// The event does not name the previous event's hash.
    #[error("event {seq} of {log} does not chain to event {}: the stream was altered", seq - 1)]
    BrokenChain { log: LogId, seq: u64 },
    /// An older event came again after a newer one, different from the one seen.
    #[error("event {seq} of {log} arrived after event {head}, and differs from the one seen: the stream was reordered or forked")]
    Reordered { log: LogId, seq: u64, head: u64 },
}

/// What [`Chain::accept`] made of an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accepted {
    /// The next event of its log.
    Next,
    /// An event already seen, byte for byte (a replay after a reconnect): skip it.
    Duplicate,
}

/// Where a reader is in each log it reads: the last event's number and hash. The hash is
/// unknown when the reader starts in the middle (`--from <position>`, or after the proxy's
/// retention dropped the start); then the first event is taken on its signature alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Head {
    pub seq: u64,
    pub hash: Option<EventHash>,
}

/// A reader's check of the logs it reads (pure; see the module docs).
#[derive(Clone, Debug, Default)]
pub struct Chain {
    heads: HashMap<LogId, Head>,
    /// Recent hashes per log, so a replayed older event can be told from a forged one.
    recent: HashMap<LogId, std::collections::VecDeque<(u64, EventHash)>>,
}

/// How many recent hashes per log a [`Chain`] remembers to recognise a replay.
const RECENT: usize = 64;

impl Chain {
    pub fn new() -> Self {
        Chain::default()
    }

    /// Starts `log` after event `seq` (0: from the very start), hash unknown unless given.
    pub fn start_at(&mut self, log: LogId, seq: u64, hash: Option<EventHash>) {
        self.heads.insert(log, Head { seq, hash });
    }

    pub fn head(&self, log: &LogId) -> Option<Head> {
        self.heads.get(log).copied()
    }

    pub fn heads(&self) -> impl Iterator<Item = (&LogId, &Head)> {
        self.heads.iter()
    }

    /// Checks that `event` is the next of its log (or a replay of one seen), and moves on.
    /// A log never seen starts at 1 (see [`Chain::start_at`] for other starts).
    pub fn accept(&mut self, event: &SignedEvent) -> Result<Accepted, ChainError> {
        let e = event.event();
        let head = self.heads.get(&e.log).copied().unwrap_or_default();
        if e.seq <= head.seq {
            let seen = self
                .recent
                .get(&e.log)
                .and_then(|r| r.iter().find(|(s, _)| *s == e.seq))
                .map(|(_, h)| *h);
            return match seen {
                Some(h) if h == event.hash() => Ok(Accepted::Duplicate),
                // Older than what we remember, or before where we started: a replay from
                // before our start is harmless (never delivered twice: we skip it).
                None if e.seq <= head.seq.saturating_sub(RECENT as u64)
                    || !self.recent.contains_key(&e.log) =>
                {
                    Ok(Accepted::Duplicate)
                }
                _ => Err(ChainError::Reordered {
                    log: e.log.clone(),
                    seq: e.seq,
                    head: head.seq,
                }),
            };
        }
        if e.seq != head.seq + 1 {
            return Err(ChainError::Gap {
                log: e.log.clone(),
                expected: head.seq + 1,
                found: e.seq,
            });
        }
        let expected_prev = match head.hash {
            Some(h) => Some(h),
            None if head.seq == 0 => Some(EventHash::default()),
            None => None,
        };
        if expected_prev.is_some_and(|h| h != e.prev) {
            return Err(ChainError::BrokenChain {
                log: e.log.clone(),
                seq: e.seq,
            });
        }
        self.heads.insert(
            e.log.clone(),
            Head {
                seq: e.seq,
                hash: Some(event.hash()),
            },
        );
        let recent = self.recent.entry(e.log.clone()).or_default();
        recent.push_back((e.seq, event.hash()));
        if recent.len() > RECENT {
            recent.pop_front();
        }
        Ok(Accepted::Next)
    }
}

/// A publisher's own log of one mission: builds the next event (pure; `wtd-store` and the
/// agent put it on disk before anyone sees it).
#[derive(Clone, Debug)]
pub struct EventLog {
    log: LogId,
    head: Head,
}

/// Why a stored log could not be read back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("event {} of the stored log: {error}", .index + 1)]
pub struct EventLogError {
    pub index: usize,
    #[source]
    pub error: ChainError,
}

impl EventLog {
    pub fn new(log: LogId) -> Self {
        EventLog {
            log,
            head: Head {
                seq: 0,
                hash: Some(EventHash::default()),
            },
        }
    }

    pub fn id(&self) -> &LogId {
        &self.log
    }

    /// The last event's number and hash.
    pub fn head(&self) -> (u64, EventHash) {
        (self.head.seq, self.head.hash.unwrap_or_default())
    }

    /// Rebuilds a log from stored events (verifying each, and that they chain, from the
    /// first one kept: older ones may have been trimmed).
    pub fn reopen(log: LogId, stored: &[&[u8]]) -> Result<EventLog, EventLogError> {
        let mut chain = Chain::new();
        let mut out = EventLog::new(log.clone());
        for (index, bytes) in stored.iter().enumerate() {
            let refused = |error: ChainError| EventLogError { index, error };
            let e = SignedEvent::decode(bytes).map_err(|e| refused(e.into()))?;
            if e.event().log != log {
                return Err(refused(ChainError::BrokenChain {
                    log: e.event().log.clone(),
                    seq: e.event().seq,
                }));
            }
            if index == 0 {
                chain.start_at(log.clone(), e.event().seq - 1, None);
            }
            chain.accept(&e).map_err(refused)?;
            out.head = Head {
                seq: e.event().seq,
                hash: Some(e.hash()),
            };
        }
        Ok(out)
    }

    /// Builds and signs the next event, without moving on: the caller stores it first,
    /// then calls [`EventLog::appended`].
    pub fn next(
        &self,
        publisher: &SecretKey,
        at: Timestamp,
        topic: TopicName,
        body: String,
        deps: Vec<Dep>,
    ) -> Result<SignedEvent, DecodeError> {
        let (seq, prev) = self.head();
        SignedEvent::sign(
            Event {
                log: self.log.clone(),
                seq: seq + 1,
                prev,
                at,
                topic,
                body,
                deps: normalize_deps(&self.log, deps),
            },
            publisher,
        )
    }

    /// Moves the head on to `event` once it is stored.
    pub fn appended(&mut self, event: &SignedEvent) {
        debug_assert_eq!(event.event().seq, self.head.seq + 1);
        self.head = Head {
            seq: event.event().seq,
            hash: Some(event.hash()),
        };
    }
}

/// Why [`CausalOrder`] cannot take an event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CausalError {
    /// Too many events wait for events that have not come.
    #[error("{held} events are held back waiting for events they depend on (first: event {} of {}), which the proxy has not delivered; resubscribe later", .waiting_for.seq, .waiting_for.log)]
    TooManyHeld { held: usize, waiting_for: Dep },
}

/// Delivers events in causal order: an event is held back until every event it depends on
/// (in a log this reader reads) has been delivered; events without unmet dependencies go
/// through at once. Events of one log must be offered in order ([`Chain`] checks that).
///
/// A dependency on a log the reader does not read (another mission, or a publisher it was
/// never shown) cannot be waited for, so it is ignored: [`CausalOrder::new`] takes which
/// missions count.
pub struct CausalOrder {
    reads: Box<dyn Fn(&LogId) -> bool + Send + Sync>,
    delivered: HashMap<LogId, u64>,
    held: Vec<SignedEvent>,
}

impl fmt::Debug for CausalOrder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CausalOrder")
            .field("delivered", &self.delivered)
            .field("held", &self.held.len())
            .finish()
    }
}

impl CausalOrder {
    /// `reads(log)`: whether this reader receives `log` at all.
    pub fn new(reads: impl Fn(&LogId) -> bool + Send + Sync + 'static) -> Self {
        CausalOrder {
            reads: Box::new(reads),
            delivered: HashMap::new(),
            held: Vec::new(),
        }
    }

    /// Notes that events of `log` up to `seq` were delivered before (a resumed reader).
    pub fn delivered_up_to(&mut self, log: LogId, seq: u64) {
        let d = self.delivered.entry(log).or_default();
        *d = (*d).max(seq);
    }

    fn ready(&self, e: &SignedEvent) -> bool {
        e.event()
            .deps
            .iter()
            .all(|d| !(self.reads)(&d.log) || self.delivered.get(&d.log).copied().unwrap_or(0) >= d.seq)
    }

    /// Offers the next event of its log; returns the events that can be delivered now, in
    /// an order that respects every dependency (this one, and any it released).
    pub fn offer(&mut self, event: SignedEvent) -> Result<Vec<SignedEvent>, CausalError> {
        // Events of a log already held stay behind their predecessor, whatever their deps.
        let log_held = self.held.iter().any(|h| h.event().log == event.event().log);
        if log_held || !self.ready(&event) {
            if self.held.len() >= MAX_HELD_EVENTS {
                let waiting_for = self.first_missing().unwrap_or(event.as_dep());
                return Err(CausalError::TooManyHeld {
                    held: self.held.len(),
                    waiting_for,
                });
            }
            self.held.push(event);
            return Ok(Vec::new());
        }
        let mut out = vec![event];
        self.mark(&out[0]);
        // Releasing one may release others; repeat until nothing moves.
        loop {
            let mut seen_logs: Vec<LogId> = Vec::new();
            let next = self.held.iter().position(|h| {
                let first_of_log = !seen_logs.contains(&h.event().log);
                seen_logs.push(h.event().log.clone());
                first_of_log && self.ready(h)
            });
            match next {
                Some(i) => {
                    let e = self.held.remove(i);
                    self.mark(&e);
                    out.push(e);
                }
                None => break,
            }
        }
        Ok(out)
    }

    fn mark(&mut self, e: &SignedEvent) {
        self.delivered_up_to(e.event().log.clone(), e.event().seq);
    }

    /// The first dependency a held event waits for, to say what is missing.
    pub fn first_missing(&self) -> Option<Dep> {
        self.held.iter().find_map(|h| {
            h.event()
                .deps
                .iter()
                .find(|d| (self.reads)(&d.log) && self.delivered.get(&d.log).copied().unwrap_or(0) < d.seq)
                .cloned()
        })
    }

    /// How many events are held back.
    pub fn held(&self) -> usize {
        self.held.len()
    }
}
