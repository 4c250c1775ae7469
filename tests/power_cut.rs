//! Power cuts: the agent's and the proxy's state files truncated or zeroed at random
//! offsets, then opened again. Each must start with its last good state (a prefix of what
//! it had: a torn tail is cut, and the proxy sends the rest again) or refuse with a message
//! that names the file, never start with a silently wrong state.
//!
//! The lab: a real proxy, agent and owner build real state (an adoption, three grants, a
//! revocation), then stop. A seeded loop (`WTD_POWER_CUT_SEED`, `WTD_POWER_CUT_CASES` to
//! change it) damages copies of the state and opens them through the code the agent and
//! the proxy run at start (`OwnerLogs::open`, `LogStore::open`, `identity::load`,
//! `floor::read`). Then a few cases with the real processes: a damaged agent or proxy
//! starts and catches up, or refuses and says why.
//!
//! # Index
//! - `random_truncations_and_zeroed_ranges_never_start_a_wrong_state`
//! - `damaged_real_processes_catch_up_or_refuse`: a torn tail on either side is cut and
//!   caught up (the proxy re-sends to the agent; `wtd sync` re-sends to the proxy); a zeroed
//!   record in the middle makes either refuse to start, naming the file

mod common;

use std::path::Path;
use std::time::Duration;

use common::{wait_for, Agent, Proxy, TestCluster, User};
use wtd_keys::log::EntryHash;
use wtd_keys::OwnerKey;

const LIMIT: Duration = Duration::from_secs(30);

/// xorshift64*: a tiny seeded generator, so a failing case can be rerun by its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
}

/// One owner with real state on an agent and a proxy, all stopped.
struct Built {
    lab: TestCluster,
    proxy: Proxy,
    agent: Agent,
    alice: User,
    owner: OwnerKey,
    /// The hashes of Alice's log entries, in order: every good state is a prefix of these.
    entries: Vec<EntryHash>,
}

