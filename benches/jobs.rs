//! What a queued call (a job) costs, next to a live call, in one run.
//!
//! `cargo bench --bench jobs` (or `bash scripts/bench-jobs.sh`) starts a real `wtd proxy`
//! and a real `wtd agent` (processes, on 127.0.0.1), makes Alice their owner and grants Bob
//! `demo`, then prints one table of `demo/echo` latencies, with the agent online throughout:
//!
//! 1. **session call, warm**: Bob's end-to-end session (`wtd_caller`, what `wtd call`
//!    uses), one call at a time on it. The floor of any call.
//! 2. **push -> result, warm connection**: Bob signs a job, `Request::Push`es it and asks
//!    `Request::JobResult` to wait for it, on one open proxy connection. The time from the
//!    push to the verified result: stored (fsynced), delivered, checked by the agent
//!    (signature, seen-set, grant), the seen-set written (fsynced), run, the signed result
//!    stored (fsynced) and sent back. Push-to-*run* is this minus the result's trip back.
//! 3. **`wtd call`, process**: a fresh `wtd call demo/echo` process.
//! 4. **`wtd call --async` + `wtd result --wait`, processes**: the same as a job, from the
//!    command line: two processes.
//!
//! Nothing is asserted (STYLE 12). Knobs: `WTD_BENCH_JOBS` calls per warm row (default
//! 200), `WTD_BENCH_COLD` runs per process row (default 20), `WTD_BIN` the `wtd` binary.
//! Run directly, the binary needs the `--bench` argument cargo gives it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use wtd_caller::Caller;
use wtd_keys::job::{verify_job_result, Job, SignedJob};
use wtd_keys::{AgentId, FunctionName, MissionName, OwnerKey, ProxyInfo, SecretKey, Timestamp, UserKey};
use wtd_transport::{read_frame, write_frame, Client, Connection};
use wtd_wire::defaults::MAX_FRAME;
use wtd_wire::jobs::JobOutcome;
use wtd_wire::{decode, encode, Open, Request, Response};

const ARGS: &[u8] = br#"{"msg":"hi"}"#;

