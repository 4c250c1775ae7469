//! Signed calls and results: the round trips, every way a decoder must say no, every reason
//! an agent refuses a call, the replay guard, and every reason a caller refuses a result.
//!
//! # Index
//! - the whole trip: Bob calls `demo/echo` on Pi 1, with authorization, as an agent would
//! - call records: round trip, then each rejecting branch of `SignedCall::decode`
//! - result records: round trip, then each rejecting branch of `SignedResult::decode`
//! - both decoders: truncation at every offset, oversized input
//! - request ids and hashes
//! - `check_call`: one test per `CallError` variant, then the order of the checks
//! - the replay guard: replays, the window's edges, bounded memory, the cap, `forget`
//! - `verify_result`: one test per `ResultError` variant
//! - properties: no decoder panics; round trips; any change to a signed record is refused
//!
//! Like `records.rs`, most negative tests take a valid record apart (`common::resign`),
//! change one thing and sign it again properly, so only that one thing can be refused.

mod common;

use common::*;
use proptest::prelude::*;
use wtd_keys::call::{self, RESULT_DOMAIN, SESSION_EXPORTER_LABEL};
use wtd_keys::defaults::{CALL_FRESHNESS_MS, MAX_RECORD_LEN, MAX_REPLAY_ENTRIES};
use wtd_keys::encoding::DecodeError;
use wtd_keys::identity::SignatureError;
use wtd_keys::names::NameError;
use wtd_keys::record::{RecordError, SIGNATURE_TAG};
use wtd_keys::{
    args_hash, authorize, check_call, grant, log, output_hash, revocation, verify_result, AgentId, Call,
    CallError, CallResult, CallStatus, Decision, Deny, FunctionName, Grant, KeyError, Policy, RateLimits,
    ReplayGuard, RequestId, ResultError, SecretKey, SignedCall, SignedGrant, SignedResult, TimeFloor,
    Timestamp, UserKey, VerifiedResult,
};

/// The argument bytes of Bob's call, exactly as `wtd call demo/echo '{"msg":"hi"}'` sends them.
const ARGS: &[u8] = br#"{"msg":"hi"}"#;
/// The session binding of Bob's connection to Pi 1. In real use both ends derive it from
/// their TLS session; here it is just 32 bytes both sides agree on.
const SESSION: [u8; 32] = [0x5e; 32];
/// The freshness window, for short.
const W: u64 = CALL_FRESHNESS_MS;

const SIG_ERR: RecordError = RecordError::Signature(SignatureError);

const CALL_FIELDS: [(u8, &str); 8] = [
    (1, "caller"),
    (2, "agent"),
    (3, "mission"),
    (4, "function"),
    (5, "args_hash"),
    (6, "request_id"),
    (7, "session"),
    (8, "issued_at"),
];

const RESULT_FIELDS: [(u8, &str); 6] = [
    (1, "agent"),
    (2, "request_id"),
    (3, "call_hash"),
    (4, "status"),
    (5, "output_hash"),
    (6, "finished_at"),
];

/// Pi `n`'s secret key (its id is `pi(n)`).
fn pi_key(n: u8) -> SecretKey {
    secret(100 + n)
}

fn function(s: &str) -> FunctionName {
    FunctionName::new(s).expect("test function names are canonical")
}

/// A request id that is easy to tell apart in a failure message.
fn rid(n: u8) -> RequestId {
    RequestId([n; 16])
}

/// Bob calls `demo/echo` on Pi 1 with [`ARGS`] over [`SESSION`] at [`T0`], request `rid(1)`.
fn bobs_call() -> Call {
    Call {
        caller: user(&bob()),
        agent: pi(1),
        mission: mission("demo"),
        function: function("echo"),
        args_hash: args_hash(ARGS),
        request_id: rid(1),
        session: SESSION,
        issued_at: T0,
    }
}

fn signed_call() -> SignedCall {
    bobs_call().sign(&bob())
}

/// Bob's call, changed by `edit` and signed again by Bob.
fn edited_call(edit: impl FnOnce(&mut Vec<Field>)) -> Vec<u8> {
    resign(signed_call().bytes(), call::DOMAIN, &bob(), edit)
}

/// The decode error inside a refused record (the test fails if it was a signature error).
fn decode_error<T: std::fmt::Debug>(r: Result<T, RecordError>) -> DecodeError {
    match r {
        Err(RecordError::Decode(e)) => e,
        other => panic!("expected a decode error, got {other:?}"),
    }
}

/// Pi 1 checks `bytes` arriving with [`ARGS`] on Bob's connection ([`SESSION`]) at `now`.
fn check_at(bytes: &[u8], now: Timestamp, guard: &mut ReplayGuard) -> Result<SignedCall, CallError> {
    check_call(bytes, &user(&bob()), &pi(1), &SESSION, ARGS, now, guard)
}

/// [`check_at`] with a fresh guard, at [`T0`].
fn check(bytes: &[u8]) -> Result<SignedCall, CallError> {
    check_at(bytes, T0, &mut ReplayGuard::new())
}

/// Pi 1's result for `c`, finished a second after [`T0`].
fn result_for(c: &SignedCall, status: CallStatus, output: &[u8]) -> SignedResult {
    CallResult::for_call(c, status, output, T0.plus_ms(SECOND)).sign(&pi_key(1))
}

/// Bob's check of a result for `c`, which he sent to Pi 1.
fn verify(result: &[u8], output: &[u8], c: &SignedCall) -> Result<VerifiedResult, ResultError> {
    verify_result(result, output, &pi(1), c)
}

/// Pi 1's result for Bob's call: status ok, output `"hi"`.
fn ok_result() -> SignedResult {
    result_for(&signed_call(), CallStatus::Ok, b"hi")
}

/// Pi 1's result, changed by `edit` and signed again by Pi 1.
fn edited_result(edit: impl FnOnce(&mut Vec<Field>)) -> Vec<u8> {
    resign(ok_result().bytes(), RESULT_DOMAIN, &pi_key(1), edit)
}

// ---------------------------------------------------------------------------------------
// The whole trip
// ---------------------------------------------------------------------------------------

