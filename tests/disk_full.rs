//! A full disk while persisting: the state dir on a small tmpfs this test mounts (it runs as
//! root; without the right to mount it says so and skips). Each write that does not fit
//! gives a clear error, the old state stays intact, and everything recovers once there is
//! room again.
//!
//! # Index
//! - `the_owner_log_and_atomic_writes_keep_the_old_state_when_the_disk_is_full`: the store
//! - `an_agent_on_a_full_disk_keeps_its_state_and_catches_up_when_space_returns`: real
//!   proxy, agent and CLI

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{wait_for, TestCluster};
use wtd_keys::log::Record;
use wtd_keys::{Audience, Grant, GrantId, OwnerKey, Rate, SecretKey, Timestamp, UserKey};
use wtd_store::logfile::LogFile;

const LIMIT: Duration = Duration::from_secs(30);

/// A tmpfs of `size` mounted at `at`, unmounted when dropped.
struct SmallDisk {
    at: PathBuf,
}

impl SmallDisk {
    /// `None` (after saying why) when this machine does not let the test mount one.
    fn mount(at: &Path, size: &str) -> Option<SmallDisk> {
        std::fs::create_dir_all(at).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "tmpfs"])
            .arg(at)
            .output();
        match out {
            Ok(o) if o.status.success() => Some(SmallDisk { at: at.to_path_buf() }),
            Ok(o) => {
                eprintln!(
                    "SKIPPED: cannot mount a {size} tmpfs at {} (the test needs root): {}",
                    at.display(),
                    String::from_utf8_lossy(&o.stderr).trim()
                );
                None
            }
            Err(e) => {
                eprintln!("SKIPPED: cannot run mount(8): {e}");
                None
            }
        }
    }

    /// Fills what is left with a filler file; returns its path.
    fn fill(&self) -> PathBuf {
        use std::io::Write;
        let path = self.at.join("filler");
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap();
        let chunk = [0xa5u8; 4096];
        for _ in 0..100_000 {
            if f.write_all(&chunk).is_err() {
                break;
            }
        }
        // Whatever is left is less than a page: take it byte by byte.
        for _ in 0..4096 {
            if f.write_all(&[0xa5]).is_err() {
                break;
            }
        }
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.at).status();
    }
}

