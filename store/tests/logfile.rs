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

// ---------------------------------------------------------------------------------------
// Seals: a log this machine verified is not verified again, unless anything changed
// ---------------------------------------------------------------------------------------

mod seals {
    use super::*;
    use wtd_keys::seal::SealKey;
    use wtd_store::logfile::seal_path;

    struct Lab {
        _dir: tempfile::TempDir,
        path: std::path::PathBuf,
        alice: SecretKey,
        owner: OwnerKey,
        /// The machine reading the log (Bob's CLI keeping a copy of Alice's).
        key: SealKey,
    }

    fn lab(entries: u64) -> Lab {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("alice.log");
        let alice = SecretKey::from_seed(&[1; 32]);
        let owner = OwnerKey(alice.public());
        let (mut f, _) = LogFile::open(&path, owner).unwrap();
        for n in 1..=entries {
            append(&mut f, &alice, n);
        }
        Lab {
            _dir: dir,
            path,
            alice,
            owner,
            key: SealKey::derive(&SecretKey::from_seed(&[2; 32])),
        }
    }

    /// Rewrites entry `index` of the file with `edit`, fixing its frame's length and
    /// checksum so that only the entry's own checks can catch it.
    fn edit_entry(path: &std::path::Path, index: usize, edit: impl FnOnce(&mut Vec<u8>)) {
        let data = fs::read(path).unwrap();
        let mut out = data[..8].to_vec();
        let mut pos = 8;
        let mut i = 0;
        let mut edit = Some(edit);
        while pos < data.len() {
            let len = u32::from_be_bytes(data[pos..pos + 4].try_into().unwrap()) as usize;
            let mut entry = data[pos + 4..pos + 4 + len].to_vec();
            if i == index {
                (edit.take().unwrap())(&mut entry);
            }
            out.extend_from_slice(&(entry.len() as u32).to_be_bytes());
            out.extend_from_slice(&entry);
            out.extend_from_slice(&sha2::Sha256::digest(&entry)[..8]);
            pos += 4 + len + 8;
            i += 1;
        }
        fs::write(path, out).unwrap();
    }

    use sha2::Digest;

    #[test]
    fn the_second_open_verifies_nothing_and_a_new_entry_only_itself() {
        let l = lab(4);
        let (f, report) = LogFile::open_sealed(&l.path, l.owner, &l.key).unwrap();
        assert_eq!(report.verified, 4, "no seal yet: everything is verified");
        let head = f.log().head();
        drop(f);
        assert!(seal_path(&l.path).exists());

        let (mut f, report) = LogFile::open_sealed(&l.path, l.owner, &l.key).unwrap();
        assert_eq!(report.verified, 0);
        assert_eq!(f.log().head(), head);
        assert_eq!(f.log().grants().count(), 4);
        append(&mut f, &l.alice, 5);
        drop(f);

        let (f, report) = LogFile::open_sealed(&l.path, l.owner, &l.key).unwrap();
        assert_eq!(report.verified, 1, "only the entry after the sealed head");
        assert_eq!(f.log().entries().len(), 5);
        drop(f);
        let (_, report) = LogFile::open_sealed(&l.path, l.owner, &l.key).unwrap();
        assert_eq!(report.verified, 0);
    }

    #[test]
    fn an_edited_entry_is_refused_even_under_a_seal() {
        for index in [0, 2] {
            let l = lab(3);
            drop(LogFile::open_sealed(&l.path, l.owner, &l.key).unwrap());
            // Flip a bit of the entry's signature: the bytes change, so the chain no
            // longer reaches the sealed head and every signature is checked.
            edit_entry(&l.path, index, |e| {
                let last = e.len() - 1;
                e[last] ^= 1;
            });
            match LogFile::open_sealed(&l.path, l.owner, &l.key) {
                Err(LogFileError::Corrupt { reason, .. }) => {
                    assert!(reason.contains("does not verify"), "{reason}")
                }
                other => panic!("entry {index} edited: expected a refusal, got {other:?}"),
            }
        }
    }

