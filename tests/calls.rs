//! Calls through the proxy, end to end (authenticated by their session; receipts on request): real `wtd proxy`, `wtd agent`s and `wtd
//! call` processes on 127.0.0.1. Alice owns the agents; Bob calls.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::Duration;

use common::{wait_for, Agent, Proxy, TestCluster, User};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(20);

/// A mission whose functions leave traces, in a directory anyone can write to (functions
/// run as an unprivileged user when the agent runs as root).
fn side_effect_mission(lab: &TestCluster) -> (String, PathBuf) {
    let dir = tempfile::Builder::new()
        .prefix("wtd-side")
        .tempdir()
        .unwrap()
        .keep();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let mark = dir.join("ran");
    let toml = format!(
        r#"name = "side"
version = "1"
description = "functions that leave traces"

[[functions]]
name = "mark"
description = "appends a line to a file"
exec = ["/bin/sh", "-c", "echo ran >> {mark}; echo '{{\"ok\":true}}'"]
idempotent = false

[[functions]]
name = "big"
description = "prints more than its output cap"
exec = ["/bin/sh", "-c", "head -c 100000 /dev/zero"]
output_cap = 1000

[[functions]]
name = "hog"
description = "eats memory until its limit stops it"
exec = ["/bin/sh", "-c", "cat /dev/zero | tail -c 512M"]
memory = "16MiB"

[[functions]]
name = "slowecho"
description = "waits, then echoes"
exec = ["/bin/sh", "-c", "echo started >&2; sleep 3; cat"]
idempotent = true
"#,
        mark = mark.display()
    );
    let _ = lab;
    (toml, mark)
}

struct Lab {
    lab: TestCluster,
    proxy: Proxy,
    alice: User,
    alice_id: String,
    bob: User,
    bob_id: String,
}

