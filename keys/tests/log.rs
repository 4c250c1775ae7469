//! The owner log: a hash chain of Alice's grants and revocations that a relay (the proxy)
//! can drop or delay, but not forge, reorder, splice or roll back unnoticed.
//!
//! # Index
//! - appending: the happy path, then gaps, broken chains, wrong owners, duplicates
//! - syncing: catching up from a prefix, older offers, forks, damage in the middle

mod common;

use common::*;
use wtd_keys::encoding::DecodeError;
use wtd_keys::log::{LogError, SyncOutcome};
use wtd_keys::record::RecordError;
use wtd_keys::{
    log, Grant, OwnerLog, Record, Revocation, SecretKey, SignedEntry, SignedGrant, SignedRevocation, Target,
};

/// Grant number `n` from `issuer` to Bob, issued `n` minutes after T0.
fn nth_grant(issuer: &SecretKey, n: u8) -> SignedGrant {
    Grant {
        id: gid(n),
        issued_at: T0.plus_ms(u64::from(n) * MINUTE),
        ..grant(issuer, &bob(), "demo")
    }
    .sign(issuer)
}

fn revoke_bob(issuer: &SecretKey, at_minute: u64) -> SignedRevocation {
    Revocation {
        issuer: owner(issuer),
        target: Target::SubjectAll(user(&bob())),
        issued_at: T0.plus_ms(at_minute * MINUTE),
    }
    .sign(issuer)
}

/// The log `owner_key` writes when it records `records` in order, as separate entries
/// (the writer's own copy, built with the real `next_entry` + `append`).
fn write_log(owner_key: &SecretKey, records: Vec<Record>) -> Vec<SignedEntry> {
    let mut log = OwnerLog::new(owner(owner_key));
    for r in records {
        let e = log.next_entry(owner_key, r).expect("the writer's next entry");
        log.append(e).expect("the writer's own entry chains");
    }
    log.entries().to_vec()
}

/// Alice's log of five entries: four grants and a revocation.
fn alices_log() -> Vec<SignedEntry> {
    let a = alice();
    write_log(
        &a,
        vec![
            Record::Grant(nth_grant(&a, 1)),
            Record::Grant(nth_grant(&a, 2)),
            Record::Revocation(revoke_bob(&a, 3)),
            Record::Grant(nth_grant(&a, 4)),
            Record::Grant(nth_grant(&a, 5)),
        ],
    )
}

/// A reader's copy of Alice's log holding the first `n` entries of `entries`.
fn reader_with(entries: &[SignedEntry], n: usize) -> OwnerLog {
    let mut log = OwnerLog::new(owner(&alice()));
    for e in &entries[..n] {
        log.append(e.clone()).expect("a prefix of a good log chains");
    }
    log
}

// ---------------------------------------------------------------------------------------
// Appending
// ---------------------------------------------------------------------------------------

#[test]
fn entries_append_in_order_and_survive_a_round_trip() {
    let entries = alices_log();
    // The reader decodes each entry from bytes, as if read from disk or the network.
    let mut log = OwnerLog::new(owner(&alice()));
    for e in &entries {
        let decoded = SignedEntry::decode(e.bytes()).expect("decodes");
        log.append(decoded).expect("chains");
    }
    assert_eq!(log.head().seq, 5);
    assert_eq!(log.head().hash, entries[4].hash());
    assert_eq!(log.entries(), &entries[..]);
    assert_eq!(log.grants().count(), 4);
    assert_eq!(log.revocations().count(), 1);
    assert_eq!(log.last_issued_at(), T0.plus_ms(5 * MINUTE));
    // The chain really is a chain: each entry names the previous one's hash.
    assert_eq!(entries[0].prev, Default::default());
    for w in entries.windows(2) {
        assert_eq!(w[1].prev, w[0].hash());
        assert_eq!(w[1].seq, w[0].seq + 1);
    }
}

#[test]
fn an_empty_log_has_a_zero_head() {
    let log = OwnerLog::new(owner(&alice()));
    assert_eq!(log.head().seq, 0);
    assert_eq!(log.last_issued_at(), Default::default());
}

#[test]
fn a_dropped_entry_is_a_gap() {
    let entries = alices_log();
    let mut log = reader_with(&entries, 1);
    assert_eq!(
        log.append(entries[2].clone()),
        Err(LogError::Gap {
            expected: 2,
            found: 3
        })
    );
    // The refused entry left no trace.
    assert_eq!(log.head().seq, 1);
    // Starting anywhere but the first entry is a gap too.
    let mut fresh = OwnerLog::new(owner(&alice()));
    assert_eq!(
        fresh.append(entries[1].clone()),
        Err(LogError::Gap {
            expected: 1,
            found: 2
        })
    );
}

