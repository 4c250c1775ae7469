//! Every signed record, encoded and decoded: the round trips, and every way a decoder must
//! say no.
//!
//! # Index
//! - grants: round trip, then each rejecting branch of `SignedGrant::decode`
//! - revocations: the three targets, then the mismatched shapes
//! - log entries: what one entry may hold (chaining is in `log.rs`)
//! - tickets: bytes and text
//! - text ids: `wtd1...` and `grant-...`
//! - every decoder: truncation at every offset, oversized input
//!
//! Most negative tests take a valid record apart (`common::resign`), change one thing and
//! sign it again properly, so the decoder can only be refusing the one thing we changed.

mod common;

use common::*;
use wtd_keys::defaults::{
    MAX_AUDIENCE, MAX_GRANT_TTL_MS, MAX_LABEL_LEN, MAX_LOG_ENTRY_LEN, MAX_RECORD_LEN, MAX_REVOKED_SET,
    MAX_TICKET_ADDRS, MAX_TICKET_GRANTS, MAX_TICKET_LEN,
};
use wtd_keys::encoding::DecodeError;
use wtd_keys::identity::SignatureError;
use wtd_keys::log::LogError;
use wtd_keys::names::NameError;
use wtd_keys::record::{RecordError, SIGNATURE_TAG};
use wtd_keys::ticket::TicketError;
use wtd_keys::{
    grant, log, revocation, ticket, AgentId, Audience, Grant, GrantId, KeyError, OwnerLog, ProxyId,
    ProxyInfo, PublicId, Rate, Record, Revocation, SecretKey, SignedEntry, SignedGrant, SignedRevocation,
    Target, Ticket, Timestamp,
};

/// The decode error inside a refused record (the test fails if it was a signature error).
fn decode_error<T: std::fmt::Debug>(r: Result<T, RecordError>) -> DecodeError {
    match r {
        Err(RecordError::Decode(e)) => e,
        other => panic!("expected a decode error, got {other:?}"),
    }
}

/// The field named by a `BadValue` error.
fn bad_value_field(e: DecodeError) -> &'static str {
    match e {
        DecodeError::BadValue { field, .. } => field,
        other => panic!("expected BadValue, got {other:?}"),
    }
}

const SIG_ERR: RecordError = RecordError::Signature(SignatureError);

/// Alice's valid grant, changed by `edit` and signed again by Alice.
fn edited_grant(edit: impl FnOnce(&mut Vec<Field>)) -> Vec<u8> {
    resign(make_grant().bytes(), grant::DOMAIN, &alice(), edit)
}

fn revocation_by(issuer: &SecretKey, target: Target) -> SignedRevocation {
    Revocation {
        issuer: owner(issuer),
        target,
        issued_at: T0.plus_ms(MINUTE),
    }
    .sign(issuer)
}

fn revoke_bob_demo() -> SignedRevocation {
    revocation_by(&alice(), Target::SubjectMission(user(&bob()), mission("demo")))
}

/// Alice's valid revocation of Bob for `demo`, changed by `edit` and signed again.
fn edited_revocation(edit: impl FnOnce(&mut Vec<Field>)) -> Vec<u8> {
    resign(revoke_bob_demo().bytes(), revocation::DOMAIN, &alice(), edit)
}

/// The first entry of Alice's log, holding her grant to Bob.
fn first_entry() -> SignedEntry {
    OwnerLog::new(owner(&alice()))
        .next_entry(&alice(), Record::Grant(make_grant()))
        .expect("the first entry of an empty log")
}

/// A log entry naming `owner_key`, number `seq`, an all-zero `prev`, and the record
/// fields given (tag 4 grant, tag 5 revocation: none, one, or both), signed by `signer`.
fn entry_with(signer: &SecretKey, owner_key: &PublicId, seq: u64, records: Vec<Field>) -> Vec<u8> {
    let mut fields = vec![
        (1, owner_key.as_bytes().to_vec()),
        (2, seq.to_be_bytes().to_vec()),
        (3, vec![0; 32]),
    ];
    fields.extend(records);
    seal_fields(log::KIND, log::VERSION, &fields, log::DOMAIN, signer)
}

fn proxy_info() -> ProxyInfo {
    ProxyInfo {
        id: ProxyId(secret(50).public()),
        addrs: vec![
            "192.168.1.10:4433".parse().expect("addr"),
            "[fe80::1]:4433".parse().expect("addr"),
        ],
    }
}

// ---------------------------------------------------------------------------------------
// Grants
// ---------------------------------------------------------------------------------------

#[test]
fn grant_round_trips() {
    for audience in [Audience::AllAgents, Audience::agents(vec![pi(3), pi(1), pi(2)])] {
        let g = Grant {
            audience,
            ..grant(&alice(), &bob(), "demo")
        };
        let signed = g.clone().sign(&alice());
        let back = SignedGrant::decode(signed.bytes()).expect("a grant we signed decodes");
        assert_eq!(back.grant(), &g);
        assert_eq!(
            back.bytes(),
            signed.bytes(),
            "the exact bytes are kept for forwarding"
        );
        // ed25519 is deterministic, so signing the decoded grant again gives the same
        // bytes: one meaning, one encoding.
        assert_eq!(back.grant().clone().sign(&alice()).bytes(), signed.bytes());
    }
}

#[test]
fn the_raw_helpers_match_the_real_encoder() {
    // Every other negative test builds records with these helpers; if they drifted from
    // the real encoder, those tests would be testing nothing.
    let g = make_grant();
    let (kind, version, fields) = fields_of(g.bytes());
    assert_eq!((kind, version), (grant::KIND, grant::VERSION));
    assert_eq!(encode_fields(kind, version, &fields), g.bytes());
    assert_eq!(resign(g.bytes(), grant::DOMAIN, &alice(), |_| {}), g.bytes());
}

#[test]
fn the_largest_audience_round_trips() {
    let agents: Vec<AgentId> = (0..MAX_AUDIENCE).map(|i| AgentId(secret_n(i).public())).collect();
    let g = Grant {
        audience: Audience::agents(agents),
        ..grant(&alice(), &bob(), "demo")
    };
    let signed = g.sign(&alice());
    assert!(signed.bytes().len() <= MAX_RECORD_LEN);
    assert_eq!(SignedGrant::decode(signed.bytes()), Ok(signed));
}

/// A distinct key for each `i` below 65 536.
fn secret_n(i: usize) -> SecretKey {
    let mut seed = [7u8; 32];
    seed[..2].copy_from_slice(&(i as u16).to_be_bytes());
    SecretKey::from_seed(&seed)
}

