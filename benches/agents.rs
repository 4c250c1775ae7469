//! Many agents on one proxy: the load tool. It starts a real `wtd proxy` process, then
//! simulates N agents in several child processes (each this same binary, each owning a
//! slice of the agents), each agent a real QUIC connection from its own loopback address
//! (127.1.x.y) with its own key, a real hello and a real heartbeat at the agent's real
//! interval (`wtd_agent::defaults::HEARTBEAT_INTERVAL`), plus W roster watchers. It prints
//! one table row per size:
//!
//! - **join**: connect + TLS + hello until `Welcome`, p50 / p99, and how long all took;
//! - **proxy RSS** once everyone is in, and its peak over the steady windows;
//! - **heartbeat cost**: the proxy's CPU over a steady window with no watcher, then with W
//!   watchers, as a percent of one core and in microseconds per heartbeat received. The
//!   difference is what the watchers cost;
//! - **batches and events/watcher/s**: what one watcher receives per second while N agents
//!   heartbeat. The proxy coalesces changes into one batch per interval (the latest change
//!   per agent), encoded once for all watchers; a batch is counted when frames arrive after
//!   50 ms of quiet;
//! - **dropped**: agents the proxy closed (for silence, most likely) during the run;
//! - **snapshot**: `Request::Roster` answered to a new client (all its messages), p50, its
//!   size, and how many agents still connected it did not list;
//! - **dispatch**: choosing the agent for a call from that roster, as `wtd call` does
//!   (`wtd_caller::dispatch::candidates` then `order`, least loaded), p50.
//!
//! Why child processes: 10,000 QUIC connections driven by one process on a 2-core machine
//! delay their own heartbeats (one event loop encrypts and sends for all of them), and the
//! proxy then rightly drops them as silent. Split over processes (`WTD_LOAD_PROCS`, 4 by
//! default), each a single-threaded runtime as `wtd agent` is, the simulators are scheduled
//! like the many small programs they stand for.
//!
//! `cargo bench --bench agents` (sizes 100 and 1000), or with knobs:
//! `WTD_LOAD_AGENTS=100,1000,10000` sizes, `WTD_LOAD_WATCHERS` (50), `WTD_LOAD_SECS` each
//! steady window (10), `WTD_LOAD_PROCS` simulator processes (4), `WTD_BIN` the `wtd`
//! binary. Every loop is bounded: joining gives up after 180 s, the children stop when the
//! parent closes their stdin or after their own time limit, whichever comes first.
//! Nothing is asserted.

