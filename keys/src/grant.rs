//! Grants: an owner's signed permission for one key to call one mission.
//!
//! A grant is **holder-bound**, not a bearer token: it names the grantee's public key
//! (`subject`), and an agent honours it only for calls signed by that key. Showing
//! someone your grant gives them nothing.
//!
//! ```text
//! grant = kind(1) version(1)
//!         1 id           16 random bytes
//!         2 issuer       owner key (32)
//!         3 subject      grantee key (32)
//!         4 audience     0 = all of the issuer's agents | 1 || agent keys (sorted, unique)
//!         5 mission      canonical name
//!         6 rate_calls   u32, >= 1
//!         7 rate_period  u64 ms, >= 1000
//!         8 burst        u32, >= 1
//!         9 concurrency  u32, >= 1
//!        10 not_before   u64 ms since epoch
//!        11 expires      u64 ms since epoch, after not_before, at most a year later
//!        12 issued_at    u64 ms since epoch
//!      255 signature     by issuer, domain "wtd grant v1"
//! ```

use std::fmt;

use crate::defaults::{MAX_AUDIENCE, MAX_GRANT_TTL_MS, MAX_RECORD_LEN};
use crate::encoding::{fixed, key_value, DecodeError, Reader, Writer};
use crate::identity::{AgentId, Domain, OwnerKey, SecretKey, UserKey};
use crate::names::MissionName;
use crate::record::{self, Check, RecordError, SIGNATURE_TAG};
use crate::time::Timestamp;

pub const KIND: u8 = 1;
pub const VERSION: u8 = 1;
pub const DOMAIN: Domain = Domain("wtd grant v1");
const KNOWN: &[u8] = &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, SIGNATURE_TAG];

/// A grant's random 128-bit id. Text form: `grant-` + 26 base32 characters.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GrantId(pub [u8; 16]);

impl GrantId {
    pub fn random() -> Self {
        let mut b = [0u8; 16];
        getrandom::getrandom(&mut b).expect("the operating system has no random source");
        GrantId(b)
    }
}

impl fmt::Display for GrantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "grant-{}",
            data_encoding::BASE32_NOPAD.encode(&self.0).to_ascii_lowercase()
        )
    }
}

impl fmt::Debug for GrantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GrantId({self})")
    }
}

impl std::str::FromStr for GrantId {
    type Err = DecodeError;
    fn from_str(s: &str) -> Result<Self, DecodeError> {
        let bad = DecodeError::BadValue {
            field: "grant id",
            reason: "expected `grant-` followed by 26 letters and digits, as printed by `wtd grants`",
        };
        let body = s.trim().strip_prefix("grant-").ok_or(bad.clone())?;
        if body.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(bad);
        }
        let raw = data_encoding::BASE32_NOPAD
            .decode(body.to_ascii_uppercase().as_bytes())
            .map_err(|_| bad.clone())?;
        Ok(GrantId(raw.try_into().map_err(|_| bad)?))
    }
}

/// Which of the issuer's agents a grant covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Audience {
    /// Every agent that obeys the issuer, including ones added later.
    AllAgents,
    /// Only these agents (sorted, unique, at least one).
    Agents(Vec<AgentId>),
}

impl Audience {
    pub fn covers(&self, agent: &AgentId) -> bool {
        match self {
            Audience::AllAgents => true,
            Audience::Agents(list) => list.binary_search(agent).is_ok(),
        }
    }

    /// Builds a list audience in canonical (sorted, unique) order.
    pub fn agents(mut list: Vec<AgentId>) -> Self {
        list.sort();
        list.dedup();
        Audience::Agents(list)
    }
}

/// A token-bucket rate: `calls` per `period_ms`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    pub calls: u32,
    pub period_ms: u64,
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.period_ms {
            1000 => write!(f, "{}/s", self.calls),
            60_000 => write!(f, "{}/min", self.calls),
            3_600_000 => write!(f, "{}/h", self.calls),
            86_400_000 => write!(f, "{}/day", self.calls),
            p => write!(f, "{}/{}ms", self.calls, p),
        }
    }
}

/// The content of a grant. Sign it with [`Grant::sign`]; receive one with
/// [`SignedGrant::decode`], which is the only way to get a grant from bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    pub id: GrantId,
    /// The owner who signs it. An agent honours it only if it obeys this key.
    pub issuer: OwnerKey,
    /// The only key whose calls this grant allows.
    pub subject: UserKey,
    pub audience: Audience,
    pub mission: MissionName,
    pub rate: Rate,
    /// How many calls may be made back to back before the rate applies.
    pub burst: u32,
    /// How many calls may run at once on one agent.
    pub concurrency: u32,
    pub not_before: Timestamp,
    pub expires: Timestamp,
    pub issued_at: Timestamp,
}

