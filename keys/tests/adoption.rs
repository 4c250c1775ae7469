//! Adoption and enrollment with a fake clock: an agent is Alice's only when both sides
//! agree, and a headless Pi is adopted only with a fresh, unused token of hers that it
//! proves for its own id.
//!
//! # Index
//! - records: round trip, every refused field, the signature, inside a log entry
//! - the book: the latest word wins, per owner; tokens used
//! - ownership: all four answers
//! - enrollment: every refusal of `check_proof`, and `decide_pending` (contested, already
//!   adopted)

mod common;

use common::*;
use wtd_keys::adoption::{self, Status};
use wtd_keys::encoding::DecodeError;
use wtd_keys::enroll::{check_proof, decide_pending, EnrollError, Pending};
use wtd_keys::record::RecordError;
use wtd_keys::{
    Action, Adoption, AdoptionBook, EnrollmentToken, IssuedToken, OwnerLog, Ownership, Record, SecretKey,
    SignedAdoption, SignedEntry, Timestamp, TokenId,
};

fn adopt(issuer: &SecretKey, agent: u8, at: Timestamp) -> Adoption {
    Adoption {
        issuer: owner(issuer),
        agent: pi(agent),
        action: Action::Adopt,
        token: None,
        issued_at: at,
    }
}

fn disown(issuer: &SecretKey, agent: u8, at: Timestamp) -> Adoption {
    Adoption {
        action: Action::Disown,
        ..adopt(issuer, agent, at)
    }
}

fn decode_err(bytes: &[u8]) -> RecordError {
    SignedAdoption::decode(bytes).expect_err("must be refused")
}

// ---------------------------------------------------------------------------------------
// Records
// ---------------------------------------------------------------------------------------

#[test]
fn an_adoption_round_trips_with_and_without_a_token() {
    for token in [None, Some(TokenId([7; 16]))] {
        let a = Adoption {
            token,
            ..adopt(&alice(), 1, T0)
        };
        let signed = a.clone().sign(&alice());
        let back = SignedAdoption::decode(signed.bytes()).unwrap();
        assert_eq!(back.adoption(), &a);
        assert_eq!(back, signed);
    }
    let d = disown(&alice(), 1, T0).sign(&alice());
    assert_eq!(
        SignedAdoption::decode(d.bytes()).unwrap().adoption().action,
        Action::Disown
    );
}

#[test]
fn an_unknown_action_is_refused() {
    let bytes = adopt(&alice(), 1, T0).sign(&alice()).bytes().to_vec();
    let bad = resign(&bytes, adoption::DOMAIN, &alice(), |f| set(f, 3, vec![3]));
    assert!(matches!(
        decode_err(&bad),
        RecordError::Decode(DecodeError::BadValue { field: "action", .. })
    ));
}

#[test]
fn a_disown_that_names_a_token_is_refused() {
    let bytes = disown(&alice(), 1, T0).sign(&alice()).bytes().to_vec();
    let bad = resign(&bytes, adoption::DOMAIN, &alice(), |f| {
        f.insert(3, (4, vec![7; 16]))
    });
    assert!(matches!(
        decode_err(&bad),
        RecordError::Decode(DecodeError::BadValue { field: "token", .. })
    ));
}

#[test]
fn a_token_of_the_wrong_length_is_refused() {
    let a = Adoption {
        token: Some(TokenId([7; 16])),
        ..adopt(&alice(), 1, T0)
    };
    let bytes = a.sign(&alice()).bytes().to_vec();
    let bad = resign(&bytes, adoption::DOMAIN, &alice(), |f| set(f, 4, vec![7; 15]));
    assert!(matches!(
        decode_err(&bad),
        RecordError::Decode(DecodeError::BadLength { field: "token", .. })
    ));
}

#[test]
fn a_weak_agent_key_is_refused() {
    let bytes = adopt(&alice(), 1, T0).sign(&alice()).bytes().to_vec();
    let bad = resign(&bytes, adoption::DOMAIN, &alice(), |f| {
        set(f, 2, weak_key().to_vec())
    });
    assert!(matches!(
        decode_err(&bad),
        RecordError::Decode(DecodeError::BadKey { field: "agent", .. })
    ));
}