use std::io::{BufRead as _, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;
use wtd_keys::{
    AdoptionBook, AgentId, Audience, Grant, GrantId, OwnerKey, PublicId, SecretKey, Ticket, UserKey,
};
use wtd_transport::{read_frame, write_frame, Client};
use wtd_wire::{
    decode, encode, Advert, AgentHello, AgentInfo, FromAgent, Key, Load, Open, Request, Response, ToAgent,
};

/// Joining gives up after this long: a size that cannot join in 3 minutes has failed.
const JOIN_LIMIT: Duration = Duration::from_secs(180);
/// Handshakes in progress at once, over all simulators: agents booting over a minute, not
/// all in the same millisecond.
const HANDSHAKES_AT_ONCE: usize = 64;

fn knob<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The loopback address of simulated agent `i` (unique per agent, 250 per /24).
fn agent_addr(i: usize) -> SocketAddr {
    SocketAddr::from(([127, 1, (i / 250) as u8, (i % 250 + 1) as u8], 0))
}

fn watcher_addr(i: usize) -> SocketAddr {
    SocketAddr::from(([127, 2, 0, (i % 250 + 1) as u8], 0))
}

/// A `wtd proxy` process, killed when dropped.
struct ProxyProcess {
    child: Child,
    addr: SocketAddr,
    id: PublicId,
    ticket: String,
    _dir: tempfile::TempDir,
}

impl ProxyProcess {
    fn start(bin: &Path, agents: usize, watchers: usize) -> anyhow::Result<ProxyProcess> {
        let dir = tempfile::tempdir()?;
        let state = dir.path().join("proxy");
        let total = (agents + watchers + 64).to_string();
        // `WTD_LOAD_PROXY_LOG=file`: the proxy's info log there (why it closed whom).
        let (level, stderr) = match std::env::var_os("WTD_LOAD_PROXY_LOG") {
            Some(path) => ("info", Stdio::from(std::fs::File::create(path)?)),
            None => ("warn", Stdio::inherit()),
        };
        let child = Command::new(bin)
            .args(["proxy", "--listen", "127.0.0.1:0", "--state-dir"])
            .arg(&state)
            .args(["--max-connections", &total, "--max-connections-per-ip", "64"])
            .args(["--max-agents", &(agents + 16).to_string()])
            .env("WTD_HOME", dir.path())
            .env("RUST_LOG", level)
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .context("start wtd proxy")?;
        let ticket_file = state.join("ticket.txt");
        let start = Instant::now();
        while !ticket_file.exists() {
            anyhow::ensure!(
                start.elapsed() < Duration::from_secs(30),
                "the proxy did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let ticket = std::fs::read_to_string(&ticket_file)?.trim().to_string();
        let info = Ticket::from_text(&ticket)?
            .proxy
            .context("the ticket names a proxy")?;
        Ok(ProxyProcess {
            child,
            addr: info.addrs[0],
            id: *info.id.key(),
            ticket,
            _dir: dir,
        })
    }

    fn rss_mb(&self) -> f64 {
        rss_mb(self.child.id())
    }

    fn cpu_secs(&self) -> f64 {
        cpu_secs(self.child.id())
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn rss_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    kb / 1024.0
}

/// User + system CPU seconds of a process so far.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of stat: 12 and 13 after the name.
    (ticks(11) + ticks(12)) / 100.0
}

/// Seconds a process's threads spent runnable but waiting for a CPU so far (the second
/// field of each thread's schedstat): time the machine, not the process, lost.
fn waited_secs(pid: u32) -> f64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0.0;
    };
    tasks
        .filter_map(Result::ok)
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().nth(1)?.parse::<f64>().ok())
        .sum::<f64>()
        / 1e9
}

fn advert(i: usize, owner: Key) -> Advert {
    Advert {
        name: format!("sim-{i:05}"),
        owners: vec![owner],
        missions: vec![wtd_wire::MissionInfo {
            name: "demo".into(),
            version: "1".into(),
            description: String::new(),
            functions: vec![wtd_wire::FunctionInfo {
                name: "echo".into(),
                description: String::new(),
                idempotent: true,
            }],
        }],
        tags: vec![],
        model: None,
        software: "wtd-load".into(),
        warnings: vec![],
        enrollment: None,
    }
}

/// A simulated agent's load: different per agent, so choosing the least loaded has work.
fn load_of(i: usize) -> Load {
    Load {
        load1: (i * 7919 % 400) as f32 / 100.0,
        cpu_percent: (i % 100) as f32,
        ..Load::default()
    }
}

// ---------------------------------------------------------------------------------------
// A simulator: one child process, a slice of the agents
// ---------------------------------------------------------------------------------------

mod simulator {
    use super::*;

    /// A joined simulated agent: its endpoint, connection and control stream.
    struct Joined {
        _client: Client,
        _conn: wtd_transport::Connection,
        send: wtd_transport::SendStream,
        recv: wtd_transport::RecvStream,
    }

    /// What the parent tells a simulator, in its environment.
    pub(super) const SLICE: &str = "WTD_LOAD_CHILD";
    pub(super) const TICKET: &str = "WTD_LOAD_TICKET";
    pub(super) const OWNER: &str = "WTD_LOAD_OWNER";
    pub(super) const GATE: &str = "WTD_LOAD_GATE";
    pub(super) const LIMIT: &str = "WTD_LOAD_CHILD_LIMIT";