impl Grant {
    fn encode_body(&self) -> Writer {
        let mut w = Writer::new(KIND, VERSION);
        w.bytes(1, &self.id.0)
            .key(2, self.issuer.key())
            .key(3, self.subject.key());
        match &self.audience {
            Audience::AllAgents => w.bytes(4, &[0]),
            Audience::Agents(list) => {
                let mut v = vec![1u8];
                for a in list {
                    v.extend_from_slice(a.key().as_bytes());
                }
                w.bytes(4, &v)
            }
        };
        w.str(5, self.mission.as_str())
            .u32(6, self.rate.calls)
            .u64(7, self.rate.period_ms)
            .u32(8, self.burst)
            .u32(9, self.concurrency)
            .u64(10, self.not_before.0)
            .u64(11, self.expires.0)
            .u64(12, self.issued_at.0);
        w
    }

    /// Checks the values a decoder would refuse, so we never sign what we would not accept.
    pub fn validate(&self) -> Result<(), DecodeError> {
        let bad = |field, reason| Err(DecodeError::BadValue { field, reason });
        if self.rate.calls == 0 {
            return bad("rate_calls", "must be at least 1");
        }
        if self.rate.period_ms < 1000 {
            return bad("rate_period", "must be at least one second");
        }
        if self.burst == 0 {
            return bad("burst", "must be at least 1");
        }
        if self.concurrency == 0 {
            return bad("concurrency", "must be at least 1");
        }
        if self.expires <= self.not_before {
            return bad("expires", "must be after not_before");
        }
        if self.not_before.until(self.expires) > MAX_GRANT_TTL_MS {
            return bad("expires", "a grant may last at most a year");
        }
        if let Audience::Agents(list) = &self.audience {
            if list.is_empty() || list.len() > MAX_AUDIENCE {
                return bad("audience", "must name between 1 and 256 agents");
            }
            if list.windows(2).any(|w| w[0] >= w[1]) {
                return bad("audience", "agents must be sorted and unique");
            }
        }
        Ok(())
    }

    /// Signs the grant. Panics if `issuer` is not the signer's key or the grant is invalid:
    /// both are programming errors in the caller.
    pub fn sign(self, issuer: &SecretKey) -> SignedGrant {
        assert_eq!(
            issuer.public(),
            *self.issuer.key(),
            "a grant is signed by its issuer"
        );
        self.validate().expect("signing an invalid grant");
        let bytes = record::seal(self.encode_body(), DOMAIN, issuer);
        SignedGrant { grant: self, bytes }
    }
}

/// A grant whose signature by its issuer has been verified. It keeps its exact bytes, so
/// it can be stored and forwarded unchanged.
#[derive(Clone, PartialEq, Eq)]
pub struct SignedGrant {
    grant: Grant,
    bytes: Vec<u8>,
}

impl fmt::Debug for SignedGrant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("SignedGrant").field(&self.grant).finish()
    }
}

impl SignedGrant {
    pub fn grant(&self) -> &Grant {
        &self.grant
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Decodes and verifies a grant. Fails on any malformed input or a bad signature.
    pub fn decode(bytes: &[u8]) -> Result<SignedGrant, RecordError> {
        Self::decode_with(bytes, Check::Signatures)
    }

    /// [`Self::decode`], or with `Check::Sealed` the same without verifying the signature
    /// (only for bytes a sealed log head vouches for; see `log::SealKey`).
    pub(crate) fn decode_with(bytes: &[u8], check: Check) -> Result<SignedGrant, RecordError> {
        let mut r = Reader::new(bytes, MAX_RECORD_LEN, "grant", KIND, VERSION, KNOWN)?;
        let id = GrantId(fixed(r.field(1, "id")?, "id")?);
        let issuer = OwnerKey(r.key(2, "issuer")?);
        let subject = UserKey(r.key(3, "subject")?);
        let audience = decode_audience(r.field(4, "audience")?)?;
        let mission: MissionName = r.name(5, "mission")?;
        let rate = Rate {
            calls: r.u32(6, "rate_calls")?,
            period_ms: r.u64(7, "rate_period")?,
        };
        let grant = Grant {
            id,
            issuer,
            subject,
            audience,
            mission,
            rate,
            burst: r.u32(8, "burst")?,
            concurrency: r.u32(9, "concurrency")?,
            not_before: Timestamp(r.u64(10, "not_before")?),
            expires: Timestamp(r.u64(11, "expires")?),
            issued_at: Timestamp(r.u64(12, "issued_at")?),
        };
        grant.validate()?;
        record::open_with(r, DOMAIN, issuer.key(), check)?;
        Ok(SignedGrant {
            grant,
            bytes: bytes.to_vec(),
        })
    }
}

fn decode_audience(v: &[u8]) -> Result<Audience, DecodeError> {
    match v {
        [0] => Ok(Audience::AllAgents),
        [1, keys @ ..] if !keys.is_empty() && keys.len() % 32 == 0 && keys.len() / 32 <= MAX_AUDIENCE => {
            let mut list = Vec::with_capacity(keys.len() / 32);
            for chunk in keys.chunks_exact(32) {
                list.push(AgentId(key_value(chunk, "audience")?));
            }
            Ok(Audience::Agents(list))
        }
        _ => Err(DecodeError::BadLength {
            field: "audience",
            len: v.len(),
        }),
    }
}
