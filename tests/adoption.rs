//! Owners adopt their agents, end to end: real `wtd proxy`, `wtd agent` and `wtd` CLI
//! processes on 127.0.0.1. Alice owns agents, Bob holds her grant, Mallory runs a machine
//! that claims to be Alice's. Read it as a lab script.
//!
//! # Index
//! - `mallorys_claim_gets_none_of_bobs_calls`: least-loaded, `--all`, `--agent`; `wtd ls`
//! - `allow_keeps_a_claim_waiting_until_it_is_adopted`: `wtd proxy --allow alice`
//! - `disowning_refuses_the_next_call_and_cancels_the_one_running`: and how fast
//! - `enrollment_adopts_exactly_the_cards_alice_flashed`: right, wrong, expired, reused
//!   tokens, and a proof copied into another agent's advert
//!
//! A call running when its agent is disowned is **cancelled** (the agent treats disowning
//! like revoking every grant of that owner there); its caller is told why.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{wait_for, Agent, Daemon, Proxy, TestCluster, User};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(20);

/// A mission whose `mark` appends to `mark_file` (the side effect that proves a handler
/// ran) and whose `slow` sleeps, so a call can be in flight.
fn side_mission(mark_file: &std::path::Path) -> String {
    format!(
        r#"name = "side"
version = "1"
description = "functions that leave traces"

[[functions]]
name = "mark"
description = "appends a line to a file"
exec = ["/bin/sh", "-c", "echo ran >> {mark}; echo '{{\"ok\":true}}'"]

[[functions]]
name = "slow"
description = "runs for a long time"
exec = ["/bin/sh", "-c", "echo started >&2; sleep 30; echo late"]
timeout = "60s"
"#,
        mark = mark_file.display()
    )
}

/// A directory anyone may write to (functions run as an unprivileged user under root).
fn open_dir() -> PathBuf {
    let dir = tempfile::Builder::new()
        .prefix("wtd-adopt")
        .tempdir()
        .unwrap()
        .keep();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    dir
}

struct Lab {
    lab: TestCluster,
    proxy: Proxy,
    alice: User,
    alice_id: String,
    bob: User,
    marks: PathBuf,
}

impl Lab {
    fn new(proxy_args: &[&str]) -> Lab {
        let lab = TestCluster::new();
        let alice = lab.user("alice");
        let alice_id = alice.init();
        let mut args: Vec<&str> = proxy_args.to_vec();
        let allow;
        if args.contains(&"--allow") {
            allow = alice_id.clone();
            args.push(&allow);
        }
        let proxy = lab.start_proxy_on(0, &args);
        alice.ok(["join", &proxy.ticket]);
        let bob = lab.user("bob");
        let bob_id = bob.init();
        bob.ok(["join", &proxy.ticket]);
        alice.ok(["keys", "add", "bob", &bob_id]);
        Lab {
            lab,
            proxy,
            alice,
            alice_id,
            bob,
            marks: open_dir(),
        }
    }

    /// The file `name`'s `side/mark` writes to.
    fn mark(&self, name: &str) -> PathBuf {
        self.marks.join(name)
    }

