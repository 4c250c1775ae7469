//! Enrollment: how an owner adopts a headless Pi she has never seen the key of.
//!
//! A Pi makes its key at first boot, so the owner cannot name it in advance. Instead she
//! issues a one-time *enrollment token* (`wtd enroll new`), which stays in her home and is
//! written into the card's `agent.toml` (by hand today, by the flasher later). The agent
//! never shows the token to anyone: its advert carries a *proof*, an HMAC-SHA256 keyed by
//! the token's secret over the agent's own id. `wtd adopt --pending` then adopts every agent
//! whose proof verifies with a token she issued, once per token.
//!
//! Why this is safe against the proxy (and anyone else who sees adverts):
//! - the proof names one agent id, proven by TLS; copied into another agent's advert it
//!   does not verify for that agent's id, so it adopts nothing;
//! - the proof reveals nothing of the secret (HMAC), so no proof for another key can be made;
//! - adoption itself is a record signed by the owner: the proxy cannot adopt anything.
//!
//! A token is refused when unknown, expired, already used (its use is recorded in the
//! signed adoption, so the owner log itself says so), or proven by two agents at once (the
//! card was copied: adopt neither, and find out why).
//!
//! ```text
//! token text = "wtdenroll1" + base32(token id (16) || secret (32) || checksum (3))
//! proof      = token id (16) || HMAC-SHA256(secret, "wtd enrollment proof v1" || 0 || token id || agent id)
//! ```
//!
//! Pure: the checks take the issued tokens, the verified adoptions and `now`.

use std::fmt;

use data_encoding::BASE32_NOPAD;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::adoption::AdoptionBook;
use crate::identity::{AgentId, OwnerKey};
use crate::time::Timestamp;

/// Text prefix of an enrollment token. The whole text is a secret.
pub const TOKEN_PREFIX: &str = "wtdenroll1";
const PROOF_DOMAIN: &[u8] = b"wtd enrollment proof v1\0";
const CHECKSUM_DOMAIN: &[u8] = b"wtd enroll checksum\0";

/// The public name of an enrollment token: safe to show, log and put in an advert.
/// Text form: `enroll-` + 26 base32 characters.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TokenId(pub [u8; 16]);

impl fmt::Display for TokenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "enroll-{}", BASE32_NOPAD.encode(&self.0).to_ascii_lowercase())
    }
}

impl fmt::Debug for TokenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenId({self})")
    }
}

/// Why an enrollment token's text was refused. Never includes the text itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// It does not start with `wtdenroll1`.
    #[error(
        "not an enrollment token: it should start with `{TOKEN_PREFIX}` (as printed by `wtd enroll new`)"
    )]
    BadPrefix,
    /// Damaged, cut off, or mistyped.
    #[error("this enrollment token is damaged or incomplete; copy the whole line printed by `wtd enroll new` again")]
    BadText,
}

/// A one-time enrollment token: its public id and its secret. The secret never appears in
/// `Debug`, logs or errors, and is wiped from memory on drop.
#[derive(Clone)]
pub struct EnrollmentToken {
    id: TokenId,
    secret: Zeroizing<[u8; 32]>,
}

impl PartialEq for EnrollmentToken {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id && bool::from(self.secret.ct_eq(&*other.secret))
    }
}

impl Eq for EnrollmentToken {}

impl fmt::Debug for EnrollmentToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EnrollmentToken({}, secret: <redacted>)", self.id)
    }
}

fn checksum(raw: &[u8]) -> [u8; 3] {
    let h = Sha256::new_with_prefix(CHECKSUM_DOMAIN)
        .chain_update(raw)
        .finalize();
    [h[0], h[1], h[2]]
}

impl EnrollmentToken {
    /// A fresh token from the operating system's random source.
    pub fn generate() -> Self {
        let mut id = [0u8; 16];
        let mut secret = Zeroizing::new([0u8; 32]);
        getrandom::getrandom(&mut id).expect("the operating system has no random source");
        getrandom::getrandom(secret.as_mut()).expect("the operating system has no random source");
        EnrollmentToken {
            id: TokenId(id),
            secret,
        }
    }

    /// A token from known parts (tests; a flasher that derives tokens).
    pub fn from_parts(id: TokenId, secret: [u8; 32]) -> Self {
        EnrollmentToken {
            id,
            secret: Zeroizing::new(secret),
        }
    }

    pub fn id(&self) -> TokenId {
        self.id
    }