#[test]
fn a_grant_naming_alice_but_signed_by_mallory_is_refused() {
    // Mallory writes Alice's key into the issuer field and signs with her own key.
    let forged = resign(make_grant().bytes(), grant::DOMAIN, &mallory(), |_| {});
    assert_eq!(SignedGrant::decode(&forged), Err(SIG_ERR));

    // Or she takes her own valid grant and swaps the issuer bytes for Alice's.
    let own = grant(&mallory(), &bob(), "demo").sign(&mallory());
    let (kind, version, mut fields) = fields_of(own.bytes());
    set(&mut fields, 2, alice().public().as_bytes().to_vec());
    assert_eq!(
        SignedGrant::decode(&encode_fields(kind, version, &fields)),
        Err(SIG_ERR)
    );

    // Control: the same grant naming Mallory as issuer is fine; only the lie is refused.
    assert!(SignedGrant::decode(own.bytes()).is_ok());
}

#[test]
fn any_altered_byte_in_the_body_breaks_the_signature() {
    // Change the mission from `demo` to `demp` without signing again.
    let g = make_grant();
    let (kind, version, mut fields) = fields_of(g.bytes());
    set(&mut fields, 5, b"demp".to_vec());
    assert_eq!(
        SignedGrant::decode(&encode_fields(kind, version, &fields)),
        Err(SIG_ERR)
    );

    // And a flipped bit in the signature itself.
    let mut bytes = g.bytes().to_vec();
    let last = bytes.len() - 1;
    bytes[last - 40] ^= 0x01;
    assert_eq!(SignedGrant::decode(&bytes), Err(SIG_ERR));
}

#[test]
fn a_signature_made_for_another_record_type_is_refused() {
    // Sign the very bytes of a grant, but as a revocation (or a log entry): a valid
    // signature by the right key, over the right bytes, in the wrong domain.
    for domain in [revocation::DOMAIN, log::DOMAIN] {
        let bytes = resign(make_grant().bytes(), domain, &alice(), |_| {});
        assert_eq!(SignedGrant::decode(&bytes), Err(SIG_ERR), "{domain:?}");
    }
    let bytes = resign(revoke_bob_demo().bytes(), grant::DOMAIN, &alice(), |_| {});
    assert_eq!(SignedRevocation::decode(&bytes), Err(SIG_ERR));
    let bytes = resign(first_entry().bytes(), grant::DOMAIN, &alice(), |_| {});
    assert_eq!(SignedEntry::decode(&bytes), Err(SIG_ERR));
}

#[test]
fn an_unknown_version_is_refused() {
    let mut bytes = make_grant().bytes().to_vec();
    bytes[1] = 2;
    assert_eq!(
        decode_error(SignedGrant::decode(&bytes)),
        DecodeError::UnknownVersion {
            what: "grant",
            found: 2,
            supported: 1
        }
    );
}

#[test]
fn an_unknown_kind_is_refused() {
    let mut bytes = make_grant().bytes().to_vec();
    bytes[0] = 9;
    assert_eq!(
        decode_error(SignedGrant::decode(&bytes)),
        DecodeError::WrongKind {
            expected: "grant",
            found: 9
        }
    );
    // A valid revocation is not a grant, however well it is signed.
    assert_eq!(
        decode_error(SignedGrant::decode(revoke_bob_demo().bytes())),
        DecodeError::WrongKind {
            expected: "grant",
            found: revocation::KIND
        }
    );
}

#[test]
fn an_unknown_field_is_refused_even_when_properly_signed() {
    // Field 13 (after the last known field), field 0 (before the first) and field 200 (in
    // the middle): a newer wtd may add fields, and this one must not guess their meaning.
    let after_last = edited_grant(|f| f.push((13, vec![0])));
    assert_eq!(
        decode_error(SignedGrant::decode(&after_last)),
        DecodeError::UnknownField {
            what: "grant",
            tag: 13
        }
    );
    let before_first = edited_grant(|f| f.insert(0, (0, vec![])));
    assert_eq!(
        decode_error(SignedGrant::decode(&before_first)),
        DecodeError::UnknownField {
            what: "grant",
            tag: 0
        }
    );
    let in_the_middle = edited_grant(|f| f.insert(5, (200, vec![1, 2, 3])));
    assert_eq!(
        decode_error(SignedGrant::decode(&in_the_middle)),
        DecodeError::UnknownField {
            what: "grant",
            tag: 200
        }
    );
}

const GRANT_FIELDS: [(u8, &str); 12] = [
    (1, "id"),
    (2, "issuer"),
    (3, "subject"),
    (4, "audience"),
    (5, "mission"),
    (6, "rate_calls"),
    (7, "rate_period"),
    (8, "burst"),
    (9, "concurrency"),
    (10, "not_before"),
    (11, "expires"),
    (12, "issued_at"),
];

#[test]
fn every_missing_field_is_named() {
    for (tag, name) in GRANT_FIELDS {
        let bytes = edited_grant(|f| remove(f, tag));
        assert_eq!(
            decode_error(SignedGrant::decode(&bytes)),
            DecodeError::MissingField {
                what: "grant",
                field: name
            },
            "field {tag}"
        );
    }
}

#[test]
fn a_missing_signature_is_refused() {
    let (kind, version, mut fields) = fields_of(make_grant().bytes());
    fields.pop();
    assert_eq!(
        decode_error(SignedGrant::decode(&encode_fields(kind, version, &fields))),
        DecodeError::Truncated { what: "signature" }
    );
}

#[test]
fn fields_out_of_order_or_repeated_are_refused() {
    // rate_period (7) before rate_calls (6).
    let swapped = edited_grant(|f| f.swap(5, 6));
    assert_eq!(
        decode_error(SignedGrant::decode(&swapped)),
        DecodeError::MissingField {
            what: "grant",
            field: "rate_calls"
        }
    );
    // The mission twice: the second copy sits where rate_calls should be.
    let repeated = edited_grant(|f| {
        let m = f[4].clone();
        f.insert(5, m);
    });
    assert_eq!(
        decode_error(SignedGrant::decode(&repeated)),
        DecodeError::MissingField {
            what: "grant",
            field: "rate_calls"
        }
    );
    // The signature field twice: the first one is read, the second is left over.
    let g = make_grant();
    let (kind, version, mut fields) = fields_of(g.bytes());
    let sig = fields.last().expect("signature").clone();
    fields.push(sig);
    assert_eq!(
        decode_error(SignedGrant::decode(&encode_fields(kind, version, &fields))),
        DecodeError::TrailingBytes { count: 5 + 64 }
    );
}

