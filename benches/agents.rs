//! Many agents on one proxy: the load tool. It starts a real `wtd proxy` process, then
//! simulates N agents in this process, each a real QUIC connection from its own loopback
//! address (127.1.x.y) with its own key, a real hello and a real heartbeat every second,
//! plus W roster watchers. It prints one table row per size:
//!
//! - **join**: connect + TLS + hello until `Welcome`, p50 / p99, and how long all took;
//! - **proxy RSS** once everyone is in, and its peak during the steady window;
//! - **proxy CPU** during the steady window (percent of one core);
//! - **batches and events/watcher/s**: what one watcher receives per second while N agents
//!   heartbeat. The proxy coalesces changes into one batch per interval per watcher (the
//!   latest change per agent); a batch is counted when frames arrive after 50 ms of quiet;
//! - **snapshot**: `Request::Roster` answered to a new client (all its messages), p50, its
//!   size, and how many agents still connected it did not list.
//!
//! `cargo bench --bench agents` (sizes 100 and 1000), or with knobs:
//! `WTD_LOAD_AGENTS=100,1000,10000` sizes, `WTD_LOAD_WATCHERS` (50), `WTD_LOAD_SECS` the
//! steady window (10), `WTD_BIN` the `wtd` binary. Every loop is bounded: joining gives up
//! after 180 s, everything stops after the steady window. Nothing is asserted.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;
use wtd_keys::{PublicId, SecretKey, Ticket};
use wtd_transport::{read_frame, write_frame, Client};
use wtd_wire::{decode, encode, Advert, AgentHello, FromAgent, Key, Load, Open, Request, Response, ToAgent};

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
    _dir: tempfile::TempDir,
}

impl ProxyProcess {
    fn start(bin: &Path, agents: usize, watchers: usize) -> anyhow::Result<ProxyProcess> {
        let dir = tempfile::tempdir()?;
        let state = dir.path().join("proxy");
        let total = (agents + watchers + 64).to_string();
        let child = Command::new(bin)
            .args(["proxy", "--listen", "127.0.0.1:0", "--state-dir"])
            .arg(&state)
            .args(["--max-connections", &total, "--max-connections-per-ip", "64"])
            .args(["--max-agents", &(agents + 16).to_string()])
            .env("WTD_HOME", dir.path())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
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
        let info = Ticket::from_text(std::fs::read_to_string(&ticket_file)?.trim())?
            .proxy
            .context("the ticket names a proxy")?;
        Ok(ProxyProcess {
            child,
            addr: info.addrs[0],
            id: *info.id.key(),
            _dir: dir,
        })
    }

