//! The owner log: an append-only, hash-chained, owner-signed list of grants, revocations
//! and adoptions.
//!
//! Each entry names its owner, its sequence number (1, 2, 3, ...) and the hash of the entry
//! before it, and is signed by the owner. So whoever relays the log (the proxy) can drop
//! the tail or delay it, but cannot:
//! - forge an entry (it would need the owner's key),
//! - reorder or splice entries (each names its predecessor's hash and its number),
//! - roll a reader back (the reader keeps what it has and notices an older head),
//! - hide an entry in the middle (the next one would not chain).
//!
//! ```text
//! entry = kind(3) version(1)
//!         1 owner       owner key (32)
//!         2 seq         u64, first entry is 1
//!         3 prev        32-byte hash of the previous entry, zeros for the first
//!         4 grant       a signed grant (exactly one of 4, 5 and 6)
//!         5 revocation  a signed revocation
//!         6 adoption    a signed adoption or disowning of an agent (see `adoption`)
//!       255 signature   by owner, domain "wtd owner log v1"
//! hash(entry) = SHA-256("wtd log hash v1" || 0 || entry bytes)
//! ```
//!
//! This module is pure: it checks and builds entries in memory. `wtd-store` puts them on
//! disk, one fsynced append at a time.

use std::collections::HashSet;
use std::fmt;

use sha2::{Digest, Sha256};

use crate::adoption::SignedAdoption;
use crate::defaults::MAX_LOG_ENTRY_LEN;
use crate::encoding::{fixed, DecodeError, Reader, Writer};
use crate::grant::{GrantId, SignedGrant};
use crate::identity::{Domain, OwnerKey, SecretKey};
use crate::record::{self, Check, RecordError, SIGNATURE_TAG};
use crate::revocation::SignedRevocation;
use crate::seal::{Seal, SealKey};
use crate::time::Timestamp;

pub const KIND: u8 = 3;
pub const VERSION: u8 = 1;
pub const DOMAIN: Domain = Domain("wtd owner log v1");
const HASH_DOMAIN: &[u8] = b"wtd log hash v1\0";
const KNOWN: &[u8] = &[1, 2, 3, 4, 5, 6, SIGNATURE_TAG];

/// The hash that links an entry to the next one.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct EntryHash(pub [u8; 32]);

impl fmt::Debug for EntryHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EntryHash({})", data_encoding::HEXLOWER.encode(&self.0[..6]))
    }
}

/// What an entry carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    Grant(SignedGrant),
    Revocation(SignedRevocation),
    Adoption(SignedAdoption),
}

impl Record {
    fn issuer(&self) -> OwnerKey {
        match self {
            Record::Grant(g) => g.grant().issuer,
            Record::Revocation(r) => r.revocation().issuer,
            Record::Adoption(a) => a.adoption().issuer,
        }
    }

    /// When the owner made the record.
    pub fn issued_at(&self) -> Timestamp {
        match self {
            Record::Grant(g) => g.grant().issued_at,
            Record::Revocation(r) => r.revocation().issued_at,
            Record::Adoption(a) => a.adoption().issued_at,
        }
    }
}

/// A verified log entry, with its bytes and hash.
#[derive(Clone, PartialEq, Eq)]
pub struct SignedEntry {
    pub owner: OwnerKey,
    pub seq: u64,
    pub prev: EntryHash,
    pub record: Record,
    bytes: Vec<u8>,
    hash: EntryHash,
}

impl fmt::Debug for SignedEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignedEntry")
            .field("owner", &self.owner)
            .field("seq", &self.seq)
            .field("record", &self.record)
            .finish()
    }
}

impl SignedEntry {
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub fn hash(&self) -> EntryHash {
        self.hash
    }

    fn hash_of(bytes: &[u8]) -> EntryHash {
        EntryHash(
            Sha256::new_with_prefix(HASH_DOMAIN)
                .chain_update(bytes)
                .finalize()
                .into(),
        )
    }

    /// Decodes an entry and verifies its signature, and the signature of the record inside
    /// it, and that both are by the same owner. Chaining is checked by [`OwnerLog`].
    pub fn decode(bytes: &[u8]) -> Result<SignedEntry, RecordError> {
        Self::decode_with(bytes, Check::Signatures)
    }

