//! Crash safety of the owner log on disk.
//!
//! The lab: write a log, then pretend the power was cut at every possible byte of the
//! last append, and check what reopening finds.

use std::fs;

use wtd_keys::log::Record;
use wtd_keys::{Audience, Grant, GrantId, OwnerKey, Rate, SecretKey, Timestamp, UserKey};
use wtd_store::logfile::{LogFile, LogFileError};

fn grant(owner: &SecretKey, n: u64) -> Record {
    let bob = SecretKey::from_seed(&[7; 32]).public();
    Record::Grant(
        Grant {
            id: GrantId([n as u8; 16]),
            issuer: OwnerKey(owner.public()),
            subject: UserKey(bob),
            audience: Audience::AllAgents,
            mission: "demo".parse().unwrap(),
            rate: Rate {
                calls: 10,
                period_ms: 60_000,
            },
            burst: 10,
            concurrency: 2,
            not_before: Timestamp(n * 1000),
            expires: Timestamp(n * 1000 + 3_600_000),
            issued_at: Timestamp(n * 1000),
        }
        .sign(owner),
    )
}

fn append(file: &mut LogFile, owner: &SecretKey, n: u64) {
    let entry = file.log().next_entry(owner, grant(owner, n)).unwrap();
    file.append(entry).unwrap();
}

#[test]
fn appends_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("owner.log");
    let alice = SecretKey::from_seed(&[1; 32]);
    let owner = OwnerKey(alice.public());
    {
        let (mut f, report) = LogFile::open(&path, owner).unwrap();
        assert_eq!(report.torn_tail_bytes, 0);
        for n in 1..=3 {
            append(&mut f, &alice, n);
        }
    }
    let (f, report) = LogFile::open(&path, owner).unwrap();
    assert_eq!(report.torn_tail_bytes, 0);
    assert_eq!(f.log().entries().len(), 3);
}

#[test]
fn a_torn_last_record_is_cut_off_at_every_byte_offset() {
    // Hundreds of reopen-and-fsync rounds: on tmpfs, where fsync is free, when there is one.
    // What is tested is the parsing of every possible torn tail, not the disk.
    let dir = tempfile::tempdir_in("/dev/shm")
        .or_else(|_| tempfile::tempdir())
        .unwrap();
    let path = dir.path().join("owner.log");
    let alice = SecretKey::from_seed(&[1; 32]);
    let owner = OwnerKey(alice.public());
    let (mut f, _) = LogFile::open(&path, owner).unwrap();
    append(&mut f, &alice, 1);
    append(&mut f, &alice, 2);
    let before_last = fs::metadata(&path).unwrap().len();
    append(&mut f, &alice, 3);
    drop(f);
    let whole = fs::read(&path).unwrap();
    let acknowledged: Vec<_> = {
        let (f, _) = LogFile::open(&path, owner).unwrap();
        f.log().entries().iter().map(|e| e.hash()).collect()
    };

    for cut in before_last..whole.len() as u64 {
        fs::write(&path, &whole[..cut as usize]).unwrap();
        let (mut f, report) = LogFile::open(&path, owner).unwrap();
        // The two acknowledged records are all there, and the torn one is not.
        let hashes: Vec<_> = f.log().entries().iter().map(|e| e.hash()).collect();
        assert_eq!(hashes, acknowledged[..2], "cut at {cut}");
        assert_eq!(report.torn_tail_bytes, cut - before_last, "cut at {cut}");
        // The file was shortened to the last whole record, and appending works again.
        assert_eq!(fs::metadata(&path).unwrap().len(), before_last);
        append(&mut f, &alice, 3);
        drop(f);
        let (f, report) = LogFile::open(&path, owner).unwrap();
        assert_eq!(report.torn_tail_bytes, 0);
        assert_eq!(f.log().entries().len(), 3);
    }
}

#[test]
fn a_full_length_garbage_tail_is_torn_but_damage_before_it_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("owner.log");
    let alice = SecretKey::from_seed(&[1; 32]);
    let owner = OwnerKey(alice.public());
    let (mut f, _) = LogFile::open(&path, owner).unwrap();
    append(&mut f, &alice, 1);
    let first_end = fs::metadata(&path).unwrap().len() as usize;
    append(&mut f, &alice, 2);
    drop(f);
    let whole = fs::read(&path).unwrap();

    // Zeros where the last record's data should be (a power cut after the file grew).
    let mut zeroed = whole.clone();
    for b in &mut zeroed[first_end + 4..] {
        *b = 0;
    }
    fs::write(&path, &zeroed).unwrap();
    let (f, report) = LogFile::open(&path, owner).unwrap();
    assert_eq!(f.log().entries().len(), 1);
    assert!(report.torn_tail_bytes > 0);
    drop(f);

    // One flipped byte inside the *first* record is damage, not a torn write.
    let mut damaged = whole.clone();
    damaged[20] ^= 1;
    fs::write(&path, &damaged).unwrap();
    assert!(matches!(
        LogFile::open(&path, owner),
        Err(LogFileError::Corrupt { offset: 8, .. })
    ));
    // The refused file was left alone for the owner to restore.
    assert_eq!(fs::read(&path).unwrap(), damaged);
}

#[test]
fn refuses_other_files_and_other_owners() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("owner.log");
    fs::write(&path, b"hello, this is not a log").unwrap();
    let alice = SecretKey::from_seed(&[1; 32]);
    assert!(matches!(
        LogFile::open(&path, OwnerKey(alice.public())),
        Err(LogFileError::Corrupt { offset: 0, .. })
    ));

    let path = dir.path().join("alice.log");
    let (mut f, _) = LogFile::open(&path, OwnerKey(alice.public())).unwrap();
    append(&mut f, &alice, 1);
    drop(f);
    let mallory = SecretKey::from_seed(&[2; 32]);
    assert!(matches!(
        LogFile::open(&path, OwnerKey(mallory.public())),
        Err(LogFileError::Entry { .. })
    ));
}

#[test]
fn an_entry_that_does_not_chain_is_not_written() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("owner.log");
    let alice = SecretKey::from_seed(&[1; 32]);
    let (mut f, _) = LogFile::open(&path, OwnerKey(alice.public())).unwrap();
    let stale = f.log().next_entry(&alice, grant(&alice, 1)).unwrap();
    append(&mut f, &alice, 2);
    let len = fs::metadata(&path).unwrap().len();
    assert!(matches!(f.append(stale), Err(LogFileError::Entry { .. })));
    assert_eq!(fs::metadata(&path).unwrap().len(), len);
}
