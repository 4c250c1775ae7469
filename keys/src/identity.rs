//! Ed25519 identities: the secret key you keep, the public id you share.
//!
//! Every agent, proxy and user is one ed25519 key. Its public half has a text form that
//! says what it is and catches typos:
//!
//! ```text
//! wtd1 + base32(public key (32 bytes) || checksum (3 bytes))   e.g. wtd1q3vx...
//! ```
//!
//! Keys are parsed strictly: small-order ("weak") points and non-canonical encodings are
//! refused, because with them a signature can be made to verify for more than one message.
//! Signatures are always checked with `verify_strict` over a domain-separated message, so
//! a signature made for one record type never verifies as another.

use std::fmt;
use std::sync::Mutex;

use data_encoding::BASE32_NOPAD;
use ed25519_dalek::{SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::defaults;

/// Text prefix of a public id.
pub const PUBLIC_PREFIX: &str = "wtd1";
/// Text prefix of a secret key as stored in a key file.
pub const SECRET_PREFIX: &str = "wtdsecret1";

/// Why a key (or its text form) was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The text does not start with `wtd1`.
    #[error("not a wtd id: it should start with `{PUBLIC_PREFIX}` (run `wtd id` on the other machine and copy the whole line)")]
    BadPrefix,
    /// The text is not valid base32 of the right length.
    #[error("not a wtd id: the part after `{PUBLIC_PREFIX}` is damaged or incomplete; copy it again")]
    BadText,
    /// The text decodes but its checksum does not match: a typo.
    #[error("this wtd id has a typo (its checksum does not match); copy it again")]
    BadChecksum,
    /// The bytes are not a point on the curve, or not its canonical encoding.
    #[error("not a valid ed25519 public key")]
    NotAPoint,
    /// A small-order point: every signature "verifies" against it, so it proves nothing.
    #[error("weak ed25519 public key (small order) refused")]
    Weak,
    /// The secret key text is damaged.
    #[error("the secret key file is damaged; restore it from a backup or run `wtd init` in a new WTD_HOME")]
    BadSecret,
}

/// A signature did not verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("signature does not verify: the record was altered, or was not signed by the key it names")]
pub struct SignatureError;

/// Separates what a signature is *for*. Each signed record type has its own domain, so a
/// signature over a grant can never be replayed as a signature over a revocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Domain(pub &'static str);

impl Domain {
    fn message(&self, msg: &[u8]) -> Vec<u8> {
        let mut m = Vec::with_capacity(self.0.len() + 1 + msg.len());
        m.extend_from_slice(self.0.as_bytes());
        m.push(0);
        m.extend_from_slice(msg);
        m
    }
}

/// An ed25519 signature (64 bytes).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Signature(pub [u8; 64]);

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({}..)", data_encoding::HEXLOWER.encode(&self.0[..8]))
    }
}

/// Keys that passed [`PublicId::check`] lately, so the same key is not checked again (see
/// [`defaults::KEY_MEMO`]). The check is a pure function of the 32 bytes, so remembering
/// a pass is exact; refusals are not remembered. Oldest replaced first.
static ACCEPTED: Mutex<KeyMemo> = Mutex::new(KeyMemo {
    keys: [[0; 32]; defaults::KEY_MEMO],
    len: 0,
    next: 0,
});

struct KeyMemo {
    keys: [[u8; 32]; defaults::KEY_MEMO],
    len: usize,
    next: usize,
}

impl KeyMemo {
    fn holds(&self, key: &[u8; 32]) -> bool {
        self.keys[..self.len].iter().any(|k| k == key)
    }

    fn remember(&mut self, key: &[u8; 32]) {
        if self.holds(key) {
            return;
        }
        self.keys[self.next] = *key;
        self.next = (self.next + 1) % defaults::KEY_MEMO;
        self.len = (self.len + 1).min(defaults::KEY_MEMO);
    }
}

/// A public ed25519 key that passed every check: on the curve, canonical, not weak.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicId([u8; 32]);