#[test]
fn bob_calls_demo_echo_on_pi_1_and_believes_the_answer() {
    // Alice has granted Bob `demo`; Pi 1 obeys Alice.
    let the_grant: Grant = grant(&alice(), &bob(), "demo");
    let owners = [owner(&alice())];
    let grants = [&the_grant];
    // ... and adopted Pi 1, so both sides agree it is hers.
    let mut adoptions = wtd_keys::AdoptionBook::new();
    adoptions.add(&wtd_keys::Adoption {
        issuer: owner(&alice()),
        agent: pi(1),
        action: wtd_keys::Action::Adopt,
        token: None,
        issued_at: T0,
    });
    let policy = Policy {
        owners: &owners,
        grants: &grants,
        revocations: &[],
        adoptions: &adoptions,
    };
    let (mut limits, mut guard) = (RateLimits::default(), ReplayGuard::new());

    // Bob's CLI signs the call; the proxy relays the record and the arguments.
    let sent = Call::new(
        user(&bob()),
        pi(1),
        mission("demo"),
        function("echo"),
        ARGS,
        SESSION,
        T0,
    )
    .sign(&bob());

    // Pi 1 checks it, then asks authorization, then runs it.
    let now = T0.plus_ms(40);
    let got = check_at(sent.bytes(), now, &mut guard).expect("a good call passes");
    assert_eq!(got, sent);
    let permit = match authorize(&got.request(now), &policy, &mut limits, TimeFloor::default()) {
        Decision::Allow(p) => p,
        other => panic!("Bob holds a grant: {other:?}"),
    };
    let output = ARGS; // echo
    let result = CallResult::for_call(&got, CallStatus::Ok, output, now.plus_ms(3)).sign(&pi_key(1));
    limits.release(permit);

    // Bob's CLI believes the output only after checking the result.
    let verified = verify_result(result.bytes(), output, &pi(1), &sent).expect("a good result verifies");
    assert_eq!(verified.status(), CallStatus::Ok);
    assert_eq!(verified.finished_at(), now.plus_ms(3));
    assert_eq!(verified.signed(), &result);

    // Mallory connects too. Her call is well signed by her own key, so it passes
    // `check_call`; authorization refuses it, and the agent forgets it, so keys without a
    // grant cannot fill the replay guard.
    let hers = Call {
        caller: user(&mallory()),
        request_id: rid(9),
        ..bobs_call()
    }
    .sign(&mallory());
    let got = check_call(
        hers.bytes(),
        &user(&mallory()),
        &pi(1),
        &SESSION,
        ARGS,
        now,
        &mut guard,
    )
    .expect("a well-signed call from the connected key passes the check");
    assert_eq!(guard.len(), 2);
    let decision = authorize(&got.request(now), &policy, &mut limits, TimeFloor::default());
    assert_eq!(decision, Decision::Deny(Deny::NoGrant));
    guard.forget(&got);
    assert_eq!(guard.len(), 1, "only Bob's call, which ran, is remembered");
}

// ---------------------------------------------------------------------------------------
// Call records
// ---------------------------------------------------------------------------------------

#[test]
fn calls_round_trip() {
    let c = bobs_call();
    let signed = c.clone().sign(&bob());
    let back = SignedCall::decode(signed.bytes()).expect("a call we signed decodes");
    assert_eq!(back.call(), &c);
    assert_eq!(back.bytes(), signed.bytes());
    assert_eq!(back.hash(), signed.hash());
    // ed25519 is deterministic: one meaning, one encoding.
    assert_eq!(back.call().clone().sign(&bob()).bytes(), signed.bytes());
}

#[test]
fn call_new_hashes_the_arguments_and_picks_a_fresh_request_id() {
    let make = || {
        Call::new(
            user(&bob()),
            pi(1),
            mission("demo"),
            function("echo"),
            ARGS,
            SESSION,
            T0,
        )
    };
    let (a, b) = (make(), make());
    assert_eq!(a.args_hash, args_hash(ARGS));
    assert_ne!(a.request_id, b.request_id, "two calls, two request ids");
    assert_eq!(
        Call {
            request_id: rid(1),
            ..a
        },
        bobs_call()
    );
}

#[test]
fn the_raw_helpers_match_the_real_encoder() {
    // The negative tests build records with these helpers; if they drifted from the real
    // encoder, those tests would be testing nothing.
    let c = signed_call();
    let (kind, version, fields) = fields_of(c.bytes());
    assert_eq!((kind, version), (call::KIND, call::VERSION));
    assert_eq!(
        fields.iter().map(|f| f.0).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5, 6, 7, 8, 255]
    );
    assert_eq!(encode_fields(kind, version, &fields), c.bytes());
    assert_eq!(edited_call(|_| {}), c.bytes());

    let r = ok_result();
    let (kind, version, fields) = fields_of(r.bytes());
    assert_eq!((kind, version), (call::RESULT_KIND, call::RESULT_VERSION));
    assert_eq!(
        fields.iter().map(|f| f.0).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5, 6, 255]
    );
    assert_eq!(edited_result(|_| {}), r.bytes());
}

#[test]
fn a_call_naming_bob_but_signed_by_mallory_is_refused() {
    let forged = resign(signed_call().bytes(), call::DOMAIN, &mallory(), |_| {});
    assert_eq!(SignedCall::decode(&forged), Err(SIG_ERR));

    // Or she takes her own valid call and writes Bob's key into the caller field.
    let own = Call {
        caller: user(&mallory()),
        ..bobs_call()
    }
    .sign(&mallory());
    let (kind, version, mut fields) = fields_of(own.bytes());
    set(&mut fields, 1, bob().public().as_bytes().to_vec());
    assert_eq!(
        SignedCall::decode(&encode_fields(kind, version, &fields)),
        Err(SIG_ERR)
    );
    // Control: her call naming herself is fine; only the lie is refused.
    assert!(SignedCall::decode(own.bytes()).is_ok());
}

#[test]
fn any_altered_byte_in_a_call_breaks_the_signature() {
    let c = signed_call();
    // `echo` becomes `exec`, without signing again.
    let (kind, version, mut fields) = fields_of(c.bytes());
    set(&mut fields, 4, b"exec".to_vec());
    assert_eq!(
        SignedCall::decode(&encode_fields(kind, version, &fields)),
        Err(SIG_ERR)
    );
    // Every single bit of the record, one at a time.
    for i in 0..c.bytes().len() {
        for bit in 0..8 {
            let mut b = c.bytes().to_vec();
            b[i] ^= 1 << bit;
            assert!(SignedCall::decode(&b).is_err(), "bit {bit} of byte {i}");
        }
    }
}

#[test]
fn a_signature_made_for_another_record_type_is_refused() {
    // Bob signs the very bytes of his call, with his key, but in another domain.
    for domain in [grant::DOMAIN, revocation::DOMAIN, log::DOMAIN, RESULT_DOMAIN] {
        let bytes = resign(signed_call().bytes(), domain, &bob(), |_| {});
        assert_eq!(SignedCall::decode(&bytes), Err(SIG_ERR), "{domain:?}");
    }
    // And the other way: a result signed in the call domain.
    let bytes = resign(ok_result().bytes(), call::DOMAIN, &pi_key(1), |_| {});
    assert_eq!(SignedResult::decode(&bytes), Err(SIG_ERR));
}

#[test]
fn a_grants_signature_replayed_as_a_call_is_refused() {
    // Alice's signature on her grant is a valid signature by Alice. Stuck onto a call that
    // names Alice as its caller, it must not make that call hers.
    let g: SignedGrant = make_grant();
    let (_, _, grant_fields) = fields_of(g.bytes());
    let grant_sig = grant_fields.last().expect("signature").clone();
    assert_eq!(grant_sig.0, SIGNATURE_TAG);
    let (kind, version, mut fields) = fields_of(
        Call {
            caller: user(&alice()),
            ..bobs_call()
        }
        .sign(&alice())
        .bytes(),
    );
    *fields.last_mut().expect("signature") = grant_sig;
    assert_eq!(
        SignedCall::decode(&encode_fields(kind, version, &fields)),
        Err(SIG_ERR)
    );
}

#[test]
fn records_of_another_kind_or_version_are_refused() {
    let wrong_kind = |expected, found| DecodeError::WrongKind { expected, found };
    assert_eq!(
        decode_error(SignedCall::decode(make_grant().bytes())),
        wrong_kind("call", grant::KIND)
    );
    assert_eq!(
        decode_error(SignedCall::decode(ok_result().bytes())),
        wrong_kind("call", call::RESULT_KIND)
    );
    assert_eq!(
        decode_error(SignedResult::decode(signed_call().bytes())),
        wrong_kind("result", call::KIND)
    );
    assert_eq!(
        decode_error(SignedGrant::decode(signed_call().bytes())),
        wrong_kind("grant", call::KIND)
    );
    let mut bytes = signed_call().bytes().to_vec();
    bytes[1] = 2;
    assert_eq!(
        decode_error(SignedCall::decode(&bytes)),
        DecodeError::UnknownVersion {
            what: "call",
            found: 2,
            supported: 1
        }
    );
    let mut bytes = ok_result().bytes().to_vec();
    bytes[1] = 0;
    assert_eq!(
        decode_error(SignedResult::decode(&bytes)),
        DecodeError::UnknownVersion {
            what: "result",
            found: 0,
            supported: 1
        }
    );
}