impl Lab {
    fn new() -> Lab {
        let lab = TestCluster::new();
        let proxy = lab.start_proxy();
        let alice = lab.user("alice");
        let alice_id = alice.init();
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
            bob_id,
        }
    }

    fn agent(&self, name: &str, extra: &str, side: Option<&str>) -> Agent {
        if let Some(toml) = side {
            let dir = self.lab.dir().join("agents").join(name).join("missions");
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("side.toml"), toml).unwrap();
        }
        let agent = self
            .lab
            .add_agent(&self.proxy.ticket, name, &[&self.alice_id], extra);
        // Alice's: her config is named in it, and she adopts it.
        self.alice.adopt(&agent);
        agent
    }

    /// Waits until every agent's first heartbeat (with its pinned load) has arrived.
    fn wait_pinned_loads(&self) {
        wait_for("pinned loads reported", LIMIT, || {
            self.bob
                .ls()
                .iter()
                .all(|a| a["load1"].as_f64().unwrap_or(0.0) > 0.05)
        });
    }

    fn wait_agents(&self, n: usize) {
        wait_for("agents online", LIMIT, || self.bob.agent_names().len() == n);
    }

    /// Alice grants Bob `mission` with extra flags; Bob imports the ticket.
    fn grant(&self, mission: &str, extra: &[&str]) -> String {
        let mut args = vec!["grant", "bob", "--mission", mission, "--json"];
        args.extend_from_slice(extra);
        let out: Value = serde_json::from_str(&self.alice.ok(args)).unwrap();
        self.bob.ok(["grants", "import", out["ticket"].as_str().unwrap()]);
        out["grant_id"].as_str().unwrap().to_string()
    }

    fn call(&self, args: &[&str]) -> std::process::Output {
        let mut all = vec!["call"];
        all.extend_from_slice(args);
        self.bob.cli(all)
    }
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn without_a_grant_nothing_runs_and_with_one_it_does() {
    let l = Lab::new();
    let (side, mark) = side_effect_mission(&l.lab);
    let _pi = l.agent("pi-1", "", Some(&side));
    l.wait_agents(1);

    // No grant: refused before anything runs, with what to do.
    let out = l.call(&["side/mark"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("wtd grant"), "{}", stderr(&out));
    assert!(!mark.exists(), "the handler never ran");

    // A grant for another mission does not help.
    l.grant("demo", &[]);
    let out = l.call(&["side/mark"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(!mark.exists());

    // With the grant, it runs once per call.
    l.grant("side", &[]);
    let out = l.call(&["side/mark"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "{\"ok\":true}");
    assert_eq!(std::fs::read_to_string(&mark).unwrap(), "ran\n");

    // Echo round-trips the arguments; bad JSON is refused locally.
    let out = l.call(&["demo/echo", "{\"msg\":\"hi\"}"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "{\"msg\":\"hi\"}");
    assert_eq!(l.call(&["demo/echo", "{not json"]).status.code(), Some(2));
    // Arguments and results are capped, with errors that say so.
    let big_args = format!("{{\"x\":\"{}\"}}", "a".repeat(70_000));
    let out = l.call(&["demo/echo", &big_args]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("limit"), "{}", stderr(&out));
    let out = l.call(&["side/big"]);
    assert_eq!(out.status.code(), Some(7));
    assert!(stderr(&out).contains("output limit"), "{}", stderr(&out));
    // A function past its memory limit is stopped, and its caller told which limit.
    let out = l.call(&["side/hog"]);
    assert_eq!(out.status.code(), Some(7));
    assert!(
        stderr(&out).contains("side/hog used more than 16 MiB of memory"),
        "{}",
        stderr(&out)
    );
    // Unknown functions and missions say where to look.
    let out = l.call(&["demo/nope"]);
    assert_eq!(out.status.code(), Some(4));
    assert!(stderr(&out).contains("wtd ls"), "{}", stderr(&out));
}

#[test]
fn least_loaded_all_and_agent_selection() {
    let l = Lab::new();
    let _a = l.agent("pi-a", "test_pinned_load = 0.9", None);
    let _b = l.agent("pi-b", "test_pinned_load = 0.1", None);
    let _c = l.agent("pi-c", "test_pinned_load = 0.5", None);
    l.wait_agents(3);
    l.wait_pinned_loads();
    l.grant("demo", &[]);

    for _ in 0..3 {
        let out = l.call(&["demo/echo", "{}", "--json"]);
        assert!(out.status.success(), "{}", stderr(&out));
        let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
        assert_eq!(v["agent"], "pi-b", "the least-loaded agent answers");
    }
    let out = l.call(&["demo/echo", "{\"n\":1}", "--all"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let mut agents: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["agent"].as_str().unwrap())
        .collect();
    agents.sort();
    assert_eq!(agents, ["pi-a", "pi-b", "pi-c"]);
    assert!(v
        .as_array()
        .unwrap()
        .iter()
        .all(|a| a["output"] == serde_json::json!({"n": 1})));

    let out = l.call(&["demo/echo", "{}", "--json", "--agent", "pi-c"]);
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["agent"], "pi-c");
    // Round robin takes turns.
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..3 {
        let out = l.call(&["demo/echo", "{}", "--json", "--round-robin"]);
        let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
        seen.insert(v["agent"].as_str().unwrap().to_string());
    }
    assert_eq!(seen.len(), 3);
}

#[test]
fn revocation_denies_the_next_call_and_cancels_one_in_flight() {
    let l = Lab::new();
    let _pi = l.agent("pi-1", "", None);
    l.wait_agents(1);
    l.grant("demo", &[]);
    assert!(l.call(&["demo/echo"]).status.success());

    // A long call in flight...
    let mut slow = common::Daemon::spawn(
        "wtd call demo/slow",
        l.lab.dir().join("slow.log"),
        &["call".as_ref(), "demo/slow".as_ref()],
        &l.bob.home,
    );
    wait_for("the slow call to start", LIMIT, || {
        std::fs::read_to_string(l.lab.dir().join("agents/pi-1/agent.log"))
            .unwrap_or_default()
            .contains("running demo/slow")
    });
    // ... is cancelled by the revocation, and the next call is denied.
    l.alice.ok(["revoke", "bob", "--mission", "demo"]);
    let status = slow.child.wait().unwrap();
    assert_eq!(status.code(), Some(7), "{}", slow.output());
    assert!(slow.output().contains("revoked"), "{}", slow.output());
    let out = l.call(&["demo/echo"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(stderr(&out).contains("revoked"), "{}", stderr(&out));
}

#[test]
fn the_rate_limit_bites_with_a_retry_after() {
    let l = Lab::new();
    let _pi = l.agent("pi-1", "", None);
    l.wait_agents(1);
    l.grant("demo", &["--rate", "3/min"]);
    for i in 0..3 {
        let out = l.call(&["demo/echo"]);
        assert!(out.status.success(), "call {i}: {}", stderr(&out));
    }
    let out = l.call(&["demo/echo"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(stderr(&out).contains("try again in"), "{}", stderr(&out));
    assert!(stderr(&out).contains("retry after"), "{}", stderr(&out));
}

#[test]
fn an_agent_killed_mid_call_idempotent_retries_elsewhere_others_may_have_run() {
    let l = Lab::new();
    let (side, _mark) = side_effect_mission(&l.lab);
    let mut a = l.agent("pi-a", "test_pinned_load = 0.1", Some(&side));
    let _b = l.agent("pi-b", "test_pinned_load = 0.9", Some(&side));
    l.wait_agents(2);
    l.wait_pinned_loads();
    l.grant("side", &[]);
    l.grant("demo", &[]);

    // Idempotent: pi-a (least loaded) is killed while it runs; pi-b answers.
    let mut call = common::Daemon::spawn(
        "slowecho",
        l.lab.dir().join("slowecho.log"),
        &[
            "call".as_ref(),
            "side/slowecho".as_ref(),
            "{\"v\":7}".as_ref(),
            "--json".as_ref(),
        ],
        &l.bob.home,
    );
    wait_for("slowecho to start on pi-a", LIMIT, || {
        std::fs::read_to_string(a.dir.join("agent.log"))
            .unwrap_or_default()
            .contains("running side/slowecho")
    });
    a.daemon.kill();
    let status = call.child.wait().unwrap();
    assert!(status.success(), "{}", call.output());
    assert!(call.output().contains("\"agent\": \"pi-b\""), "{}", call.output());

    // Not idempotent: the caller is told it may have run, and nothing is retried.
    a.restart();
    l.wait_agents(2);
    l.wait_pinned_loads();
    let mut call = common::Daemon::spawn(
        "slow",
        l.lab.dir().join("slow.log"),
        &["call".as_ref(), "demo/slow".as_ref()],
        &l.bob.home,
    );
    wait_for("slow to start on pi-a", LIMIT, || {
        std::fs::read_to_string(a.dir.join("agent.log"))
            .unwrap_or_default()
            .contains("running demo/slow")
    });
    a.daemon.kill();
    let status = call.child.wait().unwrap();
    assert_eq!(status.code(), Some(6), "{}", call.output());
    assert!(
        call.output().contains("may or may not have run"),
        "{}",
        call.output()
    );
    let _ = &l.bob_id;
}

#[test]
fn an_expired_grant_is_denied_and_why_says_so() {
    let l = Lab::new();
    let _pi = l.agent("pi-1", "", None);
    l.wait_agents(1);

    // A grant that ended two days ago. The CLI never makes grants in the past, so the
    // test signs one with Alice's key and appends it to her log, as an old grant would be.
    use wtd_keys::log::Record;
    use wtd_keys::{Audience, Grant, GrantId, OwnerKey, Rate, Ticket, Timestamp, UserKey};
    let alice_key = wtd_store::identity::load(&l.alice.home.join("identity.key")).unwrap();
    let owner = OwnerKey(alice_key.public());
    let day = 86_400_000;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let grant = Grant {
        id: GrantId::random(),
        issuer: owner,
        subject: UserKey(l.bob_id.parse().unwrap()),
        audience: Audience::AllAgents,
        mission: "demo".parse().unwrap(),
        rate: Rate {
            calls: 60,
            period_ms: 60_000,
        },
        burst: 60,
        concurrency: 4,
        not_before: Timestamp(now - 3 * day),
        expires: Timestamp(now - 2 * day),
        issued_at: Timestamp(now - 3 * day),
    }
    .sign(&alice_key);
    {
        let (mut log, _) = wtd_store::logfile::LogFile::open(&l.alice.home.join("owner.log"), owner).unwrap();
        let entry = log
            .log()
            .next_entry(&alice_key, Record::Grant(grant.clone()))
            .unwrap();
        log.append(entry).unwrap();
    }
    l.alice.ok(["sync"]);
    l.bob.ok([
        "grants",
        "import",
        &Ticket {
            proxy: None,
            grants: vec![grant],
        }
        .to_text(),
    ]);

    let out = l.call(&["demo/echo"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("expired 2 days ago"), "{}", stderr(&out));
    let why = l.alice.ok(["why", "bob", "demo/echo"]);
    assert!(why.contains("DENY") && why.contains("expired"), "{why}");

    // A fresh grant: allowed, and `why` names it.
    let fresh = l.grant("demo", &[]);
    let why = l.alice.ok(["why", "bob", "demo/echo"]);
    assert!(why.contains("ALLOW") && why.contains(&fresh), "{why}");
    assert!(l.call(&["demo/echo"]).status.success());
}

#[test]
fn a_caller_whose_session_key_is_not_the_grants_subject_is_refused_and_nothing_runs() {
    // Carol got hold of Bob's grant ticket (it is not secret: it names Bob's key). She can
    // present it nowhere: the agent authorizes the key her session proved, not a claim.
    let l = Lab::new();
    let (side, mark) = side_effect_mission(&l.lab);
    let pi = l.agent("pi-1", "", Some(&side));
    l.wait_agents(1);
    let out: Value =
        serde_json::from_str(&l.alice.ok(["grant", "bob", "--mission", "side", "--json"])).unwrap();
    let ticket = out["ticket"].as_str().unwrap().to_string();
    l.bob.ok(["grants", "import", &ticket]);
    let carol = l.lab.user("carol");
    carol.init();
    carol.ok(["join", &l.proxy.ticket]);

    // Through the CLI: the grant is not for her key, so she has nothing to call with.
    let _ = carol.cli(["grants", "import", &ticket]);
    let out = carol.cli(["call", "side/mark"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(!mark.exists(), "nothing ran");

    // Through the library, straight to the agent, as a modified client would: the agent
    // refuses, because her session key is not the grant's subject.
    let home = wtd_store::home::Home::at(&carol.home);
    let key = std::sync::Arc::new(wtd_store::identity::load(&home.identity()).unwrap());
    let proxy = wtd_keys::Ticket::from_text(&l.proxy.ticket)
        .unwrap()
        .proxy
        .unwrap();
    let agent = wtd_keys::AgentId(pi.id().parse().unwrap());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let refused = rt.block_on(async {
        let client = wtd_transport::Client::bind(&key, "127.0.0.1:0".parse().unwrap()).unwrap();
        let conn = client.connect(proxy.addrs[0], *proxy.id.key()).await.unwrap();
        let session = std::sync::Arc::new(
            wtd_caller::Session::open(key.clone(), &conn, agent)
                .await
                .unwrap(),
        );
        let mission = wtd_keys::MissionName::new("side").unwrap();
        let function = wtd_keys::FunctionName::new("mark").unwrap();
        let mut refused = Vec::new();
        // Both forms: a live call, and a receipt call (signed by Carol, so also not Bob's).
        for receipt in [false, true] {
            let pending = session
                .call(&mission, &function, b"{}", receipt, &[])
                .await
                .unwrap();
            match pending.finish(&mut |_| {}).await {
                Err(wtd_caller::CallError::Refused(r)) => refused.push(r.kind),
                other => panic!("Carol's call was not refused: {other:?}"),
            }
        }
        wtd_transport::close_and_flush(&conn, b"bye").await;
        refused
    });
    assert_eq!(refused, ["no_grant", "no_grant"]);
    assert!(!mark.exists(), "the handler never ran");

    // Bob, whose key the grant names, is served.
    assert!(l.call(&["side/mark"]).status.success());
    assert_eq!(std::fs::read_to_string(&mark).unwrap(), "ran\n");
}

#[test]
fn a_script_of_many_calls_never_finds_the_proxy_full() {
    // Each `wtd call` is a new process with a new connection. One that exits without its
    // CONNECTION_CLOSE leaves the proxy holding the connection until its idle timeout, and
    // after 32 of those from one address the proxy refuses new ones. More than that many
    // back to back (well inside the idle timeout, even in a debug build) must all work.
    let l = Lab::new();
    let _pi = l.agent("pi-1", "", None);
    l.wait_agents(1);
    l.grant("sys", &[]);
    let per_address = wtd_transport::Limits::default().max_connections_per_ip;
    let start = std::time::Instant::now();
    for i in 0..per_address + 8 {
        let out = l.call(&["sys/ping"]);
        assert!(out.status.success(), "call {i}: {}", stderr(&out));
    }
    for i in 0..8 {
        let out = l.bob.cli(["ls", "--json"]);
        assert!(out.status.success(), "ls {i}: {}", stderr(&out));
    }
    eprintln!("{} calls and 8 ls in {:?}", per_address + 8, start.elapsed());
}

/// A hand-made session from `user` to `agent`, below the caller library: the relay, the
/// pinned handshake, then whatever messages the test writes. The client and the connection
/// are returned so the session lives as long as the caller keeps them.
async fn raw_session(
    user: &common::User,
    proxy: &Proxy,
    agent: &Agent,
) -> (
    wtd_transport::Client,
    wtd_transport::Connection,
    tokio_rustls::client::TlsStream<tokio::io::Join<wtd_transport::RecvStream, wtd_transport::SendStream>>,
) {
    use wtd_wire::{decode, encode, Key, Open, RelayReply};
    let home = wtd_store::home::Home::at(&user.home);
    let key = wtd_store::identity::load(&home.identity()).unwrap();
    let info = wtd_keys::Ticket::from_text(&proxy.ticket).unwrap().proxy.unwrap();
    let agent_id: wtd_keys::PublicId = agent.id().parse().unwrap();
    let client = wtd_transport::Client::bind(&key, "127.0.0.1:0".parse().unwrap()).unwrap();
    let conn = client.connect(info.addrs[0], *info.id.key()).await.unwrap();
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    let open = encode(&Open::Relay {
        to: Key(*agent_id.as_bytes()),
    });
    wtd_transport::write_frame(&mut send, &open).await.unwrap();
    let reply = wtd_transport::read_frame(&mut recv, 1 << 20)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(decode::<RelayReply>(&reply).unwrap(), RelayReply::Connected);
    let (tls, _binding) = wtd_transport::session::connect(&key, agent_id, tokio::io::join(recv, send))
        .await
        .unwrap();
    (client, conn, tls)
}

/// The agent's next message on a hand-made session, or None once it has closed it.
async fn read_agent_msg<R: tokio::io::AsyncRead + Unpin>(tls: &mut R) -> Option<wtd_wire::call::AgentMsg> {
    match wtd_transport::session::read_msg(tls, 4 << 20).await {
        Ok(Some(bytes)) => Some(wtd_wire::decode(&bytes).unwrap()),
        _ => None,
    }
}

#[test]
fn an_agent_closes_a_session_that_reuses_a_call_number_or_sends_garbage() {
    use wtd_wire::call::{AgentMsg, CallerMsg};
    let l = Lab::new();
    let (side, mark) = side_effect_mission(&l.lab);
    let pi = l.agent("pi-1", "", Some(&side));
    l.wait_agents(1);
    l.grant("side", &[]);
    let lines = || std::fs::read_to_string(&mark).unwrap_or_default().lines().count();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let call = |id| {
        wtd_wire::encode(&CallerMsg::Call {
            id,
            mission: "side".into(),
            function: "mark".into(),
            args: b"{}".to_vec(),
            signed: None,
        })
    };
    rt.block_on(async {
        // Call 5 runs; call 5 again is refused and ends the session; call 6 then gets nothing.
        let (_client, _conn, mut tls) = raw_session(&l.bob, &l.proxy, &pi).await;
        wtd_transport::session::write_msg(&mut tls, &call(5))
            .await
            .unwrap();
        assert!(matches!(
            read_agent_msg(&mut tls).await,
            Some(AgentMsg::Done { id: 5, .. })
        ));
        wtd_transport::session::write_msg(&mut tls, &call(5))
            .await
            .unwrap();
        match read_agent_msg(&mut tls).await {
            Some(AgentMsg::Refused { id: 5, refused }) => {
                assert_eq!(refused.kind, "bad_call");
                assert!(refused.message.contains("only go up"), "{}", refused.message);
            }
            other => panic!("a reused call number was not refused: {other:?}"),
        }
        let _ = wtd_transport::session::write_msg(&mut tls, &call(6)).await;
        assert!(read_agent_msg(&mut tls).await.is_none(), "the session was closed");

        // A lower number than the last is refused the same way; so is call number 0.
        let (_client, _conn, mut tls) = raw_session(&l.bob, &l.proxy, &pi).await;
        wtd_transport::session::write_msg(&mut tls, &call(9))
            .await
            .unwrap();
        assert!(matches!(
            read_agent_msg(&mut tls).await,
            Some(AgentMsg::Done { id: 9, .. })
        ));
        wtd_transport::session::write_msg(&mut tls, &call(8))
            .await
            .unwrap();
        assert!(matches!(
            read_agent_msg(&mut tls).await,
            Some(AgentMsg::Refused { id: 8, .. })
        ));
        let (_client, _conn, mut tls) = raw_session(&l.bob, &l.proxy, &pi).await;
        wtd_transport::session::write_msg(&mut tls, &call(0))
            .await
            .unwrap();
        assert!(matches!(
            read_agent_msg(&mut tls).await,
            Some(AgentMsg::Refused { id: 0, .. })
        ));

        // Bytes that are no message: refused as malformed, the session ends.
        let (_client, _conn, mut tls) = raw_session(&l.bob, &l.proxy, &pi).await;
        wtd_transport::session::write_msg(&mut tls, b"\xff\xff\xff\xff not a message")
            .await
            .unwrap();
        match read_agent_msg(&mut tls).await {
            Some(AgentMsg::Refused { refused, .. }) => {
                assert!(refused.message.contains("malformed"), "{refused:?}")
            }
            other => panic!("garbage was not refused: {other:?}"),
        }
        assert!(read_agent_msg(&mut tls).await.is_none(), "the session was closed");
    });
    assert_eq!(lines(), 2, "calls 5 and 9 ran, once each; nothing else did");
}

/// A call's cause (wire version 6) is checked by the agent: a malformed one refuses that
/// call alone, saying what is wrong; the session goes on, and a well-formed one runs.
#[test]
fn an_agent_refuses_a_call_with_a_malformed_cause_and_only_that_call() {
    use wtd_wire::call::{AgentMsg, CallerMsg};
    use wtd_wire::{Key, LogPosition};
    let l = Lab::new();
    let (side, mark) = side_effect_mission(&l.lab);
    let pi = l.agent("pi-1", "", Some(&side));
    l.wait_agents(1);
    l.grant("side", &[]);
    let lines = || std::fs::read_to_string(&mark).unwrap_or_default().lines().count();
    let publisher: wtd_keys::PublicId = pi.id().parse().unwrap();
    let good = LogPosition {
        publisher: Key::from(publisher),
        mission: "social".into(),
        seq: 1,
    };
    let call = |id, cause: Vec<LogPosition>| {
        wtd_wire::encode(&CallerMsg::CallCaused {
            id,
            mission: "side".into(),
            function: "mark".into(),
            args: b"{}".to_vec(),
            signed: None,
            cause,
        })
    };
    let many: Vec<LogPosition> = (0..=wtd_keys::defaults::MAX_CAUSE)
        .map(|i| LogPosition {
            mission: format!("m{i}"),
            ..good.clone()
        })
        .collect();
    let bad = [
        (
            LogPosition {
                seq: 0,
                ..good.clone()
            },
            "event 0",
        ),
        (
            LogPosition {
                publisher: Key([0; 32]),
                ..good.clone()
            },
            "invalid publisher key",
        ),
        (
            LogPosition {
                mission: "Not A Mission".into(),
                ..good.clone()
            },
            "mission `Not A Mission`",
        ),
    ];
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (_client, _conn, mut tls) = raw_session(&l.bob, &l.proxy, &pi).await;
        let mut id = 0;
        let mut cases: Vec<(Vec<LogPosition>, &str)> =
            bad.into_iter().map(|(p, says)| (vec![p], says)).collect();
        cases.push((many, "more than"));
        for (cause, says) in cases {
            id += 1;
            wtd_transport::session::write_msg(&mut tls, &call(id, cause))
                .await
                .unwrap();
            match read_agent_msg(&mut tls).await {
                Some(AgentMsg::Refused { id: got, refused }) => {
                    assert_eq!(got, id);
                    assert_eq!(refused.kind, "bad_call");
                    assert!(refused.message.contains(says), "{says}: {}", refused.message);
                    assert!(refused.message.contains("WTD_CAUSE"), "{}", refused.message);
                }
                other => panic!("a malformed cause ({says}) was not refused: {other:?}"),
            }
        }
        // The session is still open, and a call with a sound cause runs.
        id += 1;
        wtd_transport::session::write_msg(&mut tls, &call(id, vec![good.clone()]))
            .await
            .unwrap();
        match read_agent_msg(&mut tls).await {
            Some(AgentMsg::Done { id: got, .. }) => assert_eq!(got, id),
            other => panic!("a call with a sound cause did not run: {other:?}"),
        }
    });
    assert_eq!(lines(), 1, "only the call with a sound cause ran");
}

#[test]
fn a_session_to_an_agent_the_proxy_does_not_have_says_so() {
    // The relay request and the handshake leave together (`wtd_caller::relay`); the
    // proxy's refusal must still come back as itself, not as a broken handshake.
    let l = Lab::new();
    let _pi = l.agent("pi-1", "", None);
    l.wait_agents(1);
    let home = wtd_store::home::Home::at(&l.bob.home);
    let key = std::sync::Arc::new(wtd_store::identity::load(&home.identity()).unwrap());
    let proxy = wtd_keys::Ticket::from_text(&l.proxy.ticket)
        .unwrap()
        .proxy
        .unwrap();
    let nobody = wtd_keys::AgentId(wtd_keys::SecretKey::generate().public());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = wtd_transport::Client::bind(&key, "127.0.0.1:0".parse().unwrap()).unwrap();
        let conn = client.connect(proxy.addrs[0], *proxy.id.key()).await.unwrap();
        for _ in 0..3 {
            match wtd_caller::Session::open(key.clone(), &conn, nobody).await {
                Err(wtd_caller::OpenError::NoSuchAgent) => {}
                other => panic!("expected NoSuchAgent, got {:?}", other.map(|s| s.agent())),
            }
        }
        // The connection is still good for a real agent afterwards.
        let caller = wtd_caller::Caller::new(key.clone(), conn.clone());
        assert_eq!(caller.roster().await.unwrap().len(), 1);
        wtd_transport::close_and_flush(&conn, b"bye").await;
    });
}

#[test]
fn a_receipt_call_keeps_a_receipt_that_checks_and_a_tampered_one_does_not() {
    let l = Lab::new();
    let _pi = l.agent("pi-1", "", None);
    l.wait_agents(1);
    l.grant("demo", &[]);
    let out = l.call(&["demo/echo", "{\"msg\":\"kept\"}", "--receipt", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let answer: Value = serde_json::from_str(&stdout(&out)).unwrap();
    // The JSON names the receipt by its request id, the name of the file it is kept in.
    let id = answer["receipt"].as_str().expect("a receipt id").to_string();
    let file = l.bob.home.join("receipts").join(format!("{id}.json"));
    assert!(file.exists(), "{} kept", file.display());
    let out = l.bob.cli(["receipts", "check", &id]);
    assert!(out.status.success(), "{}", stderr(&out));

    // The kept output altered: the check refuses it.
    let mut kept: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    // One base64 character changed to another: still decodes, to other bytes.
    let mut output: Vec<char> = kept["output"].as_str().unwrap().chars().collect();
    output[2] = if output[2] == 'A' { 'B' } else { 'A' };
    kept["output"] = Value::String(output.into_iter().collect());
    std::fs::write(&file, serde_json::to_vec(&kept).unwrap()).unwrap();
    let out = l.bob.cli(["receipts", "check", &id]);
    assert!(!out.status.success(), "a tampered receipt checked out");
    assert!(stderr(&out).contains("output"), "{}", stderr(&out));
}

/// A fake Pi sensor tree for the agent's `test_sensor_root` seam: a CPU thermal zone at
/// `temp_c` and the firmware's `get_throttled` word, as a Pi 4 has them.
fn fake_pi(lab: &TestCluster, name: &str, temp_c: f32, throttled: u32) -> String {
    let root = lab.dir().join("sensors").join(name);
    let zone = root.join("sys/class/thermal/thermal_zone0");
    std::fs::create_dir_all(&zone).unwrap();
    std::fs::write(zone.join("type"), "cpu-thermal\n").unwrap();
    std::fs::write(zone.join("temp"), format!("{}\n", (temp_c * 1000.0) as i64)).unwrap();
    let fw = root.join("sys/devices/platform/soc/soc:firmware");
    std::fs::create_dir_all(&fw).unwrap();
    std::fs::write(fw.join("get_throttled"), format!("{throttled:x}\n")).unwrap();
    format!("test_sensor_root = \"{}\"", root.display())
}

#[test]
fn least_loaded_avoids_throttled_pis_and_coolest_picks_the_coolest() {
    let l = Lab::new();
    // pi-hot is the least loaded but throttled now (under-voltage + throttled: 0x50005);
    // pi-cool is the busiest and coolest, and was throttled once since boot (0x50000),
    // which does not make it slow today.
    let hot = fake_pi(&l.lab, "pi-hot", 84.0, 0x50005);
    let warm = fake_pi(&l.lab, "pi-warm", 61.5, 0);
    let cool = fake_pi(&l.lab, "pi-cool", 41.0, 0x50000);
    let _h = l.agent(
        "pi-hot",
        &format!("test_pinned_load = 0.1\ntags = [\"hot\"]\n{hot}"),
        None,
    );
    let _w = l.agent("pi-warm", &format!("test_pinned_load = 0.5\n{warm}"), None);
    let _c = l.agent("pi-cool", &format!("test_pinned_load = 0.9\n{cool}"), None);
    l.wait_agents(3);
    l.wait_pinned_loads();
    wait_for("temperatures reported", LIMIT, || {
        l.bob.ls().iter().all(|a| a["temperature_c"].as_f64().is_some())
    });
    let by_name = |name: &str| l.bob.ls().into_iter().find(|a| a["name"] == name).unwrap();
    assert_eq!(
        by_name("pi-hot")["throttled"],
        0x50005,
        "the load report carries the bits"
    );
    l.grant("demo", &[]);
    let answered_by = |extra: &[&str]| {
        let mut args = vec!["demo/echo", "{}", "--json"];
        args.extend_from_slice(extra);
        let out = l.call(&args);
        assert!(out.status.success(), "{}", stderr(&out));
        let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
        v["agent"].as_str().unwrap().to_string()
    };
    for _ in 0..2 {
        assert_eq!(answered_by(&[]), "pi-warm", "least loaded among the unthrottled");
        assert_eq!(answered_by(&["--least-loaded"]), "pi-warm");
        assert_eq!(answered_by(&["--coolest"]), "pi-cool");
    }
    // When only a throttled Pi can serve, it serves: slow beats nothing.
    assert_eq!(answered_by(&["--tag", "hot"]), "pi-hot");
    assert_eq!(answered_by(&["--tag", "hot", "--coolest"]), "pi-hot");
    // Naming it still reaches it.
    assert_eq!(answered_by(&["--agent", "pi-hot"]), "pi-hot");
    // --coolest is one selector among the others: two at once is a usage error.
    let out = l.call(&["demo/echo", "{}", "--coolest", "--random"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}
