//! Faults with real processes: `kill -9` and restarts of the proxy and the agents while
//! an owner makes a steady stream of non-idempotent calls, and a partition made by a
//! packet-dropping UDP relay this test owns.
//!
//! What must hold: no call reported as done (exit 0) that did not run, none that ran
//! twice; a call refused or unreachable (exit 3, 4) did not run; one that "may have run"
//! (exit 5, 6) ran at most once; no grant, revocation or adoption is lost; every agent
//! comes back. The partition: the roster drops the agent, calls go elsewhere, and it
//! rejoins when healed. Times are measured and printed, not asserted.
//!
//! # Index
//! - `kill_9_during_a_call_stream_loses_nothing_and_runs_nothing_twice`
//! - `a_partitioned_agent_leaves_the_roster_and_rejoins_when_healed`

mod common;

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{wait_for, Agent, TestCluster, User};

const LIMIT: Duration = Duration::from_secs(60);

/// `side/mark` appends its arguments (one JSON line) to `marks`: the trace that proves how
/// many times a call ran. Not idempotent, so the CLI never retries it.
fn side_mission(marks: &Path) -> String {
    format!(
        r#"name = "side"
version = "1"
description = "a function that leaves a trace"
[[functions]]
name = "mark"
description = "appends its arguments to a file"
exec = ["/bin/sh", "-c", "line=$(cat); echo \"$line\" >> {marks}; echo '{{\"ok\":true}}'"]
timeout = "10s"
"#,
        marks = marks.display()
    )
}

