//! Event log files: torn tails cut, damage refused, trimming atomic, appends checked.

use std::io::Write;

use wtd_keys::event::{EventLog, LogId, SignedEvent};
use wtd_keys::{AgentId, MissionName, SecretKey, Timestamp, TopicName};
use wtd_store::eventfile::{EventFile, EventFileError};

fn setup() -> (SecretKey, LogId) {
    let k = SecretKey::from_seed(&[4; 32]);
    let id = LogId {
        publisher: AgentId(k.public()),
        mission: MissionName::new("social").unwrap(),
    };
    (k, id)
}

fn next(k: &SecretKey, log: &EventLog) -> SignedEvent {
    log.next(
        k,
        Timestamp(1),
        TopicName::new("t").unwrap(),
        "{}".into(),
        Vec::new(),
    )
    .unwrap()
}

fn write_three(path: &std::path::Path) -> Vec<SignedEvent> {
    let (k, id) = setup();
    let mut f = EventFile::open(path, id).unwrap().file;
    (0..3)
        .map(|_| {
            let e = next(&k, f.log());
            f.append(&e).unwrap();
            e
        })
        .collect()
}

#[test]
fn events_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("social.events");
    let written = write_three(&path);
    let opened = EventFile::open(&path, setup().1).unwrap();
    assert_eq!(opened.events, written);
    assert_eq!(opened.torn_tail_bytes, 0);
    assert_eq!(opened.file.log().head().0, 3);
}

#[test]
fn a_torn_last_frame_is_cut_off_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("social.events");
    write_three(&path);
    let len = std::fs::metadata(&path).unwrap().len();
    for cut in [1u64, 5, 40] {
        let copy = dir.path().join(format!("cut{cut}"));
        std::fs::copy(&path, &copy).unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&copy)
            .unwrap()
            .set_len(len - cut)
            .unwrap();
        let opened = EventFile::open(&copy, setup().1).unwrap();
        assert_eq!(opened.events.len(), 2, "cut {cut}");
        assert!(opened.torn_tail_bytes > 0);
        // And the next append follows the good events.
        let (k, _) = setup();
        let mut f = opened.file;
        let e = next(&k, f.log());
        f.append(&e).unwrap();
        drop(f); // the file is locked while open
        assert_eq!(EventFile::open(&copy, setup().1).unwrap().events.len(), 3);
    }
}

#[test]
fn damage_before_the_last_frame_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("social.events");
    write_three(&path);
    let mut data = std::fs::read(&path).unwrap();
    data[20] ^= 0xff;
    std::fs::write(&path, &data).unwrap();
    let err = EventFile::open(&path, setup().1).unwrap_err();
    assert!(matches!(err, EventFileError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("move it aside"), "{err}");
}

#[test]
fn another_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x");
    std::fs::File::create(&path)
        .unwrap()
        .write_all(b"hello world, not a log")
        .unwrap();
    assert!(matches!(
        EventFile::open(&path, setup().1),
        Err(EventFileError::Corrupt { .. })
    ));
}

#[test]
fn a_log_of_another_mission_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("social.events");
    write_three(&path);
    let (_, mut id) = setup();
    id.mission = MissionName::new("photos").unwrap();
    assert!(matches!(
        EventFile::open(&path, id),
        Err(EventFileError::Corrupt { .. })
    ));
}

#[test]
fn an_append_that_does_not_follow_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("social.events");
    let (k, id) = setup();
    let mut f = EventFile::open(&path, id.clone()).unwrap().file;
    let mut ahead = EventLog::new(id);
    let first = next(&k, &ahead);
    ahead.appended(&first);
    let second = next(&k, &ahead);
    assert!(
        matches!(f.append(&second), Err(EventFileError::Entry { .. })),
        "a gap"
    );
    f.append(&first).unwrap();
    assert!(
        matches!(f.append(&first), Err(EventFileError::Entry { .. })),
        "a repeat"
    );
}

#[test]
fn trimming_keeps_the_newest_and_the_chain_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("social.events");
    let written = write_three(&path);
    let (k, id) = setup();
    let mut f = EventFile::open(&path, id.clone()).unwrap().file;
    assert!(f.trim(&written[..1]).is_err(), "the head must be kept");
    f.trim(&written[2..]).unwrap();
    let e = next(&k, f.log());
    f.append(&e).unwrap();
    drop(f);
    let opened = EventFile::open(&path, id).unwrap();
    let seqs: Vec<u64> = opened.events.iter().map(|e| e.event().seq).collect();
    assert_eq!(seqs, vec![3, 4]);
}
