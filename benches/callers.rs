//! Many callers at once through one proxy: the load tool for callers. It starts a real
//! `wtd proxy` process and A real `wtd agent` processes (offering the example `demo`
//! mission and the built-in `sys`), has Alice adopt them and grant Bob both missions with
//! the real CLI, then runs C callers for S seconds in several child processes (this same
//! binary). Each caller is what `wtd call` is made of: its own QUIC connection to the proxy
//! from its own loopback address (127.5.x.y), an end-to-end session through the proxy to
//! one agent (`wtd_caller::Session`), and one call after another on it: `sys/ping`, and
//! every `WTD_CALLERS_ECHO_EVERY`th call `demo/echo` (a real process per call on the agent)
//! with a unique payload whose answer is checked.
//!
//! It prints a table: calls done, failed and wrong, throughput, latency p50 / p99 / max,
//! and the proxy's RSS sampled every 500 ms (before the callers, with their sessions open,
//! its peak, and at the end, with the samples of the first and last tenth of the run to
//! show whether it keeps growing).
//!
//! Why so many agents: an agent takes at most `wtd_transport::defaults::
//! MAX_CONCURRENT_BIDI_STREAMS` (32) sessions from the proxy at once (each is a stream on
//! its one connection), so 1,000 sessions need at least 32 agents. 40 by default.
//!
//! `cargo bench --bench callers` (1,000 callers, 40 agents, 60 s), or with knobs:
//! `WTD_CALLERS` callers, `WTD_CALLERS_AGENTS` agents, `WTD_CALLERS_SECS` seconds,
//! `WTD_CALLERS_PROCS` caller processes (4), `WTD_CALLERS_ECHO_EVERY` (20), `WTD_BIN`.
//! Bounded: setup gives up after 120 s, the run stops after its seconds, the children stop
//! when the parent closes their stdin or after their own time limit. Nothing is asserted.