#[test]
fn an_altered_or_misattributed_adoption_does_not_verify() {
    let bytes = adopt(&alice(), 1, T0).sign(&alice()).bytes().to_vec();
    // The proxy swaps the agent for Mallory's machine, keeping Alice's signature.
    let (kind, version, mut fields) = fields_of(&bytes);
    set(&mut fields, 2, pi(9).key().as_bytes().to_vec());
    let swapped = encode_fields(kind, version, &fields);
    assert!(matches!(decode_err(&swapped), RecordError::Signature(_)));
    // Mallory signs an adoption naming Alice as issuer.
    let forged = resign(&bytes, adoption::DOMAIN, &mallory(), |_| {});
    assert!(matches!(decode_err(&forged), RecordError::Signature(_)));
    // A grant's signature domain is not an adoption's.
    let cross = resign(&bytes, wtd_keys::grant::DOMAIN, &alice(), |_| {});
    assert!(matches!(decode_err(&cross), RecordError::Signature(_)));
}

#[test]
fn an_adoption_travels_in_the_owner_log() {
    let mut log = OwnerLog::new(owner(&alice()));
    let e = log
        .next_entry(&alice(), Record::Adoption(adopt(&alice(), 1, T0).sign(&alice())))
        .unwrap();
    log.append(e.clone()).unwrap();
    let back = SignedEntry::decode(e.bytes()).unwrap();
    assert_eq!(back, e);
    assert_eq!(log.adoptions().count(), 1);
    assert_eq!(log.last_issued_at(), T0);
}

#[test]
fn a_log_entry_cannot_carry_someone_elses_adoption() {
    // Mallory's adoption inside an entry of Alice's log: the entry signer differs.
    let mallorys = adopt(&mallory(), 1, T0).sign(&mallory());
    let log = OwnerLog::new(owner(&alice()));
    let good = log
        .next_entry(&alice(), Record::Adoption(adopt(&alice(), 1, T0).sign(&alice())))
        .unwrap();
    let bad = resign(good.bytes(), wtd_keys::log::DOMAIN, &alice(), |f| {
        set(f, 6, mallorys.bytes().to_vec())
    });
    assert!(matches!(
        SignedEntry::decode(&bad),
        Err(RecordError::Decode(DecodeError::BadValue { field: "record", .. }))
    ));
}

#[test]
fn a_log_entry_with_two_records_is_refused() {
    let log = OwnerLog::new(owner(&alice()));
    let good = log
        .next_entry(&alice(), Record::Adoption(adopt(&alice(), 1, T0).sign(&alice())))
        .unwrap();
    let g = make_grant();
    let bad = resign(good.bytes(), wtd_keys::log::DOMAIN, &alice(), |f| {
        f.insert(3, (4, g.bytes().to_vec()))
    });
    assert!(matches!(
        SignedEntry::decode(&bad),
        Err(RecordError::Decode(DecodeError::BadValue { field: "record", .. }))
    ));
}

// ---------------------------------------------------------------------------------------
// The book
// ---------------------------------------------------------------------------------------

