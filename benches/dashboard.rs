//! What the classroom dashboard costs the proxy. One run, three proxies in turn (each its
//! own `wtd proxy` process), each with the same 50 simulated agents (real QUIC from
//! 127.1.x.y, a heartbeat a second) and the same calls flowing (a caller relays a session
//! to a random agent 5 times a second, and the agent reports the call, as an agent with
//! `report_calls = true` does):
//!
//! 1. **no dashboard**: the baseline;
//! 2. **dashboard, no page**: `--dashboard` on, nobody watching;
//! 3. **dashboard + page**: a real headless Chromium showing the page.
//!
//! For each: proxy RSS at the end of the steady window and its peak, proxy CPU over the
//! window (percent of one core). For the page: load time (navigation to the load event),
//! time until all 50 cards are drawn, bytes of the page and its assets (as Chromium counts
//! them, headers included), and the event stream's bytes per second (read by a plain
//! client for 10 s after the window, so it does not count in the CPU figures).
//!
//! `cargo bench --bench dashboard`; knobs: `WTD_DASH_AGENTS` (50), `WTD_DASH_SECS` the
//! steady window (20), `WTD_BIN` the `wtd` binary. Every loop is bounded; nothing asserted.

#[path = "../tests/common/browser.rs"]
#[allow(dead_code)]
mod browser;

use std::io::Read as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;
use wtd_keys::{PublicId, SecretKey, Ticket};
use wtd_transport::{read_frame, write_frame, Client};
use wtd_wire::{
    decode, encode, Advert, AgentHello, CallReport, FromAgent, Key, Load, Open, RelayReply, Relayed, ToAgent,
};

fn knob<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct ProxyProcess {
    child: Child,
    addr: SocketAddr,
    id: PublicId,
    dashboard: Option<String>,
    _dir: tempfile::TempDir,
}