#[test]
fn every_fixed_width_field_must_have_its_exact_length() {
    let widths: [(u8, &str, usize); 10] = [
        (1, "id", 16),
        (2, "issuer", 32),
        (3, "subject", 32),
        (6, "rate_calls", 4),
        (7, "rate_period", 8),
        (8, "burst", 4),
        (9, "concurrency", 4),
        (10, "not_before", 8),
        (11, "expires", 8),
        (12, "issued_at", 8),
    ];
    for (tag, name, width) in widths {
        for len in [0, width - 1, width + 1] {
            let bytes = edited_grant(|f| set(f, tag, vec![0x01; len]));
            assert_eq!(
                decode_error(SignedGrant::decode(&bytes)),
                DecodeError::BadLength { field: name, len },
                "field {name} with {len} bytes"
            );
        }
    }
    // The signature is 64 bytes, no more, no less.
    let g = make_grant();
    let (kind, version, mut fields) = fields_of(g.bytes());
    fields.last_mut().expect("signature").1.pop();
    assert_eq!(
        decode_error(SignedGrant::decode(&encode_fields(kind, version, &fields))),
        DecodeError::BadLength {
            field: "signature",
            len: 63
        }
    );
}

#[test]
fn bytes_after_the_signature_are_refused() {
    let g = make_grant();
    // A byte that looks like a known tag is reported as trailing bytes...
    for extra in [vec![SIGNATURE_TAG], vec![1, 0, 0, 0, 0], vec![12; 9]] {
        let bytes = [g.bytes(), &extra].concat();
        assert_eq!(
            decode_error(SignedGrant::decode(&bytes)),
            DecodeError::TrailingBytes { count: extra.len() },
            "{extra:?}"
        );
    }
    // ...and one that does not, as an unknown field. Either way, refused.
    let bytes = [g.bytes(), &[0u8][..]].concat();
    assert_eq!(
        decode_error(SignedGrant::decode(&bytes)),
        DecodeError::UnknownField {
            what: "grant",
            tag: 0
        }
    );
}

#[test]
fn keys_in_a_grant_are_checked_strictly() {
    assert_eq!(not_a_point_is_refused(), KeyError::NotAPoint);
    for (tag, name) in [(2, "issuer"), (3, "subject")] {
        for (key, why) in [(weak_key(), KeyError::Weak), (not_a_point(), KeyError::NotAPoint)] {
            let bytes = edited_grant(|f| set(f, tag, key.to_vec()));
            assert_eq!(
                decode_error(SignedGrant::decode(&bytes)),
                DecodeError::BadKey {
                    field: name,
                    source: why.clone()
                }
            );
        }
    }
}

/// Checks the helper really is not a point, so the tests using it test what they say.
fn not_a_point_is_refused() -> KeyError {
    PublicId::from_bytes(&not_a_point()).expect_err("not a point")
}

#[test]
fn non_canonical_mission_names_are_refused_even_when_signed() {
    let cases: [(&[u8], NameError); 7] = [
        (b"Demo", NameError::Uppercase("Demo".into())),
        (b"", NameError::Empty),
        (b"de/mo", NameError::BadChar { at: 2 }),
        (b"../etc", NameError::BadChar { at: 0 }),
        (b"-demo", NameError::BadStart),
        ("d\u{435}mo".as_bytes(), NameError::BadChar { at: 1 }),
        (&[0x64, 0xff, 0x6d, 0x6f], NameError::BadChar { at: 0 }),
    ];
    for (name, why) in cases {
        let bytes = edited_grant(|f| set(f, 5, name.to_vec()));
        assert_eq!(
            decode_error(SignedGrant::decode(&bytes)),
            DecodeError::BadName {
                field: "mission",
                source: why
            },
            "{name:?}"
        );
    }
    let long = edited_grant(|f| set(f, 5, vec![b'x'; 65]));
    assert_eq!(
        decode_error(SignedGrant::decode(&long)),
        DecodeError::BadName {
            field: "mission",
            source: NameError::TooLong(65)
        }
    );
}

/// The audience field value for a list of raw keys.
fn audience_value(keys: &[[u8; 32]]) -> Vec<u8> {
    let mut v = vec![1u8];
    for k in keys {
        v.extend_from_slice(k);
    }
    v
}

#[test]
fn a_bad_audience_is_refused() {
    let (a, b) = {
        let mut two = [*pi(1).key().as_bytes(), *pi(2).key().as_bytes()];
        two.sort();
        (two[0], two[1])
    };
    // An empty list: it would be a grant for nothing, or be misread as "all".
    let empty = edited_grant(|f| set(f, 4, vec![1]));
    assert_eq!(
        decode_error(SignedGrant::decode(&empty)),
        DecodeError::BadLength {
            field: "audience",
            len: 1
        }
    );
    // Unsorted and repeated lists have a second spelling of the same audience.
    for keys in [[b, a], [a, a]] {
        let bytes = edited_grant(|f| set(f, 4, audience_value(&keys)));
        assert_eq!(
            bad_value_field(decode_error(SignedGrant::decode(&bytes))),
            "audience"
        );
    }
    // A weak key in the list.
    let bytes = edited_grant(|f| set(f, 4, audience_value(&[weak_key()])));
    assert_eq!(
        decode_error(SignedGrant::decode(&bytes)),
        DecodeError::BadKey {
            field: "audience",
            source: KeyError::Weak
        }
    );
    // A partial key, an unknown audience kind, and "all" with something after it.
    for value in [audience_value(&[a])[..32].to_vec(), vec![2], vec![0, 0], vec![]] {
        let len = value.len();
        let bytes = edited_grant(|f| set(f, 4, value));
        assert_eq!(
            decode_error(SignedGrant::decode(&bytes)),
            DecodeError::BadLength {
                field: "audience",
                len
            }
        );
    }
    // One agent too many.
    let many: Vec<[u8; 32]> = {
        let mut k: Vec<[u8; 32]> = (0..=MAX_AUDIENCE)
            .map(|i| *secret_n(i).public().as_bytes())
            .collect();
        k.sort();
        k
    };
    let bytes = edited_grant(|f| set(f, 4, audience_value(&many)));
    assert_eq!(
        decode_error(SignedGrant::decode(&bytes)),
        DecodeError::BadLength {
            field: "audience",
            len: 1 + 32 * (MAX_AUDIENCE + 1)
        }
    );
}