#[test]
fn an_unknown_field_in_a_call_is_refused_even_when_properly_signed() {
    // After the last field, before the first, and in the middle: (tag, index it goes at).
    for (tag, at) in [(9u8, 8usize), (0, 0), (100, 4)] {
        let bytes = edited_call(|f| f.insert(at, (tag, vec![0])));
        assert_eq!(
            decode_error(SignedCall::decode(&bytes)),
            DecodeError::UnknownField { what: "call", tag },
        );
    }
}

#[test]
fn every_missing_call_field_is_named() {
    for (tag, name) in CALL_FIELDS {
        let bytes = edited_call(|f| remove(f, tag));
        assert_eq!(
            decode_error(SignedCall::decode(&bytes)),
            DecodeError::MissingField {
                what: "call",
                field: name
            },
            "field {tag}"
        );
    }
    // And the signature.
    let (kind, version, mut fields) = fields_of(signed_call().bytes());
    fields.pop();
    assert_eq!(
        decode_error(SignedCall::decode(&encode_fields(kind, version, &fields))),
        DecodeError::Truncated { what: "signature" }
    );
}

#[test]
fn call_fields_out_of_order_or_repeated_are_refused() {
    // request_id (6) before args_hash (5).
    let swapped = edited_call(|f| f.swap(4, 5));
    assert_eq!(
        decode_error(SignedCall::decode(&swapped)),
        DecodeError::MissingField {
            what: "call",
            field: "args_hash"
        }
    );
    // The mission twice: the copy sits where the function should be.
    let repeated = edited_call(|f| {
        let m = f[2].clone();
        f.insert(3, m);
    });
    assert_eq!(
        decode_error(SignedCall::decode(&repeated)),
        DecodeError::MissingField {
            what: "call",
            field: "function"
        }
    );
    // The signature twice: the second is left over.
    let c = signed_call();
    let (kind, version, mut fields) = fields_of(c.bytes());
    let sig = fields.last().expect("signature").clone();
    fields.push(sig);
    assert_eq!(
        decode_error(SignedCall::decode(&encode_fields(kind, version, &fields))),
        DecodeError::TrailingBytes { count: 5 + 64 }
    );
}

#[test]
fn every_fixed_width_call_field_must_have_its_exact_length() {
    let widths: [(u8, &str, usize); 6] = [
        (1, "caller", 32),
        (2, "agent", 32),
        (5, "args_hash", 32),
        (6, "request_id", 16),
        (7, "session", 32),
        (8, "issued_at", 8),
    ];
    for (tag, name, width) in widths {
        for len in [0, width - 1, width + 1] {
            let bytes = edited_call(|f| set(f, tag, vec![0x01; len]));
            assert_eq!(
                decode_error(SignedCall::decode(&bytes)),
                DecodeError::BadLength { field: name, len },
                "field {name} with {len} bytes"
            );
        }
    }
    let (kind, version, mut fields) = fields_of(signed_call().bytes());
    fields.last_mut().expect("signature").1.push(0);
    assert_eq!(
        decode_error(SignedCall::decode(&encode_fields(kind, version, &fields))),
        DecodeError::BadLength {
            field: "signature",
            len: 65
        }
    );
}

#[test]
fn bytes_after_a_calls_signature_are_refused() {
    let c = signed_call();
    for extra in [vec![SIGNATURE_TAG], vec![1, 0, 0, 0, 0], vec![8; 13]] {
        let bytes = [c.bytes(), &extra].concat();
        assert_eq!(
            decode_error(SignedCall::decode(&bytes)),
            DecodeError::TrailingBytes { count: extra.len() },
            "{extra:?}"
        );
    }
    let bytes = [c.bytes(), &[42u8][..]].concat();
    assert_eq!(
        decode_error(SignedCall::decode(&bytes)),
        DecodeError::UnknownField {
            what: "call",
            tag: 42
        }
    );
}

#[test]
fn keys_in_a_call_are_checked_strictly() {
    for (tag, name) in [(1, "caller"), (2, "agent")] {
        for (key, why) in [(weak_key(), KeyError::Weak), (not_a_point(), KeyError::NotAPoint)] {
            let bytes = edited_call(|f| set(f, tag, key.to_vec()));
            assert_eq!(
                decode_error(SignedCall::decode(&bytes)),
                DecodeError::BadKey {
                    field: name,
                    source: why
                },
                "{name}"
            );
        }
    }
}

#[test]
fn names_in_a_call_are_canonical() {
    let cases: [(u8, &str, &[u8], NameError); 5] = [
        (3, "mission", b"DEMO", NameError::Uppercase("DEMO".into())),
        (3, "mission", b"", NameError::Empty),
        (4, "function", b"../echo", NameError::BadChar { at: 0 }),
        (4, "function", b"_echo", NameError::BadStart),
        (4, "function", &[b'x'; 65], NameError::TooLong(65)),
    ];
    for (tag, field, name, why) in cases {
        let bytes = edited_call(|f| set(f, tag, name.to_vec()));
        assert_eq!(
            decode_error(SignedCall::decode(&bytes)),
            DecodeError::BadName { field, source: why },
            "{name:?}"
        );
    }
}

#[test]
fn the_extremes_of_issued_at_survive_the_trip() {
    for t in [0, u64::MAX] {
        let c = Call {
            issued_at: Timestamp(t),
            ..bobs_call()
        }
        .sign(&bob());
        assert_eq!(SignedCall::decode(c.bytes()), Ok(c));
    }
}

// ---------------------------------------------------------------------------------------
// Result records
// ---------------------------------------------------------------------------------------

#[test]
fn results_round_trip_with_every_status() {
    for status in CallStatus::ALL {
        assert_eq!(CallStatus::from_u8(status.as_u8()), Some(status));
        let r = CallResult::for_call(&signed_call(), status, b"out", T0);
        let signed = r.clone().sign(&pi_key(1));
        let back = SignedResult::decode(signed.bytes()).expect("a result we signed decodes");
        assert_eq!(back.result(), &r);
        assert_eq!(back.bytes(), signed.bytes());
        assert_eq!(back.result().clone().sign(&pi_key(1)).bytes(), signed.bytes());
    }
    assert_eq!(
        CallStatus::ALL.map(CallStatus::as_u8),
        [0, 1, 2, 3, 4],
        "the wire values are fixed"
    );
}

#[test]
fn for_call_copies_what_binds_a_result_to_its_call() {
    let c = signed_call();
    let r = CallResult::for_call(&c, CallStatus::Failed, b"boom", T0);
    assert_eq!(r.agent, c.call().agent);
    assert_eq!(r.request_id, c.call().request_id);
    assert_eq!(r.call_hash, c.hash());
    assert_eq!(r.output_hash, output_hash(b"boom"));
    assert_eq!(r.status, CallStatus::Failed);
}

