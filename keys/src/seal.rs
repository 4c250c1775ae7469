//! Seals: reading again a log this machine already verified, without verifying it again.
//!
//! Opening an owner log verifies every entry: two ed25519 checks each (the entry, and the
//! grant, revocation or adoption inside it), about 110 µs per entry on a laptop and several
//! times that on a Pi. Every command pays it on every run, for every log it reads
//! (`wtd call` reads your own log and the copy of each grant issuer's), so a cold call grew
//! with the age of the logs it touched.
//!
//! A log only grows, and bytes verified once do not change. So after verifying, this
//! machine *seals* the head it reached: HMAC-SHA-256, under a key derived from its own
//! secret key, of (owner, seq, head hash). Next time, the entries up to a sealed head are
//! decoded and their hash chain recomputed (SHA-256: microseconds), and when the chain
//! arrives exactly at the sealed head their signatures are not checked again: the head's
//! hash commits to every byte before it. Entries after the sealed head are verified as
//! usual, and the new head is sealed.
//!
//! What this does not weaken:
//! - Someone who can write the log file but cannot read the secret key cannot make a seal,
//!   so an edited, spliced or forged log is refused exactly as before.
//! - A seal that does not check (damaged, stale, made with another key, a log restored from
//!   a backup, a rolled-back file) is ignored, and every entry is verified.
//! - Nothing depends on a seal surviving a crash: without one, the log is verified in full.
//!
//! Only [`crate::log::OwnerLog::reopen`] skips signatures, and only for the bytes a seal
//! vouches for; the decoders that skip them are not reachable from outside this crate.

use std::fmt;

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::identity::{OwnerKey, SecretKey};
use crate::log::{EntryHash, Head};

const KEY_DOMAIN: &[u8] = b"wtd log seal key v1\0";
const TAG_DOMAIN: &[u8] = b"wtd log seal v1\0";
const MAGIC: &[u8; 8] = b"WTDSEAL1";

/// The key this machine seals with, derived from its secret key (one-way: a seal key
/// reveals nothing of the secret key, and is useless on another machine).
pub struct SealKey(Zeroizing<[u8; 32]>);

impl fmt::Debug for SealKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SealKey(..)")
    }
}

impl SealKey {
    pub fn derive(secret: &SecretKey) -> SealKey {
        let seed = secret.seed();
        let key: [u8; 32] = Sha256::new_with_prefix(KEY_DOMAIN)
            .chain_update(seed.as_ref())
            .finalize()
            .into();
        SealKey(Zeroizing::new(key))
    }

    /// Seals `head` of `owner`'s log.
    pub fn seal(&self, owner: OwnerKey, head: Head) -> Seal {
        Seal {
            head,
            tag: self.tag(owner, head),
        }
    }

    /// True when `seal` was made with this key for `owner`'s log.
    pub fn vouches(&self, owner: OwnerKey, seal: &Seal) -> bool {
        bool::from(self.tag(owner, seal.head).ct_eq(&seal.tag))
    }

    fn tag(&self, owner: OwnerKey, head: Head) -> [u8; 32] {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(self.0.as_ref()).expect("any key length");
        mac.update(TAG_DOMAIN);
        mac.update(owner.key().as_bytes());
        mac.update(&head.seq.to_be_bytes());
        mac.update(&head.hash.0);
        mac.finalize().into_bytes().into()
    }
}

/// A sealed log head, as kept next to the log file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seal {
    head: Head,
    tag: [u8; 32],
}

impl Seal {
    /// The encoded length: magic, seq, head hash, tag.
    pub const LEN: usize = 8 + 8 + 32 + 32;

    /// The head this seal vouches for (not yet checked: see [`SealKey::vouches`]).
    pub fn head(&self) -> Head {
        self.head
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(Self::LEN);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.head.seq.to_be_bytes());
        out.extend_from_slice(&self.head.hash.0);
        out.extend_from_slice(&self.tag);
        out
    }

    /// None for anything that is not exactly an encoded seal (a damaged seal is simply
    /// not used).
    pub fn decode(bytes: &[u8]) -> Option<Seal> {
        if bytes.len() != Self::LEN || &bytes[..8] != MAGIC {
            return None;
        }
        let seq = u64::from_be_bytes(bytes[8..16].try_into().ok()?);
        let hash = EntryHash(bytes[16..48].try_into().ok()?);
        let tag = bytes[48..80].try_into().ok()?;
        Some(Seal {
            head: Head { seq, hash },
            tag,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(seq: u64, b: u8) -> Head {
        Head {
            seq,
            hash: EntryHash([b; 32]),
        }
    }

    #[test]
    fn a_seal_vouches_only_for_its_key_owner_and_head() {
        let me = SecretKey::generate();
        let key = SealKey::derive(&me);
        let owner = OwnerKey(SecretKey::generate().public());
        let seal = key.seal(owner, head(3, 7));
        assert!(key.vouches(owner, &seal));
        // Another machine's key.
        assert!(!SealKey::derive(&SecretKey::generate()).vouches(owner, &seal));
        // Another owner's log.
        assert!(!key.vouches(OwnerKey(me.public()), &seal));
        // Another head, with the tag copied over.
        for other in [head(4, 7), head(3, 8)] {
            let forged = Seal { head: other, ..seal };
            assert!(!key.vouches(owner, &forged));
        }
    }

    #[test]
    fn seals_round_trip_and_damaged_ones_are_not_seals() {
        let key = SealKey::derive(&SecretKey::generate());
        let owner = OwnerKey(SecretKey::generate().public());
        let seal = key.seal(owner, head(9, 1));
        let bytes = seal.encode();
        assert_eq!(bytes.len(), Seal::LEN);
        assert_eq!(Seal::decode(&bytes), Some(seal));
        assert_eq!(Seal::decode(&bytes[..Seal::LEN - 1]), None);
        assert_eq!(Seal::decode(&[bytes.clone(), vec![0]].concat()), None);
        let mut bad_magic = bytes.clone();
        bad_magic[0] ^= 1;
        assert_eq!(Seal::decode(&bad_magic), None);
        // A flipped bit in the tag decodes but does not vouch.
        let mut flipped = bytes;
        flipped[Seal::LEN - 1] ^= 1;
        let flipped = Seal::decode(&flipped).expect("well formed");
        assert!(!key.vouches(owner, &flipped));
    }

    #[test]
    fn the_seal_key_does_not_show_in_debug() {
        let key = SealKey::derive(&SecretKey::generate());
        assert_eq!(format!("{key:?}"), "SealKey(..)");
    }
}
