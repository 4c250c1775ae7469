//! Adoption: an owner's signed word that an agent is hers (and its undoing, disowning).
//!
//! An agent's advert *claims* owners, and anyone can write any claim. So an agent counts as
//! Alice's only when both sides agree: its own configuration names her (the claim), **and**
//! her owner log adopts its id, in an adoption signed with her key. Callers dispatch only
//! to agents the issuer of their grant adopted, agents honour a grant only if its issuer
//! adopted them, and a proxy with `--allow` admits only adopted agents.
//!
//! Adoptions live in the owner log, next to grants and revocations, so they inherit its
//! guarantees: the proxy relaying them can delay or withhold them, never forge, alter or
//! reorder one. The latest adoption record for an agent in the log decides: adopted, or
//! disowned (an owner can adopt again later; each record is dated).
//!
//! ```text
//! adoption = kind(5) version(1)
//!            1 issuer     owner key (32)
//!            2 agent      agent id (32)
//!            3 action     1 = adopt | 2 = disown
//!            4 token      16 bytes: the enrollment token this adoption used (adopt only, optional)
//!            5 issued_at  u64 ms since epoch
//!          255 signature  by issuer, domain "wtd adoption v1"
//! ```

use std::collections::HashMap;
use std::fmt;

use crate::defaults::MAX_RECORD_LEN;
use crate::encoding::{fixed, DecodeError, Reader, Writer};
use crate::enroll::TokenId;
use crate::identity::{AgentId, Domain, OwnerKey, SecretKey};
use crate::log::{OwnerLog, Record};
use crate::record::{self, Check, RecordError, SIGNATURE_TAG};
use crate::time::Timestamp;

pub const KIND: u8 = 5;
pub const VERSION: u8 = 1;
pub const DOMAIN: Domain = Domain("wtd adoption v1");
const KNOWN: &[u8] = &[1, 2, 3, 4, 5, SIGNATURE_TAG];

/// What an adoption record says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// "This agent is mine": my grants may reach it, and I may call it.
    Adopt,
    /// "This agent is no longer mine": my grants stop reaching it at once.
    Disown,
}

/// The content of an adoption record. Sign it with [`Adoption::sign`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Adoption {
    pub issuer: OwnerKey,
    pub agent: AgentId,
    pub action: Action,
    /// The enrollment token the agent proved it held, when adopted by `wtd adopt --pending`.
    /// Recording it in the signed log is what makes a token single-use.
    pub token: Option<TokenId>,
    pub issued_at: Timestamp,
}

impl Adoption {
    /// Signs the record. Panics if `issuer` is not the signer's key, or a disown names a
    /// token: both are programming errors in the caller.
    pub fn sign(self, issuer: &SecretKey) -> SignedAdoption {
        assert_eq!(
            issuer.public(),
            *self.issuer.key(),
            "an adoption is signed by its issuer"
        );
        assert!(
            self.action == Action::Adopt || self.token.is_none(),
            "only an adoption uses a token"
        );
        let mut w = Writer::new(KIND, VERSION);
        w.key(1, self.issuer.key()).key(2, self.agent.key()).u8(
            3,
            match self.action {
                Action::Adopt => 1,
                Action::Disown => 2,
            },
        );
        if let Some(t) = &self.token {
            w.bytes(4, &t.0);
        }
        w.u64(5, self.issued_at.0);
        let bytes = record::seal(w, DOMAIN, issuer);
        SignedAdoption {
            adoption: self,
            bytes,
        }
    }
}

/// An adoption record whose signature by its issuer has been verified.
#[derive(Clone, PartialEq, Eq)]
pub struct SignedAdoption {
    adoption: Adoption,
    bytes: Vec<u8>,
}

impl fmt::Debug for SignedAdoption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("SignedAdoption").field(&self.adoption).finish()
    }
}

impl SignedAdoption {
    pub fn adoption(&self) -> &Adoption {
        &self.adoption
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Decodes and verifies an adoption record.
    pub fn decode(bytes: &[u8]) -> Result<SignedAdoption, RecordError> {
        Self::decode_with(bytes, Check::Signatures)
    }

    /// [`Self::decode`], or with `Check::Sealed` the same without verifying the signature
    /// (only for bytes a sealed log head vouches for; see `log::SealKey`).
    pub(crate) fn decode_with(bytes: &[u8], check: Check) -> Result<SignedAdoption, RecordError> {
        let mut r = Reader::new(bytes, MAX_RECORD_LEN, "adoption", KIND, VERSION, KNOWN)?;
        let issuer = OwnerKey(r.key(1, "issuer")?);
        let agent = AgentId(r.key(2, "agent")?);
        let action = match r.u8(3, "action")? {
            1 => Action::Adopt,
            2 => Action::Disown,
            _ => {
                return Err(DecodeError::BadValue {
                    field: "action",
                    reason: "must be 1 (adopt) or 2 (disown)",
                }
                .into())
            }
        };
        let token = r
            .optional(4, "token")?
            .map(|v| fixed::<16>(v, "token"))
            .transpose()?
            .map(TokenId);
        if action == Action::Disown && token.is_some() {
            return Err(DecodeError::BadValue {
                field: "token",
                reason: "only an adoption uses an enrollment token",
            }
            .into());
        }
        let issued_at = Timestamp(r.u64(5, "issued_at")?);
        record::open_with(r, DOMAIN, issuer.key(), check)?;
        Ok(SignedAdoption {
            adoption: Adoption {
                issuer,
                agent,
                action,
                token,
                issued_at,
            },
            bytes: bytes.to_vec(),
        })
    }
}

/// Where one owner stands with one agent, by her log's latest word on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Her log never mentions the agent.
    Never,
    /// Adopted at `at`, and not disowned since.
    Adopted { at: Timestamp },
    /// Disowned at `at` (it may have been adopted before).
    Disowned { at: Timestamp },
}