#[test]
fn out_of_range_values_are_refused_even_when_signed() {
    let nb = T0.0;
    let cases: [(u8, Vec<u8>, &str); 7] = [
        (6, 0u32.to_be_bytes().to_vec(), "rate_calls"),
        (7, 999u64.to_be_bytes().to_vec(), "rate_period"),
        (8, 0u32.to_be_bytes().to_vec(), "burst"),
        (9, 0u32.to_be_bytes().to_vec(), "concurrency"),
        // Expiring when it starts, or before.
        (11, nb.to_be_bytes().to_vec(), "expires"),
        (11, (nb - 1).to_be_bytes().to_vec(), "expires"),
        // Living a millisecond longer than a year.
        (11, (nb + MAX_GRANT_TTL_MS + 1).to_be_bytes().to_vec(), "expires"),
    ];
    for (tag, value, field) in cases {
        let bytes = edited_grant(|f| set(f, tag, value.clone()));
        assert_eq!(
            bad_value_field(decode_error(SignedGrant::decode(&bytes))),
            field,
            "{value:?}"
        );
    }
    // The boundaries themselves are fine: exactly a year, exactly one second.
    let year = edited_grant(|f| set(f, 11, (nb + MAX_GRANT_TTL_MS).to_be_bytes().to_vec()));
    let second = edited_grant(|f| set(f, 7, 1000u64.to_be_bytes().to_vec()));
    assert!(SignedGrant::decode(&year).is_ok());
    assert!(SignedGrant::decode(&second).is_ok());
}

#[test]
fn grant_validate_refuses_what_decode_refuses() {
    // `validate` runs before signing, so we never sign what we would not accept.
    let ok = grant(&alice(), &bob(), "demo");
    assert_eq!(ok.validate(), Ok(()));
    let bad = [
        Grant {
            rate: Rate {
                calls: 0,
                period_ms: MINUTE,
            },
            ..ok.clone()
        },
        Grant {
            burst: 0,
            ..ok.clone()
        },
        Grant {
            audience: Audience::Agents(vec![]),
            ..ok.clone()
        },
        Grant {
            audience: Audience::Agents(vec![pi(1), pi(1)]),
            ..ok.clone()
        },
        Grant {
            expires: ok.not_before,
            ..ok.clone()
        },
    ];
    for g in bad {
        assert!(g.validate().is_err(), "{g:?}");
    }
}

// ---------------------------------------------------------------------------------------
// Revocations
// ---------------------------------------------------------------------------------------

#[test]
fn revocations_round_trip_for_all_three_targets() {
    let targets = [
        Target::Grant(gid(9)),
        Target::SubjectMission(user(&bob()), mission("demo")),
        Target::SubjectAll(user(&bob())),
    ];
    for target in targets {
        let signed = revocation_by(&alice(), target.clone());
        let back = SignedRevocation::decode(signed.bytes()).expect("decodes");
        assert_eq!(back.revocation().target, target);
        assert_eq!(back, signed);
        assert_eq!(back.revocation().clone().sign(&alice()).bytes(), signed.bytes());
    }
}

#[test]
fn a_forged_revocation_is_refused() {
    // Mallory would love to cut Bob off from Alice's agents.
    let forged = resign(revoke_bob_demo().bytes(), revocation::DOMAIN, &mallory(), |_| {});
    assert_eq!(SignedRevocation::decode(&forged), Err(SIG_ERR));
}

#[test]
fn a_revocation_whose_fields_do_not_match_its_target_is_refused() {
    let bob_key = bob().public().as_bytes().to_vec();
    let cases: Vec<(&str, Vec<Field>)> = vec![
        ("grant target without the grant id", vec![(2, vec![1])]),
        (
            "grant target with a subject too",
            vec![(2, vec![1]), (3, vec![9; 16]), (4, bob_key.clone())],
        ),
        (
            "subject+mission without the mission",
            vec![(2, vec![2]), (4, bob_key.clone())],
        ),
        (
            "subject+mission with a grant id too",
            vec![
                (2, vec![2]),
                (3, vec![9; 16]),
                (4, bob_key.clone()),
                (5, b"demo".to_vec()),
            ],
        ),
        (
            "subject+mission without the subject",
            vec![(2, vec![2]), (5, b"demo".to_vec())],
        ),
        (
            "all missions with a mission",
            vec![(2, vec![3]), (4, bob_key.clone()), (5, b"demo".to_vec())],
        ),
        ("all missions without the subject", vec![(2, vec![3])]),
        ("an unknown target kind 0", vec![(2, vec![0]), (3, vec![9; 16])]),
        (
            "an unknown target kind 5",
            vec![(2, vec![5]), (4, bob_key.clone())],
        ),
        (
            "a set target with a subject instead of its set",
            vec![(2, vec![4]), (4, bob_key.clone())],
        ),
    ];
    for (why, middle) in cases {
        let bytes = edited_revocation(|f| {
            let issuer = f[0].clone();
            let issued_at = f.last().expect("issued_at").clone();
            *f = [vec![issuer], middle, vec![issued_at]].concat();
        });
        assert_eq!(
            bad_value_field(decode_error(SignedRevocation::decode(&bytes))),
            "target",
            "{why}"
        );
    }
}

/// Alice ends a lesson: grants 1..=n in one record.
fn lesson(ids: Vec<GrantId>) -> Target {
    Target::Grants {
        label: "roster-2026-12-03".into(),
        grants: ids,
    }
}

#[test]
fn a_set_revocation_round_trips_and_revokes_exactly_its_grants() {
    let ids: Vec<GrantId> = (1..=30).map(gid).collect();
    let signed = revocation_by(&alice(), lesson(ids.clone()));
    let back = SignedRevocation::decode(signed.bytes()).expect("decodes");
    assert_eq!(back, signed);
    assert_eq!(back.revocation().clone().sign(&alice()).bytes(), signed.bytes());
    let r = back.revocation();
    let mut g = grant(&alice(), &bob(), "demo");
    for id in &ids {
        g.id = *id;
        assert!(r.revokes(&g), "{id} is in the set");
    }
    // Whenever it was issued: a set names grants, not a time.
    g.id = gid(7);
    g.issued_at = T0.plus_ms(100 * MINUTE);
    assert!(r.revokes(&g));
    g.id = gid(31);
    assert!(!r.revokes(&g), "a grant outside the set is untouched");
    // Only the issuer's own grants: Mallory's grant with a copied id is not Alice's to end.
    let mut theirs = grant(&mallory(), &bob(), "demo");
    theirs.id = gid(1);
    assert!(!r.revokes(&theirs));
    // The largest set fits in a record.
    let most: Vec<GrantId> = (0..MAX_REVOKED_SET as u16)
        .map(|n| {
            let mut id = [0u8; 16];
            id[..2].copy_from_slice(&n.to_be_bytes());
            GrantId(id)
        })
        .collect();
    let big = revocation_by(&alice(), lesson(most));
    assert!(SignedRevocation::decode(big.bytes()).is_ok());
}