    /// The secret text, for the card's `agent.toml` and the owner's home only.
    pub fn to_text(&self) -> Zeroizing<String> {
        let mut raw = Zeroizing::new(Vec::with_capacity(51));
        raw.extend_from_slice(&self.id.0);
        raw.extend_from_slice(&*self.secret);
        let sum = checksum(&raw);
        raw.extend_from_slice(&sum);
        Zeroizing::new(format!(
            "{TOKEN_PREFIX}{}",
            BASE32_NOPAD.encode(&raw).to_ascii_lowercase()
        ))
    }

    pub fn from_text(text: &str) -> Result<Self, TokenError> {
        let body = text
            .trim()
            .strip_prefix(TOKEN_PREFIX)
            .ok_or(TokenError::BadPrefix)?;
        if body.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(TokenError::BadText);
        }
        let upper = Zeroizing::new(body.to_ascii_uppercase());
        let raw = Zeroizing::new(
            BASE32_NOPAD
                .decode(upper.as_bytes())
                .map_err(|_| TokenError::BadText)?,
        );
        if raw.len() != 51 || raw[48..] != checksum(&raw[..48]) {
            return Err(TokenError::BadText);
        }
        let id = TokenId(raw[..16].try_into().expect("checked length"));
        let mut secret = Zeroizing::new([0u8; 32]);
        secret.copy_from_slice(&raw[16..48]);
        Ok(EnrollmentToken { id, secret })
    }

    /// The proof an agent puts in its advert: this token's id and a MAC over the agent's id.
    pub fn prove(&self, agent: &AgentId) -> EnrollProof {
        EnrollProof {
            token: self.id,
            mac: self.mac(agent),
        }
    }

    fn mac(&self, agent: &AgentId) -> [u8; 32] {
        let mut msg = Vec::with_capacity(PROOF_DOMAIN.len() + 48);
        msg.extend_from_slice(PROOF_DOMAIN);
        msg.extend_from_slice(&self.id.0);
        msg.extend_from_slice(agent.key().as_bytes());
        hmac_sha256(&self.secret, &msg)
    }

    /// Does `proof` show that `agent` holds this token? Constant time in the MAC.
    pub fn verifies(&self, proof: &EnrollProof, agent: &AgentId) -> bool {
        proof.token == self.id && bool::from(self.mac(agent).ct_eq(&proof.mac))
    }
}

/// HMAC-SHA256 (RFC 2104) with a key no longer than the block, as our 32-byte secrets are.
fn hmac_sha256(key: &[u8; 32], msg: &[u8]) -> [u8; 32] {
    let mut block = Zeroizing::new([0u8; 64]);
    block[..32].copy_from_slice(key);
    let mut ipad = Zeroizing::new([0x36u8; 64]);
    let mut opad = Zeroizing::new([0x5cu8; 64]);
    for i in 0..64 {
        ipad[i] ^= block[i];
        opad[i] ^= block[i];
    }
    let inner = Sha256::new()
        .chain_update(ipad.as_slice())
        .chain_update(msg)
        .finalize();
    Sha256::new()
        .chain_update(opad.as_slice())
        .chain_update(inner)
        .finalize()
        .into()
}

/// What an agent shows to prove it holds a token: public, bound to its own id.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct EnrollProof {
    pub token: TokenId,
    pub mac: [u8; 32],
}

impl fmt::Debug for EnrollProof {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "EnrollProof({}, mac {}..)",
            self.token,
            data_encoding::HEXLOWER.encode(&self.mac[..4])
        )
    }
}

/// A token the owner issued, as kept in her home.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuedToken {
    pub token: EnrollmentToken,
    /// A note for the owner ("kitchen Pi").
    pub label: String,
    pub issued_at: Timestamp,
    /// After this, the token adopts nothing.
    pub expires: Timestamp,
}

/// An agent waiting to be adopted, as the roster shows it: its id (proven by TLS to the
/// proxy), whether its advert names the owner, and the proof it shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pending {
    pub agent: AgentId,
    pub claims_owner: bool,
    pub proof: EnrollProof,
}

/// Why a pending agent was not adopted. Each variant says what to do.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EnrollError {
    /// The proof names a token this owner never issued (another owner's, or made up).
    #[error("it shows token {token}, which you did not issue (see `wtd enroll`)")]
    UnknownToken { token: TokenId },
    /// The MAC does not verify for this agent's id: a proof copied from another agent's
    /// advert, or a mistyped token on the card.
    #[error("its proof for token {token} does not verify for its id: copied from another agent, or the card's token is mistyped")]
    BadProof { token: TokenId },
    /// The token already adopted another agent; tokens are single-use.
    #[error("token {token} was already used to adopt {by}; issue a new one with `wtd enroll new`")]
    AlreadyUsed { token: TokenId, by: AgentId },
    /// The token expired before the agent showed up.
    #[error("token {token} expired {ago_ms} ms ago; issue a new one with `wtd enroll new`")]
    Expired { token: TokenId, ago_ms: u64 },
    /// Several agents prove the same unused token at once: the card (or its token) was
    /// copied. None of them is adopted; find out which is yours and adopt it by id.
    #[error("{count} agents prove token {token} at once (was the card copied?); none adopted: adopt yours by id with `wtd adopt <id>`")]
    Contested { token: TokenId, count: usize },
    /// The agent's advert does not name this owner: adopting it would not make it obey her.
    #[error("it does not name you as an owner in its config; fix its agent.toml")]
    NotClaimed { token: TokenId },
}