/// A directory the unprivileged user that runs functions may write to.
fn open_dir(lab: &TestCluster) -> PathBuf {
    let dir = lab.dir().join("marks");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(lab.dir(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    dir
}

fn add_side_agent(lab: &TestCluster, ticket: &str, name: &str, owner: &str, marks: &Path) -> Agent {
    let agent = lab.add_agent(ticket, name, &[owner], "");
    std::fs::write(agent.dir.join("missions/side.toml"), side_mission(marks)).unwrap();
    agent
}

fn owner_log_of(user: &User) -> Vec<u8> {
    std::fs::read(user.home.join("owner.log")).unwrap()
}

fn agent_log(agent: &Agent, owner_id: &str) -> PathBuf {
    let owner: wtd_keys::OwnerKey = owner_id.parse().unwrap();
    wtd_agent::owner_logs::log_path(&agent.dir.join("state/logs"), &owner)
}

/// A numbered call and the CLI's exit code (`None`: killed by a signal).
type Outcome = (u32, Option<i32>);

#[test]
fn kill_9_during_a_call_stream_loses_nothing_and_runs_nothing_twice() {
    let lab = TestCluster::new();
    let mut proxy = lab.start_proxy();
    let port = proxy.addr.port();
    let alice = lab.user("alice");
    let alice_id = alice.init();
    alice.ok(["join", &proxy.ticket]);
    let bob = lab.user("bob");
    alice.ok(["keys", "add", "bob", &bob.init()]);
    let marks_dir = open_dir(&lab);
    let marks = marks_dir.join("marks");
    let mut agents: Vec<Agent> = ["pi-1", "pi-2"]
        .iter()
        .map(|n| add_side_agent(&lab, &proxy.ticket, n, &alice_id, &marks))
        .collect();
    for a in &agents {
        alice.adopt(a);
    }
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
    wait_for("both agents online", LIMIT, || {
        alice.agent_names() == ["pi-1", "pi-2"]
    });

    // The call stream: side/mark with a unique number each, one after another.
    let stop = Arc::new(AtomicBool::new(false));
    let results: Arc<Mutex<Vec<Outcome>>> = Arc::default();
    let caller = {
        let (stop, results, home) = (stop.clone(), results.clone(), alice.home.clone());
        std::thread::spawn(move || {
            let alice = User {
                name: "alice".into(),
                home,
            };
            for n in 0..600u32 {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let out = alice.cli(["call", "side/mark", &format!("{{\"n\":{n}}}")]);
                results.lock().unwrap().push((n, out.status.code()));
            }
        })
    };
    let calls_so_far = || results.lock().unwrap().len();
    let settle = |more: usize| {
        let at = calls_so_far();
        wait_for("more calls", LIMIT, || calls_so_far() >= at + more);
    };
    settle(5);

    // The faults, one after another, each while calls are flowing.
    let t = Instant::now();
    let mut timeline = Vec::new();
    agents[0].daemon.kill();
    timeline.push(format!("{:>6.1?}  kill -9 pi-1", t.elapsed()));
    settle(5);
    agents[0].restart();
    timeline.push(format!("{:>6.1?}  pi-1 restarted", t.elapsed()));
    settle(5);
    proxy.daemon.kill();
    timeline.push(format!("{:>6.1?}  kill -9 proxy", t.elapsed()));
    // While the proxy is down, Alice grants and revokes: saved, sent later by `wtd sync`.
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
    alice.ok(["revoke", "bob", "--mission", "demo"]);
    proxy = lab.start_proxy_on(port, &[]);
    timeline.push(format!("{:>6.1?}  proxy restarted", t.elapsed()));
    settle(5);
    agents[1].daemon.kill();
    agents[0].daemon.kill();
    timeline.push(format!("{:>6.1?}  kill -9 pi-2 and pi-1 together", t.elapsed()));
    agents[1].restart();
    agents[0].restart();
    timeline.push(format!("{:>6.1?}  both restarted", t.elapsed()));
    settle(10);
    stop.store(true, Ordering::SeqCst);
    caller.join().unwrap();

    // Every agent comes back, and the log reaches both whole once Alice syncs.
    wait_for("both agents back", LIMIT, || {
        alice.agent_names() == ["pi-1", "pi-2"]
    });
    alice.ok(["sync"]);
    let mine = owner_log_of(&alice);
    for a in &agents {
        let path = agent_log(a, &alice_id);
        wait_for("the agent to hold Alice's whole log", LIMIT, || {
            std::fs::read(&path).is_ok_and(|b| b == mine)
        });
    }
    assert_eq!(
        std::fs::read(
            proxy
                .state_dir
                .join("logs")
                .join(agent_log(&agents[0], &alice_id).file_name().unwrap())
        )
        .unwrap(),
        mine,
        "the proxy holds every grant, revocation and adoption"
    );
    // Adoptions held: Alice (owner, no grant) can still call each agent by name.
    for name in ["pi-1", "pi-2"] {
        alice.ok(["call", "--agent", name, "demo/echo", r#"{"msg":"adopted"}"#]);
    }

    // The ledger: how many times each numbered call ran, against what the CLI said.
    let text = std::fs::read_to_string(&marks).unwrap_or_default();
    let mut ran: HashMap<u32, usize> = HashMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
        *ran.entry(v["n"].as_u64().unwrap() as u32).or_default() += 1;
    }
    let results = results.lock().unwrap().clone();
    let mut by_code: std::collections::BTreeMap<String, usize> = Default::default();
    for (n, code) in &results {
        let times = ran.get(n).copied().unwrap_or(0);
        assert!(times <= 1, "call {n} ran {times} times (exit {code:?})");
        match code {
            Some(0) => assert_eq!(times, 1, "call {n} reported done but did not run"),
            Some(3) | Some(4) => assert_eq!(times, 0, "call {n} reported not run (exit {code:?}) but ran"),
            _ => {}
        }
        let ran_text = if times == 1 { "ran" } else { "did not run" };
        *by_code
            .entry(format!(
                "exit {} ({ran_text})",
                code.map_or("signal".into(), |c| c.to_string())
            ))
            .or_default() += 1;
    }
    assert!(
        ran.keys().all(|n| results.iter().any(|(m, _)| m == n)),
        "a call ran that nobody made"
    );
    println!("\nkill -9 during {} calls of side/mark:", results.len());
    for line in &timeline {
        println!("  {line}");
    }
    for (what, count) in &by_code {
        println!("  {count:>4} x {what}");
    }
}

/// A UDP relay between one agent and the proxy that the test can make drop every packet.
struct Relay {
    addr: SocketAddr,
    dropping: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Relay {
    fn start(upstream: SocketAddr) -> Relay {
        let listen = UdpSocket::bind("127.0.0.1:0").unwrap();
        listen.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let addr = listen.local_addr().unwrap();
        let dropping = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let (d, s) = (dropping.clone(), stop.clone());
        let main = std::thread::spawn(move || {
            let mut toward: HashMap<SocketAddr, UdpSocket> = HashMap::new();
            let mut back = Vec::new();
            let mut buf = [0u8; 65536];
            while !s.load(Ordering::SeqCst) {
                let Ok((n, from)) = listen.recv_from(&mut buf) else {
                    continue;
                };
                if d.load(Ordering::SeqCst) {
                    continue;
                }
                let up = toward.entry(from).or_insert_with(|| {
                    let up = UdpSocket::bind("127.0.0.1:0").unwrap();
                    up.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
                    let (reply, listen, d, s) = (
                        up.try_clone().unwrap(),
                        listen.try_clone().unwrap(),
                        d.clone(),
                        s.clone(),
                    );
                    back.push(std::thread::spawn(move || {
                        let mut buf = [0u8; 65536];
                        while !s.load(Ordering::SeqCst) {
                            let Ok(n) = reply.recv(&mut buf) else { continue };
                            if !d.load(Ordering::SeqCst) {
                                let _ = listen.send_to(&buf[..n], from);
                            }
                        }
                    }));
                    up
                });
                let _ = up.send_to(&buf[..n], upstream);
            }
            for t in back {
                let _ = t.join();
            }
        });
        Relay {
            addr,
            dropping,
            stop,
            threads: vec![main],
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

#[test]
fn a_partitioned_agent_leaves_the_roster_and_rejoins_when_healed() {
    let lab = TestCluster::new();
    let proxy = lab.start_proxy();
    let alice = lab.user("alice");
    let alice_id = alice.init();
    alice.ok(["join", &proxy.ticket]);
    let relay = Relay::start(proxy.addr);
    // pi-far reaches the proxy only through the relay; pi-near directly.
    let via_relay = wtd_keys::Ticket {
        proxy: Some(wtd_keys::ProxyInfo {
            id: proxy.id,
            addrs: vec![relay.addr],
        }),
        grants: vec![],
    }
    .to_text();
    let far = lab.add_agent(&via_relay, "pi-far", &[&alice_id], "");
    let near = lab.add_agent(&proxy.ticket, "pi-near", &[&alice_id], "");
    alice.adopt(&far);
    alice.adopt(&near);
    wait_for("both online", LIMIT, || {
        alice.agent_names() == ["pi-far", "pi-near"]
    });
    alice.ok(["call", "--agent", "pi-far", "demo/echo", r#"{"msg":"before"}"#]);

    relay.dropping.store(true, Ordering::SeqCst);
    let gone = wait_for("the partitioned agent to leave the roster", LIMIT, || {
        alice.agent_names() == ["pi-near"]
    });
    // Dispatch goes to the agent that is left.
    let out = alice.ok(["call", "demo/echo", r#"{"msg":"during"}"#]);
    assert!(out.contains("during"), "{out}");
    let refused = alice.cli(["call", "--agent", "pi-far", "demo/echo", r#"{"msg":"x"}"#]);
    assert_eq!(
        refused.status.code(),
        Some(4),
        "no such agent online: {refused:?}"
    );

    relay.dropping.store(false, Ordering::SeqCst);
    let back = wait_for("the healed agent to rejoin", LIMIT, || {
        alice.agent_names() == ["pi-far", "pi-near"]
    });
    alice.ok(["call", "--agent", "pi-far", "demo/echo", r#"{"msg":"after"}"#]);
    println!(
        "partition: pi-far left the roster {gone:.1?} after its packets were dropped \
         (budget: about 3 s), rejoined {back:.1?} after healing"
    );
    drop(far);
    drop(relay);
}