    fn decode_with(bytes: &[u8], check: Check) -> Result<SignedEntry, RecordError> {
        let mut r = Reader::new(bytes, MAX_LOG_ENTRY_LEN, "log entry", KIND, VERSION, KNOWN)?;
        let owner = OwnerKey(r.key(1, "owner")?);
        let seq = r.u64(2, "seq")?;
        let prev = EntryHash(fixed(r.field(3, "prev")?, "prev")?);
        let grant = r.optional(4, "grant")?;
        let revocation = r.optional(5, "revocation")?;
        let adoption = r.optional(6, "adoption")?;
        let record = match (grant, revocation, adoption) {
            (Some(g), None, None) => Record::Grant(SignedGrant::decode_with(g, check)?),
            (None, Some(v), None) => Record::Revocation(SignedRevocation::decode_with(v, check)?),
            (None, None, Some(a)) => Record::Adoption(SignedAdoption::decode_with(a, check)?),
            _ => {
                return Err(DecodeError::BadValue {
                    field: "record",
                    reason: "an entry holds exactly one grant, revocation or adoption",
                }
                .into())
            }
        };
        if seq == 0 {
            return Err(DecodeError::BadValue {
                field: "seq",
                reason: "sequence numbers start at 1",
            }
            .into());
        }
        if record.issuer() != owner {
            return Err(DecodeError::BadValue {
                field: "record",
                reason: "the record inside is signed by someone other than the log's owner",
            }
            .into());
        }
        record::open_with(r, DOMAIN, owner.key(), check)?;
        Ok(SignedEntry {
            owner,
            seq,
            prev,
            record,
            hash: Self::hash_of(bytes),
            bytes: bytes.to_vec(),
        })
    }
}

/// Why an entry could not be added to a log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogError {
    /// The entry's bytes or signatures are bad.
    #[error("log entry refused: {0}")]
    Record(#[from] RecordError),
    /// The entry belongs to another owner's log.
    #[error("log entry belongs to owner {found}, not {expected}")]
    WrongOwner { expected: OwnerKey, found: OwnerKey },
    /// An entry is missing before this one: someone dropped it.
    #[error("owner log has a gap: expected entry {expected}, got {found}; an entry was dropped on the way")]
    Gap { expected: u64, found: u64 },
    /// The entry does not name the previous entry's hash: reordered or spliced.
    #[error("owner log entry {seq} does not chain to entry {}; the log was altered", seq - 1)]
    BrokenChain { seq: u64 },
    /// Two different entries with the same number, both signed by the owner. Either the
    /// owner restored an old backup and kept writing, or their key is in two places.
    #[error("owner log forked at entry {seq}: two different signed entries share that number")]
    Fork { seq: u64 },
    /// A grant id the log already holds.
    #[error("{0} is already in the owner log")]
    DuplicateGrantId(GrantId),
}

/// Where a log ends: how many entries, and the last one's hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Head {
    pub seq: u64,
    pub hash: EntryHash,
}

/// What [`OwnerLog::sync`] did with entries offered by someone else.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyncOutcome {
    /// Entries that were new and were appended.
    pub added: usize,
    /// The offer ended before our head: whoever sent it has an older copy (or is
    /// withholding entries). We keep ours; the caller may want to warn.
    pub offered_older: bool,
}

/// What [`OwnerLog::reopen`] rebuilt.
#[derive(Debug)]
pub struct Reopened {
    pub log: OwnerLog,
    /// Entries whose signatures were verified now (the rest a seal vouched for). When
    /// more than zero, the caller should seal the new head.
    pub verified: usize,
}

/// An entry [`OwnerLog::reopen`] refused, by its index among the entries given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("entry {} of the log: {error}", .index + 1)]
pub struct ReopenError {
    pub index: usize,
    #[source]
    pub error: LogError,
}

/// One owner's log, checked entry by entry.
#[derive(Clone, Debug)]
pub struct OwnerLog {
    owner: OwnerKey,
    entries: Vec<SignedEntry>,
    grant_ids: HashSet<GrantId>,
}

impl OwnerLog {
    pub fn new(owner: OwnerKey) -> Self {
        OwnerLog {
            owner,
            entries: Vec::new(),
            grant_ids: HashSet::new(),
        }
    }

    pub fn owner(&self) -> OwnerKey {
        self.owner
    }

    pub fn entries(&self) -> &[SignedEntry] {
        &self.entries
    }

    pub fn head(&self) -> Head {
        self.entries
            .last()
            .map(|e| Head {
                seq: e.seq,
                hash: e.hash,
            })
            .unwrap_or_default()
    }

    /// The latest `issued_at` in the log. The owner's CLI issues every new record after it,
    /// so "revoke everything up to now" has a clear meaning even if the clock is coarse.
    pub fn last_issued_at(&self) -> Timestamp {
        self.entries
            .iter()
            .map(|e| e.record.issued_at())
            .max()
            .unwrap_or_default()
    }

    pub fn grants(&self) -> impl Iterator<Item = &SignedGrant> {
        self.entries.iter().filter_map(|e| match &e.record {
            Record::Grant(g) => Some(g),
            _ => None,
        })
    }

    pub fn revocations(&self) -> impl Iterator<Item = &SignedRevocation> {
        self.entries.iter().filter_map(|e| match &e.record {
            Record::Revocation(r) => Some(r),
            _ => None,
        })
    }

    pub fn adoptions(&self) -> impl Iterator<Item = &SignedAdoption> {
        self.entries.iter().filter_map(|e| match &e.record {
            Record::Adoption(a) => Some(a),
            _ => None,
        })
    }