/// Checks one pending agent's proof against the tokens `owner` issued, the adoptions her log
/// already holds (for reuse), and `now`. Returns the token it proves.
pub fn check_proof(
    pending: &Pending,
    owner: &OwnerKey,
    issued: &[IssuedToken],
    book: &AdoptionBook,
    now: Timestamp,
) -> Result<TokenId, EnrollError> {
    let token = pending.proof.token;
    let t = issued
        .iter()
        .find(|t| t.token.id() == token)
        .ok_or(EnrollError::UnknownToken { token })?;
    if !t.token.verifies(&pending.proof, &pending.agent) {
        return Err(EnrollError::BadProof { token });
    }
    if let Some(by) = book.token_used_by(owner, &token) {
        return Err(EnrollError::AlreadyUsed { token, by });
    }
    if now >= t.expires {
        return Err(EnrollError::Expired {
            token,
            ago_ms: t.expires.until(now),
        });
    }
    if !pending.claims_owner {
        return Err(EnrollError::NotClaimed { token });
    }
    Ok(token)
}

/// Decides every pending agent at once: each is either adopted with the token it proves, or
/// refused with the reason. Agents `owner` already adopted are left out. A token proven by
/// more than one agent adopts none of them ([`EnrollError::Contested`]).
pub fn decide_pending(
    pending: &[Pending],
    owner: &OwnerKey,
    issued: &[IssuedToken],
    book: &AdoptionBook,
    now: Timestamp,
) -> Vec<(AgentId, Result<TokenId, EnrollError>)> {
    let fresh: Vec<&Pending> = pending.iter().filter(|p| !book.adopts(owner, &p.agent)).collect();
    let mut out: Vec<(AgentId, Result<TokenId, EnrollError>)> = fresh
        .iter()
        .map(|p| (p.agent, check_proof(p, owner, issued, book, now)))
        .collect();
    let winners: Vec<TokenId> = out.iter().filter_map(|(_, r)| r.as_ref().ok().copied()).collect();
    for (_, result) in out.iter_mut() {
        if let Ok(token) = result {
            let count = winners.iter().filter(|t| *t == token).count();
            if count > 1 {
                *result = Err(EnrollError::Contested { token: *token, count });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_a_reference_implementation() {
        // key = 0x0b * 32, msg = "Hi There": the value Python's `hmac` module gives
        // (`hmac.new(b'\x0b' * 32, b'Hi There', hashlib.sha256).hexdigest()`).
        let mac = hmac_sha256(&[0x0b; 32], b"Hi There");
        assert_eq!(
            data_encoding::HEXLOWER.encode(&mac),
            "198a607eb44bfbc69903a0f1cf2bbdc5ba0aa3f3d9ae3c1c7a3b1696a0b68cf7"
        );
    }

    #[test]
    fn token_text_round_trips_and_never_prints_its_secret() {
        let t = EnrollmentToken::generate();
        let text = t.to_text();
        assert!(text.starts_with(TOKEN_PREFIX));
        assert_eq!(EnrollmentToken::from_text(&text), Ok(t.clone()));
        let debug = format!("{t:?}");
        assert!(debug.contains("redacted") && !debug.contains(&text[TOKEN_PREFIX.len()..]));
        assert_eq!(
            EnrollmentToken::from_text("wtdgrant1abc"),
            Err(TokenError::BadPrefix)
        );
        assert_eq!(
            EnrollmentToken::from_text(&text[..text.len() - 2]),
            Err(TokenError::BadText)
        );
        let mut typo = text.to_string().into_bytes();
        let i = TOKEN_PREFIX.len() + 30;
        typo[i] = if typo[i] == b'a' { b'b' } else { b'a' };
        assert_eq!(
            EnrollmentToken::from_text(std::str::from_utf8(&typo).unwrap()),
            Err(TokenError::BadText)
        );
        assert_eq!(
            EnrollmentToken::from_text(&text.to_uppercase().replace("WTDENROLL1", "wtdenroll1")),
            Err(TokenError::BadText)
        );
    }
}
