//! Jobs end to end: `wtd push` and `wtd call --async` queue a call on a real `wtd proxy`,
//! a real `wtd agent` runs it when it comes online, `wtd result` collects it. Alice owns
//! the agent; Bob pushes.
//!
//! - a push while no agent is online runs once after one starts; its result is collected;
//! - killing the proxy (kill -9) mid-delivery and restarting it does not run a job twice;
//! - a grant revoked while the job waited: refused at delivery, never run, reported;
//! - a proxy that alters a queued call (here: its disk) is caught by the agent;
//! - the bounds: a caller over its limit is refused with what is queued; a job expires;
//! - selectors: a `--tag` job waits for, and runs only on, a tagged agent, even while an
//!   untagged one is online first; a default job goes to the less loaded of two online
//!   agents; `--all` and `--random` are refused with what to do instead.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{wait_for, Agent, Proxy, TestCluster, User};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(30);

struct Lab {
    lab: TestCluster,
    proxy: Proxy,
    alice: User,
    alice_id: String,
    bob: User,
    /// Where the `side` mission's functions leave their traces.
    dir: PathBuf,
}

impl Lab {
    fn new(proxy_args: &[&str]) -> Lab {
        Lab::with_config(proxy_args, |_| None)
    }

    /// [`Lab::new`] with a proxy.toml written from Alice's and Bob's ids, if `config` gives
    /// one (so it can name them as owners).
    fn with_config(proxy_args: &[&str], config: impl Fn(&[&str; 2]) -> Option<String>) -> Lab {
        let lab = TestCluster::new();
        let alice = lab.user("alice");
        let alice_id = alice.init();
        let bob = lab.user("bob");
        let bob_id = bob.init();
        let mut args: Vec<String> = proxy_args.iter().map(|a| a.to_string()).collect();
        if let Some(text) = config(&[&alice_id, &bob_id]) {
            let path = lab.dir().join("proxy.toml");
            std::fs::write(&path, text).unwrap();
            args.extend(["--config".to_string(), path.display().to_string()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let proxy = lab.start_proxy_on(0, &args);
        alice.ok(["join", &proxy.ticket]);
        bob.ok(["join", &proxy.ticket]);
        alice.ok(["keys", "add", "bob", &bob_id]);
        let dir = tempfile::Builder::new()
            .prefix("wtd-jobs")
            .tempdir()
            .unwrap()
            .keep();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        Lab {
            lab,
            proxy,
            alice,
            alice_id,
            bob,
            dir,
        }
    }

    /// `side/mark` appends a line to `ran`; `side/gate` does too, then waits for the file
    /// `go` (so a test can act while it runs), then answers.
    fn agent(&self, name: &str) -> Agent {
        self.agent_with(name, "")
    }

    /// [`Lab::agent`] with `extra` lines in its agent.toml (tags, a test-only load).
    fn agent_with(&self, name: &str, extra: &str) -> Agent {
        let missions = self.lab.dir().join("agents").join(name).join("missions");
        std::fs::create_dir_all(&missions).unwrap();
        let (ran, go) = (self.ran(), self.dir.join("go"));
        let toml = format!(
            r#"name = "side"
version = "1"
description = "functions that leave traces"

[[functions]]
name = "mark"
description = "appends a line to a file"
exec = ["/bin/sh", "-c", "echo ran >> {ran}; cat"]
idempotent = false

[[functions]]
name = "gate"
description = "appends a line, then waits for a file"
exec = ["/bin/sh", "-c", "echo ran >> {ran}; while [ ! -e {go} ]; do sleep 0.05; done; echo '{{\"gate\":\"open\"}}'"]
timeout = "60s"
idempotent = false
"#,
            ran = ran.display(),
            go = go.display()
        );
        std::fs::write(missions.join("side.toml"), toml).unwrap();
        let agent = self
            .lab
            .add_agent(&self.proxy.ticket, name, &[&self.alice_id], extra);
        self.alice.adopt(&agent);
        agent
    }

    fn ran(&self) -> PathBuf {
        self.dir.join("ran")
    }

    fn runs(&self) -> usize {
        std::fs::read_to_string(self.ran()).map_or(0, |s| s.lines().count())
    }

    fn grant(&self, mission: &str) {
        let out: Value =
            serde_json::from_str(&self.alice.ok(["grant", "bob", "--mission", mission, "--json"])).unwrap();
        self.bob.ok(["grants", "import", out["ticket"].as_str().unwrap()]);
    }

    /// Bob's jobs, as `wtd jobs --json` lists them.
    fn jobs(&self) -> Vec<Value> {
        serde_json::from_str(&self.bob.ok(["jobs", "--json"])).unwrap()
    }

    fn state(&self, job: &str) -> String {
        self.field(job, "state")
    }

    /// A field of one of Bob's jobs in `wtd jobs --json` ("" if absent or null).
    fn field(&self, job: &str, field: &str) -> String {
        self.jobs()
            .iter()
            .find(|j| j["job"] == job)
            .and_then(|j| j[field].as_str().map(str::to_string))
            .unwrap_or_default()
    }

    /// Waits until Bob's `wtd ls` shows the agent `name` reporting load `load1` (its
    /// first heartbeat reached the proxy: until then the proxy knows no load for it).
    fn wait_online(&self, name: &str, load1: f64) {
        wait_for(&format!("{name} online with load {load1}"), LIMIT, || {
            self.bob
                .ls()
                .iter()
                .any(|a| a["name"] == name && a["load1"].as_f64().is_some_and(|l| (l - load1).abs() < 0.01))
        });
    }
}

/// The proxy's `/metrics` text.
fn scrape(addr: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("metrics port");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out.split_once("\r\n\r\n")
        .expect("an HTTP response")
        .1
        .to_string()
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn a_push_while_no_agent_is_online_runs_once_after_one_starts_and_its_result_is_collected() {
    let l = Lab::new(&[]);
    l.grant("side");

    // Nobody is online: both return at once with a job id.
    let out = l.bob.cli(["call", "--async", "side/mark", r#"{"msg":"hi"}"#]);
    assert!(out.status.success(), "{}", stderr(&out));
    let collected = stdout(&out).trim().to_string();
    assert!(collected.starts_with("req-"), "{collected}");
    assert!(
        stderr(&out).contains("the proxy can read"),
        "warned once: {}",
        stderr(&out)
    );
    let out = l.bob.cli(["push", "side/mark", r#"{"msg":"fire"}"#]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        !stderr(&out).contains("the proxy can read"),
        "only once: {}",
        stderr(&out)
    );
    let pushed = stdout(&out).trim().to_string();
    assert_eq!(l.state(&collected), "queued");
    assert_eq!(l.state(&pushed), "queued");
    // Not finished: `wtd result` says so (exit 5) without waiting.
    let out = l.bob.cli(["result", &collected]);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert!(stderr(&out).contains("queued"), "{}", stderr(&out));
    assert_eq!(l.runs(), 0);

    // An agent comes online: both run, once each.
    let _pi = l.agent("pi-1");
    let out = l.bob.cli(["result", &collected, "--wait", "--timeout", "60s"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), r#"{"msg":"hi"}"#);
    wait_for("the pushed job done", LIMIT, || l.state(&pushed) == "done");
    let out = l.bob.cli(["result", &pushed, "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let envelope: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(envelope["state"], "done");
    assert_eq!(envelope["status"], "ok");
    assert_eq!(l.runs(), 2);
    // Asked again, the result is the same and nothing runs again.
    let out = l.bob.cli(["result", &collected]);
    assert_eq!(stdout(&out).trim(), r#"{"msg":"hi"}"#);
    assert_eq!(l.runs(), 2);

    // Someone else cannot read Bob's result.
    let eve = l.lab.user("eve");
    eve.init();
    eve.ok(["join", &l.proxy.ticket]);
    let out = eve.cli(["result", &collected]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no job with that id"), "{}", stderr(&out));
    assert_eq!(eve.ok(["jobs", "--json"]).trim(), "[]");
}

#[test]
fn the_same_job_is_not_run_twice_when_the_proxy_is_killed_and_restarted_mid_delivery() {
    let mut l = Lab::new(&[]);
    l.grant("side");
    let pi = l.agent("pi-1");
    wait_for("pi-1 online", LIMIT, || l.bob.agent_names() == ["pi-1"]);
    let job = l.bob.ok(["call", "--async", "side/gate"]).trim().to_string();
    // It runs (and waits for the gate) on pi-1.
    wait_for("the job running", LIMIT, || l.runs() == 1);
    let port = l.proxy.addr.port();
    l.proxy.daemon.kill();
    l.proxy = l.lab.start_proxy_on(port, &[]);
    // The restarted proxy delivers it again (at least once), while it still runs.
    wait_for("the agent back", LIMIT, || l.bob.agent_names() == ["pi-1"]);
    wait_for("a second delivery", LIMIT, || {
        pi.daemon.output().contains("delivered again")
            || ["delivered", "running"].contains(&l.state(&job).as_str())
    });
    std::fs::write(l.dir.join("go"), b"").unwrap();
    let out = l.bob.cli(["result", &job, "--wait", "--timeout", "60s"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), r#"{"gate":"open"}"#);
    wait_for("the repeat answered from the seen-set", LIMIT, || {
        pi.daemon.output().contains("delivered again")
    });
    assert_eq!(l.runs(), 1, "ran once, though delivered twice");

    // The agent restarting keeps its seen-set too: kill -9 it and the proxy, queue the
    // job's delivery again by restarting both, and it still does not run.
    let mut pi = pi;
    pi.daemon.kill();
    l.proxy.daemon.kill();
    l.proxy = l.lab.start_proxy_on(port, &[]);
    pi.restart();
    wait_for("the agent back", LIMIT, || l.bob.agent_names() == ["pi-1"]);
    assert_eq!(l.state(&job), "done");
    assert_eq!(l.runs(), 1);
}

#[test]
fn a_job_whose_grant_was_revoked_while_it_waited_is_refused_at_delivery_and_reported() {
    let l = Lab::new(&[]);
    l.grant("side");
    let job = l.bob.ok(["call", "--async", "side/mark"]).trim().to_string();
    l.alice.ok(["revoke", "bob", "--mission", "side"]);
    let _pi = l.agent("pi-1");
    let out = l.bob.cli(["result", &job, "--wait", "--timeout", "60s"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("revoked"), "{}", stderr(&out));
    let listed = l.jobs();
    assert_eq!(listed[0]["state"], "refused");
    assert!(
        listed[0]["detail"].as_str().unwrap().contains("revoked"),
        "{listed:?}"
    );
    assert_eq!(l.runs(), 0, "it never ran");

    // Without any grant, a push is refused at once: it could never run.
    let out = l.bob.cli(["push", "demo/echo"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("no unexpired grant"), "{}", stderr(&out));
}

/// Rewrites the record of `jobs.log` holding `from` so it holds `to` instead, with a valid
/// checksum: what a proxy that alters what it stores would do.
fn alter_queue(state_dir: &Path, from: &[u8], to: &[u8]) {
    use sha2::Digest;
    let path = state_dir.join("jobs").join("jobs.log");
    let bytes = std::fs::read(&path).unwrap();
    let mut out = bytes[..8].to_vec();
    let mut pos = 8;
    let mut altered = false;
    while pos < bytes.len() {
        let len = u32::from_be_bytes(bytes[pos..pos + 4].try_into().unwrap()) as usize;
        let mut record = bytes[pos + 4..pos + 4 + len].to_vec();
        if let Some(at) = record.windows(from.len()).position(|w| w == from) {
            record[at..at + from.len()].copy_from_slice(to);
            altered = true;
        }
        out.extend_from_slice(&(record.len() as u32).to_be_bytes());
        out.extend_from_slice(&record);
        out.extend_from_slice(&sha2::Sha256::digest(&record)[..8]);
        pos += 4 + len + 8;
    }
    assert!(altered, "found the bytes to alter");
    std::fs::write(&path, out).unwrap();
}

#[test]
fn a_proxy_that_alters_a_queued_call_is_detected_and_nothing_runs() {
    let mut l = Lab::new(&[]);
    l.grant("side");
    let job = l
        .bob
        .ok(["call", "--async", "side/mark", r#"{"amount":10}"#])
        .trim()
        .to_string();
    let port = l.proxy.addr.port();
    l.proxy.daemon.kill();
    alter_queue(&l.proxy.state_dir, br#"{"amount":10}"#, br#"{"amount":99}"#);
    l.proxy = l.lab.start_proxy_on(port, &[]);
    let pi = l.agent("pi-1");
    let out = l.bob.cli(["result", &job, "--wait", "--timeout", "60s"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("altered"), "{}", stderr(&out));
    assert_eq!(l.runs(), 0, "the altered call never ran");
    assert!(
        pi.daemon.output().contains("refused a queued call"),
        "{}",
        pi.daemon.output()
    );
}

#[test]
fn bounds_refuse_clearly_and_jobs_expire() {
    let metrics = format!("127.0.0.1:{}", common::mosquitto::free_port());
    let l = Lab::new(&["--max-jobs-per-caller", "2", "--metrics", &metrics]);
    l.grant("side");
    l.bob.ok(["push", "side/mark"]);
    l.bob.ok(["push", "side/mark"]);
    let out = l.bob.cli(["push", "side/mark"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("queue full for your key: 2 jobs waiting, the oldest queued"),
        "{}",
        stderr(&out)
    );
    assert_eq!(l.jobs().len(), 2, "nothing queued was dropped to make room");
    // The operator sees it too.
    let text = scrape(&metrics);
    for line in [
        "wtd_proxy_jobs_waiting 2",
        "wtd_proxy_jobs_pushed_total 2",
        "wtd_proxy_jobs_refused_total 1",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} in:\n{text}");
    }

    // A bad expiry is refused on the command line.
    let out = l.bob.cli(["push", "side/mark", "--expires", "8days"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("at most"), "{}", stderr(&out));

    // Another caller still has room; its job expires unrun with no agent online.
    let carol = l.lab.user("carol");
    let carol_id = carol.init();
    carol.ok(["join", &l.proxy.ticket]);
    l.alice.ok(["keys", "add", "carol", &carol_id]);
    let out: Value =
        serde_json::from_str(&l.alice.ok(["grant", "carol", "--mission", "side", "--json"])).unwrap();
    carol.ok(["grants", "import", out["ticket"].as_str().unwrap()]);
    let job = carol
        .ok(["call", "--async", "side/mark", "--expires", "2s"])
        .trim()
        .to_string();
    let out = carol.cli(["result", &job, "--wait", "--timeout", "60s"]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(stderr(&out).contains("expired"), "{}", stderr(&out));
    assert!(stderr(&out).contains("no agent"), "{}", stderr(&out));
    let listed: Vec<Value> = serde_json::from_str(&carol.ok(["jobs", "--json"])).unwrap();
    assert_eq!(listed[0]["state"], "expired");
    // An agent that comes later never runs it.
    let _pi = l.agent("pi-1");
    wait_for("bob's jobs done", LIMIT, || {
        l.jobs().iter().all(|j| j["state"] == "done")
    });
    assert_eq!(l.runs(), 2, "bob's two ran, carol's expired one did not");
}

#[test]
fn an_agent_of_an_older_protocol_is_admitted_and_never_sent_a_job() {
    use wtd_wire::{decode, encode, Advert, AgentHello, FunctionInfo, MissionInfo, Open, ToAgent};
    let l = Lab::new(&[]);
    l.grant("side");
    // A version-4 agent (it knows no jobs) that offers side/mark, online first.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let key = wtd_keys::SecretKey::generate();
    let advert = Advert {
        name: "old-pi".into(),
        owners: vec![wtd_wire::Key::from(
            l.alice_id.parse::<wtd_keys::PublicId>().unwrap(),
        )],
        missions: vec![MissionInfo {
            name: "side".into(),
            version: "1".into(),
            description: String::new(),
            functions: vec![FunctionInfo {
                name: "mark".into(),
                description: String::new(),
                idempotent: false,
            }],
        }],
        tags: vec![],
        model: None,
        software: "wtd 0.0 (version 4)".into(),
        warnings: vec![],
        enrollment: None,
    };
    let (addr, proxy_key) = (l.proxy.addr, *l.proxy.id.key());
    let (_client, _conn, _send, recv, reply) = rt.block_on(async {
        let client = wtd_transport::Client::bind(&key, "127.0.0.1:0".parse().unwrap()).unwrap();
        let conn = client.connect(addr, proxy_key).await.unwrap();
        let (mut send, mut recv) = conn.open_bi().await.unwrap();
        let hello = Open::Agent(AgentHello {
            version: 4,
            advert,
            heads: vec![],
        });
        wtd_transport::write_frame(&mut send, &encode(&hello))
            .await
            .unwrap();
        let first = wtd_transport::read_frame(&mut recv, wtd_wire::defaults::MAX_FRAME)
            .await
            .unwrap()
            .unwrap();
        (client, conn, send, recv, decode::<ToAgent>(&first).unwrap())
    });
    assert!(matches!(reply, ToAgent::Welcome { .. }), "{reply:?}");
    wait_for("old-pi online", LIMIT, || l.bob.agent_names() == ["old-pi"]);
    // Pushed while only the old agent offers it: it waits (had the old agent been sent it,
    // it would be marked delivered to it, and only it).
    let job = l.bob.ok(["call", "--async", "side/mark"]).trim().to_string();
    assert_eq!(l.state(&job), "queued");
    let pi = l.agent("pi-1");
    let out = l
        .bob
        .cli(["result", &job, "--wait", "--timeout", "60s", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let envelope: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(envelope["agent"], pi.id(), "run by the version-5 agent");
    assert_eq!(l.runs(), 1);
    drop(recv);
}

#[test]
fn a_result_signed_by_a_machine_the_owner_never_adopted_is_not_shown() {
    use wtd_keys::job::{result_for, SignedJob};
    use wtd_wire::jobs::{JobOutcome, JobUpdate};
    use wtd_wire::{decode, encode, Advert, AgentHello, FromAgent, FunctionInfo, MissionInfo, Open, ToAgent};
    let l = Lab::new(&[]);
    l.grant("side");
    let job = l.bob.ok(["call", "--async", "side/mark"]).trim().to_string();
    // A machine that claims Alice but that she never adopted (the proxy's own, say) takes
    // the job and answers it with a result it signs itself, without running anything.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let key = wtd_keys::SecretKey::generate();
    let advert = Advert {
        name: "rogue".into(),
        owners: vec![wtd_wire::Key::from(
            l.alice_id.parse::<wtd_keys::PublicId>().unwrap(),
        )],
        missions: vec![MissionInfo {
            name: "side".into(),
            version: "1".into(),
            description: String::new(),
            functions: vec![FunctionInfo {
                name: "mark".into(),
                description: String::new(),
                idempotent: false,
            }],
        }],
        tags: vec![],
        model: None,
        software: "rogue".into(),
        warnings: vec![],
        enrollment: None,
    };
    let (addr, proxy_key) = (l.proxy.addr, *l.proxy.id.key());
    let _kept = rt.block_on(async {
        let client = wtd_transport::Client::bind(&key, "127.0.0.1:0".parse().unwrap()).unwrap();
        let conn = client.connect(addr, proxy_key).await.unwrap();
        let (mut send, mut recv) = conn.open_bi().await.unwrap();
        let hello = Open::Agent(AgentHello {
            version: wtd_wire::PROTOCOL_VERSION,
            advert,
            heads: vec![],
        });
        wtd_transport::write_frame(&mut send, &encode(&hello))
            .await
            .unwrap();
        let delivery = loop {
            let frame = wtd_transport::read_frame(&mut recv, wtd_wire::defaults::MAX_FRAME)
                .await
                .unwrap()
                .unwrap();
            if let ToAgent::Job(d) = decode::<ToAgent>(&frame).unwrap() {
                break d;
            }
        };
        let signed_job = SignedJob::decode(&delivery.job).unwrap();
        let output = br#"{"forged":true}"#.to_vec();
        let result = result_for(
            &signed_job,
            wtd_keys::AgentId(key.public()),
            wtd_keys::call::CallStatus::Ok,
            &output,
            wtd_keys::Timestamp(1),
        )
        .sign(&key);
        let update = FromAgent::JobUpdate(JobUpdate {
            id: signed_job.job().request_id.0,
            caller: wtd_wire::Key::from(*signed_job.job().caller.key()),
            outcome: Some(JobOutcome::Ran {
                status: wtd_wire::call::Status::Ok,
                output,
                detail: String::new(),
                signed: result.bytes().to_vec(),
            }),
        });
        wtd_transport::write_frame(&mut send, &encode(&update))
            .await
            .unwrap();
        (client, conn, send, recv)
    });
    wait_for("the forged outcome stored", LIMIT, || l.state(&job) == "done");
    let out = l.bob.cli(["result", &job]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(stderr(&out).contains("has not adopted"), "{}", stderr(&out));
    assert!(!stdout(&out).contains("forged"), "not a byte of it is printed");
    assert_eq!(l.runs(), 0);
}

#[test]
fn a_tagged_job_runs_only_on_a_tagged_agent_even_when_an_untagged_one_is_online_first() {
    let l = Lab::new(&[]);
    l.grant("side");
    // The untagged agent is online, and the least loaded of all.
    let plain = l.agent_with("pi-plain", "test_pinned_load = 0.1");
    l.wait_online("pi-plain", 0.1);
    let tagged = l
        .bob
        .ok(["push", "side/mark", r#"{"for":"gpu"}"#, "--tag", "gpu"])
        .trim()
        .to_string();
    // A job pushed after it, with no tag, runs on the untagged agent: that agent's session
    // has looked at the queue, oldest job first, since the tagged job was there.
    let untagged = l.bob.ok(["push", "side/mark", "{}"]).trim().to_string();
    wait_for("the untagged job done", LIMIT, || l.state(&untagged) == "done");
    assert_eq!(l.field(&untagged, "agent"), plain.id());
    assert_eq!(l.state(&tagged), "queued");
    // Never even delivered to it (an agent that refused it would be named in the detail:
    // it runs the jobs it is given in order, so that refusal would have come first).
    assert_eq!(
        l.field(&tagged, "detail"),
        "",
        "never given to the untagged agent"
    );
    assert_eq!(l.runs(), 1);

    // A busier agent with the tag comes online: it takes the tagged job.
    let gpu = l.agent_with("pi-gpu", "tags = [\"gpu\"]\ntest_pinned_load = 3.0");
    wait_for("the tagged job done", LIMIT, || l.state(&tagged) == "done");
    assert_eq!(l.field(&tagged, "agent"), gpu.id());
    assert_eq!(l.runs(), 2);

    // The same with `wtd call --async --tag`, and its result names the gpu agent.
    let job = l
        .bob
        .ok(["call", "--async", "side/mark", r#"{"n":3}"#, "--tag", "gpu"])
        .trim()
        .to_string();
    let out = l
        .bob
        .cli(["result", &job, "--wait", "--json", "--timeout", "60s"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let envelope: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(envelope["agent"], gpu.id());
    assert_eq!(envelope["output"], serde_json::json!({"n": 3}));

    // Selectors that cannot apply to one queued job are refused with what to do instead.
    for (args, hint) in [
        (vec!["push", "side/mark", "--all"], "--agent"),
        (vec!["call", "--async", "side/mark", "--all"], "--agent"),
        (vec!["push", "side/mark", "--random"], "least-loaded"),
        (
            vec!["call", "--async", "side/mark", "--round-robin"],
            "least-loaded",
        ),
        (vec!["push", "side/mark", "--tag", "Not A Tag"], "--tag"),
    ] {
        let out = l.bob.cli(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(hint), "{args:?}: {}", stderr(&out));
    }
    assert_eq!(l.runs(), 3);
}

#[test]
fn a_default_job_goes_to_the_less_loaded_of_two_online_agents() {
    let l = Lab::new(&[]);
    l.grant("side");
    // The busy agent connects first: "first to connect" would pick it.
    let _busy = l.agent_with("pi-busy", "test_pinned_load = 5.0");
    l.wait_online("pi-busy", 5.0);
    let idle = l.agent_with("pi-idle", "test_pinned_load = 0.2");
    l.wait_online("pi-idle", 0.2);
    let jobs: Vec<String> = (0..3)
        .map(|n| {
            l.bob
                .ok(["push", "side/mark", &format!(r#"{{"n":{n}}}"#)])
                .trim()
                .to_string()
        })
        .collect();
    for job in &jobs {
        wait_for("the job done", LIMIT, || l.state(job) == "done");
        assert_eq!(l.field(job, "agent"), idle.id(), "job {job}");
    }
    assert_eq!(l.runs(), 3);
}

#[test]
fn an_owner_s_own_share_of_the_queue_from_proxy_toml_bounds_her_jobs() {
    // Every owner may have 5 jobs waiting; Alice, by her own line, only 2.
    let l = Lab::with_config(&[], |[alice, _]| {
        Some(format!(
            "[jobs]\nmax_waiting = 5\n[[jobs.owner]]\nowner = \"{alice}\"\nmax_waiting = 2\n"
        ))
    });
    l.grant("side");
    for _ in 0..2 {
        l.bob.ok(["push", "side/mark", "{}"]);
    }
    let out = l.bob.cli(["push", "side/mark", "{}"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let text = stderr(&out);
    assert!(text.contains("queue full for the owner"), "{text}");
    assert!(text.contains("2 jobs waiting"), "{text}");
    // Jobs under another owner's authority (Carol's grant) have the default share of 5.
    let carol = l.lab.user("carol");
    carol.init();
    carol.ok(["join", &l.proxy.ticket]);
    carol.ok(["keys", "add", "bob", &l.bob.id()]);
    let out: Value =
        serde_json::from_str(&carol.ok(["grant", "bob", "--mission", "other", "--json"])).unwrap();
    l.bob.ok(["grants", "import", out["ticket"].as_str().unwrap()]);
    for _ in 0..5 {
        l.bob.ok(["push", "other/thing", "{}"]);
    }
    let out = l.bob.cli(["push", "other/thing", "{}"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("5 jobs waiting"), "{}", stderr(&out));
}

/// xorshift64*: a tiny seeded generator, so a failing power-cut case reruns by its seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n.max(1)
    }
}

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

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Where each frame of a record file (`store/src/records.rs`) starts, after its magic.
fn frame_starts(bytes: &[u8]) -> Vec<usize> {
    let mut at = 8;
    let mut starts = Vec::new();
    while at + 4 <= bytes.len() {
        starts.push(at);
        let len = u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        at += 4 + len + 8;
    }
    starts
}

#[test]
fn power_cuts_of_the_queue_and_of_the_agent_s_record_never_start_a_wrong_state() {
    use wtd_agent::jobs::{Known, SeenJobs};
    use wtd_proxy::jobs::{JobLimits, JobQueue};
    use wtd_wire::jobs::JobState;

    let mut l = Lab::new(&[]);
    l.grant("side");
    let mut pi = l.agent("pi-1");
    // Jobs in the states the files hold: collected results, a pushed job (its output not
    // kept), one waiting for an agent that is offline, one for a tag no agent has.
    let mut ran = Vec::new();
    for n in 0..3 {
        let arg = format!(r#"{{"n":{n}}}"#);
        ran.push(
            l.bob
                .ok(["call", "--async", "side/mark", &arg])
                .trim()
                .to_string(),
        );
    }
    ran.push(l.bob.ok(["push", "side/mark", "{}"]).trim().to_string());
    l.bob.ok(["push", "side/mark", "{}", "--tag", "gpu"]);
    let offline = wtd_keys::SecretKey::generate().public().to_string();
    l.bob.ok(["push", "side/mark", "{}", "--agent", &offline]);
    for job in &ran {
        wait_for("the job done", LIMIT, || l.state(job) == "done");
    }
    pi.daemon.stop();
    l.proxy.daemon.stop();
    let bob: wtd_keys::UserKey = wtd_keys::UserKey(l.bob.id().parse().unwrap());
    let scratch = tempfile::tempdir().unwrap();
    let proxy_jobs = l.proxy.state_dir.join("jobs");
    let agent_jobs = pi.dir.join("state").join("jobs");

    // The good state, read from copies (opening rewrites the queue compactly).
    let now = now_ms();
    copy_dir(&proxy_jobs, &scratch.path().join("good-proxy"));
    let (mut good_q, _) =
        JobQueue::open(&scratch.path().join("good-proxy"), JobLimits::default(), now).unwrap();
    let good: std::collections::HashMap<[u8; 16], wtd_wire::jobs::JobAnswer> = good_q
        .list(&bob, now)
        .iter()
        .map(|j| (j.id, good_q.answer(&bob, &j.id, now).unwrap()))
        .collect();
    assert_eq!(good.len(), 6);
    let ran_jobs: Vec<wtd_keys::job::SignedJob> = good
        .values()
        .filter(|a| a.info.state == JobState::Done)
        .map(|a| wtd_keys::job::SignedJob::decode(&a.job).unwrap())
        .collect();
    assert_eq!(ran_jobs.len(), 4);
    copy_dir(&agent_jobs, &scratch.path().join("good-agent"));
    let good_seen = SeenJobs::open(&scratch.path().join("good-agent"), 64, wtd_keys::Timestamp(now)).unwrap();
    let good_known: Vec<Known> = ran_jobs.iter().map(|j| good_seen.known(j)).collect();
    assert!(
        good_known.iter().all(|k| matches!(k, Known::Finished(_))),
        "{good_known:?}"
    );
    let mut outcome_files: Vec<String> = std::fs::read_dir(&agent_jobs)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".outcome"))
        .collect();
    outcome_files.sort();
    assert_eq!(outcome_files.len(), 4);

    let seed: u64 = std::env::var("WTD_POWER_CUT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x0b5e_55ed_10b5);
    let cases: usize = std::env::var("WTD_POWER_CUT_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    let mut rng = Rng(seed | 1);
    let mut tallies: std::collections::BTreeMap<&str, [usize; 3]> = Default::default();
    for case in 0..cases {
        let proxy_side = rng.below(2) == 1;
        let dir = scratch.path().join(format!("case-{case}"));
        let (pristine, file) = if proxy_side {
            (&proxy_jobs, "jobs.log".to_string())
        } else if rng.below(2) == 0 {
            (&agent_jobs, "seen".to_string())
        } else {
            (&agent_jobs, outcome_files[rng.below(4) as usize].clone())
        };
        copy_dir(pristine, &dir);
        let path = dir.join(&file);
        let mut bytes = std::fs::read(&path).unwrap();
        let len = bytes.len() as u64;
        let at = rng.below(len) as usize;
        let how = match rng.below(3) {
            0 => {
                bytes.truncate(at);
                format!("cut at {at}")
            }
            1 => {
                let n = 1 + rng.below(64) as usize;
                let end = (at + n).min(bytes.len());
                bytes[at..end].fill(0);
                format!("{n} zeros at {at}")
            }
            _ => {
                bytes[at..].fill(0);
                format!("zeros from {at}")
            }
        };
        std::fs::write(&path, &bytes).unwrap();
        let what = format!("seed {seed} case {case}: {file} {how}");
        let kind = if proxy_side {
            "proxy jobs.log"
        } else if file == "seen" {
            "agent jobs/seen"
        } else {
            "agent *.outcome"
        };
        let tally = tallies.entry(kind).or_default();
        if proxy_side {
            match JobQueue::open(&dir, JobLimits::default(), now) {
                Ok((mut q, _)) => {
                    // Every job it holds is one of the good ones, in the same state (with
                    // the same outcome) or waiting again: a prefix of its history.
                    let listed = q.list(&bob, now);
                    let mut same = listed.len() == good.len();
                    for j in &listed {
                        let g = good
                            .get(&j.id)
                            .unwrap_or_else(|| panic!("{what}: a job that never was"));
                        if j.state == g.info.state {
                            let a = q.answer(&bob, &j.id, now).unwrap();
                            assert_eq!(a.outcome, g.outcome, "{what}: another outcome");
                            assert_eq!(a.job, g.job, "{what}: another job");
                        } else {
                            assert_eq!(
                                j.state,
                                JobState::Queued,
                                "{what}: {:?} for {:?}",
                                j.state,
                                g.info.state
                            );
                            same = false;
                        }
                    }
                    tally[if same { 0 } else { 1 }] += 1;
                }
                Err(e) => {
                    let msg = format!("{e:#}");
                    assert!(
                        msg.contains("jobs.log") && msg.contains("damaged") && msg.contains("move it aside"),
                        "{what}: {msg}"
                    );
                    tally[2] += 1;
                }
            }
        } else {
            // The agent always starts (a damaged record is moved aside), and no job that ran
            // here may run again: each is known with its outcome, or refused as "may have run"
            // or "its outcome was lost".
            let seen = SeenJobs::open(&dir, 64, wtd_keys::Timestamp(now))
                .unwrap_or_else(|e| panic!("{what}: the agent would not start: {e:#}"));
            let mut same = true;
            for (job, good) in ran_jobs.iter().zip(&good_known) {
                match seen.known(job) {
                    k @ Known::Finished(_) => assert_eq!(&k, good, "{what}: another outcome"),
                    Known::MayHaveRun { .. } | Known::OutcomeLost => same = false,
                    other => panic!("{what}: a job that ran would be {other:?}"),
                }
            }
            if file == "seen" && !same {
                assert!(dir.join("seen.damaged").exists(), "{what}: kept aside");
            }
            tally[if same { 0 } else { 1 }] += 1;
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
    println!("job power cuts, seed {seed}, {cases} cases (whole = every job as it was; shorter = a torn tail cut off, jobs waiting again, or refused as \"may have run\"; refused = a clear error):");
    for (what, [whole, shorter, refused]) in &tallies {
        println!("  {what:<18} whole {whole:>4}  shorter {shorter:>4}  refused {refused:>4}");
    }
}

#[test]
fn a_real_agent_with_a_damaged_record_never_runs_a_job_twice_and_a_damaged_queue_refuses() {
    let mut l = Lab::new(&[]);
    l.grant("side");
    let mut pi = l.agent("pi-1");
    let job = l.bob.ok(["call", "--async", "side/mark"]).trim().to_string();
    wait_for("the job done", LIMIT, || l.state(&job) == "done");
    assert_eq!(l.runs(), 1);
    pi.daemon.stop();
    l.proxy.daemon.stop();

    // The power went just as the proxy stored the job's outcome (its last record cut
    // off): it will deliver the job to the agent again. And the agent's record of what it
    // ran was damaged too: the worst case for "never twice".
    let log = l.proxy.state_dir.join("jobs").join("jobs.log");
    let bytes = std::fs::read(&log).unwrap();
    let last = *frame_starts(&bytes).last().unwrap();
    std::fs::write(&log, &bytes[..last + 5]).unwrap();
    let seen = pi.dir.join("state/jobs/seen");
    let mut record = std::fs::read(&seen).unwrap();
    let end = record.len().min(40);
    record[20..end].fill(0);
    std::fs::write(&seen, &record).unwrap();

    let port = l.proxy.addr.port();
    l.proxy = l.lab.start_proxy_on(port, &[]);
    assert!(
        l.proxy.daemon.output().contains("cut off"),
        "{}",
        l.proxy.daemon.output()
    );
    pi.restart();
    wait_for("the repeat refused", LIMIT, || l.state(&job) == "refused");
    let detail = l.field(&job, "detail");
    assert!(detail.contains("may have run"), "{detail}");
    assert!(detail.contains("Push it again"), "{detail}");
    assert_eq!(l.runs(), 1, "not run a second time");
    let out = pi.daemon.output();
    assert!(
        out.contains("was damaged") && out.contains("seen.damaged"),
        "{out}"
    );
    // A job pushed within the clock skew a job may have (a minute) of the agent's restart
    // is refused the same way: a caller's clock ahead could date one that ran before it
    // that late. (Later ones run as usual: `cargo test -p wtd-agent jobs`.)
    let fresh = l.bob.ok(["call", "--async", "side/mark"]).trim().to_string();
    wait_for("the new job refused", LIMIT, || l.state(&fresh) == "refused");
    assert!(l.field(&fresh, "detail").contains("may have run"));
    assert_eq!(l.runs(), 1);

    // A record in the middle of the queue zeroed: not a torn write. The proxy refuses to
    // start, naming the file and what to do.
    l.proxy.daemon.stop();
    let mut bytes = std::fs::read(&log).unwrap();
    let second = frame_starts(&bytes)[1];
    bytes[second - 20..second - 10].fill(0);
    std::fs::write(&log, &bytes).unwrap();
    let listen = format!("127.0.0.1:{port}");
    let args: Vec<&std::ffi::OsStr> = vec![
        "proxy".as_ref(),
        "--listen".as_ref(),
        listen.as_ref(),
        "--state-dir".as_ref(),
        l.proxy.state_dir.as_os_str(),
    ];
    let mut proxy = common::Daemon::spawn(
        "proxy",
        l.lab.dir().join("proxy-damaged.log"),
        &args,
        &l.lab.dir().join("proxy-home"),
    );
    let mut status = None;
    wait_for("the proxy to refuse and exit", LIMIT, || {
        status = proxy.child.try_wait().unwrap();
        status.is_some()
    });
    assert!(!status.unwrap().success());
    let out = proxy.output();
    assert!(
        out.contains("jobs.log") && out.contains("damaged") && out.contains("move it aside"),
        "{out}"
    );
}