    /// An agent called `name`, naming `owners` in its config, offering `side`.
    fn agent(&self, name: &str, owners: &[&str], extra: &str) -> Agent {
        let dir = self.lab.dir().join("agents").join(name).join("missions");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("side.toml"), side_mission(&self.mark(name))).unwrap();
        self.lab.add_agent(&self.proxy.ticket, name, owners, extra)
    }

    /// Alice grants Bob `side` on all her agents; Bob imports it.
    fn grant_bob(&self) {
        let out: Value =
            serde_json::from_str(&self.alice.ok(["grant", "bob", "--mission", "side", "--json"])).unwrap();
        self.bob.ok(["grants", "import", out["ticket"].as_str().unwrap()]);
    }

    fn ls_entry(&self, who: &User, name: &str) -> Option<Value> {
        who.ls().into_iter().find(|a| a["name"] == name)
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn mallorys_claim_gets_none_of_bobs_calls() {
    let l = Lab::new(&[]);
    let mallory = l.lab.user("mallory");
    mallory.init();
    // Alice's Pi looks busy; Mallory's, which names Alice as its owner, looks idle, so a
    // least-loaded choice on claims alone would pick Mallory's.
    let pi = l.agent("pi-alice", &[&l.alice_id], "test_pinned_load = 5.0");
    l.alice.adopt(&pi);
    let fake = l.agent("pi-mallory", &[&l.alice_id], "test_pinned_load = 0.1");
    l.grant_bob();
    wait_for("both agents and their loads", LIMIT, || {
        let ls = l.bob.ls();
        ls.len() == 2 && ls.iter().all(|a| a["load1"].as_f64().unwrap_or(0.0) > 0.05)
    });

    // Least-loaded (the default): Alice's Pi, though it is the busier one.
    let out: Value = serde_json::from_str(&l.bob.ok(["call", "side/mark", "--json"])).unwrap();
    assert_eq!(out["agent"], "pi-alice", "{out}");

    // --all: every agent that is Alice's, which is one.
    let all = l.bob.cli(["call", "side/mark", "--all"]);
    assert!(all.status.success(), "{}", text(&all.stderr));
    let answers: Value = serde_json::from_slice(&all.stdout).unwrap();
    let names: Vec<&str> = answers
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["agent"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["pi-alice"]);
    assert!(!text(&all.stderr).contains("pi-mallory"), "{}", text(&all.stderr));

    // --agent pi-mallory: refused before anything is sent, saying why.
    let direct = l.bob.cli(["call", "side/mark", "--agent", "pi-mallory"]);
    assert_eq!(direct.status.code(), Some(3), "denied: {}", text(&direct.stderr));
    let why = text(&direct.stderr);
    assert!(why.contains("pi-mallory") && why.contains("not adopted"), "{why}");
    // Also by its id.
    let by_id = l.bob.cli(["call", "side/mark", "--agent", &fake.id()]);
    assert_eq!(by_id.status.code(), Some(3), "{}", text(&by_id.stderr));

    // Its handler never ran, and no call of Bob's ever reached it.
    assert!(!l.mark("pi-mallory").exists(), "Mallory's handler ran");
    assert_eq!(
        std::fs::read_to_string(l.mark("pi-alice"))
            .unwrap()
            .lines()
            .count(),
        2
    );
    assert!(
        !fake.daemon.output().contains("denied"),
        "{}",
        fake.daemon.output()
    );

    // `wtd ls` tells them apart.
    let a = l.ls_entry(&l.bob, "pi-alice").unwrap();
    assert_eq!(a["adopted_by"], serde_json::json!([l.alice_id]), "{a}");
    let m = l.ls_entry(&l.bob, "pi-mallory").unwrap();
    assert_eq!(m["adopted_by"], serde_json::json!([]), "{m}");
    assert_eq!(m["not_adopted"], serde_json::json!([l.alice_id]), "{m}");
    let table = l.alice.ok(["ls"]);
    let line = table.lines().find(|l| l.contains("pi-mallory")).unwrap();
    assert!(line.contains("claims you, not adopted"), "{table}");
    let line = table.lines().find(|l| l.contains("pi-alice")).unwrap();
    assert!(line.contains("you") && !line.contains("claims"), "{table}");
}

#[test]
fn allow_keeps_a_claim_waiting_until_it_is_adopted() {
    let l = Lab::new(&["--allow"]);
    let pi = l.agent("pi-alice", &[&l.alice_id], "");
    l.alice.adopt(&pi);
    let fake = l.agent("pi-mallory", &[&l.alice_id], "");
    wait_for("alice's agent admitted", LIMIT, || {
        l.alice.agent_names() == ["pi-alice"]
    });
    wait_for("the claim told to wait", LIMIT, || {
        fake.daemon.output().contains("waiting for adoption by")
    });
    // It keeps retrying, and stays out.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(l.alice.agent_names(), ["pi-alice"]);
    let table = l.alice.ok(["ls"]);
    assert!(table.contains("waiting for adoption: pi-mallory"), "{table}");

    // Alice decides it is hers after all (by name, from the waiting list): it gets in.
    l.alice.ok(["adopt", "pi-mallory"]);
    let took = wait_for("the adopted agent admitted", LIMIT, || {
        l.alice.agent_names() == ["pi-alice", "pi-mallory"]
    });
    println!("adopted: admitted after {took:?}");

    // Disowned, the proxy lets it go again.
    l.alice.ok(["disown", "pi-mallory"]);
    let took = wait_for("the disowned agent let go", LIMIT, || {
        l.alice.agent_names() == ["pi-alice"]
    });
    println!("disowned: let go after {took:?}");
}

/// Connects to the proxy as `user` with the caller library, so a test can send a call to
/// a chosen agent without `wtd call`'s own adoption check (as an old or hand-made caller
/// would): then it is the agent that refuses.
fn raw_call(l: &Lab, user: &User, agent: &Agent, function: &str) -> Result<wtd_caller::Answer, String> {
    let key = wtd_store::identity::load(&wtd_store::home::Home::at(&user.home).identity()).unwrap();
    let id: wtd_keys::AgentId = agent.id().parse().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = wtd_transport::Client::bind(&key, "127.0.0.1:0".parse().unwrap()).unwrap();
        let conn = client.connect(l.proxy.addr, *l.proxy.id.key()).await.unwrap();
        let caller = wtd_caller::Caller::new(Arc::new(key), conn);
        let cand = wtd_caller::dispatch::Candidate {
            id,
            name: agent.name.clone(),
            load: 0.0,
            cpu: 0.0,
            temperature_c: None,
            throttled: false,
            idempotent: false,
        };
        let req = wtd_caller::CallRequest::new("side", function, b"{}".to_vec()).unwrap();
        let r = caller
            .call(&cand, &req, &mut |_| {})
            .await
            .map_err(|e| e.to_string());
        caller.close().await;
        r
    })
}