    /// Runs agents `start..end`, reporting on stdout, one line each: `joined <i> <us>`,
    /// `failed <i>`, `dropped <i>`. Stops when stdin closes (the parent is done, or died)
    /// or after its own time limit.
    pub(super) fn run(slice: &str) -> anyhow::Result<()> {
        let (start, end) = slice
            .split_once("..")
            .and_then(|(a, b)| Some((a.parse::<usize>().ok()?, b.parse::<usize>().ok()?)))
            .context("WTD_LOAD_CHILD is start..end")?;
        let ticket = Ticket::from_text(&std::env::var(TICKET)?)?
            .proxy
            .context("a proxy ticket")?;
        let owner: PublicId = std::env::var(OWNER)?.parse()?;
        let owner = Key::from(owner);
        let gate = knob(GATE, 16usize).max(1);
        let limit = Duration::from_secs(knob(LIMIT, 600u64));
        let (addr, id) = (ticket.addrs[0], *ticket.id.key());

        let stop = CancellationToken::new();
        {
            // The parent closing our stdin (or dying) is the signal to stop.
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut sink = Vec::new();
                let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
                stop.cancel();
            });
        }
        let out = Arc::new(Mutex::new(std::io::stdout()));
        let say = move |line: String| {
            let mut o = out.lock().unwrap();
            let _ = writeln!(o, "{line}");
            let _ = o.flush();
        };
        // One thread, as `wtd agent` runs.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async move {
            let tasks = tokio_util::task::TaskTracker::new();
            // How late this process runs its timers: a heartbeat this late is what the
            // proxy then sees as silence, and says nothing about the proxy.
            tasks.spawn(stalls(start, stop.clone()));
            let gate = Arc::new(tokio::sync::Semaphore::new(gate));
            for i in start..end {
                let (stop, gate, say) = (stop.clone(), gate.clone(), say.clone());
                tasks.spawn(async move {
                    let permit = tokio::select! {
                        _ = stop.cancelled() => return,
                        p = gate.acquire_owned() => p,
                    };
                    let began = Instant::now();
                    let joined =
                        tokio::time::timeout(Duration::from_secs(30), join(i, addr, id, owner)).await;
                    drop(permit);
                    match joined {
                        Ok(Some(a)) => {
                            say(format!("joined {i} {}", began.elapsed().as_micros()));
                            if let Err(why) = heartbeats(i, a, &stop).await {
                                say(format!("dropped {i} {why}"));
                            }
                        }
                        _ => say(format!("failed {i}")),
                    }
                });
            }
            tasks.close();
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = tokio::time::sleep(limit) => stop.cancel(),
            }
            let _ = tokio::time::timeout(Duration::from_secs(10), tasks.wait()).await;
        });
        Ok(())
    }

    /// Says on stderr when a 100 ms sleep of this process took more than half a second.
    async fn stalls(first: usize, stop: CancellationToken) {
        let mut worst = Duration::ZERO;
        while !stop.is_cancelled() {
            let t = Instant::now();
            tokio::time::sleep(Duration::from_millis(100)).await;
            let late = t.elapsed().saturating_sub(Duration::from_millis(100));
            if late > Duration::from_millis(500) && late > worst / 2 {
                eprintln!("  simulator {first}..: timers ran {} late", ms(late));
            }
            worst = worst.max(late);
        }
    }

    /// Joins as simulated agent `i`: connect, TLS, hello, until `Welcome`.
    async fn join(i: usize, proxy: SocketAddr, id: PublicId, owner: Key) -> Option<Joined> {
        let client = Client::bind(&SecretKey::generate(), agent_addr(i)).ok()?;
        let conn = client.connect(proxy, id).await.ok()?;
        let (mut send, mut recv) = conn.open_bi().await.ok()?;
        let hello = Open::Agent(AgentHello {
            version: wtd_wire::PROTOCOL_VERSION,
            advert: advert(i, owner),
            heads: vec![],
        });
        write_frame(&mut send, &encode(&hello)).await.ok()?;
        let reply = read_frame(&mut recv, 1 << 20).await.ok()??;
        if !matches!(decode::<ToAgent>(&reply), Ok(ToAgent::Welcome { .. })) {
            return None;
        }
        Some(Joined {
            _client: client,
            _conn: conn,
            send,
            recv,
        })
    }

    /// A heartbeat per interval until `stop`; why not, if the connection ended first.
    async fn heartbeats(i: usize, mut a: Joined, stop: &CancellationToken) -> Result<(), String> {
        let every = wtd_agent::defaults::HEARTBEAT_INTERVAL;
        // Spread the heartbeats over the interval, as real agents started at different
        // times are.
        let offset = every.mul_f64((i * 7919 % 1000) as f64 / 1000.0);
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + offset, every);
        let beat = encode(&FromAgent::Heartbeat(load_of(i)));
        loop {
            tokio::select! {
                _ = stop.cancelled() => {
                    let _ = write_frame(&mut a.send, &encode(&FromAgent::Leaving)).await;
                    return Ok(());
                }
                _ = tick.tick() => if let Err(e) = write_frame(&mut a.send, &beat).await {
                    return Err(reason(&a, e.to_string()));
                },
                // Drain what the proxy sends (owner logs), so its stream never blocks.
                r = read_frame(&mut a.recv, 1 << 20) => match r {
                    Ok(Some(_)) => {}
                    Ok(None) => return Err(reason(&a, "the proxy finished the stream".into())),
                    Err(e) => return Err(reason(&a, e.to_string())),
                },
            }
        }
    }

    /// Why a connection ended, in one line: the connection's own reason if it has one.
    fn reason(a: &Joined, fallback: String) -> String {
        let why = a._conn.close_reason().map_or(fallback, |r| r.to_string());
        why.replace(['\n', '\r'], " ")
    }
}

