//! Revocations: an owner's signed, permanent cancellation of grants.
//!
//! Three shapes, matching the CLI:
//! - `wtd revoke <grant-id>`: that one grant, whenever it arrives (a revocation that
//!   reaches an agent before its grant still bites);
//! - `wtd revoke bob --mission demo`: every grant to Bob for `demo` issued at or before the
//!   revocation;
//! - `wtd revoke bob --all`: every grant to Bob issued at or before the revocation.
//! - `wtd revoke --class roster.txt` / `--label L`: a set of grants by id (a lesson's, one
//!   per student), in one record signed once, with the lesson's label for people to read.
//!
//! "Issued at or before" is what lets Alice grant Bob again after revoking him: the owner's
//! CLI always gives a new grant an `issued_at` later than every earlier record.
//!
//! ```text
//! revocation = kind(2) version(1)
//!              1 issuer     owner key (32)
//!              2 target     1 = grant id | 2 = subject + mission | 3 = subject, all missions
//!                           | 4 = a set of grant ids
//!              3 grant      16 bytes         (target 1 only)
//!              4 subject    grantee key (32) (targets 2 and 3)
//!              5 mission    canonical name   (target 2 only)
//!              6 issued_at  u64 ms since epoch
//!              7 grants     16 bytes per id, sorted, unique, 1 to MAX_REVOKED_SET (target 4 only)
//!              8 label      1 to 64 bytes of printable UTF-8, the lesson's (target 4 only)
//!            255 signature  by issuer, domain "wtd revocation v1"
//! ```

use std::fmt;

use crate::defaults::{MAX_LABEL_LEN, MAX_RECORD_LEN, MAX_REVOKED_SET};
use crate::encoding::{fixed, key_value, name_value, DecodeError, Reader, Writer};
use crate::grant::{Grant, GrantId};
use crate::identity::{Domain, OwnerKey, SecretKey, UserKey};
use crate::names::MissionName;
use crate::record::{self, Check, RecordError, SIGNATURE_TAG};
use crate::time::Timestamp;

pub const KIND: u8 = 2;
pub const VERSION: u8 = 1;
pub const DOMAIN: Domain = Domain("wtd revocation v1");
const KNOWN: &[u8] = &[1, 2, 3, 4, 5, 6, 7, 8, SIGNATURE_TAG];

/// What a revocation cancels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// One grant, by id.
    Grant(GrantId),
    /// Every grant to `subject` for `mission` issued at or before the revocation.
    SubjectMission(UserKey, MissionName),
    /// Every grant to `subject` issued at or before the revocation.
    SubjectAll(UserKey),
    /// Exactly these grants (sorted, unique), whenever they were issued: a lesson's grants,
    /// ended together. The label is for people (`wtd grants`, the proxy's log); it decides
    /// nothing.
    Grants { label: String, grants: Vec<GrantId> },
}

/// Whether `label` may name a lesson: 1 to [`MAX_LABEL_LEN`] bytes, no control characters
/// (it is printed in terminals and logs).
pub fn valid_label(label: &str) -> bool {
    !label.is_empty()
        && label.len() <= MAX_LABEL_LEN
        && !label.chars().any(char::is_control)
        && label.trim() == label
}

/// Whether a set of grant ids is canonical: 1 to [`MAX_REVOKED_SET`], sorted, unique. One
/// meaning has one encoding, and an agent checks membership by binary search.
fn valid_set(grants: &[GrantId]) -> bool {
    (1..=MAX_REVOKED_SET).contains(&grants.len()) && grants.windows(2).all(|w| w[0] < w[1])
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Grant(id) => write!(f, "{id}"),
            Target::SubjectMission(s, m) => write!(f, "{} for mission {m}", s.key().short()),
            Target::SubjectAll(s) => write!(f, "everything granted to {}", s.key().short()),
            Target::Grants { label, grants } => write!(f, "lesson `{label}` ({} grant(s))", grants.len()),
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
            Target::Grants { grants, .. } => grants.binary_search(&grant.id).is_ok(),
        }
    }

    /// Checks what a decoder would refuse, so we never sign what we would not accept.
    pub fn validate(&self) -> Result<(), DecodeError> {
        if let Target::Grants { label, grants } = &self.target {
            if !valid_set(grants) {
                return Err(DecodeError::BadValue {
                    field: "grants",
                    reason: "must list 1 to 512 grant ids, sorted and unique",
                });
            }
            if !valid_label(label) {
                return Err(DecodeError::BadValue {
                    field: "label",
                    reason: "must be 1 to 64 bytes with no control characters or edge spaces",
                });
            }
        }
        Ok(())
    }

    /// Signs the revocation. Panics if `issuer` is not the signer's key or the revocation
    /// is invalid ([`Revocation::validate`]): both are programming errors in the caller.
    pub fn sign(self, issuer: &SecretKey) -> SignedRevocation {
        assert_eq!(
            issuer.public(),
            *self.issuer.key(),
            "a revocation is signed by its issuer"
        );
        self.validate().expect("signing an invalid revocation");
        let mut w = Writer::new(KIND, VERSION);
        w.key(1, self.issuer.key());
        match &self.target {
            Target::Grant(id) => w.u8(2, 1).bytes(3, &id.0),
            Target::SubjectMission(s, m) => w.u8(2, 2).key(4, s.key()).str(5, m.as_str()),
            Target::SubjectAll(s) => w.u8(2, 3).key(4, s.key()),
            Target::Grants { .. } => w.u8(2, 4),
        };
        w.u64(6, self.issued_at.0);
        if let Target::Grants { label, grants } = &self.target {
            let ids: Vec<u8> = grants.iter().flat_map(|g| g.0).collect();
            w.bytes(7, &ids).str(8, label);
        }
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
        let issued_at = Timestamp(r.u64(6, "issued_at")?);
        let set = r.optional(7, "grants")?;
        let label = r.optional(8, "label")?;
        let target = match (kind, grant, subject, mission, set, label) {
            (1, Some(g), None, None, None, None) => Target::Grant(GrantId(fixed(g, "grant")?)),
            (2, None, Some(s), Some(m), None, None) => Target::SubjectMission(s, m),
            (3, None, Some(s), None, None, None) => Target::SubjectAll(s),
            (4, None, None, None, Some(set), Some(label)) => {
                if set.is_empty() || set.len() % 16 != 0 {
                    return Err(DecodeError::BadLength {
                        field: "grants",
                        len: set.len(),
                    }
                    .into());
                }
                let grants: Vec<GrantId> = set
                    .chunks_exact(16)
                    .map(|c| GrantId(c.try_into().expect("16 bytes")))
                    .collect();
                let label = std::str::from_utf8(label)
                    .map_err(|_| DecodeError::BadValue {
                        field: "label",
                        reason: "not UTF-8",
                    })?
                    .to_string();
                Target::Grants { label, grants }
            }
            _ => return Err(shape.into()),
        };
        let revocation = Revocation {
            issuer,
            target,
            issued_at,
        };
        revocation.validate()?;
        record::open_with(r, DOMAIN, issuer.key(), check)?;
        Ok(SignedRevocation {
            revocation,
            bytes: bytes.to_vec(),
        })
    }
}
