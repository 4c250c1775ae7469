//! Zero-config on a LAN, end to end: a real `wtd proxy` announces itself with mDNS, real
//! `wtd agent`s with no join ticket find it, and `wtd join --lan` lists it.
//!
//! Every test runs in a network namespace of its own, created here (`ip netns`, root): its
//! only interface is its own loopback, with multicast turned on, so the announcements never
//! reach the real network, and tests running at once never see each other's proxies.
//! Processes enter it through a two-line wrapper script around the built `wtd`.
//!
//! # Index
//! - the happy path: an agent allowed by id, one with `any-on-lan`, and `wtd join --lan`
//! - an agent whose config allows another id: not joined, and its log says why
//! - a spoofed announcement (the right id at an impostor's address): not joined by the
//!   agent nor by `wtd join --lan`; the real proxy is, once it announces
//!
//! The spoofer is an mDNS responder run by this test binary itself (re-executed inside the
//! namespace as the ignored test `spoof_responder`), announcing what the test tells it.

mod common;

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{wait_for, wtd_bin, Agent, Daemon, TestCluster};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(30);

/// A network namespace with only a loopback interface (multicast on), deleted when dropped.
struct Netns {
    name: String,
    /// `wtd`, run inside the namespace: `exec ip netns exec NAME wtd "$@"`.
    wtd: PathBuf,
}