#[test]
fn reordered_entries_are_refused() {
    // Each entry's number is signed, so a relay that swaps two entries is caught at the
    // first one out of place.
    let entries = alices_log();
    let mut log = reader_with(&entries, 1);
    assert_eq!(
        log.append(entries[2].clone()),
        Err(LogError::Gap {
            expected: 2,
            found: 3
        })
    );
    log.append(entries[1].clone()).expect("the right one still fits");
    // An entry already applied, offered again to `append`, is not the next one.
    assert_eq!(
        log.append(entries[0].clone()),
        Err(LogError::Gap {
            expected: 3,
            found: 1
        })
    );
}

#[test]
fn an_entry_from_another_copy_of_the_log_breaks_the_chain() {
    // Alice's key wrote two different logs (a restored backup kept writing). Entry 2 of
    // the second log has the right number but names another entry 1: spliced.
    let a = alice();
    let first = alices_log();
    let other = write_log(
        &a,
        vec![Record::Grant(nth_grant(&a, 7)), Record::Grant(nth_grant(&a, 8))],
    );
    let mut log = reader_with(&first, 1);
    assert_eq!(
        log.append(other[1].clone()),
        Err(LogError::BrokenChain { seq: 2 })
    );
    assert_eq!(log.head().seq, 1);
}

#[test]
fn a_first_entry_must_chain_to_nothing() {
    // Entry 1 naming a predecessor: someone is passing off the middle of a log as its
    // start. Build it by hand, properly signed, so only `prev` is wrong.
    let a = alice();
    let first = alices_log().remove(0);
    let bytes = resign(first.bytes(), log::DOMAIN, &a, |f| set(f, 3, vec![7; 32]));
    let entry = SignedEntry::decode(&bytes).expect("well formed and signed");
    let mut log = OwnerLog::new(owner(&a));
    assert_eq!(log.append(entry), Err(LogError::BrokenChain { seq: 1 }));
}

#[test]
fn another_owners_entry_is_refused() {
    let m = mallory();
    let mallorys = write_log(&m, vec![Record::Grant(nth_grant(&m, 1))]);
    let mut log = OwnerLog::new(owner(&alice()));
    assert_eq!(
        log.append(mallorys[0].clone()),
        Err(LogError::WrongOwner {
            expected: owner(&alice()),
            found: owner(&m)
        })
    );
    assert_eq!(
        log.sync(mallorys),
        Err(LogError::WrongOwner {
            expected: owner(&alice()),
            found: owner(&m)
        })
    );
    assert!(log.entries().is_empty());
}

#[test]
fn a_grant_id_appears_in_the_log_once() {
    let a = alice();
    let entries = alices_log();
    let mut log = reader_with(&entries, 5);
    // The same grant again: built by hand, properly chained and signed, so only the
    // duplicate id is wrong.
    let again = next_entry_by_hand(&log, &a, 4, nth_grant(&a, 1).bytes());
    assert_eq!(log.append(again), Err(LogError::DuplicateGrantId(gid(1))));
    // A different grant (another mission, another time) that reuses the id.
    let reused = Grant {
        mission: mission("sys"),
        ..nth_grant(&a, 9).grant().clone()
    };
    let reused = Grant { id: gid(2), ..reused }.sign(&a);
    let entry = next_entry_by_hand(&log, &a, 4, reused.bytes());
    assert_eq!(log.append(entry.clone()), Err(LogError::DuplicateGrantId(gid(2))));
    // `next_entry` refuses to even write it.
    assert_eq!(
        log.next_entry(&a, Record::Grant(reused)),
        Err(LogError::DuplicateGrantId(gid(2)))
    );
    assert_eq!(log.head().seq, 5);
    // And a sync that carries it stops there.
    assert_eq!(log.sync(vec![entry]), Err(LogError::DuplicateGrantId(gid(2))));
    assert_eq!(log.head().seq, 5);
}

/// The entry after `log`'s head holding `record` (tag 4 grant, 5 revocation), encoded
/// and signed by hand rather than by `next_entry`, which would refuse a duplicate.
fn next_entry_by_hand(log: &OwnerLog, signer: &SecretKey, tag: u8, record: &[u8]) -> SignedEntry {
    let head = log.head();
    let fields = vec![
        (1, signer.public().as_bytes().to_vec()),
        (2, (head.seq + 1).to_be_bytes().to_vec()),
        (3, head.hash.0.to_vec()),
        (tag, record.to_vec()),
    ];
    let bytes = seal_fields(log::KIND, log::VERSION, &fields, log::DOMAIN, signer);
    SignedEntry::decode(&bytes).expect("well formed and signed")
}

#[test]
fn a_revocation_can_be_logged_twice() {
    // Only grant ids must be unique; revoking twice is harmless and allowed.
    let a = alice();
    let entries = write_log(
        &a,
        vec![
            Record::Revocation(revoke_bob(&a, 1)),
            Record::Revocation(revoke_bob(&a, 1)),
        ],
    );
    assert_eq!(entries.len(), 2);
}

