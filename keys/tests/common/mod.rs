//! The shared harness for the `wtd-keys` tests: a fixed cast of keys, a fixed clock, a
//! grant with sensible defaults, and a way to take a record apart and sign it again.
//!
//! Why the raw helpers: the real encoders only ever write valid records, but the decoders
//! must be tested on invalid ones. So a test takes a valid record apart into its fields,
//! changes exactly one thing, and (when the point is not the signature) signs it again
//! with the right key and domain, so that the one change is the only thing wrong.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use wtd_keys::identity::Domain;
use wtd_keys::record::SIGNATURE_TAG;
use wtd_keys::{
    AgentId, Audience, Grant, GrantId, MissionName, OwnerKey, Rate, SecretKey, SignedGrant, Timestamp,
    UserKey,
};

/// "Now" in every test: a fixed instant (mid-2025), so nothing depends on the real clock.
pub const T0: Timestamp = Timestamp(1_750_000_000_000);

pub const SECOND: u64 = 1000;
pub const MINUTE: u64 = 60 * SECOND;
pub const HOUR: u64 = 60 * MINUTE;

/// A key rebuilt from a fixed seed: the same key in every run, so failures reproduce.
pub fn secret(seed: u8) -> SecretKey {
    SecretKey::from_seed(&[seed; 32])
}

/// The owner whose agents we test.
pub fn alice() -> SecretKey {
    secret(1)
}

/// The friend Alice grants things to.
pub fn bob() -> SecretKey {
    secret(2)
}

/// Another user, who holds nothing unless a test says so.
pub fn carol() -> SecretKey {
    secret(3)
}

/// The attacker: a valid key that no agent obeys.
pub fn mallory() -> SecretKey {
    secret(4)
}

/// A second owner: a Pi shared by two people obeys both Alice and Oscar, and neither
/// trusts the other with more than the Pi itself.
pub fn oscar() -> SecretKey {
    secret(5)
}

/// Agent (Pi) number `n`.
pub fn pi(n: u8) -> AgentId {
    AgentId(secret(100 + n).public())
}

pub fn owner(k: &SecretKey) -> OwnerKey {
    OwnerKey(k.public())
}

pub fn user(k: &SecretKey) -> UserKey {
    UserKey(k.public())
}

pub fn mission(s: &str) -> MissionName {
    MissionName::new(s).expect("test mission names are canonical")
}

/// A grant id that is easy to tell apart in a failure message.
pub fn gid(n: u8) -> GrantId {
    GrantId([n; 16])
}

/// `issuer` lets `subject` call `mission` on all of the issuer's agents: 10 calls a minute,
/// a burst of 2, one at a time, valid for two hours from [`T0`].
pub fn grant(issuer: &SecretKey, subject: &SecretKey, m: &str) -> Grant {
    Grant {
        id: gid(0x61),
        issuer: owner(issuer),
        subject: user(subject),
        audience: Audience::AllAgents,
        mission: mission(m),
        rate: Rate {
            calls: 10,
            period_ms: MINUTE,
        },
        burst: 2,
        concurrency: 1,
        not_before: T0,
        expires: T0.plus_ms(2 * HOUR),
        issued_at: T0,
    }
}

/// Alice's signed grant to Bob for `demo`.
pub fn make_grant() -> SignedGrant {
    grant(&alice(), &bob(), "demo").sign(&alice())
}

/// One field of a record: its tag and its value.
pub type Field = (u8, Vec<u8>);

/// Splits a well-formed record into header and fields (signature included, if any).
/// Panics on malformed input: it is only used to take valid records apart.
pub fn fields_of(bytes: &[u8]) -> (u8, u8, Vec<Field>) {
    let (kind, version) = (bytes[0], bytes[1]);
    let mut rest = &bytes[2..];
    let mut fields = Vec::new();
    while !rest.is_empty() {
        let tag = rest[0];
        let len = u32::from_be_bytes(rest[1..5].try_into().expect("4 bytes")) as usize;
        fields.push((tag, rest[5..5 + len].to_vec()));
        rest = &rest[5 + len..];
    }
    (kind, version, fields)
}

/// Encodes fields exactly as given: no ordering check, so tests can write what the real
/// `Writer` refuses to (out of order, duplicated).
pub fn encode_fields(kind: u8, version: u8, fields: &[Field]) -> Vec<u8> {
    let mut out = vec![kind, version];
    for (tag, value) in fields {
        out.push(*tag);
        out.extend_from_slice(&(value.len() as u32).to_be_bytes());
        out.extend_from_slice(value);
    }
    out
}

/// Encodes `fields` and appends a signature over them by `signer` in `domain`, the same
/// way `record::seal` does.
pub fn seal_fields(kind: u8, version: u8, fields: &[Field], domain: Domain, signer: &SecretKey) -> Vec<u8> {
    let body = encode_fields(kind, version, fields);
    let sig = signer.sign(domain, &body);
    encode_fields(
        kind,
        version,
        &[fields, &[(SIGNATURE_TAG, sig.0.to_vec())]].concat(),
    )
}

/// Takes a signed record apart, drops its signature, lets `edit` change the fields, and
/// signs the result again with `signer` in `domain`.
pub fn resign(
    bytes: &[u8],
    domain: Domain,
    signer: &SecretKey,
    edit: impl FnOnce(&mut Vec<Field>),
) -> Vec<u8> {
    let (kind, version, mut fields) = fields_of(bytes);
    let sig = fields.pop().expect("a signed record has fields");
    assert_eq!(sig.0, SIGNATURE_TAG, "the last field is the signature");
    edit(&mut fields);
    seal_fields(kind, version, &fields, domain, signer)
}

/// Replaces the value of field `tag`.
pub fn set(fields: &mut [Field], tag: u8, value: Vec<u8>) {
    let f = fields
        .iter_mut()
        .find(|f| f.0 == tag)
        .expect("the field is present");
    f.1 = value;
}

/// Removes field `tag`.
pub fn remove(fields: &mut Vec<Field>, tag: u8) {
    let before = fields.len();
    fields.retain(|f| f.0 != tag);
    assert_eq!(fields.len(), before - 1, "exactly one field {tag} was removed");
}

/// The 32 bytes of the identity point: a small-order ("weak") key.
pub fn weak_key() -> [u8; 32] {
    let mut k = [0u8; 32];
    k[0] = 1;
    k
}

/// 32 bytes that are not the encoding of any curve point.
pub fn not_a_point() -> [u8; 32] {
    // y = 2 has no x on edwards25519 (found by trying small y; the test checks it).
    let mut k = [0u8; 32];
    k[0] = 2;
    k
}