#[test]
fn a_bad_set_revocation_is_refused_even_when_signed() {
    let good = revocation_by(&alice(), lesson(vec![gid(1), gid(2), gid(3)]));
    let edited = |edit: &dyn Fn(&mut Vec<Field>)| resign(good.bytes(), revocation::DOMAIN, &alice(), edit);
    let ids = |list: &[u8]| list.iter().flat_map(|n| gid(*n).0).collect::<Vec<u8>>();
    // Unsorted, repeated, empty, or not a whole number of ids.
    for (why, value) in [("unsorted", ids(&[2, 1, 3])), ("repeated", ids(&[1, 1, 3]))] {
        let bytes = edited(&|f| set(f, 7, value.clone()));
        assert_eq!(
            bad_value_field(decode_error(SignedRevocation::decode(&bytes))),
            "grants",
            "{why}"
        );
    }
    for len in [0usize, 15, 17] {
        let bytes = edited(&|f| set(f, 7, vec![1; len]));
        assert_eq!(
            decode_error(SignedRevocation::decode(&bytes)),
            DecodeError::BadLength { field: "grants", len },
        );
    }
    // Too many ids: over the cap (the record is still under its size limit).
    let too_many: Vec<u8> = (0..=MAX_REVOKED_SET as u16)
        .flat_map(|n| {
            let mut id = [0u8; 16];
            id[..2].copy_from_slice(&n.to_be_bytes());
            id
        })
        .collect();
    let bytes = edited(&|f| set(f, 7, too_many.clone()));
    assert_eq!(
        bad_value_field(decode_error(SignedRevocation::decode(&bytes))),
        "grants"
    );
    // The label: present, short, printable, no edge spaces, UTF-8.
    for label in [&b""[..], b"a\nb", b" lesson", &[b'x'; MAX_LABEL_LEN + 1][..]] {
        let bytes = edited(&|f| set(f, 8, label.to_vec()));
        assert_eq!(
            bad_value_field(decode_error(SignedRevocation::decode(&bytes))),
            "label",
            "{label:?}"
        );
    }
    let bytes = edited(&|f| set(f, 8, vec![0xff, 0xfe]));
    assert_eq!(
        bad_value_field(decode_error(SignedRevocation::decode(&bytes))),
        "label"
    );
    // Missing its set or its label, or a set on another target kind.
    let bytes = edited(&|f| remove(f, 8));
    assert_eq!(
        bad_value_field(decode_error(SignedRevocation::decode(&bytes))),
        "target"
    );
    let bytes = edited(&|f| remove(f, 7));
    assert_eq!(
        bad_value_field(decode_error(SignedRevocation::decode(&bytes))),
        "target"
    );
    let by_id = revocation_by(&alice(), Target::Grant(gid(9)));
    let bytes = resign(by_id.bytes(), revocation::DOMAIN, &alice(), |f| {
        f.push((7, ids(&[1])));
        f.push((8, b"x".to_vec()));
    });
    assert_eq!(
        bad_value_field(decode_error(SignedRevocation::decode(&bytes))),
        "target"
    );
    // Forged by Mallory: refused like any revocation.
    let forged = resign(good.bytes(), revocation::DOMAIN, &mallory(), |_| {});
    assert_eq!(SignedRevocation::decode(&forged), Err(SIG_ERR));
    // And we never sign what we would refuse.
    for bad in [lesson(vec![]), lesson(vec![gid(2), gid(1)])] {
        let r = Revocation {
            issuer: owner(&alice()),
            target: bad,
            issued_at: T0,
        };
        assert!(r.validate().is_err());
    }
}

#[test]
fn revocation_fields_are_checked_one_by_one() {
    // The target is a single byte.
    let bytes = edited_revocation(|f| set(f, 2, vec![0, 2]));
    assert_eq!(
        decode_error(SignedRevocation::decode(&bytes)),
        DecodeError::BadLength {
            field: "target",
            len: 2
        }
    );
    // A grant id has 16 bytes.
    let by_id = revocation_by(&alice(), Target::Grant(gid(9)));
    let bytes = resign(by_id.bytes(), revocation::DOMAIN, &alice(), |f| {
        set(f, 3, vec![9; 15])
    });
    assert_eq!(
        decode_error(SignedRevocation::decode(&bytes)),
        DecodeError::BadLength {
            field: "grant",
            len: 15
        }
    );
    // The subject is a strong key, the mission a canonical name.
    let bytes = edited_revocation(|f| set(f, 4, weak_key().to_vec()));
    assert_eq!(
        decode_error(SignedRevocation::decode(&bytes)),
        DecodeError::BadKey {
            field: "subject",
            source: KeyError::Weak
        }
    );
    let bytes = edited_revocation(|f| set(f, 5, b"DEMO".to_vec()));
    assert_eq!(
        decode_error(SignedRevocation::decode(&bytes)),
        DecodeError::BadName {
            field: "mission",
            source: NameError::Uppercase("DEMO".into())
        }
    );
    // Missing issuer and missing issued_at.
    let bytes = edited_revocation(|f| remove(f, 1));
    assert_eq!(
        decode_error(SignedRevocation::decode(&bytes)),
        DecodeError::MissingField {
            what: "revocation",
            field: "issuer"
        }
    );
    let bytes = edited_revocation(|f| remove(f, 6));
    assert_eq!(
        decode_error(SignedRevocation::decode(&bytes)),
        DecodeError::MissingField {
            what: "revocation",
            field: "issued_at"
        }
    );
    // An unknown field, a wrong version.
    let bytes = edited_revocation(|f| f.push((9, vec![])));
    assert_eq!(
        decode_error(SignedRevocation::decode(&bytes)),
        DecodeError::UnknownField {
            what: "revocation",
            tag: 9
        }
    );
    let mut bytes = revoke_bob_demo().bytes().to_vec();
    bytes[1] = 0;
    assert_eq!(
        decode_error(SignedRevocation::decode(&bytes)),
        DecodeError::UnknownVersion {
            what: "revocation",
            found: 0,
            supported: 1
        }
    );
}

// ---------------------------------------------------------------------------------------
// Log entries
// ---------------------------------------------------------------------------------------

#[test]
fn log_entries_round_trip_with_a_grant_or_a_revocation() {
    let mut log = OwnerLog::new(owner(&alice()));
    for record in [Record::Grant(make_grant()), Record::Revocation(revoke_bob_demo())] {
        let entry = log.next_entry(&alice(), record).expect("next entry");
        let back = SignedEntry::decode(entry.bytes()).expect("decodes");
        assert_eq!(back, entry);
        assert_eq!(back.hash(), entry.hash());
        log.append(back).expect("chains");
    }
    assert_eq!(log.head().seq, 2);
}