impl ProxyProcess {
    fn start(bin: &Path, dashboard: bool) -> anyhow::Result<ProxyProcess> {
        let dir = tempfile::tempdir()?;
        let state = dir.path().join("proxy");
        let mut cmd = Command::new(bin);
        cmd.args(["proxy", "--listen", "127.0.0.1:0", "--state-dir"])
            .arg(&state)
            .args(["--deployment", "laptop"]);
        if dashboard {
            cmd.args(["--dashboard", "127.0.0.1:0"]);
        }
        let child = cmd
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
        let dashboard = if dashboard {
            Some(
                std::fs::read_to_string(state.join("dashboard.txt"))?
                    .trim()
                    .to_string(),
            )
        } else {
            None
        };
        Ok(ProxyProcess {
            child,
            addr: info.addrs[0],
            id: *info.id.key(),
            dashboard,
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

    fn cpu_secs(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
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
        name: format!("pi-{i:02}"),
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
        tags: vec![if i.is_multiple_of(2) {
            "even".into()
        } else {
            "odd".into()
        }],
        model: Some("Raspberry Pi 4 Model B Rev 1.4".into()),
        software: "wtd-bench".into(),
        warnings: vec![],
        enrollment: None,
    }
}

/// A simulated agent: joins, heartbeats every second, and reports each relayed session as
/// a call, until `stop`.
async fn agent(i: usize, proxy: SocketAddr, id: PublicId, owner: Key, stop: CancellationToken) -> Option<()> {
    let addr = SocketAddr::from(([127, 1, 0, (i % 250 + 1) as u8], 0));
    let client = Client::bind(&SecretKey::generate(), addr).ok()?;
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
    let mut tick = tokio::time::interval_at(
        tokio::time::Instant::now() + Duration::from_millis((i * 7919 % 1000) as u64),
        Duration::from_secs(1),
    );
    let mut n = 0u32;
    loop {
        let msg = tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {
                n += 1;
                FromAgent::Heartbeat(Load {
                    load1: ((i as u32 + n) % 20) as f32 / 10.0,
                    cpu_percent: ((i as u32 * 13 + n * 7) % 100) as f32,
                    mem_used_kb: 300_000,
                    mem_total_kb: 1_000_000,
                    temperature_c: Some(45.0 + (n % 10) as f32),
                    throttled: Some(0),
                })
            }
            s = conn.accept_bi() => {
                let Ok((mut rs, mut rr)) = s else { break };
                let Ok(Some(first)) = read_frame(&mut rr, 1 << 16).await else { continue };
                let Ok(Relayed { from }) = decode::<Relayed>(&first) else { continue };
                let _ = rs.finish();
                // One call in five denied, as when students try before the grant.
                let ok = !n.is_multiple_of(5);
                FromAgent::CallReport(CallReport {
                    caller: from,
                    mission: "demo".into(),
                    function: "echo".into(),
                    latency_ms: 3,
                    allowed: ok,
                    outcome: if ok { "ok".into() } else { "no_grant".into() },
                    reason: if ok { String::new() } else { "no grant for demo from you".into() },
                })
            }
            r = read_frame(&mut recv, 1 << 20) => if matches!(r, Ok(Some(_))) { continue } else { break },
        };
        if write_frame(&mut send, &encode(&msg)).await.is_err() {
            break;
        }
    }
    drop(client);
    Some(())
}

/// A caller relaying a session to a random agent `per_s` times a second, until `stop`.
async fn caller(
    proxy: SocketAddr,
    id: PublicId,
    agents: Arc<std::sync::Mutex<Vec<Key>>>,
    per_s: u64,
    stop: CancellationToken,
    calls: Arc<AtomicU64>,
) -> Option<()> {
    let client = Client::bind(&SecretKey::generate(), "127.2.0.1:0".parse().unwrap()).ok()?;
    let conn = client.connect(proxy, id).await.ok()?;
    let mut tick = tokio::time::interval(Duration::from_millis(1000 / per_s));
    let mut k = 0usize;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        let to = {
            let a = agents.lock().unwrap();
            if a.is_empty() {
                continue;
            }
            k = (k * 31 + 7) % a.len();
            a[k]
        };
        let Ok((mut send, mut recv)) = conn.open_bi().await else {
            break;
        };
        if write_frame(&mut send, &encode(&Open::Relay { to }))
            .await
            .is_err()
        {
            break;
        }
        if let Ok(Some(r)) = read_frame(&mut recv, 1 << 16).await {
            if matches!(decode::<RelayReply>(&r), Ok(RelayReply::Connected)) {
                calls.fetch_add(1, Ordering::Relaxed);
            }
        }
        let _ = send.finish();
    }
    drop(client);
    Some(())
}

/// Bytes per second of the event stream, read by a plain client for `secs`.
fn stream_rate(url: &str, secs: u64) -> f64 {
    use std::io::Write as _;
    let host = url.trim_start_matches("http://").trim_end_matches('/');
    let Ok(mut s) = std::net::TcpStream::connect(host) else {
        return 0.0;
    };
    let _ = write!(s, "GET /events HTTP/1.1\r\nHost: {host}\r\n\r\n");
    let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
    let start = Instant::now();
    let mut total = 0usize;
    let mut buf = vec![0u8; 64 * 1024];
    // The first snapshot is not the steady rate: skip the first second.
    let mut counted_from = None;
    while start.elapsed() < Duration::from_secs(secs + 1) {
        if let Ok(n) = s.read(&mut buf) {
            if n == 0 {
                break;
            }
            if start.elapsed() >= Duration::from_secs(1) {
                counted_from.get_or_insert_with(Instant::now);
                total += n;
            }
        }
    }
    counted_from.map_or(0.0, |t| total as f64 / t.elapsed().as_secs_f64())
}

struct Row {
    name: &'static str,
    rss_end: f64,
    rss_peak: f64,
    cpu: f64,
    calls_per_s: f64,
    page: Option<String>,
}

fn run(
    bin: &Path,
    name: &'static str,
    dashboard: bool,
    page: bool,
    n: usize,
    secs: u64,
) -> anyhow::Result<Row> {
    let proxy = ProxyProcess::start(bin, dashboard)?;
    let (addr, id) = (proxy.addr, proxy.id);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let _guard = rt.enter();
    let stop = CancellationToken::new();
    let owner = Key::from(SecretKey::generate().public());
    let tasks = tokio_util::task::TaskTracker::new();
    for i in 0..n {
        tasks.spawn(agent(i, addr, id, owner, stop.clone()));
    }
    // The agents' ids, from the roster, for the caller.
    let ids = Arc::new(std::sync::Mutex::new(Vec::new()));
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(120) {
        let got = rt.block_on(roster(addr, id)).unwrap_or_default();
        if got.len() >= n {
            *ids.lock().unwrap() = got;
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let calls = Arc::new(AtomicU64::new(0));
    tasks.spawn(caller(addr, id, ids.clone(), 5, stop.clone(), calls.clone()));
    let mut page_info = None;
    let browser = if page {
        let url = proxy.dashboard.clone().context("a dashboard")?;
        let log = std::env::temp_dir().join("wtd-bench-chromedriver.log");
        let b = browser::Browser::start(&log, 1600, 1200);
        b.goto(&url);
        let t0 = Instant::now();
        let mut cards_ms = None;
        while t0.elapsed() < Duration::from_secs(30) {
            let v = b.eval(&format!(
                "return document.querySelectorAll('#agents .card').length >= {n} ? performance.now() : null;"
            ));
            if let Some(ms) = v.as_f64() {
                cards_ms = Some(ms);
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let nav = b.eval(
            "const n = performance.getEntriesByType('navigation')[0]; \
             const r = performance.getEntriesByType('resource').filter(e => !e.name.endsWith('/events')); \
             return { load: n.loadEventEnd - n.startTime, bytes: n.transferSize + r.reduce((s, e) => s + e.transferSize, 0), \
                      files: 1 + r.length };",
        );
        page_info = Some((nav, cards_ms));
        Some(b)
    } else {
        None
    };
    // Steady window.
    std::thread::sleep(Duration::from_secs(2));
    let (c0, t0, k0) = (proxy.cpu_secs(), Instant::now(), calls.load(Ordering::Relaxed));
    let mut rss_peak = proxy.rss_mb();
    while t0.elapsed() < Duration::from_secs(secs) {
        std::thread::sleep(Duration::from_millis(200));
        rss_peak = rss_peak.max(proxy.rss_mb());
    }
    let window = t0.elapsed().as_secs_f64();
    let cpu = (proxy.cpu_secs() - c0) / window * 100.0;
    let calls_per_s = (calls.load(Ordering::Relaxed) - k0) as f64 / window;
    let rss_end = proxy.rss_mb();
    let page = match (page_info, &proxy.dashboard) {
        (Some((nav, cards_ms)), Some(url)) => {
            let rate = stream_rate(url, 10);
            let shown_cards = browser
                .as_ref()
                .map_or(0, |b| b.count("#agents .card[data-online=true]"));
            let feed = browser
                .as_ref()
                .map_or(0, |b| b.count("#feed li[data-type=call]"));
            Some(format!(
                "load {:.0} ms; {n} cards drawn at {}; {} files, {:.1} KB; event stream {:.1} KB/s; at the end {shown_cards} cards online, {feed} calls in the feed",
                nav["load"].as_f64().unwrap_or(0.0),
                cards_ms.map_or("never".to_string(), |m| format!("{m:.0} ms")),
                nav["files"],
                nav["bytes"].as_f64().unwrap_or(0.0) / 1024.0,
                rate / 1024.0,
            ))
        }
        _ => None,
    };
    drop(browser);
    stop.cancel();
    tasks.close();
    rt.block_on(async {
        let _ = tokio::time::timeout(Duration::from_secs(20), tasks.wait()).await;
    });
    Ok(Row {
        name,
        rss_end,
        rss_peak,
        cpu,
        calls_per_s,
        page,
    })
}

/// The ids in the roster.
async fn roster(proxy: SocketAddr, id: PublicId) -> Option<Vec<Key>> {
    let client = Client::bind(&SecretKey::generate(), "127.3.0.1:0".parse().unwrap()).ok()?;
    let conn = client.connect(proxy, id).await.ok()?;
    let (mut send, mut recv) = conn.open_bi().await.ok()?;
    write_frame(&mut send, &encode(&Open::Request(wtd_wire::Request::Roster)))
        .await
        .ok()?;
    let _ = send.finish();
    let mut all = Vec::new();
    while let Ok(Some(f)) = read_frame(&mut recv, 1 << 20).await {
        if let Ok(wtd_wire::Response::Roster(a)) = decode(&f) {
            all.extend(a.into_iter().map(|a| a.id));
        }
    }
    conn.close(0u32.into(), b"bye");
    Some(all)
}

fn main() -> anyhow::Result<()> {
    let bin: PathBuf = std::env::var_os("WTD_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_wtd")));
    let n = knob("WTD_DASH_AGENTS", 50usize);
    let secs = knob("WTD_DASH_SECS", 20u64);
    let mut rows = Vec::new();
    for (name, dashboard, page) in [
        ("no dashboard (baseline)", false, false),
        ("dashboard, no page", true, false),
        ("dashboard + page in Chromium", true, true),
    ] {
        eprintln!("{name}: {n} agents, {secs} s steady...");
        rows.push(run(&bin, name, dashboard, page, n, secs)?);
    }
    println!("\nOne proxy (`wtd proxy`), {n} simulated agents (real QUIC, a heartbeat a second), 5 relayed calls a second reported by the agents; {secs} s window:\n");
    println!("| proxy | RSS end / peak | CPU (one core) | calls relayed per s |");
    println!("|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {:.1} / {:.1} MB | {:.1} % | {:.1} |",
            r.name, r.rss_end, r.rss_peak, r.cpu, r.calls_per_s
        );
    }
    for r in &rows {
        if let Some(p) = &r.page {
            println!("\nThe page ({}): {p}", r.name);
        }
    }
    Ok(())
}