#[test]
fn the_latest_word_in_the_log_wins() {
    let a = alice();
    let mut log = OwnerLog::new(owner(&a));
    let mut book = |records: Vec<Adoption>| {
        for r in records {
            let e = log.next_entry(&a, Record::Adoption(r.sign(&a))).unwrap();
            log.append(e).unwrap();
        }
        AdoptionBook::from_logs([&log])
    };
    let b = book(vec![adopt(&a, 1, T0)]);
    assert_eq!(b.status(&owner(&a), &pi(1)), Status::Adopted { at: T0 });
    assert_eq!(b.status(&owner(&a), &pi(2)), Status::Never);
    assert_eq!(b.status(&owner(&oscar()), &pi(1)), Status::Never, "per owner");
    let b = book(vec![disown(&a, 1, T0.plus_ms(1))]);
    assert_eq!(
        b.status(&owner(&a), &pi(1)),
        Status::Disowned { at: T0.plus_ms(1) }
    );
    assert!(!b.adopts(&owner(&a), &pi(1)));
    let b = book(vec![adopt(&a, 1, T0.plus_ms(2)), adopt(&a, 2, T0.plus_ms(3))]);
    assert!(b.adopts(&owner(&a), &pi(1)), "adopted again");
    let mut mine: Vec<_> = b.adopted_by(&owner(&a)).collect();
    mine.sort();
    let mut want = vec![pi(1), pi(2)];
    want.sort();
    assert_eq!(mine, want);
}

#[test]
fn a_token_stays_used_after_its_agent_is_disowned() {
    let mut book = AdoptionBook::new();
    book.add(&Adoption {
        token: Some(TokenId([7; 16])),
        ..adopt(&alice(), 1, T0)
    });
    book.add(&disown(&alice(), 1, T0.plus_ms(1)));
    assert_eq!(
        book.token_used_by(&owner(&alice()), &TokenId([7; 16])),
        Some(pi(1))
    );
    assert_eq!(book.token_used_by(&owner(&oscar()), &TokenId([7; 16])), None);
}

// ---------------------------------------------------------------------------------------
// Ownership: both sides agree
// ---------------------------------------------------------------------------------------

#[test]
fn an_agent_is_hers_only_when_both_sides_agree() {
    let mut book = AdoptionBook::new();
    book.add(&adopt(&alice(), 1, T0));
    book.add(&adopt(&alice(), 2, T0));
    book.add(&disown(&alice(), 2, T0.plus_ms(5)));
    let a = owner(&alice());
    assert_eq!(adoption::ownership(true, &book, &a, &pi(1)), Ownership::Agreed);
    assert_eq!(
        adoption::ownership(true, &book, &a, &pi(3)),
        Ownership::ClaimOnly { disowned: None },
        "Mallory's machine that claims Alice"
    );
    assert_eq!(
        adoption::ownership(true, &book, &a, &pi(2)),
        Ownership::ClaimOnly {
            disowned: Some(T0.plus_ms(5))
        }
    );
    assert_eq!(
        adoption::ownership(false, &book, &a, &pi(1)),
        Ownership::AdoptedOnly
    );
    assert_eq!(
        adoption::ownership(false, &book, &a, &pi(3)),
        Ownership::Unrelated
    );
}

// ---------------------------------------------------------------------------------------
// Enrollment
// ---------------------------------------------------------------------------------------

fn token(n: u8) -> EnrollmentToken {
    EnrollmentToken::from_parts(TokenId([n; 16]), [n.wrapping_mul(31); 32])
}

/// Alice's issued token `n`, valid for an hour from T0.
fn issued(n: u8) -> IssuedToken {
    IssuedToken {
        token: token(n),
        label: format!("card {n}"),
        issued_at: T0,
        expires: T0.plus_ms(HOUR),
    }
}

/// Pi `agent` proving token `n`, naming Alice.
fn pending(agent: u8, n: u8) -> Pending {
    Pending {
        agent: pi(agent),
        claims_owner: true,
        proof: token(n).prove(&pi(agent)),
    }
}

fn check(p: &Pending, book: &AdoptionBook, now: Timestamp) -> Result<TokenId, EnrollError> {
    check_proof(p, &owner(&alice()), &[issued(1), issued(2)], book, now)
}

#[test]
fn the_right_token_proves_the_agent() {
    assert_eq!(
        check(&pending(1, 1), &AdoptionBook::new(), T0),
        Ok(TokenId([1; 16]))
    );
}

#[test]
fn a_token_she_never_issued_is_refused() {
    assert_eq!(
        check(&pending(1, 9), &AdoptionBook::new(), T0),
        Err(EnrollError::UnknownToken {
            token: TokenId([9; 16])
        })
    );
}