#[test]
fn the_raw_helpers_build_a_real_log_entry() {
    let e = first_entry();
    let by_hand = entry_with(
        &alice(),
        &alice().public(),
        1,
        vec![(4, make_grant().bytes().to_vec())],
    );
    assert_eq!(by_hand, e.bytes());
}

#[test]
fn an_entry_holds_exactly_one_record() {
    let g = make_grant().bytes().to_vec();
    let r = revoke_bob_demo().bytes().to_vec();
    let both = entry_with(&alice(), &alice().public(), 1, vec![(4, g), (5, r)]);
    assert_eq!(
        bad_value_field(decode_error(SignedEntry::decode(&both))),
        "record"
    );
    let neither = entry_with(&alice(), &alice().public(), 1, vec![]);
    assert_eq!(
        bad_value_field(decode_error(SignedEntry::decode(&neither))),
        "record"
    );
}

#[test]
fn entry_numbers_start_at_one() {
    let bytes = entry_with(
        &alice(),
        &alice().public(),
        0,
        vec![(4, make_grant().bytes().to_vec())],
    );
    assert_eq!(bad_value_field(decode_error(SignedEntry::decode(&bytes))), "seq");
}

#[test]
fn an_entry_may_only_hold_its_owners_records() {
    // Alice signs an entry holding a grant Mallory signed (a valid grant, by Mallory).
    // Otherwise anyone's grant could be laundered through Alice's log.
    let mallorys = grant(&mallory(), &bob(), "demo").sign(&mallory());
    let bytes = entry_with(
        &alice(),
        &alice().public(),
        1,
        vec![(4, mallorys.bytes().to_vec())],
    );
    assert_eq!(
        bad_value_field(decode_error(SignedEntry::decode(&bytes))),
        "record"
    );
}

#[test]
fn the_record_inside_an_entry_is_verified_too() {
    // The entry signature is good, but the grant inside was altered.
    let g = make_grant();
    let (kind, version, mut fields) = fields_of(g.bytes());
    set(&mut fields, 5, b"sys".to_vec());
    let tampered = encode_fields(kind, version, &fields);
    let bytes = entry_with(&alice(), &alice().public(), 1, vec![(4, tampered)]);
    assert_eq!(SignedEntry::decode(&bytes), Err(SIG_ERR));
    // A revocation in the grant slot is the wrong kind of record.
    let bytes = entry_with(
        &alice(),
        &alice().public(),
        1,
        vec![(4, revoke_bob_demo().bytes().to_vec())],
    );
    assert!(matches!(
        decode_error(SignedEntry::decode(&bytes)),
        DecodeError::WrongKind {
            expected: "grant",
            ..
        }
    ));
}

#[test]
fn an_entry_signed_by_someone_else_is_refused() {
    let bytes = resign(first_entry().bytes(), log::DOMAIN, &mallory(), |_| {});
    assert_eq!(SignedEntry::decode(&bytes), Err(SIG_ERR));
}

#[test]
fn entry_fields_have_fixed_widths() {
    let e = first_entry();
    let bytes = resign(e.bytes(), log::DOMAIN, &alice(), |f| set(f, 3, vec![0; 31]));
    assert_eq!(
        decode_error(SignedEntry::decode(&bytes)),
        DecodeError::BadLength {
            field: "prev",
            len: 31
        }
    );
    let bytes = resign(e.bytes(), log::DOMAIN, &alice(), |f| set(f, 2, vec![1]));
    assert_eq!(
        decode_error(SignedEntry::decode(&bytes)),
        DecodeError::BadLength { field: "seq", len: 1 }
    );
    let bytes = resign(e.bytes(), log::DOMAIN, &alice(), |f| {
        set(f, 1, weak_key().to_vec())
    });
    assert_eq!(
        decode_error(SignedEntry::decode(&bytes)),
        DecodeError::BadKey {
            field: "owner",
            source: KeyError::Weak
        }
    );
}

#[test]
fn next_entry_refuses_a_grant_id_already_in_the_log() {
    let mut log = OwnerLog::new(owner(&alice()));
    log.append(first_entry()).expect("first");
    assert_eq!(
        log.next_entry(&alice(), Record::Grant(make_grant())),
        Err(LogError::DuplicateGrantId(make_grant().grant().id))
    );
}

// ---------------------------------------------------------------------------------------
// Tickets
// ---------------------------------------------------------------------------------------

fn full_ticket() -> Ticket {
    Ticket {
        proxy: Some(proxy_info()),
        grants: vec![
            make_grant(),
            Grant {
                id: gid(2),
                ..grant(&alice(), &bob(), "sys")
            }
            .sign(&alice()),
        ],
    }
}

#[test]
fn tickets_round_trip_as_bytes_and_as_text() {
    let tickets = [
        Ticket::default(),
        Ticket {
            proxy: Some(proxy_info()),
            grants: vec![],
        },
        Ticket {
            proxy: None,
            grants: vec![make_grant()],
        },
        full_ticket(),
    ];
    for t in tickets {
        assert_eq!(Ticket::decode(&t.encode()), Ok(t.clone()));
        let text = t.to_text();
        assert!(text.starts_with(ticket::PREFIX));
        assert_eq!(Ticket::from_text(&text), Ok(t.clone()));
        // Pasting tends to add whitespace around it.
        assert_eq!(Ticket::from_text(&format!("  {text}\n")), Ok(t));
    }
}

#[test]
fn ticket_text_damage_is_caught() {
    let text = full_ticket().to_text();
    assert_eq!(Ticket::from_text("wtdx1abc"), Err(TicketError::BadPrefix));
    assert_eq!(Ticket::from_text(&text[1..]), Err(TicketError::BadPrefix));
    // Uppercase: one ticket has one spelling.
    let upper = format!(
        "{}{}",
        ticket::PREFIX,
        text[ticket::PREFIX.len()..].to_ascii_uppercase()
    );
    assert_eq!(Ticket::from_text(&upper), Err(TicketError::BadText));
    assert_eq!(Ticket::from_text(&format!("{text}!")), Err(TicketError::BadText));
    // Every one-character typo is caught: either the text no longer decodes, or what it
    // decodes to is refused. None may silently become a different ticket (another proxy
    // address, another pinned proxy id).
    let alphabet = "abcdefghijklmnopqrstuvwxyz234567";
    for i in ticket::PREFIX.len()..text.len() {
        let c = text.as_bytes()[i] as char;
        let other = alphabet.chars().find(|&a| a != c).expect("another letter");
        let typo = format!("{}{other}{}", &text[..i], &text[i + 1..]);
        assert!(Ticket::from_text(&typo).is_err(), "typo at {i} accepted");
    }
}

