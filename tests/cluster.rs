//! A whole cluster as real processes: `wtd proxy`, several `wtd agent`s and the `wtd` CLI
//! on 127.0.0.1, each with its own directory. Read it as a lab script.
//!
//! Liveness budgets (gone within 3 s, 0.5 s, back within 5 s) are *measured* by
//! `scripts/bench-liveness.sh`; here each wait has a generous limit so a busy machine does
//! not fail the test, and the measured time is printed.

mod common;

use std::time::Duration;

use common::{wait_for, TestCluster};

const LIMIT: Duration = Duration::from_secs(15);

#[test]
fn agents_join_show_up_and_leave() {
    let lab = TestCluster::new();
    let proxy = lab.start_proxy();
    let alice = lab.user("alice");
    let alice_id = alice.init();
    alice.ok(["join", &proxy.ticket]);

    let mut pis: Vec<_> = (1..=3)
        .map(|i| {
            lab.add_agent(
                &proxy.ticket,
                &format!("pi-{i}"),
                &[&alice_id],
                "tags = [\"lab\"]",
            )
        })
        .collect();
    wait_for("3 agents in `wtd ls`", LIMIT, || {
        alice.agent_names() == ["pi-1", "pi-2", "pi-3"]
    });

    // Each shows its missions (the built-in sys and the example demo), tags and load.
    let ls = alice.ls();
    for a in &ls {
        let missions: Vec<&str> = a["missions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["name"].as_str().unwrap())
            .collect();
        assert!(missions.contains(&"sys") && missions.contains(&"demo"), "{a}");
        assert_eq!(a["tags"], serde_json::json!(["lab"]));
        assert_eq!(a["owners"], serde_json::json!([alice_id]));
        assert!(a["mem_total_kb"].as_u64().unwrap() > 0, "load is reported: {a}");
    }
    let table = alice.ok(["ls"]);
    assert!(table.contains("pi-2") && table.contains("demo"), "{table}");

    // SIGKILL: no goodbye; the proxy notices the silence.
    pis[0].daemon.kill();
    let took = wait_for("pi-1 to vanish after SIGKILL", LIMIT, || {
        alice.agent_names() == ["pi-2", "pi-3"]
    });
    println!("SIGKILL: gone after {took:?}");

    // SIGTERM: the agent says goodbye and is dropped at once.
    let status = pis[1].daemon.stop();
    assert!(status.success(), "a SIGTERM'd agent exits cleanly: {status}");
    let took = wait_for("pi-2 to vanish after SIGTERM", LIMIT, || {
        alice.agent_names() == ["pi-3"]
    });
    println!("SIGTERM: gone after {took:?}");
}

#[test]
fn agents_come_back_after_a_proxy_restart() {
    let lab = TestCluster::new();
    let mut proxy = lab.start_proxy();
    let alice = lab.user("alice");
    let alice_id = alice.init();
    alice.ok(["join", &proxy.ticket]);
    let _pis: Vec<_> = (1..=3)
        .map(|i| lab.add_agent(&proxy.ticket, &format!("pi-{i}"), &[&alice_id], ""))
        .collect();
    wait_for("3 agents", LIMIT, || alice.agent_names().len() == 3);

    let port = proxy.addr.port();
    proxy.daemon.kill();
    drop(proxy);
    let proxy = lab.start_proxy_on(port, &[]);
    let took = wait_for("all 3 agents back", LIMIT, || alice.agent_names().len() == 3);
    println!("proxy restart: all back after {took:?}");
    drop(proxy);
}

#[test]
fn allowlist_admission_turns_away_unknown_owners_with_a_clear_error() {
    let lab = TestCluster::new();
    let alice = lab.user("alice");
    let alice_id = alice.init();
    let mallory = lab.user("mallory");
    let mallory_id = mallory.init();
    let proxy = lab.start_proxy_on(0, &["--allow", &alice_id]);
    alice.ok(["join", &proxy.ticket]);

    let good = lab.add_agent(&proxy.ticket, "alices-pi", &[&alice_id], "");
    alice.adopt(&good);
    let bad = lab.add_agent(&proxy.ticket, "mallorys-pi", &[&mallory_id], "");
    wait_for("alice's agent", LIMIT, || alice.agent_names() == ["alices-pi"]);
    wait_for("the refusal in mallory's agent log", LIMIT, || {
        bad.daemon
            .output()
            .contains("only admits agents of allowed owners")
    });
    assert_eq!(alice.agent_names(), ["alices-pi"], "mallory's agent never joined");
}

#[test]
fn a_malformed_mission_file_is_skipped_with_a_warning() {
    let lab = TestCluster::new();
    let proxy = lab.start_proxy();
    let alice = lab.user("alice");
    let alice_id = alice.init();
    alice.ok(["join", &proxy.ticket]);

    // Written before the agent starts: one broken file next to the good demo mission.
    let dir = lab.dir().join("agents").join("pi-1").join("missions");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("broken.toml"),
        "name = \"Broken Mission\"\nthis is not toml",
    )
    .unwrap();
    let _pi = lab.add_agent(&proxy.ticket, "pi-1", &[&alice_id], "");

    wait_for("pi-1", LIMIT, || alice.agent_names() == ["pi-1"]);
    let a = &alice.ls()[0];
    let warnings = a["warnings"].as_array().unwrap();
    assert!(
        warnings
            .iter()
            .any(|w| w.as_str().unwrap().contains("broken.toml")),
        "{a}"
    );
    let mut missions: Vec<&str> = a["missions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    missions.sort();
    assert_eq!(
        missions,
        ["demo", "sys"],
        "the good mission is still offered, the broken one is not"
    );
    assert!(
        alice.ok(["ls"]).contains("broken.toml"),
        "the table shows the warning"
    );
}

#[test]
fn a_grant_made_while_an_agent_was_offline_reaches_it_when_it_reconnects() {
    let lab = TestCluster::new();
    let proxy = lab.start_proxy();
    let alice = lab.user("alice");
    let alice_id = alice.init();
    alice.ok(["join", &proxy.ticket]);
    let bob = lab.user("bob");
    let bob_id = bob.init();

    let mut pi = lab.add_agent(&proxy.ticket, "pi-1", &[&alice_id], "");
    wait_for("pi-1", LIMIT, || alice.agent_names() == ["pi-1"]);
    pi.daemon.stop();
    wait_for("pi-1 offline", LIMIT, || alice.agent_names().is_empty());

    // Alice grants while the agent is off; the proxy keeps her log.
    alice.ok(["grant", &bob_id, "--mission", "demo"]);
    alice.ok(["revoke", &bob_id, "--all"]);

    pi.restart();
    let log = pi.dir.join("state").join("logs").join(format!("{alice_id}.log"));
    wait_for("the agent to store both records", LIMIT, || {
        // The agent holds the file's lock; count records through a copy.
        records_in(&log) == 2
    });
}

/// How many whole records an owner log file holds (read through a copy, since the agent
/// keeps the original locked).
fn records_in(path: &std::path::Path) -> usize {
    let Ok(bytes) = std::fs::read(path) else { return 0 };
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("copy.log");
    std::fs::write(&copy, bytes).unwrap();
    let owner = path.file_stem().unwrap().to_str().unwrap().parse().unwrap();
    match wtd_store::logfile::LogFile::open(&copy, owner) {
        Ok((f, _)) => f.log().entries().len(),
        Err(_) => 0,
    }
}

#[test]
fn wtd_up_runs_a_whole_cluster_and_ctrl_c_stops_it() {
    let lab = TestCluster::new();
    let me = lab.user("me");
    let dir = lab.dir().join("up");
    let mut up = common::Daemon::spawn(
        "wtd up",
        lab.dir().join("up.log"),
        &[
            "up".as_ref(),
            "--agents".as_ref(),
            "2".as_ref(),
            "--dir".as_ref(),
            dir.as_os_str(),
            // A free port: 8080, the default, may be taken on a shared machine.
            "--dashboard".as_ref(),
            "127.0.0.1:0".as_ref(),
        ],
        &me.home,
    );
    wait_for("wtd up to say it is up", Duration::from_secs(60), || {
        up.output().contains("Press Ctrl-C")
    });
    assert_eq!(me.agent_names(), ["pi-1", "pi-2"]);
    // It prints the dashboard's address, and the agents report their calls to it.
    let out = up.output();
    let url = out
        .lines()
        .find_map(|l| l.strip_prefix("Dashboard (put it on the projector): "))
        .unwrap_or_else(|| panic!("wtd up prints the dashboard's URL:\n{out}"))
        .trim()
        .to_string();
    for agent in ["pi-1", "pi-2"] {
        let config = std::fs::read_to_string(dir.join(agent).join("agent.toml")).unwrap();
        assert!(config.contains("report_calls = true"), "{config}");
    }
    let out = me.ok(["ls"]);
    assert!(
        out.contains("you") && out.contains("demo") && !out.contains("not adopted"),
        "you own them (they name you and you adopted them), and they offer demo:\n{out}"
    );
    // As their owner, you may call every mission they offer, with no grant for it.
    let info = me.ok(["call", "sys/info", "--all"]);
    assert!(info.contains("pi-1") && info.contains("pi-2"), "{info}");
    wait_for("the calls on the dashboard", Duration::from_secs(30), || {
        let state = common::http_get(&url, "state.json");
        state.matches("\"function\":\"info\"").count() >= 2
    });
    let grants = me.grants();
    assert!(
        grants
            .iter()
            .any(|g| g["mission"] == "demo" && g["status"] == "active"),
        "{grants:?}"
    );

    // Ctrl-C: everything stops, cleanly.
    up.signal("INT");
    let status = up.child.wait().unwrap();
    assert!(status.success(), "{status}\n{}", up.output());
    assert!(up.output().contains("Stopped."));
    for name in ["pi-1", "pi-2"] {
        let log = std::fs::read_to_string(dir.join(name).join("agent.log")).unwrap();
        assert!(!log.contains("panicked"), "{log}");
    }
    assert!(me.cli(["ls"]).status.code() == Some(1), "the proxy is gone too");
}

#[test]
fn ls_watch_streams_a_snapshot_then_changes() {
    let lab = TestCluster::new();
    let proxy = lab.start_proxy();
    let alice = lab.user("alice");
    let alice_id = alice.init();
    alice.ok(["join", &proxy.ticket]);
    let watch = common::Daemon::spawn(
        "wtd ls --watch",
        lab.dir().join("watch.log"),
        &["ls".as_ref(), "--watch".as_ref(), "--json".as_ref()],
        &alice.home,
    );
    wait_for("the snapshot", LIMIT, || {
        watch.output().contains("{\"snapshot\":[]}")
    });

    let mut pi = lab.add_agent(&proxy.ticket, "pi-1", &[&alice_id], "");
    wait_for("pi-1 joining", LIMIT, || watch.output().contains("\"upsert\""));
    wait_for("a load report", LIMIT, || watch.output().contains("\"load\""));
    pi.daemon.stop();
    wait_for("pi-1 leaving", LIMIT, || {
        watch.output().contains("\"reason\":\"graceful\"")
    });
    // Each line is one JSON event.
    for line in watch.output().lines().filter(|l| l.starts_with('{')) {
        serde_json::from_str::<serde_json::Value>(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    }
}

/// The pids whose parent is `parent`, from /proc.
fn children_of(parent: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let status = std::fs::read_to_string(entry.path().join("status")).unwrap_or_default();
        let ppid = status
            .lines()
            .find_map(|l| l.strip_prefix("PPid:"))
            .and_then(|v| v.trim().parse::<u32>().ok());
        if ppid == Some(parent) {
            out.push(pid);
        }
    }
    out
}

/// Whether `pid` is still running (a zombie waiting to be reaped is not).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map(|s| !s.lines().any(|l| l.starts_with("State:") && l.contains('Z')))
        .unwrap_or(false)
}

