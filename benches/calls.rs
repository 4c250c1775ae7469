//! What a call costs, next to what the network under it costs.
//!
//! `cargo bench --bench calls` (or `bash scripts/bench-calls.sh`) prints one table. Nothing
//! here is asserted: budgets are printed next to the numbers (STYLE 12). Everything runs on
//! 127.0.0.1; the proxy, the agent and the caller each get their own runtime on their own
//! threads, shaped like the real processes (`wtd proxy`: 2 workers, `wtd agent` and
//! `wtd call`: one thread), so they contend for the cores as they would on a real machine.
//!
//! 1. **floor**: a small message echoed through a plain relay (QUIC in, bytes spliced,
//!    QUIC out): one round trip at a time on a warm stream (1), and `IN_FLIGHT` streams
//!    each echoing in a loop (1b). This is what any relayed call pays before wtd does
//!    anything, and the budgets of rows 2 are set against it.
//! 2. **live calls**: `sys/ping` through the real proxy to the real agent over the
//!    caller library (`wtd_caller::Session`, what `wtd call` uses). The call is
//!    authenticated by its end-to-end TLS session: no signature per call; the agent checks
//!    the call number, that the function exists, the grant and the limits, and answers.
//!    One at a time on one warm session (2), `IN_FLIGHT` in flight on one session (2b)
//!    and on `IN_FLIGHT` sessions (2c).
//! 3. **receipts**: rows 2 again with `--receipt`: the caller signs the call, the agent
//!    checks that signature and signs the result, the caller verifies it.
//! 4. **cold**: `wtd call sys/ping` as a fresh process, next to `wtd --version`.
//!
//! Under the table: the CPU time each process spends per call (from the threads' schedstat),
//! and the parts of one call, each timed alone, to explain where the time goes.
//!
//! Knobs (environment variables): `WTD_BENCH_CALLS` calls per latency row (default 5000),
//! `WTD_BENCH_SECS` seconds of each in-flight row (default 3), `WTD_BENCH_MAX_CALLS` the
//! most calls such a row makes (default 200000), `WTD_BENCH_COLD` runs of each process row
//! (default 20), `WTD_BIN` the `wtd` binary (default: the one cargo built with this bench).
//! Run directly, the binary needs the `--bench` argument cargo gives it.
//!
//! # Layout
//! - `Knobs`: the environment variables above.
//! - `Daemon`: a future on its own runtime and thread, stopped and joined when dropped.
//! - `Lab`: the proxy, the agent, Alice (owner) and Bob (caller), set up as people would.
//! - `floor`: the plain relay and the echo node of rows 1.
//! - `Caller`: Bob's side, a proxy connection and sessions from `wtd_caller`.
//! - `rows`: the measured rows; `pieces`: the parts of a call timed alone.
//! - `CpuMeter`: CPU time per call by process (caller, proxy, agent).
//! - `Stats` / `Table`: percentiles and printing.

use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use tokio::io::join;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use wtd_agent::{Agent, AgentConfig, LogsHandle};
use wtd_keys::call::{check_call, verify_result, Call, CallResult, CallStatus, ReplayGuard};
use wtd_keys::{
    authorize, AgentId, Decision, Domain, FunctionName, MissionName, OwnerKey, Policy, ProxyInfo, PublicId,
    RateLimits, Request as AuthzRequest, SecretKey, TimeFloor, Timestamp, UserKey,
};
use wtd_proxy::{Proxy, ProxyConfig};
use wtd_transport::{read_frame, write_frame, Client, Connection, Limits, Server};
use wtd_wire::call::{AgentMsg, CallerMsg};
use wtd_wire::defaults::MAX_FRAME;
use wtd_wire::{decode, encode, Open, Request, Response};

/// Bob's grant: far more than the bench can use, so the rate limit never refuses a call and
/// the numbers are the cost of checking it, not of waiting for it.
const GRANT_FLAGS: [&str; 6] = [
    "--rate",
    "1000000/min",
    "--burst",
    "1000000",
    "--concurrency",
    "64",
];
/// The floor's message: about the size of an `Invoke` of `sys/ping` (a ~240-byte signed
/// call, its arguments, framing), so rows 1 and 2 move similar bytes.
const FLOOR_MESSAGE: usize = 256;
/// Calls made and thrown away before a latency row, so the first connection-window growth,
/// allocator warm-up and branch predictors are not in the numbers.
const WARMUP_CALLS: usize = 200;
/// A latency row stops after this long even if it has not made its count of calls.
const ROW_TIME_LIMIT: Duration = Duration::from_secs(15);
/// Calls in flight in the busy rows (the issue's budget is set at 16).
const IN_FLIGHT: usize = 16;
/// How long setup may take (the agent joining, the grant reaching it).
const SETUP_LIMIT: Duration = Duration::from_secs(30);
/// Iterations of each piece timed alone.
const PIECE_ITERATIONS: usize = 2000;
/// Fresh connections and sessions timed for the cold-path pieces.
const HANDSHAKES: usize = 30;