use std::io::{BufRead as _, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use tokio_util::sync::CancellationToken;
use wtd_keys::call::CallStatus;
use wtd_keys::{AgentId, FunctionName, MissionName, SecretKey, Ticket};
use wtd_transport::Client;

const SETUP_LIMIT: Duration = Duration::from_secs(120);
/// Session opens in progress at once per caller process while warming up: callers starting
/// over a few seconds, not in one instant.
const OPENS_AT_ONCE: usize = 16;

fn knob<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// Runs `wtd args...` as the person whose home is `home`; its stdout.
fn wtd(bin: &Path, home: &Path, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(bin)
        .args(args)
        .env("WTD_HOME", home)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {}", bin.display()))?;
    if !out.status.success() {
        bail!(
            "wtd {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Processes this bench started, killed by PID when dropped.
#[derive(Default)]
struct Processes(Vec<Child>);

impl Drop for Processes {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The proxy, the agents, Alice and Bob, set up as people would.
struct Lab {
    proxy_pid: u32,
    ticket: String,
    agents: Vec<AgentId>,
    bob_home: PathBuf,
    // The agents first, then the proxy.
    _agents: Processes,
    _proxy: Processes,
    _dir: tempfile::TempDir,
}

impl Lab {
    fn start(bin: &Path, agents: usize, callers: usize) -> anyhow::Result<Lab> {
        let dir = tempfile::tempdir()?;
        let state = dir.path().join("proxy");
        let total = (callers + agents + 64).to_string();
        // `WTD_CALLERS_PROXY_LOG=file`: the proxy's info log there (whom it closed, why).
        let log = std::env::var_os("WTD_CALLERS_PROXY_LOG");
        let mut proxy = Processes::default();
        proxy.0.push(
            Command::new(bin)
                .args(["proxy", "--listen", "127.0.0.1:0", "--state-dir"])
                .arg(&state)
                .args(["--max-connections", &total, "--max-connections-per-ip", "128"])
                .env("WTD_HOME", dir.path().join("proxy-home"))
                .env("RUST_LOG", if log.is_some() { "info" } else { "warn" })
                .stdout(Stdio::null())
                .stderr(match &log {
                    Some(path) => Stdio::from(std::fs::File::create(path)?),
                    None => Stdio::inherit(),
                })
                .spawn()
                .context("start wtd proxy")?,
        );
        let proxy_pid = proxy.0[0].id();
        let ticket_file = state.join("ticket.txt");
        let start = Instant::now();
        while !ticket_file.exists() {
            if start.elapsed() > SETUP_LIMIT {
                bail!("the proxy did not start");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let ticket = std::fs::read_to_string(&ticket_file)?.trim().to_string();

        let (alice, bob) = (dir.path().join("alice"), dir.path().join("bob"));
        wtd(bin, &alice, &["init"])?;
        wtd(bin, &bob, &["init"])?;
        wtd(bin, &alice, &["join", &ticket])?;
        let alice_id = wtd(bin, &alice, &["id", "--quiet"])?.trim().to_string();
        let bob_id = wtd(bin, &bob, &["id", "--quiet"])?.trim().to_string();
        wtd(bin, &alice, &["keys", "add", "bob", &bob_id])?;
        // Far more than the run can use: the figures are the cost of checking the grant,
        // not of waiting for it. Concurrency is per agent: callers / agents at most.
        for mission in ["sys", "demo"] {
            let granted = wtd(
                bin,
                &alice,
                &[
                    "grant",
                    "bob",
                    "--mission",
                    mission,
                    "--rate",
                    "1000000/min",
                    "--burst",
                    "1000000",
                    "--concurrency",
                    "256",
                    "--expires",
                    "2h",
                    "--json",
                ],
            )?;
            let v: serde_json::Value = serde_json::from_str(&granted)?;
            let t = v["ticket"]
                .as_str()
                .context("`wtd grant --json` prints a ticket")?;
            wtd(bin, &bob, &["grants", "import", t])?;
        }

        let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/missions/demo.toml");
        let mut procs = Processes::default();
        let mut ids = Vec::new();
        for i in 0..agents {
            let home = dir.path().join(format!("agent-{i}"));
            let missions = home.join("missions");
            std::fs::create_dir_all(&missions)?;
            std::fs::copy(&demo, missions.join("demo.toml"))?;
            let config = home.join("agent.toml");
            std::fs::write(
                &config,
                format!(
                    "name = \"load-{i:02}\"\nstate_dir = \"{}\"\nmissions_dir = \"{}\"\nproxy = \"{ticket}\"\nowners = [\"{alice_id}\"]\n",
                    home.join("state").display(),
                    missions.display(),
                ),
            )?;
            procs.0.push(
                Command::new(bin)
                    .args(["agent", "--config"])
                    .arg(&config)
                    .env("WTD_HOME", &home)
                    .env("RUST_LOG", "warn")
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .context("start wtd agent")?,
            );
            let key = home.join("state").join("identity.key");
            let start = Instant::now();
            while !key.exists() {
                if start.elapsed() > SETUP_LIMIT {
                    bail!("agent {i} made no identity");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let id = wtd(bin, &home.join("state"), &["id", "--quiet"])?
                .trim()
                .to_string();
            wtd(bin, &alice, &["adopt", &id])?;
            ids.push(AgentId(id.parse()?));
        }
        let start = Instant::now();
        loop {
            let ls = wtd(bin, &alice, &["ls", "--json"]).unwrap_or_default();
            let online = serde_json::from_str::<Vec<serde_json::Value>>(&ls).map_or(0, |v| v.len());
            if online >= agents {
                break;
            }
            if start.elapsed() > SETUP_LIMIT {
                bail!("{online} of {agents} agents online after {SETUP_LIMIT:?}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(Lab {
            proxy_pid,
            ticket,
            agents: ids,
            bob_home: bob,
            _agents: procs,
            _proxy: proxy,
            _dir: dir,
        })
    }
}

// ---------------------------------------------------------------------------------------
// A caller process: a slice of the callers
// ---------------------------------------------------------------------------------------

mod callers {
    use super::*;

    pub(super) const SLICE: &str = "WTD_CALLERS_CHILD";
    pub(super) const TICKET: &str = "WTD_CALLERS_TICKET";
    pub(super) const BOB: &str = "WTD_CALLERS_BOB";
    pub(super) const AGENTS: &str = "WTD_CALLERS_AGENT_IDS";

    /// One caller's tally.
    #[derive(Default)]
    struct Tally {
        /// The first failure's reason, to say why calls failed.
        why: Option<String>,
        latencies_us: Vec<u32>,
        failed: u64,
        wrong: u64,
        echoes: u64,
    }

    /// Runs callers `start..end`. Protocol on stdout: `ready` once every caller made one
    /// call (or gave up), then, after `go` on stdin and the run, one `lat <us>...` line
    /// per caller and a final `tally <ok> <failed> <wrong> <echoes> <no_session>`. Stops on
    /// stdin EOF or after its own limit.
    pub(super) fn run(slice: &str) -> anyhow::Result<()> {
        let (start, end) = slice
            .split_once("..")
            .and_then(|(a, b)| Some((a.parse::<usize>().ok()?, b.parse::<usize>().ok()?)))
            .context("WTD_CALLERS_CHILD is start..end")?;
        let info = Ticket::from_text(&std::env::var(TICKET)?)?
            .proxy
            .context("a proxy ticket")?;
        let bob = Arc::new(wtd_store::identity::load(Path::new(&std::env::var(BOB)?))?);
        let agents: Vec<AgentId> = std::env::var(AGENTS)?
            .split(',')
            .map(|s| Ok(AgentId(s.parse()?)))
            .collect::<anyhow::Result<_>>()?;
        let secs = Duration::from_secs(knob("WTD_CALLERS_SECS", 60u64));
        let echo_every = knob("WTD_CALLERS_ECHO_EVERY", 20u64).max(1);

        let stop = CancellationToken::new();
        let go = Arc::new(tokio::sync::Notify::new());
        let went = Arc::new(AtomicBool::new(false));
        {
            let (stop, go, went) = (stop.clone(), go.clone(), went.clone());
            std::thread::spawn(move || {
                for line in std::io::stdin().lock().lines() {
                    match line.as_deref() {
                        Ok("go") => {
                            went.store(true, Ordering::SeqCst);
                            go.notify_waiters();
                        }
                        Ok(_) => {}
                        Err(_) => break,
                    }
                }
                stop.cancel();
            });
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let limit = SETUP_LIMIT * 2 + secs;
        let tallies = rt.block_on(async move {
            let ready = Arc::new(AtomicU64::new(0));
            let gate = Arc::new(tokio::sync::Semaphore::new(OPENS_AT_ONCE));
            let n = end - start;
            let mut set = tokio::task::JoinSet::new();
            for c in start..end {
                let agent = agents[c % agents.len()];
                let (bob, stop, go, went, ready, gate) = (
                    bob.clone(),
                    stop.clone(),
                    go.clone(),
                    went.clone(),
                    ready.clone(),
                    gate.clone(),
                );
                let proxy = (info.addrs[0], *info.id.key());
                set.spawn(async move {
                    let r = caller(
                        c,
                        proxy,
                        bob,
                        agent,
                        (&stop, &go, &went, &ready, &gate),
                        secs,
                        echo_every,
                    )
                    .await;
                    r.unwrap_or_default()
                });
            }
            // Everyone warmed up (or gave up): tell the parent.
            let deadline = Instant::now() + SETUP_LIMIT;
            while (ready.load(Ordering::SeqCst) as usize) < n
                && Instant::now() < deadline
                && !stop.is_cancelled()
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            println!("ready");
            let _ = std::io::stdout().flush();
            let mut tallies = Vec::new();
            let all = async {
                while let Some(t) = set.join_next().await {
                    tallies.push(t.unwrap_or_default());
                }
            };
            if tokio::time::timeout(limit, all).await.is_err() {
                stop.cancel();
            }
            tallies
        });
        let mut out = std::io::stdout().lock();
        let (mut ok, mut failed, mut wrong, mut echoes, mut none) = (0u64, 0, 0, 0, 0);
        for t in &tallies {
            if t.latencies_us.is_empty() && t.failed == 0 {
                none += 1;
            }
            ok += t.latencies_us.len() as u64;
            failed += t.failed;
            wrong += t.wrong;
            echoes += t.echoes;
            let line: Vec<String> = t.latencies_us.iter().map(|l| l.to_string()).collect();
            writeln!(out, "lat {}", line.join(" "))?;
            if let Some(why) = &t.why {
                writeln!(out, "why {}", why.replace('\n', " "))?;
            }
        }
        writeln!(out, "tally {ok} {failed} {wrong} {echoes} {none}")?;
        out.flush()?;
        Ok(())
    }

    type Signals<'a> = (
        &'a CancellationToken,
        &'a tokio::sync::Notify,
        &'a AtomicBool,
        &'a AtomicU64,
        &'a tokio::sync::Semaphore,
    );

    /// One caller: connect, open a session, one good call to warm up, wait for `go`, then
    /// calls until `secs` have passed.
    async fn caller(
        c: usize,
        (addr, proxy_id): (SocketAddr, wtd_keys::PublicId),
        bob: Arc<SecretKey>,
        agent: AgentId,
        (stop, go, went, ready, gate): Signals<'_>,
        secs: Duration,
        echo_every: u64,
    ) -> Option<Tally> {
        let mark_ready = || ready.fetch_add(1, Ordering::SeqCst);
        let (ping, echo) = (
            (MissionName::new("sys").ok()?, FunctionName::new("ping").ok()?),
            (MissionName::new("demo").ok()?, FunctionName::new("echo").ok()?),
        );
        let local = SocketAddr::from(([127, 5, (c / 250) as u8, (c % 250 + 1) as u8], 0));
        let warm = async {
            let _permit = gate.acquire().await.ok()?;
            let client = Client::bind(&bob, local).ok()?;
            let conn = client.connect(addr, proxy_id).await.ok()?;
            // The grant may still be on its way to the agent: retry the first call a while.
            let started = Instant::now();
            loop {
                if let Ok(s) = wtd_caller::Session::open(bob.clone(), &conn, agent).await {
                    let s = Arc::new(s);
                    if let Ok(p) = s.call(&ping.0, &ping.1, b"{}", false, &[]).await {
                        if matches!(p.finish(&mut |_| {}).await, Ok(a) if a.status == CallStatus::Ok) {
                            return Some((client, conn, s));
                        }
                    }
                }
                if started.elapsed() > SETUP_LIMIT / 2 {
                    return None;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        };
        let warmed = tokio::select! {
            _ = stop.cancelled() => None,
            w = warm => w,
        };
        mark_ready();
        let (_client, _conn, session) = warmed?;
        let notified = go.notified();
        if !went.load(Ordering::SeqCst) {
            tokio::select! {
                _ = stop.cancelled() => return None,
                _ = notified => {}
            }
        }
        let mut t = Tally::default();
        let begun = Instant::now();
        let mut k = 0u64;
        while begun.elapsed() < secs && !stop.is_cancelled() {
            k += 1;
            let is_echo = k.is_multiple_of(echo_every);
            let payload = format!("{{\"caller\":{c},\"k\":{k}}}");
            let (m, f, args) = if is_echo {
                (&echo.0, &echo.1, payload.as_bytes())
            } else {
                (&ping.0, &ping.1, &b"{}"[..])
            };
            let started = Instant::now();
            let answer = match session.call(m, f, args, false, &[]).await {
                Ok(p) => p.finish(&mut |_| {}).await.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            let took = started.elapsed();
            match answer {
                Ok(a) if a.status == CallStatus::Ok => {
                    if is_echo {
                        t.echoes += 1;
                        let same = serde_json::from_slice::<serde_json::Value>(&a.output).ok()
                            == serde_json::from_str::<serde_json::Value>(&payload).ok();
                        if !same {
                            t.wrong += 1;
                            continue;
                        }
                    }
                    t.latencies_us.push(took.as_micros().min(u32::MAX as u128) as u32);
                }
                other => {
                    t.failed += 1;
                    if t.why.is_none() {
                        t.why = Some(match other {
                            Ok(a) => format!("{} ended {}: {}", f, a.status, a.detail),
                            Err(e) => format!("{f}: {e}"),
                        });
                    }
                    if session.is_closed() {
                        break;
                    }
                }
            }
        }
        Some(t)
    }
}

// ---------------------------------------------------------------------------------------
// The parent
// ---------------------------------------------------------------------------------------

#[derive(Default)]
struct Results {
    ready: AtomicU64,
    latencies_us: Mutex<Vec<u32>>,
    tallies: Mutex<Vec<[u64; 5]>>,
    /// Why callers' calls failed (each caller's first failure), and how many.
    why: Mutex<std::collections::BTreeMap<String, u64>>,
}

fn pct(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize] as f64 / 1000.0
}

fn main() -> anyhow::Result<()> {
    if let Ok(slice) = std::env::var(callers::SLICE) {
        return callers::run(&slice);
    }
    let bin: PathBuf = std::env::var_os("WTD_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_wtd")));
    let n = knob("WTD_CALLERS", 1000usize).max(1);
    let agents = knob("WTD_CALLERS_AGENTS", 40usize).max(1);
    let secs = knob("WTD_CALLERS_SECS", 60u64).clamp(1, 3600);
    let procs = knob("WTD_CALLERS_PROCS", 4usize).clamp(1, n);
    eprintln!("setting up a proxy and {agents} agents ...");
    let lab = Lab::start(&bin, agents, n)?;
    let rss_idle = rss_kb(lab.proxy_pid);
    let ids: Vec<String> = lab.agents.iter().map(|a| a.to_string()).collect();
    let bob_key = wtd_store::home::Home::at(&lab.bob_home).identity();
    let results = Arc::new(Results::default());
    let mut children: Vec<(Child, Option<ChildStdin>)> = Vec::new();
    let mut readers = Vec::new();
    eprintln!("{n} callers in {procs} processes open their sessions ...");
    let me = std::env::current_exe()?;
    for k in 0..procs {
        let (start, end) = (n * k / procs, n * (k + 1) / procs);
        let mut child = Command::new(&me)
            .arg("--bench")
            .env(callers::SLICE, format!("{start}..{end}"))
            .env(callers::TICKET, &lab.ticket)
            .env(callers::BOB, &bob_key)
            .env(callers::AGENTS, ids.join(","))
            .env("WTD_CALLERS_SECS", secs.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("start a caller process")?;
        let stdout = child.stdout.take().context("caller stdout")?;
        let stdin = child.stdin.take();
        let results = results.clone();
        readers.push(std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line == "ready" {
                    results.ready.fetch_add(1, Ordering::SeqCst);
                } else if let Some(rest) = line.strip_prefix("lat") {
                    let mut l = results.latencies_us.lock().unwrap();
                    l.extend(rest.split_whitespace().filter_map(|v| v.parse::<u32>().ok()));
                } else if let Some(why) = line.strip_prefix("why ") {
                    *results.why.lock().unwrap().entry(why.to_string()).or_default() += 1;
                } else if let Some(rest) = line.strip_prefix("tally ") {
                    let v: Vec<u64> = rest.split_whitespace().filter_map(|v| v.parse().ok()).collect();
                    if v.len() == 5 {
                        results
                            .tallies
                            .lock()
                            .unwrap()
                            .push([v[0], v[1], v[2], v[3], v[4]]);
                    }
                }
            }
        }));
        children.push((child, stdin));
    }
    let start = Instant::now();
    while (results.ready.load(Ordering::SeqCst) as usize) < procs && start.elapsed() < SETUP_LIMIT * 2 {
        std::thread::sleep(Duration::from_millis(50));
    }
    let warmup = start.elapsed();
    let rss_open = rss_kb(lab.proxy_pid);
    eprintln!(
        "sessions open after {:.1} s; {secs} s of calls ...",
        warmup.as_secs_f64()
    );
    for (_, stdin) in &mut children {
        if let Some(s) = stdin {
            let _ = writeln!(s, "go");
            let _ = s.flush();
        }
    }
    let (cpu0, t0) = (cpu_secs(lab.proxy_pid), Instant::now());
    let mut samples = Vec::new();
    let run_for = Duration::from_secs(secs);
    while t0.elapsed() < run_for + Duration::from_secs(1) {
        std::thread::sleep(Duration::from_millis(500));
        samples.push(rss_kb(lab.proxy_pid));
    }
    let window = t0.elapsed().as_secs_f64();
    let cpu = (cpu_secs(lab.proxy_pid) - cpu0) / window * 100.0;
    // The children finish their last calls and report; then they are done.
    for (child, stdin) in &mut children {
        let deadline = Instant::now() + Duration::from_secs(60);
        while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        drop(stdin.take());
        let _ = child.kill();
        let _ = child.wait();
    }
    for r in readers {
        let _ = r.join();
    }
    let rss_end = rss_kb(lab.proxy_pid);
    let mut lat = std::mem::take(&mut *results.latencies_us.lock().unwrap());
    lat.sort_unstable();
    let tally = results.tallies.lock().unwrap().iter().fold([0u64; 5], |a, t| {
        [a[0] + t[0], a[1] + t[1], a[2] + t[2], a[3] + t[3], a[4] + t[4]]
    });
    for (why, count) in results.why.lock().unwrap().iter() {
        eprintln!("  {count} callers' first failed call: {why}");
    }
    let tenth = (samples.len() / 10).max(1);
    let max_of = |s: &[u64]| s.iter().copied().max().unwrap_or(0) / 1024;
    let first = max_of(&samples[..tenth.min(samples.len())]);
    let last = max_of(&samples[samples.len().saturating_sub(tenth)..]);
    let peak = max_of(&samples);
    println!(
        "\n{n} callers (each its own QUIC connection and end-to-end session, one call at a time) through one `wtd proxy` to {agents} `wtd agent`s for {secs} s; sys/ping, and demo/echo (checked) every {}th call:\n",
        knob("WTD_CALLERS_ECHO_EVERY", 20u64)
    );
    println!("| callers | calls done | failed | wrong | of them demo/echo | callers without a session | throughput | p50 | p99 | max | proxy CPU |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    println!(
        "| {n} | {} | {} | {} | {} | {} | {:.0} calls/s | {:.1} ms | {:.1} ms | {:.1} ms | {cpu:.0} % |",
        tally[0],
        tally[1],
        tally[2],
        tally[3],
        tally[4],
        tally[0] as f64 / secs as f64,
        pct(&lat, 0.5),
        pct(&lat, 0.99),
        pct(&lat, 1.0),
    );
    println!();
    println!("| proxy RSS | before the callers | sessions open | max, first tenth of the run | max, last tenth | peak | after |");
    println!("|---|---|---|---|---|---|---|");
    println!(
        "| MB | {} | {} | {first} | {last} | {peak} | {} |",
        rss_idle / 1024,
        rss_open / 1024,
        rss_end / 1024
    );
    Ok(())
}