#[test]
fn a_ticket_cut_short_is_caught() {
    // A QR code or a chat message that lost its end must not become a smaller ticket.
    let text = full_ticket().to_text();
    for end in 0..text.len() {
        assert!(
            Ticket::from_text(&text[..end]).is_err(),
            "accepted the first {end} characters"
        );
    }
}

#[test]
fn ticket_contents_are_checked() {
    let proxy_key = secret(50).public().as_bytes().to_vec();
    let t = |fields: &[Field]| Ticket::decode(&encode_fields(ticket::KIND, ticket::VERSION, fields));
    let bad_value = |r: Result<Ticket, TicketError>| match r {
        Err(TicketError::Record(e)) => bad_value_field(decode_error::<()>(Err(e))),
        other => panic!("expected a bad value, got {other:?}"),
    };
    assert_eq!(
        bad_value(t(&[(1, proxy_key.clone()), (2, b"not an address".to_vec())])),
        "addrs"
    );
    assert_eq!(bad_value(t(&[(1, proxy_key.clone()), (2, vec![])])), "addrs");
    assert_eq!(
        bad_value(t(&[(1, proxy_key.clone()), (2, vec![0xff, b':', b'1'])])),
        "addrs"
    );
    let too_many = ["10.0.0.1:1"; MAX_TICKET_ADDRS + 1].join(",");
    assert_eq!(
        bad_value(t(&[(1, proxy_key.clone()), (2, too_many.into_bytes())])),
        "addrs"
    );
    let enough = ["10.0.0.1:1"; MAX_TICKET_ADDRS].join(",");
    assert!(t(&[(1, proxy_key.clone()), (2, enough.into_bytes())]).is_ok());
    // The proxy id is pinned, so it must be a strong key.
    assert_eq!(
        t(&[(1, weak_key().to_vec()), (2, b"10.0.0.1:1".to_vec())]),
        Err(DecodeError::BadKey {
            field: "proxy",
            source: KeyError::Weak
        }
        .into())
    );
    // A proxy without addresses, addresses without a proxy.
    assert_eq!(
        t(&[(1, proxy_key)]),
        Err(DecodeError::Truncated { what: "addrs" }.into())
    );
    assert_eq!(
        t(&[(2, b"10.0.0.1:1".to_vec())]),
        Err(DecodeError::MissingField {
            what: "ticket",
            field: "grants"
        }
        .into())
    );
    // An empty grants field, and one whose length prefix is cut.
    assert_eq!(
        t(&[(3, vec![])]),
        Err(DecodeError::BadLength {
            field: "grants",
            len: 0
        }
        .into())
    );
    assert_eq!(
        t(&[(3, vec![0, 0, 1])]),
        Err(DecodeError::Truncated { what: "grants" }.into())
    );
    assert_eq!(
        t(&[(3, vec![0, 0, 1, 0, 1])]),
        Err(DecodeError::Truncated { what: "grants" }.into())
    );
    // A grant inside that does not verify.
    let mut g = make_grant().bytes().to_vec();
    let n = g.len();
    g[n - 1] ^= 1;
    let mut v = (n as u32).to_be_bytes().to_vec();
    v.extend_from_slice(&g);
    assert_eq!(t(&[(3, v)]), Err(TicketError::Record(SIG_ERR)));
    // An unknown field.
    assert_eq!(
        t(&[(4, vec![])]),
        Err(DecodeError::UnknownField {
            what: "ticket",
            tag: 4
        }
        .into())
    );
}

#[test]
fn a_ticket_carries_at_most_max_grants() {
    let grants: Vec<SignedGrant> = (0..=MAX_TICKET_GRANTS)
        .map(|i| {
            Grant {
                id: gid(i as u8),
                ..grant(&alice(), &bob(), "demo")
            }
            .sign(&alice())
        })
        .collect();
    let ok = Ticket {
        proxy: None,
        grants: grants[..MAX_TICKET_GRANTS].to_vec(),
    };
    assert_eq!(Ticket::decode(&ok.encode()), Ok(ok));
    let too_many = Ticket { proxy: None, grants };
    match Ticket::decode(&too_many.encode()) {
        Err(TicketError::Record(e)) => assert_eq!(bad_value_field(decode_error::<()>(Err(e))), "grants"),
        other => panic!("expected too many grants, got {other:?}"),
    }
    assert!(Ticket::from_text(&too_many.to_text()).is_err());
}

// ---------------------------------------------------------------------------------------
// Text ids
// ---------------------------------------------------------------------------------------

#[test]
fn public_ids_parse_strictly() {
    let id = bob().public();
    let text = id.to_string();
    assert_eq!(text.parse::<PublicId>(), Ok(id));
    assert_eq!(format!(" {text}\n").parse::<PublicId>(), Ok(id));
    assert!(text.starts_with(&id.short()));
    assert_eq!("".parse::<PublicId>(), Err(KeyError::BadPrefix));
    assert_eq!(
        text.replacen("wtd1", "WTD1", 1).parse::<PublicId>(),
        Err(KeyError::BadPrefix)
    );
    assert_eq!(format!("{text}a").parse::<PublicId>(), Err(KeyError::BadText));
    assert_eq!(text[..text.len() - 1].parse::<PublicId>(), Err(KeyError::BadText));
    // A checksum mismatch is a typo, told apart from garbage.
    let mut raw = [0u8; 35];
    raw[..32].copy_from_slice(id.as_bytes());
    let bad_sum = format!(
        "wtd1{}",
        data_encoding::BASE32_NOPAD.encode(&raw).to_ascii_lowercase()
    );
    assert_eq!(bad_sum.parse::<PublicId>(), Err(KeyError::BadChecksum));
}

/// The text form of 32 key bytes, with a correct checksum, whatever the bytes are.
fn text_of_raw_key(key: &[u8; 32]) -> String {
    use sha2::{Digest, Sha256};
    let h = Sha256::new_with_prefix(b"wtd id checksum\0")
        .chain_update(key)
        .finalize();
    let mut raw = key.to_vec();
    raw.extend_from_slice(&h[..3]);
    format!(
        "wtd1{}",
        data_encoding::BASE32_NOPAD.encode(&raw).to_ascii_lowercase()
    )
}

#[test]
fn a_weak_key_is_refused_in_text_form_too() {
    // A well-formed id with a correct checksum, for a key nobody should accept.
    assert_eq!(
        text_of_raw_key(&bob().public().as_bytes().clone()),
        bob().public().to_string()
    );
    assert_eq!(
        text_of_raw_key(&weak_key()).parse::<PublicId>(),
        Err(KeyError::Weak)
    );
    assert_eq!(
        text_of_raw_key(&not_a_point()).parse::<PublicId>(),
        Err(KeyError::NotAPoint)
    );
}