impl Netns {
    /// `None` (after saying why) on a machine where the test may not create one.
    fn create(lab: &TestCluster) -> Option<Netns> {
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "wtd-lan-{}-{}",
            std::process::id(),
            COUNT.fetch_add(1, Ordering::Relaxed)
        );
        let ip = |args: &[&str]| Command::new("ip").args(args).output();
        match ip(&["netns", "add", &name]) {
            Ok(o) if o.status.success() => {}
            Ok(o) => {
                eprintln!(
                    "SKIPPED: cannot create a network namespace (the test needs root and iproute2): {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                );
                return None;
            }
            Err(e) => {
                eprintln!("SKIPPED: cannot run ip(8) (install iproute2): {e}");
                return None;
            }
        }
        let ns = Netns {
            wtd: lab.dir().join(format!("wtd-in-{name}")),
            name,
        };
        for args in [
            &["link", "set", "lo", "up"][..],
            &["link", "set", "lo", "multicast", "on"],
        ] {
            let mut all = vec!["-n", ns.name.as_str()];
            all.extend_from_slice(args);
            let out = ip(&all).expect("ip");
            assert!(
                out.status.success(),
                "ip {all:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::fs::write(
            &ns.wtd,
            format!(
                "#!/bin/sh\nexec ip netns exec {} {} \"$@\"\n",
                ns.name,
                wtd_bin().display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&ns.wtd, std::fs::Permissions::from_mode(0o755)).unwrap();
        Some(ns)
    }

    /// Runs `wtd args...` in the namespace as the user whose home is `home`.
    fn cli(&self, home: &Path, args: &[&str]) -> Output {
        Command::new(&self.wtd)
            .args(args)
            .env("WTD_HOME", home)
            .env_remove("RUST_LOG")
            .output()
            .expect("run wtd")
    }

    fn ok(&self, home: &Path, args: &[&str]) -> String {
        let out = self.cli(home, args);
        assert!(
            out.status.success(),
            "wtd {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

/// A `wtd proxy` in the namespace, on 127.0.0.1, with `extra` flags.
struct LanProxy {
    daemon: Daemon,
    id: String,
    ticket: String,
}

fn start_proxy(lab: &TestCluster, ns: &Netns, name: &str, extra: &[&str]) -> LanProxy {
    let state = lab.dir().join(name);
    let ticket_file = state.join("ticket.txt");
    let _ = std::fs::remove_file(&ticket_file);
    let mut args: Vec<&OsStr> = vec![
        "proxy".as_ref(),
        "--listen".as_ref(),
        "127.0.0.1:0".as_ref(),
        "--state-dir".as_ref(),
        state.as_os_str(),
    ];
    args.extend(extra.iter().map(OsStr::new));
    let daemon = Daemon::spawn_bin(
        &ns.wtd,
        name,
        lab.dir().join(format!("{name}.log")),
        &args,
        &lab.dir().join(format!("{name}-home")),
    );
    wait_for("the proxy's ticket", LIMIT, || ticket_file.exists());
    let ticket = std::fs::read_to_string(&ticket_file).unwrap().trim().to_string();
    let info = wtd_keys::Ticket::from_text(&ticket).unwrap().proxy.unwrap();
    LanProxy {
        daemon,
        id: info.id.to_string(),
        ticket,
    }
}

/// Alice: an owner who joined `proxy` with its ticket.
fn alice(lab: &TestCluster, ns: &Netns, ticket: &str) -> (PathBuf, String) {
    let home = lab.dir().join("alice");
    ns.ok(&home, &["init"]);
    let id = ns.ok(&home, &["id", "--quiet"]).trim().to_string();
    ns.ok(&home, &["join", ticket]);
    (home, id)
}

/// An agent in the namespace whose `proxy` is `proxy` (an id or `any-on-lan`): no ticket.
fn lan_agent(lab: &TestCluster, ns: &Netns, name: &str, proxy: &str, owner: &str) -> Agent {
    lab.add_agent_bin(&ns.wtd, proxy, name, &[owner], "")
}

fn names(ns: &Netns, home: &Path) -> Vec<String> {
    let out = ns.cli(home, &["ls", "--json"]);
    let list: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let mut names: Vec<String> = list
        .iter()
        .map(|a| a["name"].as_str().unwrap_or("").to_string())
        .collect();
    names.sort();
    names
}

#[test]
fn an_agent_with_no_ticket_finds_the_proxy_on_the_lan_and_joins_it() {
    let lab = TestCluster::new();
    let Some(ns) = Netns::create(&lab) else { return };
    let proxy = start_proxy(&lab, &ns, "proxy", &["--announce"]);
    wait_for("the proxy to say it announced itself", LIMIT, || {
        proxy.daemon.output().contains("announced on the LAN")
    });

    // A person with no ticket lists the proxies on the LAN and picks one.
    let bob = lab.dir().join("bob");
    ns.ok(&bob, &["init"]);
    let list: Value = serde_json::from_str(&ns.ok(&bob, &["join", "--lan", "--json"])).unwrap();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(
        list[0]["id"],
        proxy.id.as_str(),
        "the announcement carries the id"
    );
    assert_eq!(list[0]["pick"], 1);
    let text = ns.ok(&bob, &["join", "--lan"]);
    assert!(text.contains(&proxy.id) && text.contains("--pick"), "{text}");
    let joined = ns.ok(&bob, &["join", "--lan", "--pick", "1"]);
    assert!(joined.contains("Joined proxy"), "{joined}");
    assert!(names(&ns, &bob).is_empty(), "joined: `wtd ls` works");
    // A pick that is not on the list is a usage error, not a guess.
    let out = ns.cli(&bob, &["join", "--lan", "--pick", "2"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Agents with no ticket: one allows this proxy's id, one any proxy on the LAN.
    let (alice_home, alice_id) = alice(&lab, &ns, &proxy.ticket);
    let by_id = lan_agent(&lab, &ns, "pi-by-id", &proxy.id, &alice_id);
    let any = lan_agent(&lab, &ns, "pi-any", "any-on-lan", &alice_id);
    wait_for("both agents in `wtd ls`", LIMIT, || {
        names(&ns, &bob) == ["pi-any", "pi-by-id"]
    });
    assert!(
        by_id.daemon.output().contains("found proxy"),
        "{}",
        by_id.daemon.output()
    );
    // And they are real agents: Alice adopts one and calls it.
    ns.ok(&alice_home, &["adopt", &by_id.id()]);
    wait_for("the call answers", LIMIT, || {
        ns.cli(
            &alice_home,
            &["call", "demo/echo", "{\"lan\":1}", "--agent", "pi-by-id"],
        )
        .status
        .success()
    });
    drop(any);
}

#[test]
fn an_agent_whose_config_allows_another_proxy_does_not_join_and_says_why() {
    let lab = TestCluster::new();
    let Some(ns) = Netns::create(&lab) else { return };
    let proxy = start_proxy(&lab, &ns, "proxy", &["--announce"]);
    let (alice_home, alice_id) = alice(&lab, &ns, &proxy.ticket);
    // Another proxy's id: any key will do, this one never runs.
    let other = lab.dir().join("other");
    ns.ok(&other, &["init"]);
    let other_id = ns.ok(&other, &["id", "--quiet"]).trim().to_string();
    let pi = lan_agent(&lab, &ns, "pi-elsewhere", &other_id, &alice_id);
    wait_for("the agent's log to say why", LIMIT, || {
        pi.daemon.output().contains("but this agent's config allows only")
    });
    let log = pi.daemon.output();
    assert!(log.contains(&proxy.id) && log.contains(&other_id), "{log}");
    assert!(!log.contains("connected to the proxy"), "{log}");
    assert!(names(&ns, &alice_home).is_empty(), "not in the proxy's roster");
}

#[test]
fn a_spoofed_announcement_is_not_joined() {
    let lab = TestCluster::new();
    let Some(ns) = Netns::create(&lab) else { return };
    // The real proxy, not announcing yet; an impostor (a real wtd proxy with its own key)
    // at another port; and a spoofer announcing the real proxy's id at the impostor's port.
    let real = start_proxy(&lab, &ns, "real", &["--no-announce"]);
    let impostor = start_proxy(&lab, &ns, "impostor", &["--no-announce"]);
    let impostor_port = wtd_keys::Ticket::from_text(&impostor.ticket)
        .unwrap()
        .proxy
        .unwrap()
        .addrs[0]
        .port();
    let spoofer = spoof(&lab, &ns, &real.id, impostor_port);
    let (alice_home, alice_id) = alice(&lab, &ns, &real.ticket);
    let watcher = lab.dir().join("watcher");
    ns.ok(&watcher, &["init"]);
    ns.ok(&watcher, &["join", &impostor.ticket]);

    let pi = lan_agent(&lab, &ns, "pi-1", &real.id, &alice_id);
    wait_for("the agent to refuse the impostor", LIMIT, || {
        pi.daemon
            .output()
            .contains("not joining the proxy announced on the LAN")
    });
    let log = pi.daemon.output();
    assert!(
        log.contains("impostor"),
        "the handshake says the key is wrong:\n{log}"
    );
    assert!(!log.contains("connected to the proxy"), "{log}");
    assert!(
        names(&ns, &watcher).is_empty(),
        "the impostor never got the agent"
    );
    assert!(names(&ns, &alice_home).is_empty());

    // A person picking the spoofed entry is refused too, and nothing is saved.
    let bob = lab.dir().join("bob");
    ns.ok(&bob, &["init"]);
    let out = ns.cli(&bob, &["join", "--lan", "--pick", "1"]);
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("could not prove that id"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !bob.join("proxy.toml").exists(),
        "an impostor is never saved as the joined proxy"
    );

    // The real proxy starts announcing (same identity, new port): the agent, still seeing
    // the spoof, ends up on the real one; `wtd join --lan --id` too.
    let mut real = real;
    real.daemon.kill();
    let real = start_proxy(&lab, &ns, "real", &["--announce"]);
    ns.ok(&alice_home, &["join", &real.ticket]);
    wait_for("the agent on the real proxy", LIMIT, || {
        names(&ns, &alice_home) == ["pi-1"]
    });
    assert!(names(&ns, &watcher).is_empty(), "and never on the impostor");
    let joined = ns.ok(&bob, &["join", "--lan", "--id", &real.id]);
    assert!(joined.contains("Joined proxy"), "{joined}");
    assert_eq!(names(&ns, &bob), ["pi-1"]);
    drop(spoofer);
}

/// Runs [`spoof_responder`] inside the namespace: it announces `id` at 127.0.0.1:`port`.
fn spoof(lab: &TestCluster, ns: &Netns, id: &str, port: u16) -> Daemon {
    let me = std::env::current_exe().unwrap();
    let log = lab.dir().join("spoofer.log");
    let out = std::fs::File::create(&log).unwrap();
    let child = Command::new("ip")
        .args(["netns", "exec", &ns.name])
        .arg(&me)
        .args(["spoof_responder", "--exact", "--ignored", "--nocapture"])
        .env("WTD_TEST_SPOOF", format!("{id} {port}"))
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap();
    let spoofer = Daemon {
        name: "spoofer".into(),
        child,
        log,
    };
    wait_for("the spoofer to announce", LIMIT, || {
        spoofer.output().contains("announcing")
    });
    spoofer
}

/// Not a test: the spoofing mDNS responder [`spoof`] runs (it does nothing without
/// `WTD_TEST_SPOOF`). It stops after two minutes at most if nobody kills it.
#[test]
#[ignore = "run by a_spoofed_announcement_is_not_joined, inside its network namespace"]
fn spoof_responder() {
    let Ok(what) = std::env::var("WTD_TEST_SPOOF") else {
        return;
    };
    let (id, port) = what.split_once(' ').unwrap();
    let daemon = mdns_sd::ServiceDaemon::new().unwrap();
    let info = mdns_sd::ServiceInfo::new(
        wtd_transport::lan::SERVICE_TYPE,
        "a spoofed proxy",
        "spoofer.local.",
        "127.0.0.1",
        port.parse().unwrap(),
        &[(wtd_transport::lan::TXT_ID, id)][..],
    )
    .unwrap();
    daemon.register(info).unwrap();
    println!("announcing {id} at 127.0.0.1:{port}");
    std::thread::sleep(Duration::from_secs(120));
}