    #[test]
    fn a_seal_that_does_not_vouch_is_ignored_and_everything_verified() {
        let l = lab(3);
        drop(LogFile::open_sealed(&l.path, l.owner, &l.key).unwrap());
        let seal = fs::read(seal_path(&l.path)).unwrap();

        // Made by another machine's key.
        let other = SealKey::derive(&SecretKey::from_seed(&[3; 32]));
        let (_, report) = LogFile::open_sealed(&l.path, l.owner, &other).unwrap();
        assert_eq!(report.verified, 3);

        // Damaged (and then rewritten by the open that verified everything).
        for damaged in [vec![], seal[..40].to_vec(), {
            let mut s = seal.clone();
            s[50] ^= 0x80;
            s
        }] {
            fs::write(seal_path(&l.path), &damaged).unwrap();
            let (_, report) = LogFile::open_sealed(&l.path, l.owner, &l.key).unwrap();
            assert_eq!(report.verified, 3);
            let (_, report) = LogFile::open_sealed(&l.path, l.owner, &l.key).unwrap();
            assert_eq!(report.verified, 0, "resealed");
        }

        // The seal of another owner's log, copied next to this one.
        let m = lab(3);
        let carol = SecretKey::from_seed(&[4; 32]);
        let carol_path = m.path.with_file_name("carol.log");
        {
            let (mut f, _) = LogFile::open(&carol_path, OwnerKey(carol.public())).unwrap();
            for n in 1..=3 {
                append(&mut f, &carol, n);
            }
        }
        drop(LogFile::open_sealed(&carol_path, OwnerKey(carol.public()), &m.key).unwrap());
        fs::copy(seal_path(&carol_path), seal_path(&m.path)).unwrap();
        let (_, report) = LogFile::open_sealed(&m.path, m.owner, &m.key).unwrap();
        assert_eq!(report.verified, 3);
    }

    #[test]
    fn a_log_shorter_than_its_seal_is_verified_in_full() {
        let l = lab(3);
        drop(LogFile::open_sealed(&l.path, l.owner, &l.key).unwrap());
        let sealed = fs::read(seal_path(&l.path)).unwrap();
        // Back to two entries (a restored backup), keeping the seal of three.
        let data = fs::read(&l.path).unwrap();
        let mut pos = 8;
        for _ in 0..2 {
            let len = u32::from_be_bytes(data[pos..pos + 4].try_into().unwrap()) as usize;
            pos += 4 + len + 8;
        }
        fs::write(&l.path, &data[..pos]).unwrap();
        let (f, report) = LogFile::open_sealed(&l.path, l.owner, &l.key).unwrap();
        assert_eq!((f.log().entries().len(), report.verified), (2, 2));
        drop(f);
        assert_ne!(
            fs::read(seal_path(&l.path)).unwrap(),
            sealed,
            "sealed at the new head"
        );
    }

    #[test]
    fn a_plain_open_neither_reads_nor_writes_a_seal() {
        let l = lab(2);
        let (_, report) = LogFile::open(&l.path, l.owner).unwrap();
        assert_eq!(report.verified, 2);
        assert!(!seal_path(&l.path).exists());
        drop(LogFile::open_sealed(&l.path, l.owner, &l.key).unwrap());
        let (_, report) = LogFile::open(&l.path, l.owner).unwrap();
        assert_eq!(report.verified, 2);
    }
}

#[test]
fn a_batch_is_one_append_and_all_or_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("owner.log");
    let alice = SecretKey::from_seed(&[1; 32]);
    let owner = OwnerKey(alice.public());
    let (mut f, _) = LogFile::open(&path, owner).unwrap();
    append(&mut f, &alice, 1);
    // A lesson of three grants, chained in memory, then written at once.
    let mut scratch = f.log().clone();
    let mut batch = Vec::new();
    for n in 2..=4 {
        let e = scratch.next_entry(&alice, grant(&alice, n)).unwrap();
        scratch.append(e.clone()).unwrap();
        batch.push(e);
    }
    let len_before = fs::metadata(&path).unwrap().len();
    // A batch whose last entry does not chain (built on the old head) is refused whole.
    let stray = f.log().next_entry(&alice, grant(&alice, 9)).unwrap();
    let mut bad = batch.clone();
    bad.push(stray);
    assert!(matches!(f.append_batch(bad), Err(LogFileError::Entry { .. })));
    assert_eq!(fs::metadata(&path).unwrap().len(), len_before, "nothing written");
    assert_eq!(f.log().entries().len(), 1);
    f.append_batch(batch).unwrap();
    assert_eq!(f.log().entries().len(), 4);
    drop(f);
    let (f, report) = LogFile::open(&path, owner).unwrap();
    assert_eq!(report.torn_tail_bytes, 0);
    assert_eq!(f.log().entries().len(), 4, "the batch survives reopen");
}