impl PublicId {
    /// Parses 32 bytes, refusing non-canonical and small-order points.
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self, KeyError> {
        if ACCEPTED.lock().unwrap_or_else(|p| p.into_inner()).holds(bytes) {
            return Ok(PublicId(*bytes));
        }
        let key = Self::check(bytes)?;
        ACCEPTED.lock().unwrap_or_else(|p| p.into_inner()).remember(bytes);
        Ok(key)
    }

    fn check(bytes: &[u8; 32]) -> Result<Self, KeyError> {
        let vk = VerifyingKey::from_bytes(bytes).map_err(|_| KeyError::NotAPoint)?;
        if vk.is_weak() {
            return Err(KeyError::Weak);
        }
        // `from_bytes` accepts a few non-canonical encodings of y; re-encoding the
        // point tells them apart. Only the canonical form has one meaning.
        if vk.to_edwards().compress().to_bytes() != *bytes {
            return Err(KeyError::NotAPoint);
        }
        Ok(PublicId(*bytes))
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Checks `signature` over `msg` in `domain` with `verify_strict`.
    pub fn verify(&self, domain: Domain, msg: &[u8], signature: &Signature) -> Result<(), SignatureError> {
        let vk = VerifyingKey::from_bytes(&self.0).map_err(|_| SignatureError)?;
        let sig = ed25519_dalek::Signature::from_bytes(&signature.0);
        vk.verify_strict(&domain.message(msg), &sig)
            .map_err(|_| SignatureError)
    }

    /// The first characters of the text form: enough to tell a handful of machines apart
    /// in a table, and a prefix of the full id so it can be typed back (`--agent wtd1q3vx`).
    pub fn short(&self) -> String {
        self.to_string()[..PUBLIC_PREFIX.len() + 8].to_string()
    }

    /// A short fingerprint to compare aloud ("is yours 4f2a-91c3-...?").
    pub fn fingerprint(&self) -> String {
        let h = Sha256::new_with_prefix(b"wtd fingerprint\0")
            .chain_update(self.0)
            .finalize();
        let hex = data_encoding::HEXLOWER.encode(&h[..8]);
        format!("{}-{}-{}-{}", &hex[0..4], &hex[4..8], &hex[8..12], &hex[12..16])
    }

    /// The text form of any 32 bytes, even bytes [`PublicId::from_bytes`] refuses (a weak
    /// key): for tests and fixtures that check such text is refused with the right reason.
    /// Never a way to get a `PublicId`: parsing the text checks the key like any other.
    pub fn text_of_any_bytes(bytes: &[u8; 32]) -> String {
        let mut raw = [0u8; 35];
        raw[..32].copy_from_slice(bytes);
        raw[32..].copy_from_slice(&Self::checksum(bytes));
        format!(
            "{PUBLIC_PREFIX}{}",
            BASE32_NOPAD.encode(&raw).to_ascii_lowercase()
        )
    }

    fn checksum(bytes: &[u8; 32]) -> [u8; 3] {
        let h = Sha256::new_with_prefix(b"wtd id checksum\0")
            .chain_update(bytes)
            .finalize();
        [h[0], h[1], h[2]]
    }
}

impl fmt::Display for PublicId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut raw = [0u8; 35];
        raw[..32].copy_from_slice(&self.0);
        raw[32..].copy_from_slice(&Self::checksum(&self.0));
        write!(
            f,
            "{PUBLIC_PREFIX}{}",
            BASE32_NOPAD.encode(&raw).to_ascii_lowercase()
        )
    }
}

impl fmt::Debug for PublicId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicId({})", self.short())
    }
}

impl std::str::FromStr for PublicId {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, KeyError> {
        let body = s.trim().strip_prefix(PUBLIC_PREFIX).ok_or(KeyError::BadPrefix)?;
        // Canonical text is lowercase; accept only that, so one id has one spelling.
        if body.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(KeyError::BadText);
        }
        let raw = BASE32_NOPAD
            .decode(body.to_ascii_uppercase().as_bytes())
            .map_err(|_| KeyError::BadText)?;
        let raw: [u8; 35] = raw.try_into().map_err(|_| KeyError::BadText)?;
        let key: [u8; 32] = raw[..32].try_into().expect("35 > 32");
        if raw[32..] != Self::checksum(&key) {
            return Err(KeyError::BadChecksum);
        }
        PublicId::from_bytes(&key)
    }
}