#[test]
fn killing_wtd_up_even_with_sigkill_stops_its_proxy_and_agents() {
    for signal in ["KILL", "TERM"] {
        let lab = TestCluster::new();
        let me = lab.user("me");
        let dir = lab.dir().join("up");
        let mut up = common::Daemon::spawn(
            "wtd up",
            lab.dir().join("up.log"),
            &[
                "up".as_ref(),
                "--agents".as_ref(),
                "2".as_ref(),
                "--dir".as_ref(),
                dir.as_os_str(),
                "--dashboard".as_ref(),
                "127.0.0.1:0".as_ref(),
            ],
            &me.home,
        );
        wait_for("wtd up to say it is up", Duration::from_secs(60), || {
            up.output().contains("Press Ctrl-C")
        });
        let children = children_of(up.pid());
        assert_eq!(children.len(), 3, "a proxy and two agents: {children:?}");
        up.signal(signal);
        if signal == "TERM" {
            // The case the issue reports: SIGKILL right after SIGTERM, mid clean stop.
            std::thread::sleep(Duration::from_millis(300));
            let _ = up.child.kill();
        }
        let _ = up.child.wait();
        wait_for("every child of wtd up to stop", Duration::from_secs(30), || {
            children.iter().all(|&pid| !running(pid))
        });
        assert!(
            me.cli(["ls"]).status.code() == Some(1),
            "the proxy is gone (after SIG{signal})"
        );
    }
}

/// The dashboard's port (8080 by default) held by another program: `wtd up` stops before
/// starting any agent and says what to do, rather than running a cluster without it.
#[test]
fn wtd_up_says_what_to_do_when_the_dashboards_port_is_taken() {
    let lab = TestCluster::new();
    let me = lab.user("me");
    // Another program holds the port (a free one, as 8080 itself may be anyone's here).
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = lab.dir().join("up");
    let out = me.cli([
        "up".as_ref(),
        "--agents".as_ref(),
        "1".as_ref(),
        "--dir".as_ref(),
        dir.as_os_str(),
        "--dashboard".as_ref(),
        std::ffi::OsStr::new(&addr),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "the dashboard's address {addr} is in use by another program"
        )),
        "{err}"
    );
    assert!(
        err.contains("`wtd up --dashboard 127.0.0.1:0`") && err.contains("`wtd up --no-dashboard`"),
        "says what to do: {err}"
    );
    // Nothing else, no noise from stopping what never started.
    assert!(!err.contains("No such process"), "{err}");
    assert!(!dir.join("pi-1").exists(), "no agent was started");
    drop(taken);
}