impl Status {
    pub fn is_adopted(&self) -> bool {
        matches!(self, Status::Adopted { .. })
    }
}

/// Every owner's word on every agent, from verified owner logs: who adopted whom, and which
/// enrollment tokens were used. Build one from the logs you hold; it is cheap.
#[derive(Clone, Debug, Default)]
pub struct AdoptionBook {
    status: HashMap<(OwnerKey, AgentId), Status>,
    tokens: HashMap<(OwnerKey, TokenId), AgentId>,
}

impl AdoptionBook {
    pub fn new() -> Self {
        AdoptionBook::default()
    }

    /// The book of these logs.
    pub fn from_logs<'a>(logs: impl IntoIterator<Item = &'a OwnerLog>) -> Self {
        let mut book = AdoptionBook::new();
        for log in logs {
            book.add_log(log);
        }
        book
    }

    /// Reads one owner's log, in order: a later record about an agent replaces an earlier.
    pub fn add_log(&mut self, log: &OwnerLog) {
        for entry in log.entries() {
            if let Record::Adoption(a) = &entry.record {
                self.add(a.adoption());
            }
        }
    }

    /// Adds one record, as the latest word of its issuer on its agent.
    pub fn add(&mut self, a: &Adoption) {
        let status = match a.action {
            Action::Adopt => Status::Adopted { at: a.issued_at },
            Action::Disown => Status::Disowned { at: a.issued_at },
        };
        self.status.insert((a.issuer, a.agent), status);
        if let Some(t) = a.token {
            self.tokens.entry((a.issuer, t)).or_insert(a.agent);
        }
    }

    /// What `owner`'s log says of `agent`.
    pub fn status(&self, owner: &OwnerKey, agent: &AgentId) -> Status {
        self.status
            .get(&(*owner, *agent))
            .copied()
            .unwrap_or(Status::Never)
    }

    /// Did `owner` adopt `agent` (and not disown it since)?
    pub fn adopts(&self, owner: &OwnerKey, agent: &AgentId) -> bool {
        self.status(owner, agent).is_adopted()
    }

    /// The agent whose adoption used `owner`'s enrollment token `token`, if any did.
    pub fn token_used_by(&self, owner: &OwnerKey, token: &TokenId) -> Option<AgentId> {
        self.tokens.get(&(*owner, *token)).copied()
    }

    /// Every agent `owner` adopted (and did not disown).
    pub fn adopted_by<'a>(&'a self, owner: &'a OwnerKey) -> impl Iterator<Item = AgentId> + 'a {
        self.status
            .iter()
            .filter(move |((o, _), s)| o == owner && s.is_adopted())
            .map(|((_, a), _)| *a)
    }
}

/// Whether an agent counts as `owner`'s: both sides must agree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ownership {
    /// Its configuration names her, and her log adopts it: it is hers.
    Agreed,
    /// It names her, but her log does not adopt it (never did, or disowned it at `disowned`):
    /// a claim only. Callers do not use her grants on it.
    ClaimOnly { disowned: Option<Timestamp> },
    /// Her log adopts it, but its configuration does not name her (yet): it obeys others.
    AdoptedOnly,
    /// Neither.
    Unrelated,
}

/// The pure check both sides agree on: `claims` is whether the agent's own advert (or
/// config) names `owner`; the book holds her verified log.
pub fn ownership(claims: bool, book: &AdoptionBook, owner: &OwnerKey, agent: &AgentId) -> Ownership {
    match (claims, book.status(owner, agent)) {
        (true, Status::Adopted { .. }) => Ownership::Agreed,
        (true, Status::Never) => Ownership::ClaimOnly { disowned: None },
        (true, Status::Disowned { at }) => Ownership::ClaimOnly { disowned: Some(at) },
        (false, Status::Adopted { .. }) => Ownership::AdoptedOnly,
        (false, _) => Ownership::Unrelated,
    }
}