#[test]
fn a_result_naming_pi_1_but_signed_by_someone_else_is_refused() {
    for signer in [mallory(), pi_key(2)] {
        let forged = resign(ok_result().bytes(), RESULT_DOMAIN, &signer, |_| {});
        assert_eq!(SignedResult::decode(&forged), Err(SIG_ERR));
    }
    // `failed` turned into `ok` without signing again.
    let (kind, version, mut fields) = fields_of(result_for(&signed_call(), CallStatus::Failed, b"").bytes());
    set(&mut fields, 4, vec![0]);
    assert_eq!(
        SignedResult::decode(&encode_fields(kind, version, &fields)),
        Err(SIG_ERR)
    );
}

#[test]
fn an_unknown_status_is_refused() {
    for v in [5u8, 0x80, 0xff] {
        assert_eq!(CallStatus::from_u8(v), None);
        let bytes = edited_result(|f| set(f, 4, vec![v]));
        assert_eq!(
            decode_error(SignedResult::decode(&bytes)),
            DecodeError::BadValue {
                field: "status",
                reason: "unknown status (this wtd knows 0 to 4); upgrade wtd"
            }
        );
    }
}

#[test]
fn result_fields_are_checked_one_by_one() {
    for (tag, name) in RESULT_FIELDS {
        let bytes = edited_result(|f| remove(f, tag));
        assert_eq!(
            decode_error(SignedResult::decode(&bytes)),
            DecodeError::MissingField {
                what: "result",
                field: name
            },
            "field {tag}"
        );
    }
    let widths: [(u8, &str, usize); 6] = [
        (1, "agent", 32),
        (2, "request_id", 16),
        (3, "call_hash", 32),
        (4, "status", 1),
        (5, "output_hash", 32),
        (6, "finished_at", 8),
    ];
    for (tag, name, width) in widths {
        for len in [0, width - 1, width + 1] {
            let bytes = edited_result(|f| set(f, tag, vec![0x00; len]));
            assert_eq!(
                decode_error(SignedResult::decode(&bytes)),
                DecodeError::BadLength { field: name, len },
                "field {name} with {len} bytes"
            );
        }
    }
    let bytes = edited_result(|f| set(f, 1, weak_key().to_vec()));
    assert_eq!(
        decode_error(SignedResult::decode(&bytes)),
        DecodeError::BadKey {
            field: "agent",
            source: KeyError::Weak
        }
    );
    let bytes = edited_result(|f| f.push((7, vec![])));
    assert_eq!(
        decode_error(SignedResult::decode(&bytes)),
        DecodeError::UnknownField {
            what: "result",
            tag: 7
        }
    );
    let bytes = edited_result(|f| f.swap(0, 1));
    assert_eq!(
        decode_error(SignedResult::decode(&bytes)),
        DecodeError::MissingField {
            what: "result",
            field: "agent"
        }
    );
    let bytes = [ok_result().bytes(), &[SIGNATURE_TAG][..]].concat();
    assert_eq!(
        decode_error(SignedResult::decode(&bytes)),
        DecodeError::TrailingBytes { count: 1 }
    );
}

// ---------------------------------------------------------------------------------------
// Both decoders: truncation and size limits
// ---------------------------------------------------------------------------------------

#[test]
fn every_truncation_of_a_call_or_a_result_is_refused() {
    // Neither record has optional fields, so a cut anywhere is plain truncation.
    let c = signed_call();
    for end in 0..c.bytes().len() {
        let e = decode_error(SignedCall::decode(&c.bytes()[..end]));
        assert!(
            matches!(e, DecodeError::Truncated { .. }),
            "call cut at {end}: {e:?}"
        );
    }
    let r = ok_result();
    for end in 0..r.bytes().len() {
        let e = decode_error(SignedResult::decode(&r.bytes()[..end]));
        assert!(
            matches!(e, DecodeError::Truncated { .. }),
            "result cut at {end}: {e:?}"
        );
    }
}

#[test]
fn oversized_input_is_refused_before_parsing() {
    for (kind, what) in [(call::KIND, "call"), (call::RESULT_KIND, "result")] {
        let mut big = vec![0u8; MAX_RECORD_LEN + 1];
        big[0] = kind;
        big[1] = 1;
        let decode = |b: &[u8]| match what {
            "call" => decode_error(SignedCall::decode(b)),
            _ => decode_error(SignedResult::decode(b)),
        };
        assert_eq!(
            decode(&big),
            DecodeError::TooLong {
                len: MAX_RECORD_LEN + 1,
                max: MAX_RECORD_LEN
            }
        );
        // At exactly the limit the decoder does parse, and finds the garbage (tag 0).
        assert_eq!(
            decode(&big[..MAX_RECORD_LEN]),
            DecodeError::UnknownField { what, tag: 0 }
        );
    }
}

#[test]
fn a_field_length_pointing_past_the_end_is_truncation() {
    let mut bytes = vec![call::KIND, call::VERSION, 1];
    bytes.extend_from_slice(&u32::MAX.to_be_bytes());
    bytes.extend_from_slice(&[0; 50]);
    assert_eq!(
        decode_error(SignedCall::decode(&bytes)),
        DecodeError::Truncated { what: "caller" }
    );
}

// ---------------------------------------------------------------------------------------
// Request ids and hashes
// ---------------------------------------------------------------------------------------

#[test]
fn request_ids_have_a_text_form_and_parse_strictly() {
    let id = rid(0x5a);
    let text = id.to_string();
    assert!(text.starts_with("req-"));
    assert_eq!(text.len(), 4 + 26);
    assert_eq!(text.parse::<RequestId>(), Ok(id));
    assert_eq!(format!(" {text}\n").parse::<RequestId>(), Ok(id));
    assert_eq!(format!("{id:?}"), format!("RequestId({text})"));
    let refused = [
        String::new(),
        text.replacen("req-", "grant-", 1),
        text.to_uppercase(),
        format!("req-{}", text[4..].to_uppercase()),
        text[..text.len() - 1].to_string(),
        format!("{text}a"),
        format!("{}!", &text[..text.len() - 1]),
    ];
    for s in refused {
        assert!(s.parse::<RequestId>().is_err(), "{s:?}");
    }
    assert_ne!(RequestId::random(), RequestId::random());
}

#[test]
fn each_hash_has_its_own_domain() {
    use sha2::{Digest, Sha256};
    let plain: [u8; 32] = Sha256::digest(ARGS).into();
    // The hash of some bytes as arguments is not their hash as an output, nor a plain
    // SHA-256 someone could have computed for another purpose.
    assert_ne!(args_hash(ARGS), output_hash(ARGS));
    assert_ne!(args_hash(ARGS), plain);
    assert_ne!(output_hash(ARGS), plain);
    assert_ne!(args_hash(b"a"), args_hash(b"b"));
    assert_ne!(args_hash(b""), output_hash(b""));
    let c = signed_call();
    assert_ne!(c.hash(), args_hash(c.bytes()));
    assert_ne!(c.hash(), output_hash(c.bytes()));
    assert!(
        SESSION_EXPORTER_LABEL.starts_with(b"EXPORTER-"),
        "RFC 5705 label space"
    );
}

#[test]
fn debug_output_is_short_and_readable() {
    let text = format!("{:?}", signed_call());
    assert!(text.contains("SignedCall(Call {"), "{text}");
    assert!(text.contains("request_id: RequestId(req-"), "{text}");
    assert!(text.contains("session: 5e5e5e5e5e5e.."), "{text}");
    assert!(!text.contains("94, 94"), "no byte arrays: {text}");
    let text = format!("{:?}", ok_result());
    assert!(text.contains("status: Ok"), "{text}");
    let mut guard = ReplayGuard::new();
    check_at(signed_call().bytes(), T0, &mut guard).expect("accepted");
    assert_eq!(
        format!("{guard:?}"),
        format!("ReplayGuard {{ len: 1, limit: {MAX_REPLAY_ENTRIES}, latest: {T0:?} }}")
    );
}