// ---------------------------------------------------------------------------------------
// The parent: the proxy, the simulators, the watchers and the measurements
// ---------------------------------------------------------------------------------------

/// What the simulators reported so far.
#[derive(Default)]
struct Reports {
    join_times: Mutex<Vec<Duration>>,
    failed: AtomicUsize,
    dropped: AtomicUsize,
    /// Why agents were dropped, and how many for each reason.
    reasons: Mutex<std::collections::BTreeMap<String, usize>>,
}

impl Reports {
    fn joined(&self) -> usize {
        self.join_times.lock().unwrap().len()
    }

    fn done(&self) -> usize {
        self.joined() + self.failed.load(Ordering::SeqCst)
    }

    fn connected(&self) -> usize {
        self.joined().saturating_sub(self.dropped.load(Ordering::SeqCst))
    }
}

/// The simulator processes, stopped (stdin closed, then killed if slow) when dropped.
struct Simulators {
    children: Vec<(Child, Option<ChildStdin>)>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl Simulators {
    fn start(
        n: usize,
        procs: usize,
        proxy: &ProxyProcess,
        owner: PublicId,
        reports: &Arc<Reports>,
    ) -> anyhow::Result<Self> {
        let me = std::env::current_exe()?;
        let procs = procs.clamp(1, n.max(1));
        let mut sims = Simulators {
            children: Vec::new(),
            readers: Vec::new(),
        };
        for k in 0..procs {
            let (start, end) = (n * k / procs, n * (k + 1) / procs);
            let mut child = Command::new(&me)
                .arg("--bench")
                .env(simulator::SLICE, format!("{start}..{end}"))
                .env(simulator::TICKET, &proxy.ticket)
                .env(simulator::OWNER, owner.to_string())
                .env(simulator::GATE, (HANDSHAKES_AT_ONCE / procs).max(1).to_string())
                .env(simulator::LIMIT, (JOIN_LIMIT.as_secs() + 300).to_string())
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .context("start a simulator")?;
            let stdout = child.stdout.take().context("simulator stdout")?;
            let stdin = child.stdin.take();
            let reports = reports.clone();
            sims.readers.push(std::thread::spawn(move || {
                for line in std::io::BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    let mut w = line.split_whitespace();
                    let (kind, rest) = (line.split(' ').next(), line.splitn(3, ' ').nth(2).unwrap_or(""));
                    match (w.next(), w.nth(1)) {
                        (Some("joined"), Some(us)) => {
                            let us: u64 = us.parse().unwrap_or(0);
                            reports.join_times.lock().unwrap().push(Duration::from_micros(us));
                        }
                        (Some("failed"), _) => {
                            reports.failed.fetch_add(1, Ordering::SeqCst);
                        }
                        (Some("dropped"), _) => {
                            reports.dropped.fetch_add(1, Ordering::SeqCst);
                            if kind == Some("dropped") {
                                *reports
                                    .reasons
                                    .lock()
                                    .unwrap()
                                    .entry(rest.to_string())
                                    .or_default() += 1;
                            }
                        }
                        _ => {}
                    }
                }
            }));
            sims.children.push((child, stdin));
        }
        Ok(sims)
    }