// ---------------------------------------------------------------------------------------
// Syncing
// ---------------------------------------------------------------------------------------

#[test]
fn sync_catches_up_from_a_prefix() {
    let entries = alices_log();
    let mut log = reader_with(&entries, 2);
    // The proxy sends the whole log: the two we have are checked, three are new.
    let out = log.sync(entries.clone()).expect("a good log");
    assert_eq!(
        out,
        SyncOutcome {
            added: 3,
            offered_older: false
        }
    );
    assert_eq!(log.entries(), &entries[..]);
    // Or only what we lack.
    let mut log = reader_with(&entries, 2);
    let out = log.sync(entries[2..].to_vec()).expect("the tail");
    assert_eq!(out.added, 3);
    // From nothing.
    let mut log = OwnerLog::new(owner(&alice()));
    assert_eq!(log.sync(entries.clone()).expect("all").added, 5);
    // Syncing again changes nothing.
    assert_eq!(
        log.sync(entries),
        Ok(SyncOutcome {
            added: 0,
            offered_older: false
        })
    );
}

#[test]
fn an_older_offer_is_noticed_and_our_state_kept() {
    // The proxy (or a stale peer) offers only the first three entries: a rollback
    // attempt, or just an old copy. Either way we keep our five and say so.
    let entries = alices_log();
    let mut log = reader_with(&entries, 5);
    assert_eq!(
        log.sync(entries[..3].to_vec()),
        Ok(SyncOutcome {
            added: 0,
            offered_older: true
        })
    );
    assert_eq!(log.head().seq, 5);
    // An empty offer is older too, unless we have nothing either.
    assert_eq!(log.sync(vec![]).map(|o| o.offered_older), Ok(true));
    assert_eq!(
        OwnerLog::new(owner(&alice()))
            .sync(vec![])
            .map(|o| o.offered_older),
        Ok(false)
    );
}

#[test]
fn a_fork_is_detected() {
    // Alice's key signed two different entry 2s (two laptops, one key). Whichever we saw
    // first, the other is a fork, and our copy is left as it was.
    let a = alice();
    let ours = alices_log();
    let theirs = write_log(
        &a,
        vec![Record::Grant(nth_grant(&a, 1)), Record::Grant(nth_grant(&a, 42))],
    );
    assert_eq!(ours[0], theirs[0], "the two logs share entry 1");
    let mut log = reader_with(&ours, 3);
    assert_eq!(log.sync(theirs.clone()), Err(LogError::Fork { seq: 2 }));
    assert_eq!(log.entries(), &ours[..3]);
    // Forked at the very first entry.
    let other_start = write_log(&a, vec![Record::Grant(nth_grant(&a, 43))]);
    assert_eq!(log.sync(other_start), Err(LogError::Fork { seq: 1 }));
}

#[test]
fn an_altered_entry_does_not_even_decode() {
    // Flip any single byte of an entry (header, fields, the record inside, the
    // signature): the entry is refused, as malformed or as badly signed.
    let entry = alices_log().remove(2);
    let bytes = entry.bytes();
    for i in 0..bytes.len() {
        let mut altered = bytes.to_vec();
        altered[i] ^= 0x20;
        let r = SignedEntry::decode(&altered);
        assert!(
            matches!(r, Err(RecordError::Decode(_) | RecordError::Signature(_))),
            "byte {i} flipped: {r:?}"
        );
    }
}

#[test]
fn an_entry_dropped_mid_offer_keeps_the_good_ones_before_it() {
    let entries = alices_log();
    let mut log = reader_with(&entries, 1);
    let mut offer = entries.clone();
    offer.remove(3);
    assert_eq!(
        log.sync(offer),
        Err(LogError::Gap {
            expected: 4,
            found: 5
        })
    );
    // Entries 2 and 3 were good and are kept; the next sync can resume from there.
    assert_eq!(log.head().seq, 3);
    assert_eq!(log.head().hash, entries[2].hash());
    assert_eq!(log.sync(entries).map(|o| o.added), Ok(2));
}

#[test]
fn a_log_entry_carries_an_owner_checked_record() {
    // The mirror image of the test in records.rs: Mallory wraps Alice's genuine grant in
    // an entry of her own log. Refused at decoding, before any log sees it.
    let m = mallory();
    let a = alice();
    let fields = vec![
        (1, m.public().as_bytes().to_vec()),
        (2, 1u64.to_be_bytes().to_vec()),
        (3, vec![0; 32]),
        (4, nth_grant(&a, 1).bytes().to_vec()),
    ];
    let bytes = seal_fields(log::KIND, log::VERSION, &fields, log::DOMAIN, &m);
    assert!(matches!(
        SignedEntry::decode(&bytes),
        Err(RecordError::Decode(DecodeError::BadValue { field: "record", .. }))
    ));
}