fn grant(owner: &SecretKey, n: u64) -> Record {
    Record::Grant(
        Grant {
            id: GrantId([n as u8; 16]),
            issuer: OwnerKey(owner.public()),
            subject: UserKey(SecretKey::from_seed(&[7; 32]).public()),
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

#[test]
fn the_owner_log_and_atomic_writes_keep_the_old_state_when_the_disk_is_full() {
    let dir = tempfile::tempdir().unwrap();
    let Some(disk) = SmallDisk::mount(&dir.path().join("disk"), "64k") else {
        return;
    };
    let alice = SecretKey::from_seed(&[1; 32]);
    let owner = OwnerKey(alice.public());
    let path = disk.at.join("owner.log");
    let small = disk.at.join("keyring.toml");
    wtd_store::atomic::write_atomic(&small, b"v1\n", 0o600).unwrap();

    let (mut log, _) = LogFile::open(&path, owner).unwrap();
    let entry = log.log().next_entry(&alice, grant(&alice, 1)).unwrap();
    log.append(entry).unwrap();
    let filler = disk.fill();

    // Append until the disk refuses (the last page may still hold a record or two).
    let mut acknowledged = 1;
    let err = loop {
        let n = acknowledged + 1;
        let entry = log.log().next_entry(&alice, grant(&alice, n)).unwrap();
        match log.append(entry) {
            Ok(()) => acknowledged += 1,
            Err(e) => break e,
        }
        assert!(acknowledged < 100, "a full 64k disk took 100 records");
    };
    let msg = err.to_string();
    println!("owner log on a full disk: {msg}");
    assert!(
        msg.contains("owner.log") && msg.contains("No space left"),
        "{msg}"
    );
    assert_eq!(
        log.log().entries().len(),
        acknowledged as usize,
        "the refused record is not in memory"
    );

    // An atomic write that does not fit: refused, the old content intact, no temp file left.
    let big = vec![b'x'; 32 * 1024];
    let msg = wtd_store::atomic::write_atomic(&small, &big, 0o600)
        .unwrap_err()
        .to_string();
    println!("atomic write on a full disk: {msg}");
    assert!(msg.contains("No space left"), "{msg}");
    assert_eq!(std::fs::read(&small).unwrap(), b"v1\n");
    let leftovers: Vec<_> = std::fs::read_dir(&disk.at)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp."))
        .collect();
    assert!(leftovers.is_empty(), "temp files left behind: {leftovers:?}");

    // Reopened while still full: exactly what was acknowledged, nothing torn.
    drop(log);
    let (log, report) = LogFile::open(&path, owner).unwrap();
    assert_eq!(
        (log.log().entries().len(), report.torn_tail_bytes),
        (acknowledged as usize, 0)
    );
    drop(log);

    // Space returns: both writes go through.
    std::fs::remove_file(&filler).unwrap();
    let (mut log, _) = LogFile::open(&path, owner).unwrap();
    let entry = log
        .log()
        .next_entry(&alice, grant(&alice, acknowledged + 1))
        .unwrap();
    log.append(entry).unwrap();
    drop(log);
    let (log, _) = LogFile::open(&path, owner).unwrap();
    assert_eq!(log.log().entries().len(), acknowledged as usize + 1);
    wtd_store::atomic::write_atomic(&small, &big, 0o600).unwrap();
    assert_eq!(std::fs::read(&small).unwrap(), big);
}

#[test]
fn an_agent_on_a_full_disk_keeps_its_state_and_catches_up_when_space_returns() {
    let lab = TestCluster::new();
    let Some(disk) = SmallDisk::mount(&lab.dir().join("agents/pi/state"), "256k") else {
        return;
    };
    let proxy = lab.start_proxy();
    let alice = lab.user("alice");
    let alice_id = alice.init();
    alice.ok(["join", &proxy.ticket]);
    let bob = lab.user("bob");
    alice.ok(["keys", "add", "bob", &bob.init()]);
    let agent = lab.add_agent(&proxy.ticket, "pi", &[&alice_id], "");
    alice.adopt(&agent);
    alice.ok([
        "grant",
        "bob",
        "--mission",
        "demo",
        "--rate",
        "10/min",
        "--expires",
        "2h",
    ]);
    let owner: OwnerKey = alice_id.parse().unwrap();
    let name = wtd_agent::owner_logs::log_path(Path::new(""), &owner);
    let agent_log = disk.at.join("logs").join(name);
    let mine = || std::fs::read(alice.home.join("owner.log")).unwrap();
    let before = mine();
    wait_for("the agent to hold Alice's log", LIMIT, || {
        std::fs::read(&agent_log).is_ok_and(|b| b == before)
    });

    // The disk fills up; Alice keeps granting (the proxy stores each, the CLI succeeds)
    // until the agent runs out of room (the last page of its log file holds a few records
    // after the disk is otherwise full), then revokes.
    let filler = disk.fill();
    let mut grants = 0;
    while !agent.daemon.output().contains("No space left") {
        assert!(
            grants < 40,
            "40 grants fit on a full disk?\n{}",
            agent.daemon.output()
        );
        alice.ok([
            "grant",
            "bob",
            "--mission",
            "sys",
            "--rate",
            "10/min",
            "--expires",
            "2h",
        ]);
        grants += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    alice.ok(["revoke", "bob", "--mission", "demo"]);
    let after = mine();
    println!("the agent's disk was full after {grants} more grants");
    let held = std::fs::read(&agent_log).unwrap();
    assert!(
        after.starts_with(&held) && held.len() >= before.len(),
        "the agent's log is what it had, plus whole records at most"
    );
    let line = agent
        .daemon
        .output()
        .lines()
        .find(|l| l.contains("No space left"))
        .unwrap_or_default()
        .to_string();
    println!("agent on a full disk: {line}");
    assert!(line.contains("free some space"), "{line}");

    // Space returns: the agent reconnects, the proxy sends the rest, the revocation lands.
    std::fs::remove_file(&filler).unwrap();
    let waited = wait_for("the agent to catch up", LIMIT, || {
        std::fs::read(&agent_log).is_ok_and(|b| b == after)
    });
    println!("agent caught up {waited:?} after space returned");
    drop(agent);
}