    fn cpu_secs(&self) -> f64 {
        self.children.iter().map(|(c, _)| cpu_secs(c.id())).sum()
    }
}

impl Drop for Simulators {
    fn drop(&mut self) {
        for (_, stdin) in &mut self.children {
            drop(stdin.take());
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        for (child, _) in &mut self.children {
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
    }
}

/// One roster watcher: counts the events and batches it receives until `stop`.
async fn watcher(
    i: usize,
    proxy: SocketAddr,
    id: PublicId,
    (events, batches): (Arc<AtomicU64>, Arc<AtomicU64>),
    stop: CancellationToken,
) {
    let Ok(client) = Client::bind(&SecretKey::generate(), watcher_addr(i)) else {
        return;
    };
    let Ok(conn) = client.connect(proxy, id).await else {
        return;
    };
    let Ok((mut send, mut recv)) = conn.open_bi().await else {
        return;
    };
    if write_frame(&mut send, &encode(&Open::Request(Request::Watch)))
        .await
        .is_err()
    {
        return;
    }
    let mut last = Instant::now();
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            r = read_frame(&mut recv, 64 << 20) => match r {
                Ok(Some(_)) => {
                    events.fetch_add(1, Ordering::Relaxed);
                    if last.elapsed() > Duration::from_millis(50) {
                        batches.fetch_add(1, Ordering::Relaxed);
                    }
                    last = Instant::now();
                }
                _ => break,
            },
        }
    }
}

/// A new client asks for the roster once: how long, how many bytes, and the agents.
async fn snapshot(proxy: SocketAddr, id: PublicId) -> Option<(Duration, usize, Vec<AgentInfo>)> {
    let client = Client::bind(&SecretKey::generate(), "127.3.0.1:0".parse().unwrap()).ok()?;
    let start = Instant::now();
    let conn = client.connect(proxy, id).await.ok()?;
    let (mut send, mut recv) = conn.open_bi().await.ok()?;
    write_frame(&mut send, &encode(&Open::Request(Request::Roster)))
        .await
        .ok()?;
    let _ = send.finish();
    let (mut size, mut agents) = (0, Vec::new());
    while let Some(bytes) = read_frame(&mut recv, 64 << 20).await.ok()? {
        size += bytes.len();
        match decode::<Response>(&bytes) {
            Ok(Response::Roster(r)) => agents.extend(r),
            _ => return None,
        }
    }
    Some((start.elapsed(), size, agents))
}