#[test]
fn grant_ids_parse_strictly() {
    let id = gid(0x5a);
    let text = id.to_string();
    assert!(text.starts_with("grant-"));
    assert_eq!(text.parse::<GrantId>(), Ok(id));
    let refused = [
        String::new(),
        text.replacen("grant-", "grant_", 1),
        text.to_uppercase(),
        format!("grant-{}", text[6..].to_uppercase()),
        text[..text.len() - 1].to_string(),
        format!("{text}a"),
        format!("{}!", &text[..text.len() - 1]),
    ];
    for s in refused {
        assert!(s.parse::<GrantId>().is_err(), "{s:?}");
    }
    // 26 characters carry 130 bits for 128: the two spare bits must be zero, so there is
    // one spelling per id.
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz234567";
    let last = text.as_bytes()[text.len() - 1];
    let value = ALPHABET
        .iter()
        .position(|&c| c == last)
        .expect("a base32 character");
    assert_eq!(
        value & 0b11,
        0,
        "the canonical spelling leaves the spare bits zero"
    );
    let other_spelling = format!("{}{}", &text[..text.len() - 1], ALPHABET[value | 1] as char);
    assert!(other_spelling.parse::<GrantId>().is_err(), "{other_spelling}");
}

// ---------------------------------------------------------------------------------------
// Every decoder: truncation and size limits
// ---------------------------------------------------------------------------------------

#[test]
fn every_truncation_of_a_signed_record_is_refused() {
    // Cut anywhere, a signed record is incomplete: the decoder says so and never panics.
    let records = [
        ("grant", make_grant().bytes().to_vec()),
        ("revocation", revoke_bob_demo().bytes().to_vec()),
        ("entry", first_entry().bytes().to_vec()),
    ];
    for (what, bytes) in records {
        for end in 0..bytes.len() {
            let cut = &bytes[..end];
            // A cut between fields can also show up as a shape error first (a revocation
            // target without its mission, an entry without its record); what matters is
            // that it is a decode error, never a panic, never a success.
            let e = match what {
                "grant" => decode_error(SignedGrant::decode(cut)),
                "revocation" => decode_error(SignedRevocation::decode(cut)),
                _ => decode_error(SignedEntry::decode(cut)),
            };
            let expected = match e {
                DecodeError::Truncated { .. } => true,
                DecodeError::BadValue { field, .. } => {
                    (what, field) == ("revocation", "target") || (what, field) == ("entry", "record")
                }
                _ => false,
            };
            assert!(expected, "{what} cut at {end}: {e:?}");
        }
    }
}

#[test]
fn a_ticket_in_bytes_cut_at_a_field_boundary_is_a_smaller_ticket() {
    // Pinned behaviour: binary tickets are not signed as a whole and their fields are
    // optional, so a cut exactly between fields leaves a valid, smaller ticket. That is
    // why the text form (what people paste) carries a checksum: see
    // `a_ticket_cut_short_is_caught`. Every other cut is refused.
    let t = full_ticket();
    let bytes = t.encode();
    let (_, _, fields) = fields_of(&bytes);
    let after_addrs = 2 + 5 + fields[0].1.len() + 5 + fields[1].1.len();
    for end in 0..bytes.len() {
        let r = Ticket::decode(&bytes[..end]);
        match end {
            2 => assert_eq!(r, Ok(Ticket::default())),
            e if e == after_addrs => assert_eq!(
                r,
                Ok(Ticket {
                    proxy: t.proxy.clone(),
                    grants: vec![]
                })
            ),
            _ => assert!(r.is_err(), "ticket cut at {end} accepted"),
        }
    }
}

#[test]
fn oversized_input_is_refused_before_parsing() {
    // Valid-looking headers, then far too much: refused on size alone.
    let mut big = vec![0u8; MAX_RECORD_LEN + 1];
    big[0] = grant::KIND;
    big[1] = grant::VERSION;
    assert_eq!(
        decode_error(SignedGrant::decode(&big)),
        DecodeError::TooLong {
            len: MAX_RECORD_LEN + 1,
            max: MAX_RECORD_LEN
        }
    );
    big[0] = revocation::KIND;
    assert!(matches!(
        decode_error(SignedRevocation::decode(&big)),
        DecodeError::TooLong { .. }
    ));
    // At exactly the limit, the decoder does parse (and finds the garbage).
    assert!(matches!(
        decode_error(SignedGrant::decode(&big[..MAX_RECORD_LEN])),
        DecodeError::WrongKind { .. }
    ));

    let mut entry = vec![0u8; MAX_LOG_ENTRY_LEN + 1];
    entry[0] = log::KIND;
    entry[1] = log::VERSION;
    assert_eq!(
        decode_error(SignedEntry::decode(&entry)),
        DecodeError::TooLong {
            len: MAX_LOG_ENTRY_LEN + 1,
            max: MAX_LOG_ENTRY_LEN
        }
    );

    let mut t = vec![0u8; MAX_TICKET_LEN + 1];
    t[0] = ticket::KIND;
    t[1] = ticket::VERSION;
    assert_eq!(
        Ticket::decode(&t),
        Err(DecodeError::TooLong {
            len: MAX_TICKET_LEN + 1,
            max: MAX_TICKET_LEN
        }
        .into())
    );
    // A ticket text far too long for any ticket is refused before base32 decoding.
    let text = format!("{}{}", ticket::PREFIX, "a".repeat(2 * MAX_TICKET_LEN));
    assert_eq!(Ticket::from_text(&text), Err(TicketError::BadText));
}

#[test]
fn a_field_length_pointing_past_the_end_is_truncation() {
    // A length of 4 GiB in a 60-byte record: refused, not allocated or read out of bounds.
    let mut bytes = vec![grant::KIND, grant::VERSION, 1];
    bytes.extend_from_slice(&u32::MAX.to_be_bytes());
    bytes.extend_from_slice(&[0; 50]);
    assert_eq!(
        decode_error(SignedGrant::decode(&bytes)),
        DecodeError::Truncated { what: "id" }
    );
}

#[test]
fn timestamps_in_records_are_exact() {
    // The extremes of u64 survive the trip (no varints, no rounding).
    let g = Grant {
        not_before: Timestamp(u64::MAX - 1),
        expires: Timestamp(u64::MAX),
        issued_at: Timestamp(0),
        ..grant(&alice(), &bob(), "demo")
    }
    .sign(&alice());
    assert_eq!(SignedGrant::decode(g.bytes()), Ok(g));
}