// ---------------------------------------------------------------------------------------
// check_call: one test per CallError variant
// ---------------------------------------------------------------------------------------

#[test]
fn a_good_call_passes_every_check() {
    let mut guard = ReplayGuard::new();
    let got = check_at(signed_call().bytes(), T0, &mut guard).expect("accepted");
    assert_eq!(got, signed_call());
    assert_eq!(guard.len(), 1);
    let req = got.request(T0);
    assert_eq!(
        (req.caller, req.agent, req.mission, req.function, req.now),
        (&user(&bob()), &pi(1), &mission("demo"), &function("echo"), T0)
    );
}

#[test]
fn call_error_record_a_damaged_or_forged_call() {
    assert_eq!(
        check(b"not a call"),
        Err(CallError::Record(RecordError::Decode(DecodeError::WrongKind {
            expected: "call",
            found: b'n'
        })))
    );
    let forged = resign(signed_call().bytes(), call::DOMAIN, &mallory(), |_| {});
    assert_eq!(check(&forged), Err(CallError::Record(SIG_ERR)));
    assert!(CallError::Record(SIG_ERR)
        .to_string()
        .contains("refused a call: signature does not verify"));
}

#[test]
fn call_error_not_from_peer_someone_passes_on_carols_call() {
    // Carol's call, well signed by Carol, arrives on the connection Bob opened.
    let carols = Call {
        caller: user(&carol()),
        ..bobs_call()
    }
    .sign(&carol());
    let e = check(carols.bytes()).expect_err("refused");
    assert_eq!(
        e,
        CallError::NotFromPeer {
            signer: user(&carol()),
            peer: user(&bob())
        }
    );
    let msg = e.to_string();
    assert!(msg.contains(&carol().public().short()), "{msg}");
    assert!(msg.contains(&bob().public().short()), "{msg}");
    assert!(msg.contains("another person's call"), "{msg}");
}

#[test]
fn call_error_wrong_agent_the_proxy_redirects_a_call() {
    // Bob signed his call for Pi 2; it reaches Pi 1.
    let for_pi_2 = Call {
        agent: pi(2),
        ..bobs_call()
    }
    .sign(&bob());
    let e = check(for_pi_2.bytes()).expect_err("refused");
    assert_eq!(
        e,
        CallError::WrongAgent {
            intended: pi(2),
            me: pi(1)
        }
    );
    assert!(
        e.to_string().contains("the proxy may be redirecting calls"),
        "{e}"
    );
}

#[test]
fn call_error_wrong_session_a_call_copied_from_another_connection() {
    let other_session = Call {
        session: [0x77; 32],
        ..bobs_call()
    }
    .sign(&bob());
    let e = check(other_session.bytes()).expect_err("refused");
    assert_eq!(e, CallError::WrongSession);
    assert!(e.to_string().contains("another connection"), "{e}");
    // The binding itself (session key material) never appears in the message.
    assert!(!e.to_string().contains("77"), "{e}");
}

#[test]
fn call_error_args_mismatch_the_arguments_were_swapped() {
    let c = signed_call();
    let mut guard = ReplayGuard::new();
    for other in [&b""[..], br#"{"msg":"rm -rf"}"#, &ARGS[..ARGS.len() - 1]] {
        let e = check_call(c.bytes(), &user(&bob()), &pi(1), &SESSION, other, T0, &mut guard)
            .expect_err("refused");
        assert_eq!(e, CallError::ArgsMismatch);
        assert!(e.to_string().contains("altered on the way"), "{e}");
    }
}

#[test]
fn call_error_stale_a_call_signed_too_long_ago() {
    let c = signed_call(); // issued at T0
    assert_eq!(
        check_at(c.bytes(), T0.plus_ms(W + 1), &mut ReplayGuard::new()),
        Err(CallError::Stale { age_ms: W + 1 })
    );
    // The edge itself is still fresh.
    assert!(check_at(c.bytes(), T0.plus_ms(W), &mut ReplayGuard::new()).is_ok());
    let msg = CallError::Stale { age_ms: 5 * MINUTE }.to_string();
    assert!(
        msg.contains("5 min ago") && msg.contains("clock is behind"),
        "{msg}"
    );
}

#[test]
fn call_error_from_the_future_the_callers_clock_is_ahead() {
    let c = signed_call(); // issued at T0
    assert_eq!(
        check_at(c.bytes(), T0.minus_ms(W + 1), &mut ReplayGuard::new()),
        Err(CallError::FromTheFuture { ahead_ms: W + 1 })
    );
    assert!(check_at(c.bytes(), T0.minus_ms(W), &mut ReplayGuard::new()).is_ok());
    let msg = CallError::FromTheFuture { ahead_ms: 2 * HOUR }.to_string();
    assert!(
        msg.contains("2 h in the future") && msg.contains("clock is ahead"),
        "{msg}"
    );
}

#[test]
fn call_error_replayed_the_same_call_twice() {
    let mut guard = ReplayGuard::new();
    let c = signed_call();
    assert!(check_at(c.bytes(), T0, &mut guard).is_ok());
    let e = check_at(c.bytes(), T0.plus_ms(SECOND), &mut guard).expect_err("refused");
    assert_eq!(e, CallError::Replayed { request: rid(1) });
    assert!(e.to_string().contains(&rid(1).to_string()), "{e}");
    assert!(e.to_string().contains("replay"), "{e}");
}

#[test]
fn call_error_replay_cache_full_refuses_instead_of_forgetting() {
    let mut guard = ReplayGuard::with_limit(2);
    for n in 1..=2 {
        let c = Call {
            request_id: rid(n),
            ..bobs_call()
        }
        .sign(&bob());
        assert!(check_at(c.bytes(), T0, &mut guard).is_ok(), "call {n}");
    }
    let third = Call {
        request_id: rid(3),
        ..bobs_call()
    }
    .sign(&bob());
    let e = check_at(third.bytes(), T0, &mut guard).expect_err("refused");
    assert_eq!(e, CallError::ReplayCacheFull { limit: 2 });
    assert!(e.to_string().contains("rather than risk running a replay"), "{e}");
    assert_eq!(guard.len(), 2);
}

#[test]
fn the_checks_run_in_the_documented_order() {
    // A call wrong in every way. Fixing one thing at a time, the error moves down the list:
    // each check is reached only when those before it pass.
    let mut c = Call {
        caller: user(&carol()),
        agent: pi(2),
        session: [0x77; 32],
        args_hash: args_hash(b"other"),
        issued_at: T0.minus_ms(10 * MINUTE),
        ..bobs_call()
    };
    let mut guard = ReplayGuard::new();
    let step = |c: &Call, signer: &SecretKey, guard: &mut ReplayGuard| {
        check_at(c.clone().sign(signer).bytes(), T0, guard)
    };
    let garbage = check_at(&[call::KIND, call::VERSION], T0, &mut guard);
    assert!(matches!(garbage, Err(CallError::Record(_))));
    assert!(matches!(
        step(&c, &carol(), &mut guard),
        Err(CallError::NotFromPeer { .. })
    ));
    c.caller = user(&bob());
    assert!(matches!(
        step(&c, &bob(), &mut guard),
        Err(CallError::WrongAgent { .. })
    ));
    c.agent = pi(1);
    assert_eq!(step(&c, &bob(), &mut guard), Err(CallError::WrongSession));
    c.session = SESSION;
    assert_eq!(step(&c, &bob(), &mut guard), Err(CallError::ArgsMismatch));
    c.args_hash = args_hash(ARGS);
    assert_eq!(
        step(&c, &bob(), &mut guard),
        Err(CallError::Stale { age_ms: 10 * MINUTE })
    );
    assert_eq!(guard.len(), 0, "no refused call is remembered");
    c.issued_at = T0;
    assert!(step(&c, &bob(), &mut guard).is_ok());
    // Staleness is checked before the guard: an old copy of a remembered call is stale.
    assert_eq!(
        check_at(c.clone().sign(&bob()).bytes(), T0.plus_ms(W + 1), &mut guard),
        Err(CallError::Stale { age_ms: W + 1 })
    );
}