/// An ed25519 secret key. It never appears in `Debug`, `Display`, logs or errors, and its
/// memory is wiped on drop.
pub struct SecretKey(SigningKey);

impl SecretKey {
    /// Makes a new key from the operating system's random source.
    pub fn generate() -> Self {
        let mut seed = Zeroizing::new([0u8; 32]);
        getrandom::getrandom(seed.as_mut()).expect("the operating system has no random source");
        SecretKey(SigningKey::from_bytes(&seed))
    }

    /// Rebuilds a key from its 32-byte seed (as stored by [`SecretKey::to_text`]).
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        SecretKey(SigningKey::from_bytes(seed))
    }

    /// The 32-byte seed, for handing to a TLS library. Keep it in a `Zeroizing`.
    pub fn seed(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.0.to_bytes())
    }

    pub fn public(&self) -> PublicId {
        // A key we generated is never weak; the checks in `from_bytes` are for keys we
        // receive.
        PublicId(self.0.verifying_key().to_bytes())
    }

    pub fn sign(&self, domain: Domain, msg: &[u8]) -> Signature {
        use ed25519_dalek::Signer;
        Signature(self.0.sign(&domain.message(msg)).to_bytes())
    }

    /// The text stored in a key file: `wtdsecret1` + base32(seed).
    pub fn to_text(&self) -> Zeroizing<String> {
        let seed = self.seed();
        Zeroizing::new(format!(
            "{SECRET_PREFIX}{}",
            BASE32_NOPAD.encode(seed.as_ref()).to_ascii_lowercase()
        ))
    }

    pub fn from_text(text: &str) -> Result<Self, KeyError> {
        let body = text
            .trim()
            .strip_prefix(SECRET_PREFIX)
            .ok_or(KeyError::BadSecret)?;
        let upper = Zeroizing::new(body.to_ascii_uppercase());
        let raw = Zeroizing::new(
            BASE32_NOPAD
                .decode(upper.as_bytes())
                .map_err(|_| KeyError::BadSecret)?,
        );
        let seed: Zeroizing<[u8; 32]> =
            Zeroizing::new(raw.as_slice().try_into().map_err(|_| KeyError::BadSecret)?);
        Ok(SecretKey::from_seed(&seed))
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SecretKey(public: {}, secret: <redacted>)",
            self.public().short()
        )
    }
}

/// Declares a role-specific key type: the same ed25519 key underneath, but the compiler
/// keeps an agent's id from being passed where a user's key is expected.
macro_rules! role_key {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub PublicId);

        impl $name {
            pub fn key(&self) -> &PublicId {
                &self.0
            }
        }

        impl From<PublicId> for $name {
            fn from(k: PublicId) -> Self {
                $name(k)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self.0.short())
            }
        }

        impl std::str::FromStr for $name {
            type Err = KeyError;
            fn from_str(s: &str) -> Result<Self, KeyError> {
                s.parse().map($name)
            }
        }
    };
}