#[test]
fn disowning_refuses_the_next_call_and_cancels_the_one_running() {
    let l = Lab::new(&[]);
    let pi = l.agent("pi-1", &[&l.alice_id], "");
    l.alice.adopt(&pi);
    l.grant_bob();
    wait_for("pi-1", LIMIT, || l.bob.agent_names() == ["pi-1"]);
    l.bob.ok(["call", "side/mark"]);
    // Alice calls her own agent's built-in mission with no grant: she adopted it.
    let info = l.alice.ok(["call", "sys/info"]);
    assert!(info.contains("pi-1"), "{info}");

    // A slow call is in flight when Alice disowns the agent.
    let slow = Daemon::spawn(
        "bob's slow call",
        l.lab.dir().join("slow.log"),
        &[
            "call".as_ref(),
            "side/slow".as_ref(),
            "--timeout".as_ref(),
            "60s".as_ref(),
        ],
        &l.bob.home,
    );
    wait_for("the slow call running", LIMIT, || {
        pi.daemon.output().contains("running side/slow")
    });
    let mut slow = slow;
    let asked = Instant::now();
    l.alice.ok(["disown", "pi-1"]);
    let disowned = Instant::now();
    println!("`wtd disown` (sign, fsync, publish) took {:?}", disowned - asked);

    // The running call is cancelled, and its caller told why.
    let cancelled = wait_for("the slow call to end", LIMIT, || {
        matches!(slow.child.try_wait(), Ok(Some(_)))
    });
    println!("disown -> running call cancelled at the caller: {cancelled:?}");
    let out = slow.output();
    assert!(out.contains("cancelled") && out.contains("disowned"), "{out}");

    // The next call: `wtd call` refuses at once, saying why (it reads Alice's log).
    let next = l.bob.cli(["call", "side/mark"]);
    println!("disown -> `wtd call` refused: {:?}", disowned.elapsed());
    assert_eq!(next.status.code(), Some(3), "{}", text(&next.stderr));
    let why = text(&next.stderr);
    assert!(why.contains("disowned"), "{why}");

    // And the agent itself refuses a caller that skips that check, saying why.
    let took = Instant::now();
    let mut refused = raw_call(&l, &l.bob, &pi, "mark");
    while refused.is_ok() && took.elapsed() < LIMIT {
        refused = raw_call(&l, &l.bob, &pi, "mark");
    }
    println!(
        "disown -> the agent refuses: {:?} after disowning",
        disowned.elapsed()
    );
    let why = refused.expect_err("the agent refuses");
    assert!(why.contains("disowned"), "{why}");
    // As for Alice herself: no longer its owner in her own eyes.
    let own = l.alice.cli(["call", "sys/info", "--agent", &pi.id()]);
    assert_eq!(own.status.code(), Some(3), "{}", text(&own.stderr));
    assert_eq!(
        std::fs::read_to_string(l.mark("pi-1")).unwrap().lines().count(),
        1
    );

    // Adopted again, calls work again.
    l.alice.adopt(&pi);
    wait_for("calls to work again", LIMIT, || {
        l.bob.cli(["call", "side/mark"]).status.success()
    });
}

/// The token line `wtd enroll new` prints.
fn new_token(alice: &User, extra: &[&str]) -> String {
    let mut args = vec!["enroll", "new"];
    args.extend_from_slice(extra);
    let out = alice.ok(args);
    let line = out
        .lines()
        .find(|l| l.starts_with("enroll = "))
        .expect("a token line");
    line.trim_start_matches("enroll = ").trim_matches('"').to_string()
}