#[test]
fn a_tampered_copy_does_not_use_up_the_genuine_calls_request_id() {
    // The proxy sends Bob's call with other arguments first. It is refused, and not
    // remembered, so Bob's genuine call with the same request id still gets through.
    let c = signed_call();
    let mut guard = ReplayGuard::new();
    let tampered = check_call(c.bytes(), &user(&bob()), &pi(1), &SESSION, b"{}", T0, &mut guard);
    assert_eq!(tampered, Err(CallError::ArgsMismatch));
    assert!(guard.is_empty());
    assert!(check_at(c.bytes(), T0, &mut guard).is_ok());
}

// ---------------------------------------------------------------------------------------
// The replay guard
// ---------------------------------------------------------------------------------------

#[test]
fn a_request_id_is_used_once_per_caller() {
    let mut guard = ReplayGuard::new();
    assert!(check_at(signed_call().bytes(), T0, &mut guard).is_ok());
    // Bob re-signs the same request id with a new timestamp: still the same request.
    let resigned = Call {
        issued_at: T0.plus_ms(SECOND),
        ..bobs_call()
    }
    .sign(&bob());
    assert_eq!(
        check_at(resigned.bytes(), T0.plus_ms(SECOND), &mut guard),
        Err(CallError::Replayed { request: rid(1) })
    );
    // Carol happens to pick the same request id on her own connection: no clash.
    let carols = Call {
        caller: user(&carol()),
        ..bobs_call()
    }
    .sign(&carol());
    let r = check_call(
        carols.bytes(),
        &user(&carol()),
        &pi(1),
        &SESSION,
        ARGS,
        T0,
        &mut guard,
    );
    assert!(r.is_ok(), "{r:?}");
    assert_eq!(guard.len(), 2);
}

#[test]
fn after_the_window_a_replay_is_refused_as_stale_not_accepted() {
    let mut guard = ReplayGuard::new();
    let c = signed_call(); // issued at T0
    assert!(check_at(c.bytes(), T0, &mut guard).is_ok());
    // At the last fresh instant, the guard still remembers it.
    assert_eq!(
        check_at(c.bytes(), T0.plus_ms(W), &mut guard),
        Err(CallError::Replayed { request: rid(1) })
    );
    assert_eq!(guard.len(), 1);
    // One millisecond later the guard has forgotten it, and it is refused as stale.
    assert_eq!(
        check_at(c.bytes(), T0.plus_ms(W + 1), &mut guard),
        Err(CallError::Stale { age_ms: W + 1 })
    );
    assert_eq!(guard.len(), 0);
}

#[test]
fn a_call_dated_in_the_future_is_remembered_until_it_is_stale() {
    // Bob's clock is a full window ahead: the call is fresh for two windows of Pi time.
    let mut guard = ReplayGuard::new();
    let ahead = Call {
        issued_at: T0.plus_ms(W),
        ..bobs_call()
    }
    .sign(&bob());
    assert!(check_at(ahead.bytes(), T0, &mut guard).is_ok());
    assert_eq!(
        check_at(ahead.bytes(), T0.plus_ms(2 * W), &mut guard),
        Err(CallError::Replayed { request: rid(1) })
    );
    assert_eq!(
        check_at(ahead.bytes(), T0.plus_ms(2 * W + 1), &mut guard),
        Err(CallError::Stale { age_ms: W + 1 })
    );
}

#[test]
fn a_clock_stepped_back_does_not_bring_a_forgotten_call_back() {
    let mut guard = ReplayGuard::new();
    let c = signed_call();
    assert!(check_at(c.bytes(), T0, &mut guard).is_ok());
    // Ten minutes pass: the guard forgets the call.
    assert_eq!(guard.advance(T0.plus_ms(10 * MINUTE)), T0.plus_ms(10 * MINUTE));
    assert!(guard.is_empty());
    // Then the agent's clock is set back to T0, where the call would look fresh. The guard
    // keeps its own "latest now", so the copy is still stale.
    assert_eq!(guard.advance(T0), T0.plus_ms(10 * MINUTE));
    assert_eq!(
        check_at(c.bytes(), T0, &mut guard),
        Err(CallError::Stale { age_ms: 10 * MINUTE })
    );
}

#[test]
fn memory_stays_bounded_by_the_window() {
    // One call a second for five minutes: the guard holds only the last window's worth.
    let mut guard = ReplayGuard::new();
    let per_window = (W / SECOND + 1) as usize;
    for i in 0..300u64 {
        let now = T0.plus_ms(i * SECOND);
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&i.to_be_bytes());
        let c = Call {
            request_id: RequestId(id),
            issued_at: now,
            ..bobs_call()
        }
        .sign(&bob());
        assert!(check_at(c.bytes(), now, &mut guard).is_ok(), "call {i}");
        assert_eq!(guard.len(), per_window.min(i as usize + 1), "after call {i}");
    }
    // An idle agent gives the memory back when it advances the clock.
    guard.advance(T0.plus_ms(300 * SECOND + W));
    assert!(guard.is_empty());
}

#[test]
fn a_full_guard_keeps_every_entry_and_frees_up_as_time_passes() {
    let mut guard = ReplayGuard::with_limit(3);
    let call_n = |n: u8, at: Timestamp| {
        Call {
            request_id: rid(n),
            issued_at: at,
            ..bobs_call()
        }
        .sign(&bob())
    };
    for n in 1..=3 {
        assert!(check_at(call_n(n, T0).bytes(), T0, &mut guard).is_ok());
    }
    let later = T0.plus_ms(W);
    assert_eq!(
        check_at(call_n(4, later).bytes(), later, &mut guard),
        Err(CallError::ReplayCacheFull { limit: 3 })
    );
    // Nothing was forgotten to make room: every remembered call is still refused.
    for n in 1..=3 {
        assert_eq!(
            check_at(call_n(n, T0).bytes(), later, &mut guard),
            Err(CallError::Replayed { request: rid(n) })
        );
    }
    // Once the first three are past the window, there is room again.
    let much_later = T0.plus_ms(W + 1);
    assert!(check_at(call_n(4, much_later).bytes(), much_later, &mut guard).is_ok());
    assert_eq!(guard.len(), 1);
}

#[test]
fn the_default_guard_holds_max_replay_entries() {
    assert_eq!(ReplayGuard::new().limit(), MAX_REPLAY_ENTRIES);
    assert_eq!(ReplayGuard::default().limit(), MAX_REPLAY_ENTRIES);
    assert!(ReplayGuard::new().is_empty());
}