/// The dispatch decision `wtd call demo/echo` makes on `roster`: the candidates (offer the
/// function, an owner granted me, her log adopts them), then least loaded first. The
/// grant and adoption book are built in memory (the caller verifies them before this).
fn dispatch_decision(roster: &[AgentInfo], owner: PublicId) -> (Duration, usize) {
    let me = SecretKey::generate().public();
    let grant = Grant {
        id: GrantId([1; 16]),
        issuer: OwnerKey(owner),
        subject: UserKey(me),
        audience: Audience::AllAgents,
        mission: "demo".parse().expect("a mission name"),
        rate: wtd_keys::Rate {
            calls: 10,
            period_ms: 60_000,
        },
        burst: 10,
        concurrency: 1,
        not_before: wtd_keys::Timestamp(0),
        expires: wtd_keys::Timestamp(u64::MAX),
        issued_at: wtd_keys::Timestamp(0),
    };
    let mut book = AdoptionBook::new();
    for a in roster {
        if let Ok(id) = a.id.parse() {
            book.add(&wtd_keys::Adoption {
                issuer: OwnerKey(owner),
                agent: AgentId(id),
                action: wtd_keys::Action::Adopt,
                token: None,
                issued_at: wtd_keys::Timestamp(0),
            });
        }
    }
    let (mission, function) = ("demo".parse().unwrap(), "echo".parse().unwrap());
    let filter = wtd_caller::dispatch::Filter::default();
    let mut times = Vec::new();
    let mut chosen = 0;
    for _ in 0..21 {
        let start = Instant::now();
        let cands = wtd_caller::dispatch::candidates(
            roster,
            &UserKey(me),
            &[&grant],
            &book,
            &mission,
            &function,
            &filter,
        );
        let ordered = cands
            .map(|c| wtd_caller::dispatch::order(c, wtd_caller::dispatch::Selector::LeastLoaded, 0, 0))
            .unwrap_or_default();
        times.push(start.elapsed());
        chosen = ordered.len();
        std::hint::black_box(ordered);
    }
    times.sort();
    (pct(&times, 0.5), chosen)
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

/// The proxy's CPU (percent of one core, and microseconds per heartbeat received) and its
/// peak RSS over a steady window of `secs`.
struct Window {
    cpu_pct: f64,
    /// The proxy's threads waiting for a CPU, in percent of the window (all threads).
    waited_pct: f64,
    us_per_beat: f64,
    rss_peak: f64,
    secs: f64,
}

fn steady_window(proxy: &ProxyProcess, reports: &Reports, secs: u64) -> Window {
    let (c0, w0, t0) = (proxy.cpu_secs(), waited_secs(proxy.child.id()), Instant::now());
    let mut rss_peak = proxy.rss_mb();
    let mut connected = Vec::new();
    while t0.elapsed() < Duration::from_secs(secs) {
        std::thread::sleep(Duration::from_millis(200));
        rss_peak = rss_peak.max(proxy.rss_mb());
        connected.push(reports.connected());
    }
    let window = t0.elapsed().as_secs_f64();
    let cpu = proxy.cpu_secs() - c0;
    let avg_connected = connected.iter().sum::<usize>() as f64 / connected.len().max(1) as f64;
    let beats = avg_connected * window / wtd_agent::defaults::HEARTBEAT_INTERVAL.as_secs_f64();
    Window {
        cpu_pct: cpu / window * 100.0,
        waited_pct: (waited_secs(proxy.child.id()) - w0) / window * 100.0,
        us_per_beat: cpu * 1e6 / beats.max(1.0),
        rss_peak,
        secs: window,
    }
}

fn run(bin: &Path, n: usize, watchers: usize, secs: u64, procs: usize) -> anyhow::Result<String> {
    let proxy = ProxyProcess::start(bin, n, watchers)?;
    let (addr, id) = (proxy.addr, proxy.id);
    let owner = SecretKey::generate().public();
    let reports = Arc::new(Reports::default());
    let join_start = Instant::now();
    let sims = Simulators::start(n, procs, &proxy, owner, &reports)?;
    while reports.done() < n && join_start.elapsed() < JOIN_LIMIT {
        std::thread::sleep(Duration::from_millis(50));
    }
    let all_joined = join_start.elapsed();
    let rss_joined = proxy.rss_mb();

    // Heartbeats with nobody watching.
    let quiet = steady_window(&proxy, &reports, secs);

    // The same with the watchers: what they add is what a heartbeat costs per watcher.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let stop = CancellationToken::new();
    let events = Arc::new(AtomicU64::new(0));
    let batches = Arc::new(AtomicU64::new(0));
    let tasks = tokio_util::task::TaskTracker::new();
    for w in 0..watchers {
        tasks.spawn_on(
            watcher(w, addr, id, (events.clone(), batches.clone()), stop.clone()),
            rt.handle(),
        );
    }
    // Let the watchers take their snapshot, then measure.
    std::thread::sleep(Duration::from_secs(2));
    let (e0, b0) = (events.load(Ordering::SeqCst), batches.load(Ordering::SeqCst));
    let sims_cpu0 = sims.cpu_secs();
    let watched = steady_window(&proxy, &reports, secs);
    let sims_cpu = (sims.cpu_secs() - sims_cpu0) / watched.secs * 100.0;
    let per_watcher = (events.load(Ordering::SeqCst) - e0) as f64 / watched.secs / watchers.max(1) as f64;
    let batches_per_watcher =
        (batches.load(Ordering::SeqCst) - b0) as f64 / watched.secs / watchers.max(1) as f64;

    let mut snaps = Vec::new();
    let mut snap_info = (0, 0, 0);
    let mut roster = Vec::new();
    for _ in 0..5 {
        let connected = reports.connected();
        if let Some((took, bytes, agents)) = rt.block_on(snapshot(addr, id)) {
            snaps.push(took);
            snap_info = (bytes, agents.len(), connected.saturating_sub(agents.len()));
            roster = agents;
        }
    }
    snaps.sort();
    let (dispatch, candidates) = dispatch_decision(&roster, owner);
    let dropped = reports.dropped.load(Ordering::SeqCst);
    // What else the machine was running: the 1-minute load average.
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_default();
    for (why, count) in reports.reasons.lock().unwrap().iter() {
        eprintln!("  {count} agents dropped: {why}");
    }
    stop.cancel();
    tasks.close();
    rt.block_on(async {
        let _ = tokio::time::timeout(Duration::from_secs(20), tasks.wait()).await;
    });
    drop(sims);
    let mut times = reports.join_times.lock().unwrap().clone();
    times.sort();
    let snapshot = if snaps.is_empty() {
        "failed".to_string()
    } else {
        format!(
            "{} ({} agents, {} KB, {} connected not listed)",
            ms(pct(&snaps, 0.5)),
            snap_info.1,
            snap_info.0 / 1024,
            snap_info.2
        )
    };
    Ok(format!(
        "| {n} | {}/{n} | {} / {} | {:.1} s | {rss_joined:.0} / {:.0} MB | {:.0} % / {:.0} % | {:.1} / {:.1} us | {batches_per_watcher:.1} / {per_watcher:.0} | {dropped} | {snapshot} | {} ({candidates} candidates) | {sims_cpu:.0} % | {:.0} % | {load} |",
        times.len(),
        ms(pct(&times, 0.5)),
        ms(pct(&times, 0.99)),
        all_joined.as_secs_f64(),
        quiet.rss_peak.max(watched.rss_peak),
        quiet.cpu_pct,
        watched.cpu_pct,
        quiet.us_per_beat,
        watched.us_per_beat,
        ms(dispatch),
        watched.waited_pct,
    ))
}

fn main() -> anyhow::Result<()> {
    if let Ok(slice) = std::env::var(simulator::SLICE) {
        return simulator::run(&slice);
    }
    let bin: PathBuf = std::env::var_os("WTD_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_wtd")));
    let sizes: Vec<usize> = std::env::var("WTD_LOAD_AGENTS")
        .unwrap_or_else(|_| "100,1000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let watchers = knob("WTD_LOAD_WATCHERS", 50usize);
    let secs = knob("WTD_LOAD_SECS", 10u64);
    let procs = knob("WTD_LOAD_PROCS", 4usize);
    let mut rows = Vec::new();
    for &n in &sizes {
        eprintln!("{n} agents in {procs} simulator processes, {watchers} watchers, 2 x {secs} s steady...");
        let row = run(&bin, n, watchers, secs, procs)?;
        eprintln!("{row}");
        rows.push(row);
    }
    println!(
        "\nOne proxy (`wtd proxy`, its own process); agents simulated in {procs} processes, real QUIC on 127.1.x.y, a heartbeat every {:?}; {watchers} watchers:\n",
        wtd_agent::defaults::HEARTBEAT_INTERVAL
    );
    println!("| agents | joined | join p50 / p99 | all joined in | proxy RSS joined / peak | proxy CPU, 0 / {watchers} watchers | proxy CPU per heartbeat, 0 / {watchers} watchers | batches / events per watcher per s | dropped | snapshot for a new client | dispatch decision | simulators' CPU | proxy waiting for a CPU | load average |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        println!("{r}");
    }
    Ok(())
}