    fn rss_mb(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        let kb: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0.0);
        kb / 1024.0
    }

    /// User + system CPU seconds so far.
    fn cpu_secs(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        // Fields after the command name, which is in parentheses.
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        // utime and stime are fields 14 and 15 of stat: 12 and 13 after the name.
        (ticks(11) + ticks(12)) / 100.0
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn advert(i: usize, owner: Key) -> Advert {
    Advert {
        name: format!("sim-{i}"),
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

/// A joined simulated agent: its endpoint, connection and control stream.
struct Joined {
    _client: Client,
    _conn: wtd_transport::Connection,
    send: wtd_transport::SendStream,
    recv: wtd_transport::RecvStream,
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

/// A heartbeat a second until `stop` (or the proxy drops us).
async fn heartbeats(i: usize, mut a: Joined, stop: CancellationToken, dropped: Arc<AtomicUsize>) {
    // Spread the heartbeats over the second, as real agents started at different times are.
    let mut tick = tokio::time::interval_at(
        tokio::time::Instant::now() + Duration::from_millis((i * 7919 % 1000) as u64),
        Duration::from_secs(1),
    );
    let beat = encode(&FromAgent::Heartbeat(Load::default()));
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => if write_frame(&mut a.send, &beat).await.is_err() { break },
            // Drain what the proxy sends (owner logs), so its stream never blocks.
            r = read_frame(&mut a.recv, 1 << 20) => if !matches!(r, Ok(Some(_))) { break },
        }
    }
    if !stop.is_cancelled() {
        dropped.fetch_add(1, Ordering::SeqCst);
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

/// A new client asks for the roster once: how long, and how many bytes came back.
async fn snapshot(proxy: SocketAddr, id: PublicId) -> Option<(Duration, usize, usize)> {
    let client = Client::bind(&SecretKey::generate(), "127.3.0.1:0".parse().unwrap()).ok()?;
    let start = Instant::now();
    let conn = client.connect(proxy, id).await.ok()?;
    let (mut send, mut recv) = conn.open_bi().await.ok()?;
    write_frame(&mut send, &encode(&Open::Request(Request::Roster)))
        .await
        .ok()?;
    let _ = send.finish();
    let (mut size, mut agents) = (0, 0);
    while let Some(bytes) = read_frame(&mut recv, 64 << 20).await.ok()? {
        size += bytes.len();
        match decode::<Response>(&bytes) {
            Ok(Response::Roster(r)) => agents += r.len(),
            _ => return None,
        }
    }
    Some((start.elapsed(), size, agents))
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

fn run(bin: &Path, n: usize, watchers: usize, secs: u64) -> anyhow::Result<String> {
    let proxy = ProxyProcess::start(bin, n, watchers)?;
    let (addr, id) = (proxy.addr, proxy.id);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let stop = CancellationToken::new();
    let owner = Key::from(SecretKey::generate().public());
    let join_times = Arc::new(std::sync::Mutex::new(Vec::with_capacity(n)));
    let failed = Arc::new(AtomicUsize::new(0));
    let events = Arc::new(AtomicU64::new(0));
    let batches = Arc::new(AtomicU64::new(0));
    let dropped = Arc::new(AtomicUsize::new(0));
    let tasks = tokio_util::task::TaskTracker::new();
    let join_start = Instant::now();
    let _guard = rt.enter();
    // At most 64 handshakes at once, as agents booting over a minute would be.
    let gate = Arc::new(tokio::sync::Semaphore::new(64));
    for i in 0..n {
        let (stop, times, failed, gate) = (stop.clone(), join_times.clone(), failed.clone(), gate.clone());
        let dropped = dropped.clone();
        tasks.spawn(async move {
            let permit = gate.acquire_owned().await;
            let start = Instant::now();
            let joined = tokio::time::timeout(Duration::from_secs(30), join(i, addr, id, owner)).await;
            drop(permit);
            match joined {
                Ok(Some(a)) => {
                    times.lock().unwrap().push(start.elapsed());
                    heartbeats(i, a, stop, dropped).await;
                }
                _ => {
                    failed.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
    }
    let done = || join_times.lock().unwrap().len() + failed.load(Ordering::SeqCst);
    while done() < n && join_start.elapsed() < Duration::from_secs(180) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let all_joined = join_start.elapsed();
    let rss_joined = proxy.rss_mb();
    for w in 0..watchers {
        tasks.spawn(watcher(
            w,
            addr,
            id,
            (events.clone(), batches.clone()),
            stop.clone(),
        ));
    }
    // Let the watchers take their snapshot, then measure a steady window.
    std::thread::sleep(Duration::from_secs(2));
    let (e0, b0, c0, t0) = (
        events.load(Ordering::SeqCst),
        batches.load(Ordering::SeqCst),
        proxy.cpu_secs(),
        Instant::now(),
    );
    let mut rss_peak = rss_joined;
    while t0.elapsed() < Duration::from_secs(secs) {
        std::thread::sleep(Duration::from_millis(200));
        rss_peak = rss_peak.max(proxy.rss_mb());
    }
    let window = t0.elapsed().as_secs_f64();
    let cpu = (proxy.cpu_secs() - c0) / window * 100.0;
    let per_watcher = (events.load(Ordering::SeqCst) - e0) as f64 / window / watchers.max(1) as f64;
    let batches_per_watcher = (batches.load(Ordering::SeqCst) - b0) as f64 / window / watchers.max(1) as f64;
    let mut snaps = Vec::new();
    let mut snap_info = (0, 0, 0);
    for _ in 0..5 {
        let connected = join_times.lock().unwrap().len() - dropped.load(Ordering::SeqCst);
        if let Some((took, bytes, agents)) = rt.block_on(snapshot(addr, id)) {
            snaps.push(took);
            snap_info = (bytes, agents, connected.saturating_sub(agents));
        }
    }
    snaps.sort();
    stop.cancel();
    tasks.close();
    rt.block_on(async {
        let _ = tokio::time::timeout(Duration::from_secs(20), tasks.wait()).await;
    });
    let mut times = join_times.lock().unwrap().clone();
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
        "| {n} | {}/{} | {} / {} | {:.1} s | {rss_joined:.0} / {rss_peak:.0} MB | {cpu:.0} % | {batches_per_watcher:.1} / {per_watcher:.0} | {} | {snapshot} |",
        times.len(),
        n,
        ms(pct(&times, 0.5)),
        ms(pct(&times, 0.99)),
        all_joined.as_secs_f64(),
        dropped.load(Ordering::SeqCst),
    ))
}

fn main() -> anyhow::Result<()> {
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
    let mut rows = Vec::new();
    for &n in &sizes {
        eprintln!("{n} agents, {watchers} watchers, {secs} s steady...");
        rows.push(run(&bin, n, watchers, secs)?);
    }
    println!("\nOne proxy (`wtd proxy`, its own process), simulated agents with real QUIC on 127.1.x.y, {watchers} watchers:\n");
    println!("| agents | joined | join p50 / p99 | all joined in | proxy RSS joined / peak | proxy CPU | batches / events per watcher per s | agents dropped as silent | snapshot for a new client |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        println!("{r}");
    }
    Ok(())
}