    /// Checks that `entry` is the next one, without adding it.
    pub fn check_next(&self, entry: &SignedEntry) -> Result<(), LogError> {
        if entry.owner != self.owner {
            return Err(LogError::WrongOwner {
                expected: self.owner,
                found: entry.owner,
            });
        }
        let head = self.head();
        if entry.seq != head.seq + 1 {
            return Err(LogError::Gap {
                expected: head.seq + 1,
                found: entry.seq,
            });
        }
        if entry.prev != head.hash {
            return Err(LogError::BrokenChain { seq: entry.seq });
        }
        if let Record::Grant(g) = &entry.record {
            if self.grant_ids.contains(&g.grant().id) {
                return Err(LogError::DuplicateGrantId(g.grant().id));
            }
        }
        Ok(())
    }

    /// Appends a verified entry if it is exactly the next one.
    pub fn append(&mut self, entry: SignedEntry) -> Result<(), LogError> {
        self.check_next(&entry)?;
        if let Record::Grant(g) = &entry.record {
            self.grant_ids.insert(g.grant().id);
        }
        self.entries.push(entry);
        Ok(())
    }

    /// Builds and signs the entry that would come next, without appending it (the caller
    /// writes it to disk first, then appends).
    pub fn next_entry(&self, owner: &SecretKey, record: Record) -> Result<SignedEntry, LogError> {
        let head = self.head();
        let mut w = Writer::new(KIND, VERSION);
        w.key(1, self.owner.key())
            .u64(2, head.seq + 1)
            .bytes(3, &head.hash.0);
        match &record {
            Record::Grant(g) => w.bytes(4, g.bytes()),
            Record::Revocation(r) => w.bytes(5, r.bytes()),
            Record::Adoption(a) => w.bytes(6, a.bytes()),
        };
        assert_eq!(owner.public(), *self.owner.key(), "only the owner writes its log");
        let bytes = record::seal(w, DOMAIN, owner);
        let entry = SignedEntry {
            owner: self.owner,
            seq: head.seq + 1,
            prev: head.hash,
            record,
            hash: SignedEntry::hash_of(&bytes),
            bytes,
        };
        self.check_next(&entry)?;
        Ok(entry)
    }

    /// Rebuilds a log from the bytes of its entries, as read back from disk, verifying
    /// each one, except that with `sealed` = (seal, key) the entries up to a head this
    /// machine sealed are only decoded and chained (see [`crate::seal`]). A seal that does
    /// not vouch for this log, or whose head the entries do not reach exactly, is ignored:
    /// then everything is verified.
    ///
    /// A refused entry is reported with its index in `entries`.
    pub fn reopen(
        owner: OwnerKey,
        entries: &[&[u8]],
        sealed: Option<(&Seal, &SealKey)>,
    ) -> Result<Reopened, ReopenError> {
        let vouched = sealed
            .filter(|(seal, key)| key.vouches(owner, seal))
            .map(|(seal, _)| seal.head())
            .filter(|head| head.seq >= 1 && head.seq <= entries.len() as u64);
        let (mut log, start) = match vouched.and_then(|head| Self::sealed_prefix(owner, entries, head)) {
            Some(log) => {
                let n = log.entries.len();
                (log, n)
            }
            None => (OwnerLog::new(owner), 0),
        };
        for (index, bytes) in entries.iter().enumerate().skip(start) {
            let refused = |error: LogError| ReopenError { index, error };
            let entry = SignedEntry::decode(bytes).map_err(|e| refused(e.into()))?;
            log.append(entry).map_err(refused)?;
        }
        Ok(Reopened {
            log,
            verified: entries.len() - start,
        })
    }

    /// The first `head.seq` entries decoded without their signatures, if they chain to
    /// exactly `head`; None otherwise (the caller then verifies everything).
    fn sealed_prefix(owner: OwnerKey, entries: &[&[u8]], head: Head) -> Option<OwnerLog> {
        let mut log = OwnerLog::new(owner);
        for bytes in entries.iter().take(head.seq as usize) {
            let entry = SignedEntry::decode_with(bytes, Check::Sealed).ok()?;
            log.append(entry).ok()?;
        }
        (log.head() == head).then_some(log)
    }

    /// Merges entries someone else sent (the proxy relaying the owner's log). Entries we
    /// already have must match ours exactly; new ones must chain on. Stops at the first
    /// bad entry, keeping everything good before it.
    pub fn sync(&mut self, offered: impl IntoIterator<Item = SignedEntry>) -> Result<SyncOutcome, LogError> {
        let mut added = 0;
        let mut last_seen = 0;
        for entry in offered {
            if entry.owner != self.owner {
                return Err(LogError::WrongOwner {
                    expected: self.owner,
                    found: entry.owner,
                });
            }
            last_seen = entry.seq;
            let have = self.entries.len() as u64;
            if entry.seq >= 1 && entry.seq <= have {
                if self.entries[(entry.seq - 1) as usize].hash != entry.hash {
                    return Err(LogError::Fork { seq: entry.seq });
                }
                continue;
            }
            self.append(entry)?;
            added += 1;
        }
        Ok(SyncOutcome {
            added,
            offered_older: last_seen < self.head().seq,
        })
    }
}