#[test]
fn a_proof_copied_into_another_agents_advert_is_refused() {
    // Pi 2 shows the proof Pi 1 put in its advert: the MAC covers Pi 1's id.
    let copied = Pending {
        agent: pi(2),
        ..pending(1, 1)
    };
    assert_eq!(
        check(&copied, &AdoptionBook::new(), T0),
        Err(EnrollError::BadProof {
            token: TokenId([1; 16])
        })
    );
    // A wrong secret under the right id (a mistyped card) fails the same way.
    let wrong = Pending {
        proof: EnrollmentToken::from_parts(TokenId([1; 16]), [0; 32]).prove(&pi(1)),
        ..pending(1, 1)
    };
    assert!(matches!(
        check(&wrong, &AdoptionBook::new(), T0),
        Err(EnrollError::BadProof { .. })
    ));
}

#[test]
fn a_used_token_is_refused() {
    let mut book = AdoptionBook::new();
    book.add(&Adoption {
        token: Some(TokenId([1; 16])),
        ..adopt(&alice(), 1, T0)
    });
    // A second card holding the same token, with its own (valid) proof.
    assert_eq!(
        check(&pending(2, 1), &book, T0),
        Err(EnrollError::AlreadyUsed {
            token: TokenId([1; 16]),
            by: pi(1)
        })
    );
}

#[test]
fn an_expired_token_is_refused_from_its_expiry_on() {
    let end = T0.plus_ms(HOUR);
    assert!(check(&pending(1, 1), &AdoptionBook::new(), end.minus_ms(1)).is_ok());
    assert_eq!(
        check(&pending(1, 1), &AdoptionBook::new(), end),
        Err(EnrollError::Expired {
            token: TokenId([1; 16]),
            ago_ms: 0
        })
    );
    assert_eq!(
        check(&pending(1, 1), &AdoptionBook::new(), end.plus_ms(5)),
        Err(EnrollError::Expired {
            token: TokenId([1; 16]),
            ago_ms: 5
        })
    );
}

#[test]
fn an_agent_that_does_not_name_her_is_refused() {
    let p = Pending {
        claims_owner: false,
        ..pending(1, 1)
    };
    assert_eq!(
        check(&p, &AdoptionBook::new(), T0),
        Err(EnrollError::NotClaimed {
            token: TokenId([1; 16])
        })
    );
}

#[test]
fn pending_agents_are_decided_together() {
    let mut book = AdoptionBook::new();
    book.add(&adopt(&alice(), 5, T0)); // already hers: left out
    let all = [
        pending(1, 1),
        pending(3, 2),
        pending(4, 2),
        pending(5, 9),
        pending(6, 9),
    ];
    let decided = decide_pending(&all, &owner(&alice()), &[issued(1), issued(2)], &book, T0);
    let by = |n: u8| decided.iter().find(|(a, _)| *a == pi(n)).map(|(_, r)| r.clone());
    assert_eq!(by(1), Some(Ok(TokenId([1; 16]))));
    // Two cards prove token 2 at once: neither is adopted.
    for n in [3, 4] {
        assert_eq!(
            by(n),
            Some(Err(EnrollError::Contested {
                token: TokenId([2; 16]),
                count: 2
            }))
        );
    }
    assert_eq!(by(5), None, "already adopted");
    assert!(matches!(by(6), Some(Err(EnrollError::UnknownToken { .. }))));
}

#[test]
fn errors_never_show_a_tokens_secret() {
    let t = token(1);
    let text = t.to_text();
    let secret_part = &text[wtd_keys::enroll::TOKEN_PREFIX.len() + 26..];
    for e in [
        EnrollError::BadProof { token: t.id() },
        EnrollError::Expired {
            token: t.id(),
            ago_ms: 1,
        },
    ] {
        assert!(!e.to_string().contains(secret_part), "{e}");
    }
    assert!(!format!("{:?}", issued(1)).contains(secret_part));
    assert!(!format!("{:?}", pending(1, 1)).contains(secret_part));
}