/// A hand-made agent on a raw connection: its own key, an advert it writes itself (here,
/// with a proof copied from another agent's advert), heartbeats until `stop`.
fn copycat(
    l: &Lab,
    name: &str,
    owner: wtd_wire::Key,
    proof: wtd_wire::EnrollmentProof,
) -> (tokio::runtime::Runtime, tokio_util::sync::CancellationToken) {
    use wtd_wire::*;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let (addr, proxy) = (l.proxy.addr, *l.proxy.id.key());
    let advert = Advert {
        name: name.into(),
        owners: vec![owner],
        missions: vec![],
        tags: vec![],
        model: None,
        software: "copycat".into(),
        warnings: vec![],
        enrollment: Some(proof),
    };
    let done = stop.clone();
    rt.spawn(async move {
        let key = wtd_keys::SecretKey::generate();
        let client = wtd_transport::Client::bind(&key, "127.0.0.1:0".parse().unwrap()).unwrap();
        let conn = client.connect(addr, proxy).await.unwrap();
        let (mut send, mut recv) = conn.open_bi().await.unwrap();
        let hello = Open::Agent(AgentHello {
            version: PROTOCOL_VERSION,
            advert,
            heads: vec![],
        });
        wtd_transport::write_frame(&mut send, &encode(&hello))
            .await
            .unwrap();
        let first = wtd_transport::read_frame(&mut recv, defaults::MAX_FRAME)
            .await
            .unwrap()
            .unwrap();
        assert!(matches!(decode::<ToAgent>(&first), Ok(ToAgent::Welcome { .. })));
        loop {
            tokio::select! {
                _ = done.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
            let beat = encode(&FromAgent::Heartbeat(Load::default()));
            if wtd_transport::write_frame(&mut send, &beat).await.is_err() {
                return;
            }
        }
    });
    (rt, stop)
}

#[test]
fn enrollment_adopts_exactly_the_cards_alice_flashed() {
    let l = Lab::new(&[]);
    let good = new_token(&l.alice, &["--label", "card 1"]);
    let expiring = new_token(&l.alice, &["--label", "card 2", "--expires", "1s"]);
    let never_issued = wtd_keys::EnrollmentToken::generate().to_text().to_string();
    assert!(l.alice.ok(["enroll"]).contains("card 1"));

    // Card 1: the right token.
    let pi1 = l.agent("pi-1", &[&l.alice_id], &format!("enroll = \"{good}\""));
    // Card 3: a token Alice never issued.
    let pi3 = l.agent("pi-3", &[&l.alice_id], &format!("enroll = \"{never_issued}\""));
    // Card 2: her token, but it expires before the Pi shows up.
    std::thread::sleep(Duration::from_millis(1500));
    let pi2 = l.agent("pi-2", &[&l.alice_id], &format!("enroll = \"{expiring}\""));
    wait_for("three agents", LIMIT, || l.alice.agent_names().len() == 3);
    assert!(
        !pi1.daemon.output().contains(&good[12..]),
        "the agent never logs its token"
    );

    let out = l.alice.cli(["adopt", "--pending"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let (said, refused) = (text(&out.stdout), text(&out.stderr));
    assert!(said.contains("Adopted pi-1"), "{said}");
    assert!(
        refused.contains("pi-2") && refused.contains("expired"),
        "{refused}"
    );
    assert!(
        refused.contains("pi-3") && refused.contains("did not issue"),
        "{refused}"
    );
    let adopted =
        |name: &str| l.ls_entry(&l.alice, name).unwrap()["adopted_by"] == serde_json::json!([l.alice_id]);
    assert!(adopted("pi-1") && !adopted("pi-2") && !adopted("pi-3"));
    assert!(l.alice.ok(["enroll"]).contains(&format!("used by {}", pi1.id())));

    // Card 4: a copy of card 1 (the same token, reused).
    let _pi4 = l.agent("pi-4", &[&l.alice_id], &format!("enroll = \"{good}\""));
    // And a hand-made agent that copies pi-1's proof out of its advert into its own.
    let roster = {
        let key = wtd_store::identity::load(&wtd_store::home::Home::at(&l.alice.home).identity()).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let client = wtd_transport::Client::bind(&key, "127.0.0.1:0".parse().unwrap()).unwrap();
            let conn = client.connect(l.proxy.addr, *l.proxy.id.key()).await.unwrap();
            wtd_caller::Caller::new(Arc::new(key), conn)
                .roster()
                .await
                .unwrap()
        })
    };
    let pi1_advert = &roster.iter().find(|a| a.advert.name == "pi-1").unwrap().advert;
    let (_rt, stop) = copycat(
        &l,
        "pi-copy",
        pi1_advert.owners[0],
        pi1_advert.enrollment.unwrap(),
    );
    wait_for("pi-4 and the copycat", LIMIT, || l.alice.agent_names().len() == 5);

    let out = l.alice.cli(["adopt", "--pending"]);
    let refused = text(&out.stderr);
    assert!(
        refused.contains("pi-4") && refused.contains("already used"),
        "{refused}"
    );
    assert!(
        refused.contains("pi-copy") && refused.contains("does not verify"),
        "{refused}"
    );
    for name in ["pi-2", "pi-3", "pi-4", "pi-copy"] {
        assert!(!adopted(name), "{name} must not be adopted");
    }
    assert!(adopted("pi-1"));
    stop.cancel();
    drop((pi2, pi3));
}