fn knob(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A process this bench started, killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Lab {
    wtd: PathBuf,
    dir: tempfile::TempDir,
    proxy: ProxyInfo,
    bob: SecretKey,
    alice: OwnerKey,
    agent: AgentId,
    _agent: Proc,
    _proxy: Proc,
}

fn wtd(wtd: &Path, home: &Path, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(wtd)
        .args(args)
        .env("WTD_HOME", home)
        .env_remove("RUST_LOG")
        .output()?;
    if !out.status.success() {
        bail!("wtd {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8(out.stdout)?)
}

fn wait(what: &str, mut cond: impl FnMut() -> bool) -> anyhow::Result<()> {
    let start = Instant::now();
    while !cond() {
        if start.elapsed() > Duration::from_secs(60) {
            bail!("timed out waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

impl Lab {
    fn start() -> anyhow::Result<Lab> {
        let wtd_bin = std::env::var_os("WTD_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_wtd")));
        let dir = tempfile::tempdir()?;
        let d = dir.path();
        let state = d.join("proxy");
        let proxy = Proc(
            Command::new(&wtd_bin)
                .args(["proxy", "--listen", "127.0.0.1:0", "--state-dir"])
                .arg(&state)
                .env("WTD_HOME", d.join("proxy-home"))
                .env("RUST_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?,
        );
        let ticket_file = state.join("ticket.txt");
        wait("the proxy's ticket", || ticket_file.exists())?;
        let ticket = std::fs::read_to_string(&ticket_file)?.trim().to_string();
        let info = wtd_keys::Ticket::from_text(&ticket)?
            .proxy
            .context("the ticket names a proxy")?;
        let (alice, bob) = (d.join("alice"), d.join("bob"));
        wtd(&wtd_bin, &alice, &["init"])?;
        wtd(&wtd_bin, &bob, &["init"])?;
        let alice_id = wtd(&wtd_bin, &alice, &["id", "--quiet"])?.trim().to_string();
        let bob_id = wtd(&wtd_bin, &bob, &["id", "--quiet"])?.trim().to_string();
        wtd(&wtd_bin, &alice, &["join", &ticket])?;
        wtd(&wtd_bin, &bob, &["join", &ticket])?;
        wtd(&wtd_bin, &alice, &["keys", "add", "bob", &bob_id])?;
        let grant: serde_json::Value = serde_json::from_str(&wtd(
            &wtd_bin,
            &alice,
            &[
                "grant",
                "bob",
                "--mission",
                "demo",
                "--rate",
                "1000000/min",
                "--burst",
                "1000000",
                "--json",
            ],
        )?)?;
        wtd(
            &wtd_bin,
            &bob,
            &["grants", "import", grant["ticket"].as_str().context("a ticket")?],
        )?;
        let agent_dir = d.join("pi-1");
        std::fs::create_dir_all(agent_dir.join("missions"))?;
        std::fs::copy(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/missions/demo.toml"),
            agent_dir.join("missions/demo.toml"),
        )?;
        let config = agent_dir.join("agent.toml");
        std::fs::write(
            &config,
            format!(
                "name = \"pi-1\"\nstate_dir = \"{}\"\nmissions_dir = \"{}\"\nproxy = \"{ticket}\"\nowners = [\"{alice_id}\"]\n",
                agent_dir.join("state").display(),
                agent_dir.join("missions").display()
            ),
        )?;
        let agent = Proc(
            Command::new(&wtd_bin)
                .args(["agent", "--config"])
                .arg(&config)
                .env("WTD_HOME", &agent_dir)
                .env("RUST_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?,
        );
        let key_file = agent_dir.join("state/identity.key");
        wait("the agent's identity", || key_file.exists())?;
        let agent_id = SecretKey::from_text(&std::fs::read_to_string(&key_file)?)?.public();
        wtd(&wtd_bin, &alice, &["adopt", &agent_id.to_string()])?;
        wait("the agent online and adopted", || {
            Command::new(&wtd_bin)
                .args(["call", "demo/echo", "{}"])
                .env("WTD_HOME", &bob)
                .output()
                .is_ok_and(|o| o.status.success())
        })?;
        let bob_key = SecretKey::from_text(&std::fs::read_to_string(bob.join("identity.key"))?)?;
        Ok(Lab {
            wtd: wtd_bin,
            proxy: info,
            bob: bob_key,
            alice: OwnerKey(alice_id.parse()?),
            agent: AgentId(agent_id),
            dir,
            _agent: agent,
            _proxy: proxy,
        })
    }

    fn bob_home(&self) -> PathBuf {
        self.dir.path().join("bob")
    }
}

async fn request(conn: &Connection, req: Request) -> anyhow::Result<Response> {
    let (mut send, mut recv) = conn.open_bi().await?;
    write_frame(&mut send, &encode(&Open::Request(req))).await?;
    let _ = send.finish();
    let frame = read_frame(&mut recv, MAX_FRAME).await?.context("an answer")?;
    Ok(decode(&frame)?)
}

/// One job, from push to its verified result.
async fn one_job(lab: &Lab, conn: &Connection) -> anyhow::Result<Duration> {
    let now = Timestamp(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis() as u64,
    );
    let job: SignedJob = Job::new(
        UserKey(lab.bob.public()),
        Some(lab.agent),
        MissionName::new("demo")?,
        FunctionName::new("echo")?,
        ARGS,
        now,
        now.plus_ms(600_000),
        true,
        lab.alice,
    )
    .sign(&lab.bob);
    let start = Instant::now();
    match request(
        conn,
        Request::Push {
            job: job.bytes().to_vec(),
            args: ARGS.to_vec(),
        },
    )
    .await?
    {
        Response::JobQueued { .. } => {}
        other => bail!("push: {other:?}"),
    }
    loop {
        let answer = match request(
            conn,
            Request::JobResult {
                id: job.job().request_id.0,
                wait_ms: 60_000,
            },
        )
        .await?
        {
            Response::JobResult(a) => a,
            other => bail!("result: {other:?}"),
        };
        if !answer.info.state.is_final() {
            continue;
        }
        match answer.outcome {
            Some(JobOutcome::Ran { output, signed, .. }) => {
                verify_job_result(&signed, &output, &job)?;
                return Ok(start.elapsed());
            }
            other => bail!("the job ended {:?}: {other:?}", answer.info.state),
        }
    }
}

struct Stats(Vec<Duration>);

impl Stats {
    fn at(&self, q: f64) -> Duration {
        let mut v = self.0.clone();
        v.sort();
        v[((v.len() - 1) as f64 * q).round() as usize]
    }

    fn row(&self, name: &str) {
        let ms = |d: Duration| format!("{:.2}", d.as_secs_f64() * 1000.0);
        println!(
            "| {name:<56} | {:>5} | {:>8} | {:>8} | {:>8} |",
            self.0.len(),
            ms(self.at(0.5)),
            ms(self.at(0.9)),
            ms(self.at(1.0))
        );
    }
}

fn main() -> anyhow::Result<()> {
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("run with `cargo bench --bench jobs`");
        return Ok(());
    }
    let (warm, cold) = (knob("WTD_BENCH_JOBS", 200), knob("WTD_BENCH_COLD", 20));
    let lab = Lab::start()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (session_rows, job_rows) = rt.block_on(async {
        let client = Client::bind(&lab.bob, "127.0.0.1:0".parse()?)?;
        let conn = client.connect(lab.proxy.addrs[0], *lab.proxy.id.key()).await?;
        let caller = Caller::new(Arc::new(SecretKey::from_seed(&lab.bob.seed())), conn.clone())
            .with_identity(client.identity());
        let session = caller.session(lab.agent).await?;
        let (m, f) = (MissionName::new("demo")?, FunctionName::new("echo")?);
        let mut sessions = Vec::new();
        let mut jobs = Vec::new();
        // Interleaved, so both rows see the same machine.
        for i in 0..warm + 10 {
            let t = Instant::now();
            session
                .call(&m, &f, ARGS, false, &[])
                .await?
                .finish(&mut |_| {})
                .await?;
            let s = t.elapsed();
            let j = one_job(&lab, &conn).await?;
            if i >= 10 {
                sessions.push(s);
                jobs.push(j);
            }
        }
        caller.close().await;
        Ok::<_, anyhow::Error>((Stats(sessions), Stats(jobs)))
    })?;
    let bob = lab.bob_home();
    let mut calls = Vec::new();
    let mut pushes = Vec::new();
    for _ in 0..cold {
        let t = Instant::now();
        wtd(&lab.wtd, &bob, &["call", "demo/echo", r#"{"msg":"hi"}"#])?;
        calls.push(t.elapsed());
        let t = Instant::now();
        let id = wtd(
            &lab.wtd,
            &bob,
            &["call", "--async", "demo/echo", r#"{"msg":"hi"}"#],
        )?;
        wtd(
            &lab.wtd,
            &bob,
            &["result", id.trim(), "--wait", "--timeout", "60s"],
        )?;
        pushes.push(t.elapsed());
    }
    println!("demo/echo with the agent online, 127.0.0.1 (ms)");
    println!(
        "| {:<56} | {:>5} | {:>8} | {:>8} | {:>8} |",
        "row", "n", "p50", "p90", "max"
    );
    println!("|{:-<58}|{:->7}|{:->10}|{:->10}|{:->10}|", "", "", "", "", "");
    session_rows.row("1 session call, warm (wtd_caller)");
    job_rows.row("2 push -> verified result, warm connection");
    Stats(calls).row("3 `wtd call` (process)");
    Stats(pushes).row("4 `wtd call --async` + `wtd result --wait` (processes)");
    Ok(())
}