fn owner_log_name(owner: &OwnerKey) -> String {
    wtd_agent::owner_logs::log_path(Path::new(""), owner)
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

fn build() -> Built {
    let lab = TestCluster::new();
    let proxy = lab.start_proxy();
    let alice = lab.user("alice");
    let alice_id = alice.init();
    alice.ok(["join", &proxy.ticket]);
    let bob = lab.user("bob");
    let bob_id = bob.init();
    alice.ok(["keys", "add", "bob", &bob_id]);
    let agent = lab.add_agent(&proxy.ticket, "pi", &[&alice_id], "");
    alice.adopt(&agent);
    for mission in ["demo", "sys", "files"] {
        alice.ok([
            "grant",
            "bob",
            "--mission",
            mission,
            "--rate",
            "10/min",
            "--expires",
            "2h",
        ]);
    }
    alice.ok(["revoke", "bob", "--mission", "files"]);
    // A call, so the agent saves its time floor too.
    alice.ok(["call", "demo/echo", r#"{"msg":"hi"}"#]);
    let owner: OwnerKey = alice_id.parse().unwrap();
    // The agent and the proxy hold the same frames as Alice's own file once in sync.
    let mine = std::fs::read(alice.home.join("owner.log")).unwrap();
    let name = owner_log_name(&owner);
    let on_agent = agent.dir.join("state/logs").join(&name);
    let on_proxy = proxy.state_dir.join("logs").join(&name);
    wait_for("the agent and the proxy to hold Alice's whole log", LIMIT, || {
        std::fs::read(&on_agent).is_ok_and(|b| b == mine) && std::fs::read(&on_proxy).is_ok_and(|b| b == mine)
    });
    let entries = {
        let (f, _) = wtd_store::logfile::LogFile::open(&alice.home.join("owner.log"), owner).unwrap();
        f.log().entries().iter().map(|e| e.hash()).collect::<Vec<_>>()
    };
    assert_eq!(entries.len(), 5, "an adoption, three grants, a revocation");
    let mut built = Built {
        lab,
        proxy,
        agent,
        alice,
        owner,
        entries,
    };
    built.agent.daemon.stop();
    built.proxy.daemon.stop();
    built
}

/// Copies a directory tree (state dirs are small and flat).
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Damage {
    /// The file ends at `at`.
    Truncate { at: u64 },
    /// `len` bytes from `at` are zeros (a sector that never made it).
    Zero { at: u64, len: u64 },
}

fn damage(path: &Path, how: Damage) {
    let mut bytes = std::fs::read(path).unwrap();
    match how {
        Damage::Truncate { at } => bytes.truncate(at as usize),
        Damage::Zero { at, len } => {
            let end = (at + len).min(bytes.len() as u64) as usize;
            bytes[at as usize..end].fill(0);
        }
    }
    std::fs::write(path, bytes).unwrap();
}

/// What opening a damaged state found.
#[derive(Debug, Default)]
struct Tally {
    whole: usize,
    shorter: usize,
    refused: usize,
}

/// Checks an opened owner log: a prefix of the good entries. Returns whether it is whole.
fn is_prefix(got: &[EntryHash], good: &[EntryHash], what: &str) -> bool {
    assert!(
        got.len() <= good.len() && got == &good[..got.len()],
        "{what}: opened a log that is not a prefix of the good one"
    );
    got.len() == good.len()
}

#[test]
fn random_truncations_and_zeroed_ranges_never_start_a_wrong_state() {
    let built = build();
    let seed: u64 = std::env::var("WTD_POWER_CUT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_0fc0_ffee);
    let cases: usize = std::env::var("WTD_POWER_CUT_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(400);
    let mut rng = Rng(seed | 1);
    let scratch = tempfile::tempdir_in("/dev/shm")
        .or_else(|_| tempfile::tempdir())
        .unwrap();
    let agent_state = built.agent.dir.join("state");
    let proxy_state = built.proxy.state_dir.clone();
    let agent_key = wtd_store::identity::load(&agent_state.join("identity.key"))
        .unwrap()
        .public();
    let proxy_key = wtd_store::identity::load(&proxy_state.join("identity.key"))
        .unwrap()
        .public();
    let floor = wtd_store::floor::read(&agent_state.join("time-floor")).unwrap();
    let log_name = owner_log_name(&built.owner);
    let mut tallies: std::collections::BTreeMap<String, Tally> = Default::default();

    for case in 0..cases {
        let proxy_side = rng.below(2) == 1;
        let (pristine, key) = if proxy_side {
            (&proxy_state, proxy_key)
        } else {
            (&agent_state, agent_key)
        };
        let dir = scratch.path().join(format!("case-{case}"));
        copy_dir(pristine, &dir);
        let mut files = vec![format!("logs/{log_name}"), "identity.key".to_string()];
        if !proxy_side && floor.is_some() {
            files.push("time-floor".into());
        }
        // The agent's seal of the log (`wtd_keys::seal`), as its next start writes it:
        // damage to it may only cost time.
        let seal_file = format!("logs/{log_name}.seal");
        if !proxy_side {
            let seal = wtd_keys::seal::SealKey::derive(
                &wtd_store::identity::load(&dir.join("identity.key")).unwrap(),
            );
            drop(wtd_agent::owner_logs::OwnerLogs::open(&dir.join("logs"), &[built.owner], &seal).unwrap());
            assert!(dir.join(&seal_file).exists(), "the agent sealed its log");
            files.push(seal_file);
        }
        assert!(floor.is_some(), "the agent saved a time floor");
        let file = files[rng.below(files.len() as u64) as usize].clone();
        let path = dir.join(&file);
        let len = std::fs::metadata(&path).unwrap().len();
        let how = match rng.below(3) {
            0 => Damage::Truncate { at: rng.below(len) },
            1 => Damage::Zero {
                at: rng.below(len),
                len: 1 + rng.below(64),
            },
            // Zeros to the end: a tail that never reached the disk.
            _ => {
                let at = rng.below(len);
                Damage::Zero { at, len: len - at }
            }
        };
        damage(&path, how);
        let side = if proxy_side { "proxy" } else { "agent" };
        let what = format!("seed {seed} case {case}: {side} {file} {how:?}");
        let tally = tallies
            .entry(format!("{side} {}", file.split('/').next().unwrap()))
            .or_default();

        // The identity: the same key, or refused with the file named.
        match wtd_store::identity::load(&dir.join("identity.key")) {
            Ok(k) => assert_eq!(k.public(), key, "{what}: a different identity"),
            Err(e) => {
                assert!(
                    file == "identity.key",
                    "{what}: refused an undamaged identity: {e}"
                );
                let msg = e.to_string();
                assert!(msg.contains("identity.key"), "{what}: {msg}");
                tally.refused += 1;
                continue;
            }
        }
        // The time floor: the same floor, or damaged (the agent then warns and starts from
        // the clock, by design), never a different number.
        if !proxy_side {
            match wtd_store::floor::read(&dir.join("time-floor")) {
                Ok(got) => assert_eq!(got, floor, "{what}: a different time floor"),
                Err(e) => {
                    assert!(e.contains("time-floor") && e.contains("damaged"), "{what}: {e}");
                    tally.refused += 1;
                    continue;
                }
            }
        }
        // The owner log, through the opener that side runs at start.
        let opened: Result<Vec<EntryHash>, String> = if proxy_side {
            wtd_proxy::logs::LogStore::open(&dir.join("logs"))
                .map(|store| {
                    let n = store.head(&built.owner) as usize;
                    // The proxy's store hands out what it holds; the batches are the entries.
                    let held: Vec<EntryHash> = store
                        .batches_after(&built.owner, 0)
                        .into_iter()
                        .flatten()
                        .map(|b| wtd_keys::SignedEntry::decode(&b).unwrap().hash())
                        .collect();
                    assert_eq!(held.len(), n, "{what}");
                    held
                })
                .map_err(|e| format!("{e:#}"))
        } else {
            // Sealed with the agent's own key, as the agent opens them (when the damaged
            // file is the key itself, with another: the seal then vouches for nothing).
            let key = wtd_store::identity::load(&dir.join("identity.key"))
                .unwrap_or_else(|_| wtd_keys::SecretKey::from_seed(&[3; 32]));
            let seal = wtd_keys::seal::SealKey::derive(&key);
            wtd_agent::owner_logs::OwnerLogs::open(&dir.join("logs"), &[built.owner], &seal)
                .map(|logs| {
                    logs.handle()
                        .borrow()
                        .log(&built.owner)
                        .map(|l| l.entries().iter().map(|e| e.hash()).collect())
                        .unwrap_or_default()
                })
                .map_err(|e| e.to_string())
        };
        if file.ends_with(".seal") {
            let got = opened.unwrap_or_else(|e| panic!("{what}: a damaged seal refused the log: {e}"));
            assert_eq!(got, built.entries, "{what}: a damaged seal changed what was read");
            tally.whole += 1;
            continue;
        }
        match opened {
            Ok(got) => {
                if is_prefix(&got, &built.entries, &what) {
                    tally.whole += 1;
                } else {
                    tally.shorter += 1;
                }
            }
            Err(msg) => {
                assert!(
                    file.starts_with("logs/"),
                    "{what}: refused an undamaged log: {msg}"
                );
                assert!(
                    msg.contains(&log_name) && msg.contains("damaged"),
                    "{what}: {msg}"
                );
                tally.refused += 1;
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
    println!("power cut, seed {seed}, {cases} cases (whole = last good state kept entirely, shorter = a torn tail cut off, refused = a clear error):");
    for (what, t) in &tallies {
        println!(
            "  {what:<20} whole {:>4}  shorter {:>4}  refused {:>4}",
            t.whole, t.shorter, t.refused
        );
    }
    drop(built.lab);
}

/// Starts `wtd proxy` on `port` with the lab's proxy state, without waiting for it.
fn spawn_proxy(built: &Built, port: u16) -> common::Daemon {
    let listen = format!("127.0.0.1:{port}");
    let args: Vec<&std::ffi::OsStr> = vec![
        "proxy".as_ref(),
        "--listen".as_ref(),
        listen.as_ref(),
        "--state-dir".as_ref(),
        built.proxy.state_dir.as_os_str(),
    ];
    common::Daemon::spawn(
        "proxy",
        built.lab.dir().join("proxy-again.log"),
        &args,
        &built.lab.dir().join("proxy-home"),
    )
}

/// Waits for a daemon to exit by itself; returns its output.
fn exits(daemon: &mut common::Daemon) -> String {
    let mut status = None;
    wait_for("the process to refuse and exit", LIMIT, || {
        status = daemon.child.try_wait().unwrap();
        status.is_some()
    });
    assert!(!status.unwrap().success(), "it refused, so it must not exit 0");
    daemon.output()
}

#[test]
fn damaged_real_processes_catch_up_or_refuse() {
    let mut built = build();
    let port = built.proxy.addr.port();
    let name = owner_log_name(&built.owner);
    let mine = std::fs::read(built.alice.home.join("owner.log")).unwrap();
    let agent_log = built.agent.dir.join("state/logs").join(&name);
    let proxy_log = built.proxy.state_dir.join("logs").join(&name);
    let good_agent_log = std::fs::read(&agent_log).unwrap();

    // 1. The agent's log lost the end of its last record (the power went mid-append): it
    //    starts, says so, and the proxy sends the record again.
    damage(
        &agent_log,
        Damage::Truncate {
            at: mine.len() as u64 - 10,
        },
    );
    let mut proxy = spawn_proxy(&built, port);
    wait_for("the proxy to listen", LIMIT, || {
        proxy.output().contains("listening on")
    });
    built.agent.restart();
    wait_for("the agent to catch up", LIMIT, || {
        std::fs::read(&agent_log).is_ok_and(|b| b == mine)
    });
    wait_for("the agent's warning", LIMIT, || {
        built.agent.daemon.output().contains("cut off")
    });
    println!("agent with a torn last record: started, caught up from the proxy");

    // 2. A record in the middle of the agent's log is zeroed: not a torn write, so the agent
    //    refuses to start and says which file and what to do.
    built.agent.daemon.stop();
    damage(&agent_log, Damage::Zero { at: 20, len: 16 });
    built.agent.restart();
    let out = exits(&mut built.agent.daemon);
    assert!(out.contains(&name) && out.contains("damaged"), "{out}");
    // Its copy can be fetched again, and it says so (there is no backup to restore).
    assert!(out.contains("move it aside") && !out.contains("backup"), "{out}");
    println!(
        "agent with a zeroed record: refused: {}",
        out.lines().last().unwrap_or_default()
    );
    std::fs::write(&agent_log, &good_agent_log).unwrap();

    // 3. The proxy's log lost its last record: it starts, and `wtd sync` (or the owner's
    //    next grant) gives it back.
    proxy.stop();
    damage(
        &proxy_log,
        Damage::Truncate {
            at: mine.len() as u64 - 3,
        },
    );
    let mut proxy = spawn_proxy(&built, port);
    wait_for("the proxy to listen", LIMIT, || {
        proxy.output().contains("listening on")
    });
    assert!(proxy.output().contains("cut off"), "{}", proxy.output());
    built.alice.ok(["sync"]);
    assert_eq!(
        std::fs::read(&proxy_log).unwrap(),
        mine,
        "the proxy has the whole log again"
    );
    println!("proxy with a torn last record: started, `wtd sync` restored it");

    // 4. The proxy's log has a zeroed record in the middle: it refuses to start.
    proxy.stop();
    damage(&proxy_log, Damage::Zero { at: 30, len: 40 });
    let mut proxy = spawn_proxy(&built, port);
    let out = exits(&mut proxy);
    assert!(out.contains(&name) && out.contains("damaged"), "{out}");
    println!(
        "proxy with a zeroed record: refused: {}",
        out.lines().last().unwrap_or_default()
    );
}