role_key!(
    /// The key of a person who calls missions (Bob).
    UserKey
);
role_key!(
    /// The key an agent obeys for grants and revocations (Alice).
    OwnerKey
);
role_key!(
    /// The identity of one agent (one Pi).
    AgentId
);
role_key!(
    /// The identity of a discovery proxy, pinned by everyone who joins it.
    ProxyId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trips_and_catches_typos() {
        let k = SecretKey::generate().public();
        let text = k.to_string();
        assert!(text.starts_with("wtd1"));
        assert_eq!(text.parse::<PublicId>(), Ok(k));
        // Flip one character in the middle: the checksum (or the point check) catches it.
        let mut bad = text.clone().into_bytes();
        let i = 20;
        bad[i] = if bad[i] == b'a' { b'b' } else { b'a' };
        let bad = String::from_utf8(bad).unwrap();
        assert!(bad.parse::<PublicId>().is_err());
        assert_eq!("wtd2abc".parse::<PublicId>(), Err(KeyError::BadPrefix));
        assert_eq!("wtd1!!!".parse::<PublicId>(), Err(KeyError::BadText));
        assert_eq!(
            text.to_uppercase().replace("WTD1", "wtd1").parse::<PublicId>(),
            Err(KeyError::BadText)
        );
        assert_eq!(text[..text.len() - 8].parse::<PublicId>(), Err(KeyError::BadText));
    }

    #[test]
    fn small_order_keys_are_refused() {
        // The identity point (y = 1) and the point of order 2 (y = -1): every
        // "signature" verifies against them.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert_eq!(PublicId::from_bytes(&identity), Err(KeyError::Weak));
        let mut order2 = [0xffu8; 32];
        order2[0] = 0xec;
        order2[31] = 0x7f;
        assert_eq!(PublicId::from_bytes(&order2), Err(KeyError::Weak));
        // Non-canonical: y = p + 1 encodes the identity with an out-of-range y.
        let mut noncanon = [0xffu8; 32];
        noncanon[0] = 0xee;
        noncanon[31] = 0x7f;
        assert!(PublicId::from_bytes(&noncanon).is_err());
    }

    #[test]
    fn remembered_keys_never_let_a_refused_one_through() {
        let mut identity = [0u8; 32];
        identity[0] = 1;
        // Twice around the memo, then the weak key, twice: refused each time (refusals
        // are not remembered), and good keys still parse.
        let keys: Vec<PublicId> = (0..2 * defaults::KEY_MEMO)
            .map(|_| SecretKey::generate().public())
            .collect();
        for k in &keys {
            assert_eq!(PublicId::from_bytes(k.as_bytes()), Ok(*k));
            assert_eq!(PublicId::from_bytes(k.as_bytes()), Ok(*k));
        }
        for _ in 0..2 {
            assert_eq!(PublicId::from_bytes(&identity), Err(KeyError::Weak));
        }
    }

    #[test]
    fn the_key_memo_is_bounded_and_forgets_the_oldest() {
        let mut memo = KeyMemo {
            keys: [[0; 32]; defaults::KEY_MEMO],
            len: 0,
            next: 0,
        };
        let key = |i: usize| {
            let mut k = [0xaau8; 32];
            k[..8].copy_from_slice(&(i as u64).to_le_bytes());
            k
        };
        assert!(
            !memo.holds(&[0; 32]),
            "an empty memo holds nothing, not even zeros"
        );
        for i in 0..defaults::KEY_MEMO {
            memo.remember(&key(i));
            memo.remember(&key(i));
        }
        assert!((0..defaults::KEY_MEMO).all(|i| memo.holds(&key(i))));
        memo.remember(&key(defaults::KEY_MEMO));
        assert!(!memo.holds(&key(0)), "the oldest made room");
        assert!(memo.holds(&key(1)) && memo.holds(&key(defaults::KEY_MEMO)));
        assert_eq!(memo.len, defaults::KEY_MEMO);
    }

    #[test]
    fn secrets_never_print() {
        let s = SecretKey::generate();
        let secret_text = s.to_text();
        let debug = format!("{s:?}");
        assert!(debug.contains("redacted"));
        assert!(!debug.contains(&secret_text[SECRET_PREFIX.len()..]));
        let back = SecretKey::from_text(&secret_text).unwrap();
        assert_eq!(back.public(), s.public());
        assert!(SecretKey::from_text("wtdsecret1zz").is_err());
    }

    #[test]
    fn domain_separation() {
        let s = SecretKey::generate();
        let sig = s.sign(Domain("a"), b"msg");
        assert!(s.public().verify(Domain("a"), b"msg", &sig).is_ok());
        assert!(s.public().verify(Domain("b"), b"msg", &sig).is_err());
        assert!(s.public().verify(Domain("a"), b"msh", &sig).is_err());
    }
}
