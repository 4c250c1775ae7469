//! Valid inputs to start fuzzing from: random bytes almost never carry a valid signature,
//! so without these the fuzzer would never get past the first check of a log or a frame.
//! `wtd-fuzz-seeds DIR` writes them to `DIR/<target>/`; `scripts/fuzz.sh` calls it.

use wtd_keys::log::{OwnerLog, Record};
use wtd_keys::{Audience, Grant, GrantId, OwnerKey, Rate, Revocation, SecretKey, Target, Timestamp, UserKey};
use wtd_wire::{encode, Advert, AgentHello, FunctionInfo, Key, MissionInfo, Open};

use crate::files::fuzz_owner;

/// The key of [`fuzz_owner`], so seeds can be signed by the owner the checks expect.
fn owner_secret() -> SecretKey {
    SecretKey::from_seed(&[7; 32])
}

fn grant(n: u64) -> Record {
    let owner = owner_secret();
    Record::Grant(
        Grant {
            id: GrantId([n as u8; 16]),
            issuer: OwnerKey(owner.public()),
            subject: UserKey(SecretKey::from_seed(&[9; 32]).public()),
            audience: Audience::AllAgents,
            mission: "demo".parse().expect("a mission name"),
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
        .sign(&owner),
    )
}

/// A three-entry owner log of [`fuzz_owner`] (two grants and a revocation), as its file.
pub fn owner_log_file() -> Vec<u8> {
    let owner = owner_secret();
    let mut log = OwnerLog::new(fuzz_owner());
    let revocation = Record::Revocation(
        Revocation {
            issuer: OwnerKey(owner.public()),
            target: Target::Grant(GrantId([1; 16])),
            issued_at: Timestamp(5_000),
        }
        .sign(&owner),
    );
    let mut file = b"WTDLOG1\n".to_vec();
    for record in [grant(1), grant(2), revocation] {
        let entry = log.next_entry(&owner, record).expect("chains on");
        let bytes = entry.bytes().to_vec();
        file.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
        file.extend_from_slice(&bytes);
        file.extend_from_slice(&sha2_prefix(&bytes));
        log.append(entry).expect("appends");
    }
    file
}

/// The store's frame checksum: the first 8 bytes of SHA-256 (`wtd_store::logfile`).
fn sha2_prefix(bytes: &[u8]) -> [u8; 8] {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes)[..8].try_into().expect("8 bytes")
}

fn advert() -> Advert {
    Advert {
        name: "pi-1".into(),
        owners: vec![Key::from(owner_secret().public())],
        missions: vec![MissionInfo {
            name: "demo".into(),
            version: "1".into(),
            description: "".into(),
            functions: vec![FunctionInfo {
                name: "echo".into(),
                description: "".into(),
                idempotent: true,
            }],
        }],
        tags: vec!["lab".into()],
        model: None,
        software: "wtd 0.1".into(),
        warnings: vec![],
        enrollment: None,
    }
}

/// Every seed, as (target, file name, bytes).
pub fn all() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let Record::Grant(g) = grant(1) else {
        unreachable!()
    };
    let hello = Open::Agent(AgentHello {
        version: wtd_wire::PROTOCOL_VERSION,
        advert: advert(),
        heads: vec![],
    });
    let mut frames = Vec::new();
    wtd_wire::encode_frame_into(&hello, &mut frames);
    // A lesson's end: one set revocation of three grants (revocation target 4).
    let owner = owner_secret();
    let lesson = Revocation {
        issuer: OwnerKey(owner.public()),
        target: Target::Grants {
            label: "roster-2026-12-03".into(),
            grants: vec![GrantId([1; 16]), GrantId([2; 16]), GrantId([3; 16])],
        },
        issued_at: Timestamp(6_000),
    }
    .sign(&owner);
    vec![
        ("open_owner_log", "three-entries", owner_log_file()),
        ("decode_grant", "grant", g.bytes().to_vec()),
        ("decode_revocation", "lesson-set", lesson.bytes().to_vec()),
        ("decode_advert", "advert", encode(&advert())),
        ("decode_frames", "agent-hello", frames),
        ("decode_event", "event", event().bytes().to_vec()),
        ("decode_call", "tagged-job", tagged_job().bytes().to_vec()),
    ]
}

/// A job with a selector (format version 2: a tag and `--coolest`), signed by its caller,
/// so the fuzzer starts past the signature and into the selector fields.
pub fn tagged_job() -> wtd_keys::job::SignedJob {
    use wtd_keys::job::{Job, JobSelector, Order};
    let bob = SecretKey::from_seed(&[2; 32]);
    Job::new(
        UserKey(bob.public()),
        None,
        "demo".parse().expect("a name"),
        "echo".parse().expect("a name"),
        b"{}",
        Timestamp(1_000),
        Timestamp(3_601_000),
        true,
        OwnerKey(owner_secret().public()),
    )
    .with_selector(JobSelector {
        tag: Some("gpu".parse().expect("a name")),
        order: Order::Coolest,
    })
    .sign(&bob)
}

/// A real signed event, with a dependency, as an agent publishes one.
pub fn event() -> wtd_keys::event::SignedEvent {
    use wtd_keys::event::{Dep, EventLog, LogId};
    let k = wtd_keys::SecretKey::from_seed(&[7; 32]);
    let log = EventLog::new(LogId {
        publisher: wtd_keys::AgentId(k.public()),
        mission: wtd_keys::MissionName::new("fuzz").expect("a name"),
    });
    let dep = Dep {
        log: LogId {
            publisher: wtd_keys::AgentId(wtd_keys::SecretKey::from_seed(&[8; 32]).public()),
            mission: wtd_keys::MissionName::new("other").expect("a name"),
        },
        seq: 3,
    };
    log.next(
        &k,
        wtd_keys::Timestamp(1_900_000_000_000),
        wtd_keys::TopicName::new("posted").expect("a name"),
        r#"{"photo":"beach.jpg"}"#.into(),
        vec![dep],
    )
    .expect("a valid event")
}