#[test]
fn forget_lets_a_refused_call_be_judged_again() {
    let mut guard = ReplayGuard::new();
    let c = check_at(signed_call().bytes(), T0, &mut guard).expect("accepted");
    // Forgetting a call never seen changes nothing.
    let other = Call {
        request_id: rid(2),
        ..bobs_call()
    }
    .sign(&bob());
    guard.forget(&other);
    assert_eq!(guard.len(), 1);
    // Authorization refused `c`, so the agent forgets it; the same call is judged again.
    guard.forget(&c);
    assert!(guard.is_empty());
    assert!(check_at(c.bytes(), T0.plus_ms(SECOND), &mut guard).is_ok());
    // And the eviction index was cleaned too: the entry expires on time, no ghost left.
    guard.advance(T0.plus_ms(W + 1));
    assert!(guard.is_empty());
}

// ---------------------------------------------------------------------------------------
// verify_result: one test per ResultError variant
// ---------------------------------------------------------------------------------------

#[test]
fn a_good_result_verifies_for_every_status() {
    let c = signed_call();
    for status in CallStatus::ALL {
        for output in [&b""[..], b"hi", &[0u8; 100_000]] {
            let r = result_for(&c, status, output);
            let v = verify(r.bytes(), output, &c).expect("verifies");
            assert_eq!(v.status(), status);
            assert_eq!(v.finished_at(), T0.plus_ms(SECOND));
        }
    }
}

#[test]
fn result_error_record_a_damaged_or_forged_result() {
    let c = signed_call();
    assert!(matches!(
        verify(b"", b"hi", &c),
        Err(ResultError::Record(RecordError::Decode(
            DecodeError::Truncated { .. }
        )))
    ));
    let forged = resign(ok_result().bytes(), RESULT_DOMAIN, &mallory(), |_| {});
    assert_eq!(verify(&forged, b"hi", &c), Err(ResultError::Record(SIG_ERR)));
    // A call is not a result.
    assert!(matches!(
        verify(c.bytes(), b"hi", &c),
        Err(ResultError::Record(RecordError::Decode(
            DecodeError::WrongKind { .. }
        )))
    ));
}

#[test]
fn result_error_wrong_agent_another_agent_answers() {
    let c = signed_call(); // for Pi 1
                           // Pi 2 answers (well signed by Pi 2, naming the right call).
    let from_pi_2 = CallResult {
        agent: pi(2),
        ..CallResult::for_call(&c, CallStatus::Ok, b"hi", T0)
    }
    .sign(&pi_key(2));
    let e = verify(from_pi_2.bytes(), b"hi", &c).expect_err("refused");
    assert_eq!(
        e,
        ResultError::WrongAgent {
            expected: pi(1),
            found: pi(2)
        }
    );
    assert!(
        e.to_string().contains("the proxy may be redirecting calls"),
        "{e}"
    );
    // The caller routed to Pi 2 but signed the call for Pi 1: Pi 1's answer is not what
    // it expected, and Pi 2's answer is not for the call it signed. Both refused.
    assert_eq!(
        verify_result(ok_result().bytes(), b"hi", &pi(2), &c),
        Err(ResultError::WrongAgent {
            expected: pi(2),
            found: pi(1)
        })
    );
    assert_eq!(
        verify_result(from_pi_2.bytes(), b"hi", &pi(2), &c),
        Err(ResultError::WrongAgent {
            expected: pi(1),
            found: pi(2)
        })
    );
}

#[test]
fn result_error_wrong_request_the_answer_to_another_call() {
    let mine = signed_call();
    let other = Call {
        request_id: rid(2),
        ..bobs_call()
    }
    .sign(&bob());
    let r = result_for(&other, CallStatus::Ok, b"hi");
    let e = verify(r.bytes(), b"hi", &mine).expect_err("refused");
    assert_eq!(
        e,
        ResultError::WrongRequest {
            expected: rid(1),
            found: rid(2)
        }
    );
    assert!(e.to_string().contains("mixed up or swapped"), "{e}");
}

#[test]
fn result_error_wrong_call_an_old_result_with_the_same_request_id() {
    // Two calls with the same request id (an hour apart, so both were accepted): the
    // first one's result must not pass for the second's.
    let first = signed_call();
    let second = Call {
        issued_at: T0.plus_ms(HOUR),
        ..bobs_call()
    }
    .sign(&bob());
    let old = result_for(&first, CallStatus::Ok, b"hi");
    let e = verify(old.bytes(), b"hi", &second).expect_err("refused");
    assert_eq!(e, ResultError::WrongCall);
    assert!(e.to_string().contains("replayed or swapped"), "{e}");
    // The hash check does not depend on the request id alone: a result naming the right
    // id but the wrong hash, properly signed, is refused too.
    let bytes = edited_result(|f| set(f, 3, vec![0; 32]));
    assert_eq!(verify(&bytes, b"hi", &first), Err(ResultError::WrongCall));
}

#[test]
fn result_error_output_mismatch_the_output_was_altered() {
    let c = signed_call();
    let r = ok_result(); // output "hi"
    for altered in [&b"ho"[..], b"", b"hi\n", b"HI"] {
        let e = verify(r.bytes(), altered, &c).expect_err("refused");
        assert_eq!(e, ResultError::OutputMismatch);
        assert!(e.to_string().contains("altered on the way"), "{e}");
    }
}

// ---------------------------------------------------------------------------------------
// Receipts: the signed form of a call, checked offline
// ---------------------------------------------------------------------------------------

/// Pi 1's check of Bob's receipt call when the session message asks for `demo/<asked>`.
fn check_receipt_for(bytes: &[u8], asked: &str, guard: &mut ReplayGuard) -> Result<SignedCall, CallError> {
    call::check_receipt_call(
        bytes,
        &user(&bob()),
        &pi(1),
        &SESSION,
        &mission("demo"),
        &function(asked),
        ARGS,
        T0,
        guard,
    )
}

#[test]
fn a_receipt_call_for_the_function_the_session_runs_passes() {
    let c = check_receipt_for(signed_call().bytes(), "echo", &mut ReplayGuard::new()).expect("good");
    assert_eq!(c.call(), &bobs_call());
}

#[test]
fn call_error_wrong_function_a_signed_call_for_echo_sent_to_run_another_function() {
    // The proxy cannot do this (the session message is encrypted), but a caller's bug or a
    // confused library could: the signature would then vouch for a call that did not run.
    let mut guard = ReplayGuard::new();
    let e = check_receipt_for(signed_call().bytes(), "wipe", &mut guard).expect_err("refused");
    assert_eq!(
        e,
        CallError::WrongFunction {
            signed: "demo/echo".into(),
            asked: "demo/wipe".into()
        }
    );
    assert!(e.to_string().contains("demo/echo"), "{e}");
    // The refused message did not use up the request id: the genuine call still runs.
    check_receipt_for(signed_call().bytes(), "echo", &mut guard).expect("the genuine call");
}

#[test]
fn a_good_receipt_verifies_offline() {
    let c = signed_call();
    let r = ok_result();
    let v = wtd_keys::verify_receipt(c.bytes(), ARGS, r.bytes(), b"hi").expect("a good receipt");
    assert_eq!(v.call, c);
    assert_eq!(v.result.status(), CallStatus::Ok);
}

#[test]
fn receipt_error_call_any_altered_byte_of_the_call() {
    let (c, r) = (signed_call(), ok_result());
    for i in 0..c.bytes().len() {
        let mut bytes = c.bytes().to_vec();
        bytes[i] ^= 0x01;
        let e = wtd_keys::verify_receipt(&bytes, ARGS, r.bytes(), b"hi").expect_err("refused");
        assert!(
            matches!(
                e,
                wtd_keys::ReceiptError::Call(_) | wtd_keys::ReceiptError::ArgsMismatch
            ),
            "byte {i}: {e:?}"
        );
    }
}