fn main() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this binary without it,
    // and a minute of benchmarking (in a debug build) has no place in a test run.
    if !std::env::args().any(|a| a == "--bench") {
        println!("benches/calls.rs: skipped (run it with `cargo bench --bench calls`)");
        return Ok(());
    }
    let knobs = Knobs::from_env()?;
    eprintln!("setting up: proxy, agent, Alice and Bob on 127.0.0.1 ...");
    let lab = Lab::start(&knobs)?;
    let caller_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut table = Table::default();
    let mut cpu = Vec::new();

    eprintln!("1/5 floor: plain QUIC relay, one round trip at a time and {IN_FLIGHT} in flight ...");
    let mut rig = caller_rt.block_on(rows::FloorRig::start())?;
    let (_, floor_cpu) = caller_rt.block_on(rig.solo(knobs.calls))?;
    let (floor_busy, floor_busy_cpu) = caller_rt.block_on(rig.busy(&knobs))?;
    cpu.push(floor_cpu);
    cpu.push(floor_busy_cpu);

    let caller = caller_rt.block_on(Caller::connect(&lab))?;
    eprintln!("2/5 live calls, taking turns with floor round trips ...");
    let (floor, mut live_warm) = caller_rt.block_on(rows::interleaved(&mut rig, &caller, knobs.calls))?;
    caller_rt.block_on(rig.close());
    let floor_p50 = floor.p50();
    let floor_rate = floor_busy.rate();
    table.row(
        "1  floor: QUIC round trip via a plain relay (turns with 2)",
        &floor,
        "-",
        None,
    );
    table.row(
        &format!("1b floor: {IN_FLIGHT} in flight via a plain relay ({IN_FLIGHT} streams)"),
        &floor_busy,
        "-",
        None,
    );
    let budget = floor_p50 + Duration::from_micros(50);
    let worst = floor_p50 + Duration::from_micros(100);
    let rate_budget = (floor_rate * 0.5).max(25_000.0);
    // The live rows' figures, so each receipt row can say what a receipt costs.
    let mut live: BTreeMap<&str, (Duration, f64)> = BTreeMap::new();
    for (n, receipt) in [(2, false), (3, true)] {
        let kind = if receipt { "with --receipt" } else { "live call" };
        eprintln!(
            "{n}/5 {kind}: warm on one session; {IN_FLIGHT} in flight on 1 and on {IN_FLIGHT} sessions ..."
        );
        // The CPU of a warm call, measured alone; for the live call, the latencies shown are
        // those taken in turns with the floor.
        let meter = CpuMeter::start();
        let alone = caller_rt.block_on(rows::warm(&caller, knobs.calls, receipt))?;
        cpu.push(meter.per_call(&format!("{n}  warm"), alone.n() + WARMUP_CALLS));
        let warm = if receipt {
            alone
        } else {
            std::mem::take(&mut live_warm)
        };
        let (text, met) = match live.get("warm") {
            Some((p50, _)) => (
                format!(
                    "+{} over the live call at p50",
                    us(warm.p50().saturating_sub(*p50))
                ),
                None,
            ),
            None => (
                format!("p50 <= floor + 50 us = {} (at worst {})", us(budget), us(worst)),
                Some(warm.p50() <= budget),
            ),
        };
        live.entry("warm").or_insert((warm.p50(), warm.rate()));
        table.row(
            &format!("{n}  {kind}, warm, 1 session (sys/ping)"),
            &warm,
            &text,
            met,
        );
        table.note_refusals(&format!("{n}"), &warm.refused);

        for (letter, sessions) in [("b", 1), ("c", IN_FLIGHT)] {
            let meter = CpuMeter::start();
            let busy = caller_rt.block_on(rows::in_flight(
                &caller,
                sessions,
                knobs.secs,
                knobs.max_calls,
                receipt,
            ))?;
            cpu.push(meter.per_call(
                &format!("{n}{letter} {IN_FLIGHT} on {sessions}"),
                busy.n() + busy.refused.total() + IN_FLIGHT,
            ));
            let (text, met) = match live.get(letter) {
                Some((_, rate)) => (
                    format!("{:.2} x the live row", busy.rate() / rate.max(1e-9)),
                    None,
                ),
                None => (
                    format!(">= max(0.5 x row 1b, 25000) = {rate_budget:.0}/s"),
                    Some(busy.rate() >= rate_budget),
                ),
            };
            live.entry(letter).or_insert((busy.p50(), busy.rate()));
            let plural = if sessions == 1 { "" } else { "s" };
            table.row(
                &format!("{n}{letter} {kind}, {IN_FLIGHT} in flight, {sessions} session{plural}"),
                &busy,
                &text,
                met,
            );
            table.note_refusals(&format!("{n}{letter}"), &busy.refused);
        }
    }

    eprintln!("4/5 cold `wtd call` processes ...");
    let version = rows::process(&lab, &["--version"], knobs.cold)?;
    match rows::process(&lab, &["call", "sys/ping"], knobs.cold) {
        Ok(cold) => table.row(
            "4  cold `wtd call sys/ping` (new process)",
            &cold,
            "p50 < 5 ms",
            Some(cold.p50() < Duration::from_millis(5)),
        ),
        Err(e) => table.failed("4  cold `wtd call sys/ping` (new process)", &e),
    }
    table.row("4b   baseline: `wtd --version`", &version, "-", None);

    eprintln!("5/5 pieces ...");
    let pieces = caller_rt.block_on(pieces::all(&lab, &caller))?;

    caller_rt.block_on(caller.close());
    drop(lab);
    table.print(&knobs, &cpu, &pieces);
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Knobs
// ---------------------------------------------------------------------------------------

/// What the environment asks of this run; every loop is bounded by these.
#[derive(Debug)]
struct Knobs {
    calls: usize,
    secs: Duration,
    max_calls: u64,
    cold: usize,
    wtd: PathBuf,
}

impl Knobs {
    fn from_env() -> anyhow::Result<Knobs> {
        fn number(name: &str, default: u64) -> anyhow::Result<u64> {
            match std::env::var(name) {
                Ok(v) => v
                    .trim()
                    .parse()
                    .with_context(|| format!("{name}={v}: expected a whole number")),
                Err(_) => Ok(default),
            }
        }
        let wtd = std::env::var_os("WTD_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_wtd")));
        Ok(Knobs {
            calls: number("WTD_BENCH_CALLS", 5000)?.max(1) as usize,
            secs: Duration::from_secs(number("WTD_BENCH_SECS", 3)?.clamp(1, 120)),
            max_calls: number("WTD_BENCH_MAX_CALLS", 200_000)?.max(1),
            cold: number("WTD_BENCH_COLD", 20)?.clamp(1, 1000) as usize,
            wtd,
        })
    }
}

// ---------------------------------------------------------------------------------------
// Daemons
// ---------------------------------------------------------------------------------------

