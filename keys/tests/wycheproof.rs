//! Our ed25519 policy against Project Wycheproof's test vectors, and a table of small-order
//! keys.
//!
//! Records are checked by `PublicId::verify`, which prefixes a domain to the message, so
//! raw vectors cannot go through it. Instead [`strict_verify`] does exactly what our code
//! does, step by step: parse the key with `PublicId::from_bytes` (which refuses weak and
//! non-canonical keys), then `verify_strict` over the raw message. Every vector's outcome
//! is pinned, so a change in ed25519-dalek or in our policy fails this test.

use ed25519_dalek::{Signature, VerifyingKey};
use wtd_keys::{KeyError, PublicId};
use wycheproof::eddsa::{TestName, TestSet};
use wycheproof::TestResult;

/// Why a vector was refused.
#[derive(Debug, PartialEq, Eq)]
enum Refused {
    /// The key is not 32 bytes, or the signature not 64.
    Length,
    /// Our key policy refused the key.
    Key(KeyError),
    /// `verify_strict` refused the signature.
    Signature,
}

/// Our verification path, on raw bytes.
fn strict_verify(pk: &[u8], msg: &[u8], sig: &[u8]) -> Result<(), Refused> {
    let pk: [u8; 32] = pk.try_into().map_err(|_| Refused::Length)?;
    let sig: [u8; 64] = sig.try_into().map_err(|_| Refused::Length)?;
    let id = PublicId::from_bytes(&pk).map_err(Refused::Key)?;
    let vk = VerifyingKey::from_bytes(id.as_bytes()).map_err(|_| Refused::Key(KeyError::NotAPoint))?;
    vk.verify_strict(msg, &Signature::from_bytes(&sig))
        .map_err(|_| Refused::Signature)
}

/// Valid vectors we refuse on purpose because their key is small-order or
/// non-canonical, by tcId. Wycheproof's Ed25519 set has none today: every key it marks
/// valid is a strong, canonical point. Should a new version add one, this test fails
/// and the vector must be listed here with the reason.
const VALID_BUT_REFUSED_BY_KEY_POLICY: &[(usize, KeyError)] = &[];

#[test]
fn every_wycheproof_ed25519_vector_gets_the_pinned_answer() {
    let set = TestSet::load(TestName::Ed25519).expect("the vectors ship with the crate");
    let mut checked = 0;
    for group in &set.test_groups {
        let pk: &[u8] = &group.key.pk;
        for t in &group.tests {
            let ours = strict_verify(pk, &t.msg, &t.sig);
            let exception = VALID_BUT_REFUSED_BY_KEY_POLICY
                .iter()
                .find(|(id, _)| *id == t.tc_id);
            match (t.result, exception) {
                (TestResult::Invalid, _) => {
                    assert!(ours.is_err(), "tcId {} ({}) must be refused", t.tc_id, t.comment)
                }
                (TestResult::Valid, None) => {
                    assert_eq!(ours, Ok(()), "tcId {} ({}) must be accepted", t.tc_id, t.comment)
                }
                (TestResult::Valid, Some((_, why))) => {
                    assert_eq!(ours, Err(Refused::Key(why.clone())), "tcId {}", t.tc_id)
                }
                (TestResult::Acceptable, _) => {
                    panic!(
                        "tcId {}: the Ed25519 set had no `acceptable` vectors; pin this one",
                        t.tc_id
                    )
                }
            }
            checked += 1;
        }
    }
    assert_eq!(checked, set.number_of_tests);
    assert!(checked >= 150, "only {checked} vectors: did the data set shrink?");
}

/// Hex to 32 bytes, for the table below.
fn key(hex: &str) -> [u8; 32] {
    data_encoding::HEXLOWER
        .decode(hex.as_bytes())
        .expect("hex")
        .try_into()
        .expect("32 bytes")
}

#[test]
fn small_order_keys_are_refused() {
    // The eight points of order 1, 2, 4 and 8 in their canonical encodings. Against any
    // of them a "signature" can be made to verify for many messages, so a key like this
    // proves nothing about who signed.
    let canonical = [
        (
            "identity (order 1)",
            "0100000000000000000000000000000000000000000000000000000000000000",
        ),
        (
            "order 2 (y = -1)",
            "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        ),
        (
            "order 4 (y = 0, x > 0)",
            "0000000000000000000000000000000000000000000000000000000000000000",
        ),
        (
            "order 4 (y = 0, x < 0)",
            "0000000000000000000000000000000000000000000000000000000000000080",
        ),
        (
            "order 8",
            "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
        ),
        (
            "order 8",
            "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85",
        ),
        (
            "order 8",
            "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
        ),
        (
            "order 8",
            "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",
        ),
    ];
    for (what, hex) in canonical {
        assert_eq!(PublicId::from_bytes(&key(hex)), Err(KeyError::Weak), "{what}");
    }
    // Non-canonical encodings of small-order points: y written as y + p, or x = 0 with
    // the sign bit set ("negative zero"). Refused as weak or as not canonical; which one
    // depends on the order of the checks, and is pinned too.
    let non_canonical = [
        (
            "identity, negative zero x",
            "0100000000000000000000000000000000000000000000000000000000000080",
            KeyError::Weak,
        ),
        (
            "order 2, negative zero x",
            "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
            KeyError::Weak,
        ),
        (
            "identity, y = p + 1",
            "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
            KeyError::Weak,
        ),
        (
            "identity, y = p + 1, sign",
            "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
            KeyError::Weak,
        ),
        (
            "order 4, y = p",
            "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
            KeyError::Weak,
        ),
        (
            "order 4, y = p, sign",
            "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
            KeyError::Weak,
        ),
    ];
    for (what, hex, why) in non_canonical {
        assert_eq!(PublicId::from_bytes(&key(hex)), Err(why), "{what}");
    }
}

#[test]
fn a_non_canonical_encoding_of_a_strong_key_is_refused() {
    // y values in [p, 2^255) can be written two ways; a key has exactly one encoding, so
    // the same key cannot appear under two ids. y = p + 3 is y = 3 written the long way.
    let mut short = [0u8; 32];
    short[0] = 3;
    let long = key("f0ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f");
    // The control first: y = 3 is a strong point, so only the spelling can be refused.
    assert!(PublicId::from_bytes(&short).is_ok(), "y = 3 is a strong point");
    // ed25519-dalek itself decodes the long spelling (it reduces y mod p)...
    assert!(VerifyingKey::from_bytes(&long).is_ok());
    // ...and our re-encoding check refuses it.
    assert_eq!(PublicId::from_bytes(&long), Err(KeyError::NotAPoint));
}

#[test]
fn a_strong_key_plus_a_torsion_point_is_accepted() {
    // Pinned policy: only small-order keys are weak. A "mixed-order" key (a real key plus
    // a small-order component) is accepted: verify_strict checks signatures without the
    // cofactor, so such a key still proves who signed. If we ever tighten this, change it
    // here on purpose.
    let strong = VerifyingKey::from_bytes(wtd_keys::SecretKey::from_seed(&[9; 32]).public().as_bytes())
        .expect("a generated key");
    let torsion = VerifyingKey::from_bytes(&key(
        "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
    ))
    .expect("an order-8 point decodes");
    let mixed = (strong.to_edwards() + torsion.to_edwards()).compress().to_bytes();
    assert!(PublicId::from_bytes(&mixed).is_ok());
}