#[test]
fn receipt_error_args_mismatch_the_arguments_kept_were_altered() {
    let (c, r) = (signed_call(), ok_result());
    for altered in [&br#"{"msg":"ho"}"#[..], b"", b"{}"] {
        let e = wtd_keys::verify_receipt(c.bytes(), altered, r.bytes(), b"hi").expect_err("refused");
        assert_eq!(e, wtd_keys::ReceiptError::ArgsMismatch);
        assert!(e.to_string().contains("altered"), "{e}");
    }
}

#[test]
fn receipt_error_result_any_altered_byte_of_the_result() {
    let (c, r) = (signed_call(), ok_result());
    for i in 0..r.bytes().len() {
        let mut bytes = r.bytes().to_vec();
        bytes[i] ^= 0x01;
        let e = wtd_keys::verify_receipt(c.bytes(), ARGS, &bytes, b"hi").expect_err("refused");
        assert!(matches!(e, wtd_keys::ReceiptError::Result(_)), "byte {i}: {e:?}");
    }
}

#[test]
fn receipt_error_result_the_output_kept_was_altered() {
    let (c, r) = (signed_call(), ok_result());
    let e = wtd_keys::verify_receipt(c.bytes(), ARGS, r.bytes(), b"ho").expect_err("refused");
    assert_eq!(e, wtd_keys::ReceiptError::Result(ResultError::OutputMismatch));
}

#[test]
fn receipt_error_result_a_result_of_another_call_swapped_in() {
    // Two receipts from the same Pi: the result of one does not complete the other.
    let c = signed_call();
    let other = Call {
        request_id: rid(2),
        ..bobs_call()
    }
    .sign(&bob());
    let r_other = result_for(&other, CallStatus::Ok, b"hi");
    let e = wtd_keys::verify_receipt(c.bytes(), ARGS, r_other.bytes(), b"hi").expect_err("refused");
    assert!(
        matches!(
            e,
            wtd_keys::ReceiptError::Result(ResultError::WrongRequest { .. } | ResultError::WrongCall)
        ),
        "{e:?}"
    );
    // A result signed by another Pi, for this very call: not from the agent the call names.
    let forged = CallResult {
        agent: pi(2),
        ..CallResult::for_call(&c, CallStatus::Ok, b"hi", T0.plus_ms(SECOND))
    }
    .sign(&pi_key(2));
    let e = wtd_keys::verify_receipt(c.bytes(), ARGS, forged.bytes(), b"hi").expect_err("refused");
    assert!(matches!(e, wtd_keys::ReceiptError::Result(_)), "{e:?}");
}

// ---------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        ..ProptestConfig::default()
    }
}

fn name_text() -> impl Strategy<Value = String> {
    "[a-z0-9][a-z0-9_-]{0,63}"
}

/// A valid call, and the seed of its caller's key (to sign it with).
fn any_call() -> impl Strategy<Value = ([u8; 32], Call)> {
    let who = (any::<[u8; 32]>(), any::<[u8; 32]>(), name_text(), name_text());
    let rest = (
        any::<[u8; 32]>(),
        any::<[u8; 16]>(),
        any::<[u8; 32]>(),
        any::<u64>(),
    );
    (who, rest).prop_map(|((caller, agent, m, f), (args_hash, request_id, session, at))| {
        let call = Call {
            caller: UserKey(SecretKey::from_seed(&caller).public()),
            agent: AgentId(SecretKey::from_seed(&agent).public()),
            mission: mission(&m),
            function: function(&f),
            args_hash,
            request_id: RequestId(request_id),
            session,
            issued_at: Timestamp(at),
        };
        (caller, call)
    })
}

/// A valid result, and the seed of its agent's key.
fn any_result() -> impl Strategy<Value = ([u8; 32], CallResult)> {
    (
        any::<[u8; 32]>(),
        any::<[u8; 16]>(),
        any::<[u8; 32]>(),
        0..5u8,
        any::<[u8; 32]>(),
        any::<u64>(),
    )
        .prop_map(|(agent, id, call_hash, status, output_hash, at)| {
            let r = CallResult {
                agent: AgentId(SecretKey::from_seed(&agent).public()),
                request_id: RequestId(id),
                call_hash,
                status: CallStatus::from_u8(status).expect("0..5 are statuses"),
                output_hash,
                finished_at: Timestamp(at),
            };
            (agent, r)
        })
}

/// Random fields behind a call or result header, mostly in order, to get past the header.
fn structured_garbage() -> impl Strategy<Value = Vec<u8>> {
    let kind = prop::sample::select(vec![call::KIND, call::RESULT_KIND]);
    let tag = prop_oneof![0u8..=9, Just(SIGNATURE_TAG), any::<u8>()];
    let value = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..40),
        prop::collection::vec(any::<u8>(), 32..=32),
        prop::collection::vec(any::<u8>(), 64..=64),
        Just(vec![0]),
    ];
    (kind, prop::collection::vec((tag, value), 0..11)).prop_map(|(kind, mut fields)| {
        fields.sort_by_key(|f| f.0);
        encode_fields(kind, 1, &fields)
    })
}

/// Everything that reads outside input in this module; it must simply return.
fn feed_everything(bytes: &[u8]) {
    let _ = SignedCall::decode(bytes);
    let _ = SignedResult::decode(bytes);
    let _ = check(bytes);
    let _ = verify(bytes, bytes, &signed_call());
    let _ = String::from_utf8_lossy(bytes).parse::<RequestId>();
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn calls_round_trip_for_any_content((seed, c) in any_call()) {
        let signed = c.clone().sign(&SecretKey::from_seed(&seed));
        let back = SignedCall::decode(signed.bytes()).expect("what we sign, we decode");
        prop_assert_eq!(back.call(), &c);
        prop_assert_eq!(back.bytes(), signed.bytes());
    }

    #[test]
    fn results_round_trip_for_any_content((seed, r) in any_result()) {
        let signed = r.clone().sign(&SecretKey::from_seed(&seed));
        let back = SignedResult::decode(signed.bytes()).expect("what we sign, we decode");
        prop_assert_eq!(back.result(), &r);
        prop_assert_eq!(back.bytes(), signed.bytes());
    }

    #[test]
    fn request_ids_round_trip_as_text(id in any::<[u8; 16]>()) {
        prop_assert_eq!(RequestId(id).to_string().parse::<RequestId>(), Ok(RequestId(id)));
    }

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        feed_everything(&bytes);
    }

    #[test]
    fn random_fields_never_panic(bytes in structured_garbage()) {
        feed_everything(&bytes);
    }

    #[test]
    fn a_changed_call_or_result_is_always_refused(
        at in any::<prop::sample::Index>(),
        mask in 1..=255u8,
        cut in any::<prop::sample::Index>(),
        extra in prop::collection::vec(any::<u8>(), 1..8),
    ) {
        // The signature covers every byte and the encoding is canonical: a flipped byte,
        // a shorter record or a longer one must all be refused.
        for original in [signed_call().bytes().to_vec(), ok_result().bytes().to_vec()] {
            let mut flipped = original.clone();
            flipped[at.index(original.len())] ^= mask;
            let shorter = original[..cut.index(original.len())].to_vec();
            let longer = [original.clone(), extra.clone()].concat();
            for changed in [flipped, shorter, longer] {
                feed_everything(&changed);
                prop_assert!(SignedCall::decode(&changed).is_err());
                prop_assert!(SignedResult::decode(&changed).is_err());
            }
        }
    }
}
