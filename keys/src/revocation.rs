//! Revocations: an owner's signed, permanent cancellation of grants.
//!
//! Three shapes, matching the CLI:
//! - `wtd revoke <grant-id>`: that one grant, whenever it arrives (a revocation that
//!   reaches an agent before its grant still bites);
//! - `wtd revoke bob --mission demo`: every grant to Bob for `demo` issued at or before the
//!   revocation;
//! - `wtd revoke bob --all`: every grant to Bob issued at or before the revocation.
//!
//! "Issued at or before" is what lets Alice grant Bob again after revoking him: the owner's
//! CLI always gives a new grant an `issued_at` later than every earlier record.
//!
//! ```text
//! revocation = kind(2) version(1)
//!              1 issuer     owner key (32)
//!              2 target     1 = grant id | 2 = subject + mission | 3 = subject, all missions
//!              3 grant      16 bytes         (target 1 only)
//!              4 subject    grantee key (32) (targets 2 and 3)
//!              5 mission    canonical name   (target 2 only)
//!              6 issued_at  u64 ms since epoch
//!            255 signature  by issuer, domain "wtd revocation v1"
//! ```

use std::fmt;

use crate::defaults::MAX_RECORD_LEN;
use crate::encoding::{fixed, key_value, name_value, DecodeError, Reader, Writer};
use crate::grant::{Grant, GrantId};
use crate::identity::{Domain, OwnerKey, SecretKey, UserKey};
use crate::names::MissionName;
use crate::record::{self, Check, RecordError, SIGNATURE_TAG};
use crate::time::Timestamp;

pub const KIND: u8 = 2;
pub const VERSION: u8 = 1;
pub const DOMAIN: Domain = Domain("wtd revocation v1");
const KNOWN: &[u8] = &[1, 2, 3, 4, 5, 6, SIGNATURE_TAG];

/// What a revocation cancels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// One grant, by id.
    Grant(GrantId),
    /// Every grant to `subject` for `mission` issued at or before the revocation.
    SubjectMission(UserKey, MissionName),
    /// Every grant to `subject` issued at or before the revocation.
    SubjectAll(UserKey),
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Grant(id) => write!(f, "{id}"),
            Target::SubjectMission(s, m) => write!(f, "{} for mission {m}", s.key().short()),
            Target::SubjectAll(s) => write!(f, "everything granted to {}", s.key().short()),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Revocation {
    pub issuer: OwnerKey,
    pub target: Target,
    pub issued_at: Timestamp,
}

impl Revocation {
    /// Whether this revocation cancels `grant`. Only the grant's own issuer can revoke it.
    pub fn revokes(&self, grant: &Grant) -> bool {
        if self.issuer != grant.issuer {
            return false;
        }
        match &self.target {
            Target::Grant(id) => *id == grant.id,
            Target::SubjectMission(s, m) => {
                *s == grant.subject && *m == grant.mission && grant.issued_at <= self.issued_at
            }
            Target::SubjectAll(s) => *s == grant.subject && grant.issued_at <= self.issued_at,
        }
    }

    pub fn sign(self, issuer: &SecretKey) -> SignedRevocation {
        assert_eq!(
            issuer.public(),
            *self.issuer.key(),
            "a revocation is signed by its issuer"
        );
        let mut w = Writer::new(KIND, VERSION);
        w.key(1, self.issuer.key());
        match &self.target {
            Target::Grant(id) => w.u8(2, 1).bytes(3, &id.0),
            Target::SubjectMission(s, m) => w.u8(2, 2).key(4, s.key()).str(5, m.as_str()),
            Target::SubjectAll(s) => w.u8(2, 3).key(4, s.key()),
        };
        w.u64(6, self.issued_at.0);
        let bytes = record::seal(w, DOMAIN, issuer);
        SignedRevocation {
            revocation: self,
            bytes,
        }
    }
}

/// A revocation whose signature by its issuer has been verified.
#[derive(Clone, PartialEq, Eq)]
pub struct SignedRevocation {
    revocation: Revocation,
    bytes: Vec<u8>,
}

impl fmt::Debug for SignedRevocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("SignedRevocation").field(&self.revocation).finish()
    }
}

impl SignedRevocation {
    pub fn revocation(&self) -> &Revocation {
        &self.revocation
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub fn decode(bytes: &[u8]) -> Result<SignedRevocation, RecordError> {
        Self::decode_with(bytes, Check::Signatures)
    }

    /// [`Self::decode`], or with `Check::Sealed` the same without verifying the signature
    /// (only for bytes a sealed log head vouches for; see `log::SealKey`).
    pub(crate) fn decode_with(bytes: &[u8], check: Check) -> Result<SignedRevocation, RecordError> {
        let mut r = Reader::new(bytes, MAX_RECORD_LEN, "revocation", KIND, VERSION, KNOWN)?;
        let issuer = OwnerKey(r.key(1, "issuer")?);
        let kind = r.u8(2, "target")?;
        let grant = r.optional(3, "grant")?;
        let subject = r
            .optional(4, "subject")?
            .map(|v| key_value(v, "subject"))
            .transpose()?
            .map(UserKey);
        let mission = r
            .optional(5, "mission")?
            .map(|v| name_value(v, "mission"))
            .transpose()?;
        let shape = DecodeError::BadValue {
            field: "target",
            reason: "the fields present do not match the target kind",
        };
        let target = match (kind, grant, subject, mission) {
            (1, Some(g), None, None) => Target::Grant(GrantId(fixed(g, "grant")?)),
            (2, None, Some(s), Some(m)) => Target::SubjectMission(s, m),
            (3, None, Some(s), None) => Target::SubjectAll(s),
            _ => return Err(shape.into()),
        };
        let issued_at = Timestamp(r.u64(6, "issued_at")?);
        record::open_with(r, DOMAIN, issuer.key(), check)?;
        Ok(SignedRevocation {
            revocation: Revocation {
                issuer,
                target,
                issued_at,
            },
            bytes: bytes.to_vec(),
        })
    }
}