/// A future on its own runtime and thread, as if it were its own process. Dropping it
/// cancels its token and joins the thread, so nothing it started outlives it.
struct Daemon {
    stop: CancellationToken,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Daemon {
    /// Runs `make(stop)` on a runtime with `workers` threads (1: a current-thread runtime,
    /// like `wtd agent` and `wtd call`). `make` runs inside the runtime, so it may bind
    /// sockets.
    fn start<F, Fut>(name: &str, workers: usize, make: F) -> anyhow::Result<Daemon>
    where
        F: FnOnce(CancellationToken) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()>,
    {
        let stop = CancellationToken::new();
        let token = stop.clone();
        let role = name.to_string();
        let thread = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                // Every thread of this runtime carries the daemon's name, so `cpu_by_role`
                // can tell whose CPU time it is.
                let rt = if workers <= 1 {
                    tokio::runtime::Builder::new_current_thread()
                        .thread_name(format!("{role}-blocking"))
                        .enable_all()
                        .build()
                } else {
                    tokio::runtime::Builder::new_multi_thread()
                        .worker_threads(workers)
                        .thread_name(format!("{role}-worker"))
                        .enable_all()
                        .build()
                }
                .expect("a tokio runtime");
                rt.block_on(make(token));
                rt.shutdown_timeout(Duration::from_millis(500));
            })?;
        Ok(Daemon {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop.cancel();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Receives what a daemon reports once it is up, or says it never did.
fn started<T>(rx: std::sync::mpsc::Receiver<anyhow::Result<T>>, what: &str) -> anyhow::Result<T> {
    rx.recv_timeout(SETUP_LIMIT)
        .map_err(|_| anyhow!("{what} did not start within {SETUP_LIMIT:?}"))?
}

// ---------------------------------------------------------------------------------------
// The lab
// ---------------------------------------------------------------------------------------

/// A proxy and one agent on 127.0.0.1; Alice owns the agent and granted Bob `sys`.
struct Lab {
    wtd: PathBuf,
    proxy: ProxyInfo,
    bob: SecretKey,
    bob_home: PathBuf,
    agent: AgentId,
    logs: LogsHandle,
    // Dropped in this order: the agent says goodbye to a proxy that is still there.
    _agent: Daemon,
    _proxy: Daemon,
    _dir: tempfile::TempDir,
}

impl Lab {
    fn start(knobs: &Knobs) -> anyhow::Result<Lab> {
        let dir = tempfile::tempdir()?;
        let wtd = knobs.wtd.clone();
        if !wtd.exists() {
            bail!("no wtd binary at {}; build it or set WTD_BIN", wtd.display());
        }

        // The proxy, with the runtime `wtd proxy` uses.
        let (tx, rx) = std::sync::mpsc::channel();
        let state_dir = dir.path().join("proxy");
        let proxy_daemon = Daemon::start("proxy", 2, move |stop| async move {
            let bound = UdpSocket::bind("127.0.0.1:0")
                .map_err(anyhow::Error::from)
                .and_then(|socket| Proxy::bind(ProxyConfig::new(state_dir), socket));
            let proxy = match bound.and_then(|p| Ok((p.local_addr()?, p))) {
                Ok((addr, p)) => {
                    let _ = tx.send(Ok((p.id(), addr, p.ticket(&[addr]))));
                    p
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            proxy.run(stop).await;
        })?;
        let (proxy_id, proxy_addr, ticket) = started(rx, "the proxy")?;

        // Alice and Bob, with the real CLI: Alice's grant reaches the proxy the usual way.
        let alice = dir.path().join("alice");
        let bob_home = dir.path().join("bob");
        let cli = |home: &Path, args: &[&str]| run_wtd(&wtd, home, args);
        cli(&alice, &["init"])?;
        cli(&bob_home, &["init"])?;
        cli(&alice, &["join", &ticket])?;
        cli(&bob_home, &["join", &ticket])?;
        let bob_id = cli(&bob_home, &["id", "--quiet"])?.trim().to_string();
        cli(&alice, &["keys", "add", "bob", &bob_id])?;
        let mut grant = vec!["grant", "bob", "--mission", "sys", "--json"];
        grant.extend_from_slice(&GRANT_FLAGS);
        let granted: serde_json::Value = serde_json::from_str(&cli(&alice, &grant)?)?;
        let grant_ticket = granted["ticket"]
            .as_str()
            .ok_or_else(|| anyhow!("`wtd grant --json` printed no ticket"))?;
        cli(&bob_home, &["grants", "import", grant_ticket])?;
        let home = |h: &Path| wtd_store::home::Home::at(h).identity();
        let alice_key = wtd_store::identity::load(&home(&alice))?;
        let bob = wtd_store::identity::load(&home(&bob_home))?;

        // The agent, with the runtime `wtd agent` uses.
        let missions = dir.path().join("agent").join("missions");
        std::fs::create_dir_all(&missions)?;
        let proxy = ProxyInfo {
            id: proxy_id,
            addrs: vec![proxy_addr],
        };
        let config = AgentConfig {
            name: "bench-pi".into(),
            state_dir: dir.path().join("agent").join("state"),
            missions_dir: missions,
            ..AgentConfig::new(proxy.clone(), vec![OwnerKey(alice_key.public())])
        };
        let agent = Agent::new(config)?;
        let agent_id = agent.id();
        // Alice adopts it (by id: it is not online yet), so her grants reach it.
        cli(&alice, &["adopt", &agent_id.to_string()])?;
        let logs = agent.logs();
        let agent_daemon = Daemon::start("agent", 1, move |stop| async move {
            if let Err(e) = agent.run(stop).await {
                eprintln!("the agent stopped: {e}");
            }
        })?;

        let lab = Lab {
            wtd,
            proxy,
            bob,
            bob_home,
            agent: agent_id,
            logs,
            _agent: agent_daemon,
            _proxy: proxy_daemon,
            _dir: dir,
        };
        lab.wait_for_grant()?;
        Ok(lab)
    }

    /// Waits until the agent has verified Alice's adoption of it and her grant for Bob (they
    /// come through the proxy).
    fn wait_for_grant(&self) -> anyhow::Result<()> {
        let bob = UserKey(self.bob.public());
        let start = Instant::now();
        loop {
            let logs = self.logs.borrow();
            let adopted = logs.owners().any(|o| logs.adoptions().adopts(o, &self.agent));
            let has = adopted
                && logs
                    .grants()
                    .any(|g| g.subject == bob && g.mission.as_str() == "sys");
            drop(logs);
            if has {
                return Ok(());
            }
            if start.elapsed() > SETUP_LIMIT {
                bail!("the agent did not receive Bob's grant within {SETUP_LIMIT:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Runs `wtd args...` as `home`'s user; its stdout, or an error with its stderr.
fn run_wtd(wtd: &Path, home: &Path, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(wtd)
        .args(args)
        .env("WTD_HOME", home)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {}", wtd.display()))?;
    if !out.status.success() {
        bail!(
            "wtd {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

// ---------------------------------------------------------------------------------------
// Bob's side of a call
// ---------------------------------------------------------------------------------------

/// One warm session to the agent, from the caller library `wtd call` uses.
type Session = std::sync::Arc<wtd_caller::Session>;

/// Bob, connected to the proxy, ready to open sessions to the agent and call `sys/ping`.
struct Caller {
    me: std::sync::Arc<SecretKey>,
    agent: AgentId,
    mission: MissionName,
    function: FunctionName,
    /// `{}`, what `wtd call sys/ping` sends when given no arguments.
    args: Vec<u8>,
    client: Client,
    conn: Connection,
}

/// How one call failed.
#[derive(Debug)]
enum CallFailed {
    /// The agent answered with a refusal; the session goes on.
    Refused { kind: String, message: String },
    /// The session or the result is broken.
    Broken(anyhow::Error),
}

impl<E: Into<anyhow::Error>> From<E> for CallFailed {
    fn from(e: E) -> Self {
        CallFailed::Broken(e.into())
    }
}

impl Caller {
    async fn connect(lab: &Lab) -> anyhow::Result<Caller> {
        let me = std::sync::Arc::new(SecretKey::from_seed(&lab.bob.seed()));
        let client = Client::bind(&me, "127.0.0.1:0".parse()?)?;
        let conn = client.connect(lab.proxy.addrs[0], *lab.proxy.id.key()).await?;
        let caller = Caller {
            me,
            agent: lab.agent,
            mission: MissionName::new("sys")?,
            function: FunctionName::new("ping")?,
            args: b"{}".to_vec(),
            client,
            conn,
        };
        // The agent may not be in the roster yet: wait for the relay to say Connected.
        let start = Instant::now();
        loop {
            match caller.session().await {
                Ok(_) => return Ok(caller),
                Err(e) if start.elapsed() > SETUP_LIMIT => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    /// A new session to the agent (relay and pinned handshake), as `wtd call` opens one.
    async fn session(&self) -> anyhow::Result<Session> {
        let inner = wtd_caller::Session::open(self.me.clone(), &self.conn, self.agent).await?;
        Ok(std::sync::Arc::new(inner))
    }

    /// One call on a warm session, through the caller library; with `receipt`, the signed
    /// form, verified before it counts.
    async fn call(&self, s: &Session, receipt: bool) -> Result<(), CallFailed> {
        let pending = s
            .call(&self.mission, &self.function, &self.args, receipt, &[])
            .await
            .map_err(|e| CallFailed::Broken(e.into()))?;
        match pending.finish(&mut |_| {}).await {
            Ok(a) if a.status == CallStatus::Ok && a.receipt.is_some() == receipt => Ok(()),
            Ok(a) if a.status == CallStatus::Ok => {
                Err(anyhow!("sys/ping came back without the receipt asked for").into())
            }
            Ok(a) => Err(anyhow!("sys/ping ended {}", a.status).into()),
            Err(wtd_caller::CallError::Refused(r)) => Err(CallFailed::Refused {
                kind: r.kind,
                message: r.message,
            }),
            Err(e) => Err(CallFailed::Broken(e.into())),
        }
    }

    async fn close(self) {
        self.conn.close(0u32.into(), b"bye");
        let _ = tokio::time::timeout(Duration::from_millis(300), self.client.endpoint().wait_idle()).await;
    }
}

fn now() -> Timestamp {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    Timestamp(ms)
}

// ---------------------------------------------------------------------------------------
// Row 1: the floor, a plain relay
// ---------------------------------------------------------------------------------------

mod floor {
    use super::*;

    /// A relay with nothing but splicing: the node (playing the agent) connects to it; each
    /// stream a caller opens is spliced to a new stream on the node's connection, as
    /// proxy/src/relay.rs does, without the request parsing, roster and framing.
    pub(super) async fn relay(server: Server, node: PublicId, stop: CancellationToken) {
        let (node_tx, node_rx) = watch::channel(None::<Connection>);
        let mut conns = JoinSet::new();
        loop {
            let pending = tokio::select! {
                _ = stop.cancelled() => break,
                p = server.accept() => p,
            };
            let Some(pending) = pending else { break };
            let (node_tx, node_rx, stop) = (node_tx.clone(), node_rx.clone(), stop.clone());
            conns.spawn(async move {
                let Ok(accepted) = pending.handshake().await else {
                    return;
                };
                let conn = accepted.connection().clone();
                if accepted.peer() == node {
                    node_tx.send_replace(Some(conn));
                    stop.cancelled().await;
                } else {
                    splice_streams(conn, node_rx, stop).await;
                }
                // `accepted` holds the connection's slot until here.
                drop(accepted);
            });
        }
        server.endpoint().close(0u32.into(), b"done");
        conns.shutdown().await;
    }

    async fn splice_streams(
        conn: Connection,
        mut node: watch::Receiver<Option<Connection>>,
        stop: CancellationToken,
    ) {
        let mut streams = JoinSet::new();
        loop {
            let (send, recv) = tokio::select! {
                _ = stop.cancelled() => break,
                s = conn.accept_bi() => match s {
                    Ok(s) => s,
                    Err(_) => break,
                },
            };
            let Ok(node_conn) = node.wait_for(Option::is_some).await.map(|c| c.clone()) else {
                break;
            };
            let node_conn = node_conn.expect("waited for it");
            streams.spawn(async move {
                let Ok((n_send, n_recv)) = node_conn.open_bi().await else {
                    return;
                };
                let mut caller = join(recv, send);
                let mut callee = join(n_recv, n_send);
                let _ = tokio::io::copy_bidirectional(&mut caller, &mut callee).await;
            });
        }
        streams.shutdown().await;
    }

    /// The node behind the relay: connects out to it (as an agent does) and echoes every
    /// stream it is given.
    pub(super) async fn echo_node(
        key: SecretKey,
        relay: SocketAddr,
        relay_id: PublicId,
        up: std::sync::mpsc::Sender<anyhow::Result<()>>,
        stop: CancellationToken,
    ) {
        let connected = async {
            let client = Client::bind(&key, "127.0.0.1:0".parse()?)?;
            let conn = client.connect(relay, relay_id).await?;
            anyhow::Ok((client, conn))
        }
        .await;
        let (_client, conn) = match connected {
            Ok(c) => {
                let _ = up.send(Ok(()));
                c
            }
            Err(e) => {
                let _ = up.send(Err(e));
                return;
            }
        };
        let mut streams = JoinSet::new();
        loop {
            let (mut send, mut recv) = tokio::select! {
                _ = stop.cancelled() => break,
                s = conn.accept_bi() => match s {
                    Ok(s) => s,
                    Err(_) => break,
                },
            };
            streams.spawn(async move {
                let _ = tokio::io::copy(&mut recv, &mut send).await;
            });
        }
        streams.shutdown().await;
    }
}

// ---------------------------------------------------------------------------------------
// The rows
// ---------------------------------------------------------------------------------------

mod rows {
    use super::*;

    /// The plain relay of rows 1, its echo node, and a caller's warm stream through it. Kept
    /// up while the live calls of row 2 are timed, so the two can take turns.
    pub(super) struct FloorRig {
        client: Client,
        conn: Connection,
        send: wtd_transport::SendStream,
        recv: wtd_transport::RecvStream,
        // Dropped in this order: the node, then the relay.
        _node: Daemon,
        _relay: Daemon,
    }

    impl FloorRig {
        pub(super) async fn start() -> anyhow::Result<FloorRig> {
            let (relay_key, node_key, me) = (
                SecretKey::generate(),
                SecretKey::generate(),
                SecretKey::generate(),
            );
            let (node_id, relay_id) = (node_key.public(), relay_key.public());
            let (tx, rx) = std::sync::mpsc::channel();
            let relay = Daemon::start("proxy-plain", 2, move |stop| async move {
                match Server::bind(
                    &relay_key,
                    "127.0.0.1:0".parse().expect("literal"),
                    &Limits::default(),
                ) {
                    Ok(server) => {
                        let _ = tx.send(server.local_addr().map_err(anyhow::Error::from));
                        floor::relay(server, node_id, stop).await;
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e.into()));
                    }
                }
            })?;
            let relay_addr = started(rx, "the plain relay")?;
            let (tx, rx) = std::sync::mpsc::channel();
            let node = Daemon::start("agent-echo", 1, move |stop| {
                floor::echo_node(node_key, relay_addr, relay_id, tx, stop)
            })?;
            started(rx, "the echo node")?;
            let client = Client::bind(&me, "127.0.0.1:0".parse()?)?;
            let conn = client.connect(relay_addr, relay_id).await?;
            let (send, recv) = conn.open_bi().await?;
            Ok(FloorRig {
                client,
                conn,
                send,
                recv,
                _node: node,
                _relay: relay,
            })
        }

        /// One round trip of a [`FLOOR_MESSAGE`]-byte message on the warm stream.
        pub(super) async fn round_trip(&mut self) -> anyhow::Result<Duration> {
            let out = [7u8; FLOOR_MESSAGE];
            let mut back = [0u8; FLOOR_MESSAGE];
            let t = Instant::now();
            self.send.write_all(&out).await?;
            self.recv.read_exact(&mut back).await?;
            Ok(t.elapsed())
        }

        /// Row 1 alone, for its CPU per call: `calls` round trips.
        pub(super) async fn solo(&mut self, calls: usize) -> anyhow::Result<(Stats, CpuPerCall)> {
            let cpu = CpuMeter::start();
            let mut rounds = Rounds::new(calls);
            while rounds.more() {
                let took = self.round_trip().await?;
                rounds.record(took);
            }
            let stats = rounds.finish();
            let cpu = cpu.per_call("1  floor", stats.n() + WARMUP_CALLS);
            Ok((stats, cpu))
        }

        /// Row 1b: `IN_FLIGHT` streams on the same connection, each echoing in a loop for
        /// the in-flight rows' time. The relay and the echo node count as the proxy and the
        /// agent in the CPU table.
        pub(super) async fn busy(&mut self, knobs: &Knobs) -> anyhow::Result<(Stats, CpuPerCall)> {
            let out = [7u8; FLOOR_MESSAGE];
            let mut back = [0u8; FLOOR_MESSAGE];
            let mut streams = Vec::new();
            for _ in 0..IN_FLIGHT {
                let (mut send, mut recv) = self.conn.open_bi().await?;
                // One round trip each first, so every stream exists at the node.
                send.write_all(&out).await?;
                recv.read_exact(&mut back).await?;
                streams.push((send, recv));
            }
            let cpu = CpuMeter::start();
            let made = AtomicU64::new(0);
            let start = Instant::now();
            let deadline = start + knobs.secs;
            let loops = streams.into_iter().map(|(mut send, mut recv)| {
                let made = &made;
                async move {
                    let mut times = Vec::new();
                    let mut back = [0u8; FLOOR_MESSAGE];
                    while Instant::now() < deadline && made.fetch_add(1, Ordering::Relaxed) < knobs.max_calls
                    {
                        let t = Instant::now();
                        send.write_all(&out).await?;
                        recv.read_exact(&mut back).await?;
                        times.push(t.elapsed());
                    }
                    let _ = send.finish();
                    anyhow::Ok(times)
                }
            });
            let results = join_all(loops.collect()).await;
            let mut busy = Stats {
                elapsed: start.elapsed(),
                ..Stats::default()
            };
            for r in results {
                busy.times.extend(r?);
            }
            let busy_cpu = cpu.per_call(&format!("1b {IN_FLIGHT} streams"), busy.n() + IN_FLIGHT);
            Ok((busy, busy_cpu))
        }

        pub(super) async fn close(self) {
            self.conn.close(0u32.into(), b"bye");
            let _ =
                tokio::time::timeout(Duration::from_millis(300), self.client.endpoint().wait_idle()).await;
        }
    }

    /// Rows 1 and 2 for the budget: a floor round trip and a live call, taking turns, so
    /// both see the same machine (a shared 2-core box drifts by tens of microseconds from
    /// one second to the next, as much as the budget itself).
    pub(super) async fn interleaved(
        rig: &mut FloorRig,
        caller: &Caller,
        calls: usize,
    ) -> anyhow::Result<(Stats, Stats)> {
        let s = caller.session().await?;
        let (mut floor, mut live) = (Stats::default(), Stats::default());
        let mut rounds = Rounds::new(calls);
        let start = Instant::now();
        while rounds.more() {
            let f = rig.round_trip().await?;
            let t = Instant::now();
            match caller.call(&s, false).await {
                Ok(()) => {}
                Err(CallFailed::Refused { kind, message }) => live.refused.add(kind, message),
                Err(CallFailed::Broken(e)) => return Err(e),
            }
            let l = t.elapsed();
            if rounds.measuring() {
                floor.times.push(f);
                live.times.push(l);
            }
        }
        // Each kind had half of the wall time.
        let half = start.elapsed() / 2;
        floor.elapsed = half;
        live.elapsed = half;
        Ok((floor, live))
    }

    /// Rows 2 and 3: `calls` calls, one after another, on one warm session.
    pub(super) async fn warm(caller: &Caller, calls: usize, receipt: bool) -> anyhow::Result<Stats> {
        let s = caller.session().await?;
        let mut refused = Refusals::default();
        let mut rounds = Rounds::new(calls);
        while rounds.more() {
            let t = Instant::now();
            match caller.call(&s, receipt).await {
                Ok(()) => rounds.record(t.elapsed()),
                Err(CallFailed::Refused { kind, message }) => refused.add(kind, message),
                Err(CallFailed::Broken(e)) => return Err(e),
            }
        }
        let mut stats = rounds.finish();
        stats.refused = refused;
        Ok(stats)
    }

    /// Rows 2b/2c and 3b/3c: `IN_FLIGHT` loops, each calling one call at a time, spread
    /// over `sessions` sessions, until `secs` pass or `max_calls` calls were made in all.
    pub(super) async fn in_flight(
        caller: &Caller,
        sessions: usize,
        secs: Duration,
        max_calls: u64,
        receipt: bool,
    ) -> anyhow::Result<Stats> {
        let mut opened = Vec::new();
        for _ in 0..sessions.max(1) {
            let s = caller.session().await?;
            // One warm-up call each, so every session has done its first call.
            let _ = caller.call(&s, receipt).await;
            opened.push(s);
        }
        let made = AtomicU64::new(0);
        let start = Instant::now();
        let deadline = start + secs;
        let loops = (0..IN_FLIGHT).map(|i| {
            let made = &made;
            let s = opened[i % opened.len()].clone();
            async move {
                let mut times = Vec::new();
                let mut refused = Refusals::default();
                while Instant::now() < deadline && made.fetch_add(1, Ordering::Relaxed) < max_calls {
                    let t = Instant::now();
                    match caller.call(&s, receipt).await {
                        Ok(()) => times.push(t.elapsed()),
                        Err(CallFailed::Refused { kind, message }) => refused.add(kind, message),
                        Err(CallFailed::Broken(e)) => return Err(e),
                    }
                }
                anyhow::Ok((times, refused))
            }
        });
        // Joined, not spawned: the loops share the caller's one thread like one program's
        // tasks, and all end with this function.
        let results = join_all(loops.collect()).await;
        let elapsed = start.elapsed();
        let mut stats = Stats::default();
        for r in results {
            let (times, refused) = r?;
            stats.times.extend(times);
            stats.refused.merge(refused);
        }
        stats.elapsed = elapsed;
        Ok(stats)
    }

    /// Row 4: `runs` runs of `wtd args...` as Bob, wall time from spawn to exit.
    pub(super) fn process(lab: &Lab, args: &[&str], runs: usize) -> anyhow::Result<Stats> {
        let once = || -> anyhow::Result<Duration> {
            let t = Instant::now();
            let out = Command::new(&lab.wtd)
                .args(args)
                .env("WTD_HOME", &lab.bob_home)
                .env_remove("RUST_LOG")
                .stdin(Stdio::null())
                .output()?;
            let took = t.elapsed();
            if !out.status.success() {
                bail!(
                    "wtd {} failed: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            Ok(took)
        };
        // Warm the page cache and the proxy's roster path.
        for _ in 0..3 {
            once()?;
        }
        let mut stats = Stats::default();
        let start = Instant::now();
        for _ in 0..runs {
            stats.times.push(once()?);
            if start.elapsed() > ROW_TIME_LIMIT {
                break;
            }
        }
        stats.elapsed = start.elapsed();
        Ok(stats)
    }

    /// Counts a latency row: `WARMUP_CALLS` rounds unmeasured, then up to `n` measured,
    /// stopping early at `ROW_TIME_LIMIT`. (A counter rather than a closure: the rounds borrow
    /// the session mutably, which a closure returning a future cannot.)
    struct Rounds {
        left: usize,
        warmup: usize,
        started: Option<Instant>,
        stats: Stats,
    }

    impl Rounds {
        fn new(n: usize) -> Rounds {
            Rounds {
                left: n + WARMUP_CALLS,
                warmup: WARMUP_CALLS,
                started: None,
                stats: Stats::default(),
            }
        }

        /// Whether to do another round (a refused call also counts as one).
        fn more(&mut self) -> bool {
            if self.left == 0 {
                return false;
            }
            self.left -= 1;
            if self.warmup > 0 {
                self.warmup -= 1;
                return true;
            }
            let started = *self.started.get_or_insert_with(Instant::now);
            started.elapsed() < ROW_TIME_LIMIT
        }

        /// Whether the round just begun counts (it is past the warm-up).
        fn measuring(&self) -> bool {
            self.started.is_some()
        }

        /// Keeps one round's time, unless it was a warm-up round.
        fn record(&mut self, took: Duration) {
            if self.started.is_some() {
                self.stats.times.push(took);
            }
        }

        fn finish(mut self) -> Stats {
            self.stats.elapsed = self.started.map_or(Duration::ZERO, |s| s.elapsed());
            self.stats
        }
    }

    /// Polls every future to completion on this task (a tiny `join_all`, so the bench needs
    /// no `futures` crate).
    async fn join_all<F: std::future::Future>(futures: Vec<F>) -> Vec<F::Output> {
        let mut futures: Vec<_> = futures.into_iter().map(Box::pin).collect();
        let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
        std::future::poll_fn(|cx| {
            let mut pending = false;
            for (f, out) in futures.iter_mut().zip(outputs.iter_mut()) {
                if out.is_none() {
                    match f.as_mut().poll(cx) {
                        std::task::Poll::Ready(v) => *out = Some(v),
                        std::task::Poll::Pending => pending = true,
                    }
                }
            }
            if pending {
                std::task::Poll::Pending
            } else {
                std::task::Poll::Ready(())
            }
        })
        .await;
        outputs
            .into_iter()
            .map(|o| o.expect("every future finished"))
            .collect()
    }
}

// ---------------------------------------------------------------------------------------
// The pieces of one call, timed alone
// ---------------------------------------------------------------------------------------

mod pieces {
    use super::*;

    /// One measured piece: its name and per-operation times.
    pub(super) struct Piece {
        pub(super) name: &'static str,
        pub(super) stats: Stats,
    }

    /// Times each CPU step of a warm call, then each network step of a cold one.
    pub(super) async fn all(lab: &Lab, caller: &Caller) -> anyhow::Result<Vec<Piece>> {
        let mut out = Vec::new();
        let mut piece = |name, stats| out.push(Piece { name, stats });
        let bob = &caller.me;
        let agent_key = SecretKey::generate();
        let agent = AgentId(agent_key.public());
        let binding = [9u8; 32];
        let msg = [1u8; 240];

        // Warm the caches and the CPU clock before the first timed piece.
        for _ in 0..PIECE_ITERATIONS / 4 {
            let sig = bob.sign(Domain("bench"), &msg);
            let _ = std::hint::black_box(bob.public().verify(Domain("bench"), &msg, &sig));
        }
        piece(
            "receipts only: ed25519 sign, 240 B",
            time_each(PIECE_ITERATIONS, |_| {
                std::hint::black_box(bob.sign(Domain("bench"), &msg));
            }),
        );
        let sig = bob.sign(Domain("bench"), &msg);
        let bob_pub = bob.public();
        piece(
            "receipts only: ed25519 verify_strict, 240 B",
            time_each(PIECE_ITERATIONS, |_| {
                bob_pub.verify(Domain("bench"), &msg, &sig).expect("verifies");
            }),
        );

        // Every key new to the process (a key seen before is remembered: next row).
        let fresh: Vec<[u8; 32]> = (0..PIECE_ITERATIONS)
            .map(|_| *SecretKey::generate().public().as_bytes())
            .collect();
        piece(
            "decode checks of a key not seen before (PublicId::from_bytes)",
            time_each(PIECE_ITERATIONS, |i| {
                std::hint::black_box(PublicId::from_bytes(&fresh[i]).expect("a key"));
            }),
        );
        piece(
            "decode checks of a key seen before (remembered)",
            time_each(PIECE_ITERATIONS, |_| {
                std::hint::black_box(PublicId::from_bytes(bob_pub.as_bytes()).expect("a key"));
            }),
        );

        // Caller: build and sign calls (kept, so the agent's check below has fresh ones).
        let mut calls = Vec::with_capacity(PIECE_ITERATIONS);
        piece(
            "receipts only, caller: Call::new + sign",
            time_each(PIECE_ITERATIONS, |_| {
                calls.push(
                    Call::new(
                        UserKey(bob.public()),
                        agent,
                        caller.mission.clone(),
                        caller.function.clone(),
                        &caller.args,
                        binding,
                        now(),
                    )
                    .sign(bob),
                );
            }),
        );
        // Agent: check each call (decode, signature, session, freshness, replay).
        let mut replay = ReplayGuard::new();
        let bob_user = UserKey(bob.public());
        let mut checked = Vec::with_capacity(PIECE_ITERATIONS);
        piece(
            "receipts only, agent: check_call (decode + verify + replay)",
            time_each(PIECE_ITERATIONS, |i| {
                checked.push(
                    check_call(
                        calls[i].bytes(),
                        &bob_user,
                        &agent,
                        &binding,
                        &caller.args,
                        now(),
                        &mut replay,
                    )
                    .expect("a good call"),
                );
            }),
        );
        // Agent: authorize with the grant it really holds, as calls.rs does per call.
        let snapshot = lab.logs.borrow().clone();
        let owners: Vec<OwnerKey> = snapshot.owners().copied().collect();
        let grants: Vec<_> = snapshot.grants().collect();
        let revocations: Vec<_> = snapshot.revocations().collect();
        let policy = Policy {
            owners: &owners,
            grants: &grants,
            revocations: &revocations,
            adoptions: snapshot.adoptions(),
        };
        let mut limits = RateLimits::default();
        let mut floor = TimeFloor::default();
        piece(
            "every call, agent: authorize (1 grant) + release",
            time_each(PIECE_ITERATIONS, |_| {
                let t = now();
                floor.observe(t);
                let req = AuthzRequest {
                    caller: &bob_user,
                    agent: &lab.agent,
                    mission: &caller.mission,
                    function: &caller.function,
                    now: t,
                };
                match authorize(&req, &policy, &mut limits, floor) {
                    Decision::Allow(p) => limits.release(p),
                    other => panic!("the bench grant was not used: {other:?}"),
                }
            }),
        );
        let output = br#"{"agent":"bench-pi","pong":true}"#.to_vec();
        let mut results = Vec::with_capacity(PIECE_ITERATIONS);
        piece(
            "receipts only, agent: CallResult::for_call + sign",
            time_each(PIECE_ITERATIONS, |i| {
                results
                    .push(CallResult::for_call(&checked[i], CallStatus::Ok, &output, now()).sign(&agent_key));
            }),
        );
        piece(
            "receipts only, caller: verify_result (decode + verify)",
            time_each(PIECE_ITERATIONS, |i| {
                verify_result(results[i].bytes(), &output, &agent, &calls[i]).expect("a good result");
            }),
        );
        piece(
            "wire: encode + decode Call and Done (live call)",
            time_each(PIECE_ITERATIONS, |i| {
                let invoke = encode(&CallerMsg::Call {
                    id: i as u64 + 1,
                    mission: caller.mission.as_str().to_string(),
                    function: caller.function.as_str().to_string(),
                    args: caller.args.clone(),
                    signed: None,
                });
                let done = encode(&AgentMsg::Done {
                    id: i as u64 + 1,
                    status: wtd_wire::call::Status::Ok,
                    output: output.clone(),
                    detail: String::new(),
                    signed: None,
                });
                std::hint::black_box(decode::<CallerMsg>(&invoke).expect("decodes"));
                std::hint::black_box(decode::<AgentMsg>(&done).expect("decodes"));
            }),
        );
        piece(
            "wire: encode + decode Call and Done (with receipts)",
            time_each(PIECE_ITERATIONS, |i| {
                let invoke = encode(&CallerMsg::Call {
                    id: i as u64 + 1,
                    mission: caller.mission.as_str().to_string(),
                    function: caller.function.as_str().to_string(),
                    args: caller.args.clone(),
                    signed: Some(calls[i].bytes().to_vec()),
                });
                let done = encode(&AgentMsg::Done {
                    id: i as u64 + 1,
                    status: wtd_wire::call::Status::Ok,
                    output: output.clone(),
                    detail: String::new(),
                    signed: Some(results[i].bytes().to_vec()),
                });
                std::hint::black_box(decode::<CallerMsg>(&invoke).expect("decodes"));
                std::hint::black_box(decode::<AgentMsg>(&done).expect("decodes"));
            }),
        );

        // The cold path's network steps, on this (warm) process.
        let mut fresh = Stats::default();
        let mut roster = Stats::default();
        let mut sessions = Stats::default();
        for _ in 0..HANDSHAKES {
            let t = Instant::now();
            let client = Client::bind(bob, "127.0.0.1:0".parse()?)?;
            let conn = client.connect(lab.proxy.addrs[0], *lab.proxy.id.key()).await?;
            fresh.times.push(t.elapsed());

            let t = Instant::now();
            let (mut send, mut recv) = conn.open_bi().await?;
            write_frame(&mut send, &encode(&Open::Request(Request::Roster))).await?;
            send.finish().ok();
            match read_frame(&mut recv, MAX_FRAME)
                .await?
                .map(|b| decode::<Response>(&b))
            {
                Some(Ok(Response::Roster(_))) => {}
                other => bail!("expected a roster, got {other:?}"),
            }
            roster.times.push(t.elapsed());

            conn.close(0u32.into(), b"bye");
            let _ = tokio::time::timeout(Duration::from_millis(300), client.endpoint().wait_idle()).await;

            let t = Instant::now();
            let s = caller.session().await?;
            sessions.times.push(t.elapsed());
            drop(s);
        }
        piece("cold: new endpoint + QUIC/TLS connect to the proxy", fresh);
        piece("cold: roster request on that connection", roster);
        piece("cold: relay open + end-to-end TLS handshake", sessions);
        Ok(out)
    }

    /// Runs `op(i)` for `i` in `0..n`, timing each.
    fn time_each(n: usize, mut op: impl FnMut(usize)) -> Stats {
        let mut stats = Stats::default();
        stats.times.reserve(n);
        let start = Instant::now();
        for i in 0..n {
            let t = Instant::now();
            op(i);
            stats.times.push(t.elapsed());
        }
        stats.elapsed = start.elapsed();
        stats
    }
}

// ---------------------------------------------------------------------------------------
// CPU time by process
// ---------------------------------------------------------------------------------------

/// The roles whose CPU time is told apart: each is a process in a real deployment.
const ROLES: [&str; 3] = ["caller", "proxy", "agent"];

/// CPU time each role's threads have used so far, from `/proc/self/task/*/schedstat`
/// (nanoseconds on a CPU; Linux only, empty elsewhere). Threads are named after their
/// daemon (`Daemon::start`); the rest, the main thread included, run the caller. A thread
/// that exited is no longer counted, which only matters for short-lived ones.
fn cpu_by_role() -> BTreeMap<&'static str, Duration> {
    let mut used = BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return used;
    };
    for task in tasks.flatten() {
        let read = |file| std::fs::read_to_string(task.path().join(file)).unwrap_or_default();
        let comm = read("comm");
        let role = ROLES[1..]
            .iter()
            .find(|r| comm.starts_with(**r))
            .copied()
            .unwrap_or("caller");
        let ns: u64 = read("schedstat")
            .split_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        *used.entry(role).or_insert(Duration::ZERO) += Duration::from_nanos(ns);
    }
    used
}

/// Measures the CPU time each role uses during one row.
struct CpuMeter {
    before: BTreeMap<&'static str, Duration>,
    start: Instant,
}

/// One row's CPU time per call by role, and how busy each role was (1.0 = one core).
struct CpuPerCall {
    row: String,
    per_call: BTreeMap<&'static str, Duration>,
    cores: BTreeMap<&'static str, f64>,
}

impl CpuMeter {
    fn start() -> CpuMeter {
        CpuMeter {
            before: cpu_by_role(),
            start: Instant::now(),
        }
    }

    /// Divides the CPU time used since `start` by `calls` (every call the row made,
    /// warm-ups included; the row's few session handshakes are in there too).
    fn per_call(self, row: &str, calls: usize) -> CpuPerCall {
        let wall = self.start.elapsed().as_secs_f64().max(1e-9);
        let after = cpu_by_role();
        let mut per_call = BTreeMap::new();
        let mut cores = BTreeMap::new();
        for role in ROLES {
            let used = after
                .get(role)
                .copied()
                .unwrap_or_default()
                .saturating_sub(self.before.get(role).copied().unwrap_or_default());
            per_call.insert(role, used / calls.max(1) as u32);
            cores.insert(role, used.as_secs_f64() / wall);
        }
        CpuPerCall {
            row: row.to_string(),
            per_call,
            cores,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Statistics and the table
// ---------------------------------------------------------------------------------------

/// Refusals by kind, with one message of each as an example.
#[derive(Debug, Default)]
struct Refusals(BTreeMap<String, (u64, String)>);

impl Refusals {
    fn add(&mut self, kind: String, message: String) {
        self.0.entry(kind).or_insert((0, message)).0 += 1;
    }

    fn total(&self) -> usize {
        self.0.values().map(|(n, _)| *n as usize).sum()
    }

    fn merge(&mut self, other: Refusals) {
        for (kind, (n, message)) in other.0 {
            self.0.entry(kind).or_insert((0, message)).0 += n;
        }
    }
}

/// Times of one row's operations, and how long the row took in all.
#[derive(Debug, Default)]
struct Stats {
    times: Vec<Duration>,
    elapsed: Duration,
    refused: Refusals,
}

impl Stats {
    fn n(&self) -> usize {
        self.times.len()
    }

    fn percentile(&self, p: f64) -> Duration {
        let mut sorted = self.times.clone();
        sorted.sort_unstable();
        if sorted.is_empty() {
            return Duration::ZERO;
        }
        let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
        sorted[i]
    }

    fn p50(&self) -> Duration {
        self.percentile(0.50)
    }

    fn p99(&self) -> Duration {
        self.percentile(0.99)
    }

    /// Successful operations per second of the row's wall time (for one-at-a-time rows,
    /// one over the mean latency).
    fn rate(&self) -> f64 {
        self.n() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// A duration in microseconds, or milliseconds from 10 ms up.
fn us(d: Duration) -> String {
    if d >= Duration::from_millis(10) {
        format!("{:.2} ms", d.as_secs_f64() * 1e3)
    } else {
        format!("{:.1} us", d.as_secs_f64() * 1e6)
    }
}

#[derive(Default)]
struct Table {
    rows: Vec<[String; 7]>,
    /// Lines printed under the table (why a row failed).
    notes: Vec<String>,
}

impl Table {
    fn row(&mut self, name: &str, s: &Stats, budget: &str, met: Option<bool>) {
        let verdict = match met {
            Some(true) => "met",
            Some(false) => "MISSED",
            None => "",
        };
        self.rows.push([
            name.to_string(),
            us(s.p50()),
            us(s.p99()),
            format!("{:.0}", s.rate()),
            s.n().to_string(),
            budget.to_string(),
            verdict.to_string(),
        ]);
    }

    /// Says under the table how many calls of row `row` were refused, and why.
    fn note_refusals(&mut self, row: &str, refused: &Refusals) {
        for (kind, (n, message)) in &refused.0 {
            self.notes
                .push(format!("row {row}: {n} calls refused as `{kind}`: {message}"));
        }
    }

    fn failed(&mut self, name: &str, e: &anyhow::Error) {
        let empty = String::new;
        self.rows.push([
            name.to_string(),
            empty(),
            empty(),
            empty(),
            "0".into(),
            "FAILED (below)".into(),
            empty(),
        ]);
        self.notes.push(format!("{}: {e:#}", name.trim()));
    }

    fn print(&self, knobs: &Knobs, cpu: &[CpuPerCall], pieces: &[pieces::Piece]) {
        let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
        let model = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines().find_map(|l| {
                    l.strip_prefix("model name")
                        .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
                })
            })
            .unwrap_or_else(|| "unknown cpu".into());
        println!();
        println!(
            "wtd calls on 127.0.0.1: {cores} cores, {model}; wtd = {}",
            knobs.wtd.display()
        );
        let header = ["measure", "p50", "p99", "calls/s", "n", "budget", ""];
        let widths: Vec<usize> = (0..header.len())
            .map(|c| {
                self.rows
                    .iter()
                    .map(|r| r[c].chars().count())
                    .chain([header[c].len()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let line = |cells: &[&str]| {
            let mut out = String::new();
            for (c, cell) in cells.iter().enumerate() {
                let pad = widths[c].saturating_sub(cell.chars().count());
                // Text left, numbers right.
                if c == 0 || c >= 5 {
                    out.push_str(cell);
                    out.push_str(&" ".repeat(pad));
                } else {
                    out.push_str(&" ".repeat(pad));
                    out.push_str(cell);
                }
                out.push_str("  ");
            }
            println!("{}", out.trim_end());
        };
        line(&header);
        for r in &self.rows {
            line(&r.iter().map(String::as_str).collect::<Vec<_>>());
        }
        for note in &self.notes {
            println!("{note}");
        }
        println!(
            "in-flight rows run {} s or {} calls, whichever comes first.",
            knobs.secs.as_secs(),
            knobs.max_calls
        );
        if cpu.iter().any(|c| c.per_call.values().any(|d| !d.is_zero())) {
            println!();
            println!(
                "CPU time per call by process (and cores it kept busy during the row, 1.00 = one core):"
            );
            print!("{:16}", "row");
            for role in ROLES {
                print!("  {role:>18}");
            }
            println!("  {:>9}", "total");
            for c in cpu {
                print!("{:16}", c.row);
                let mut total = Duration::ZERO;
                for role in ROLES {
                    let d = c.per_call[role];
                    total += d;
                    print!("  {:>18}", format!("{} ({:.2})", us(d), c.cores[role]));
                }
                println!("  {:>9}", us(total));
            }
        }
        println!();
        println!(
            "the parts of one call, each timed alone ({PIECE_ITERATIONS} runs; cold parts {HANDSHAKES}):"
        );
        let width = pieces.iter().map(|p| p.name.len()).max().unwrap_or(0);
        println!("{:width$}  {:>10}  {:>10}", "piece", "p50", "p99");
        for p in pieces {
            println!(
                "{:width$}  {:>10}  {:>10}",
                p.name,
                us(p.stats.p50()),
                us(p.stats.p99())
            );
        }
    }
}
