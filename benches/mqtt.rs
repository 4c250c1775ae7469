//! What the MQTT bridge costs a call: the same calls, in one run, through three proxies
//!
//! - **healthy**: the bridge on, a real mosquitto up (every relayed session publishes a
//!   call event, every heartbeat may publish a state);
//! - **broker stopped**: the bridge on, its broker killed after the first connect (the
//!   bridge reconnects with backoff, the bounded outbox drops the oldest events);
//! - **no bridge**: the proxy as `wtd proxy` runs without `--mqtt`.
//!
//! `cargo bench --bench mqtt` (or `bash scripts/bench-mqtt.sh`) prints one table. Nothing is
//! asserted (STYLE 12): the budget is that the three rows match within this machine's noise.
//! Each proxy has its own agent, shaped like the real processes (proxy: 2 workers, agent
//! and caller: one thread each). The three are measured in turns, a slice of each row per
//! turn (each turn starting with another proxy), so they share the same machine moments
//! instead of the drift between minutes.
//!
//! Rows, per proxy, through the caller library `wtd call` uses (`wtd_caller::Session`):
//! 1. **warm**: `sys/ping` one at a time on one warm session (p50, calls/s);
//! 2. **fresh session**: a new session per call, closed after it: one relay per call, so
//!    one call event per call for the bridge to publish (p50, sessions/s);
//! 3. **16 in flight**: 16 sessions each calling in a loop (calls/s).
//!
//! Knobs: `WTD_BENCH_CALLS` warm calls per proxy (default 3000), `WTD_BENCH_SESSIONS` fresh
//! sessions per proxy (default 600), `WTD_BENCH_SECS` seconds of the in-flight row per
//! proxy (default 3), `WTD_BENCH_TURNS` turns (default 5), `WTD_BIN` the `wtd` binary.
//! Needs mosquitto (`bash scripts/test.sh` installs it). Everything is on 127.0.0.1, and
//! every loop is bounded in count and in time.

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use wtd_agent::{Agent, AgentConfig, LogsHandle};
use wtd_keys::call::CallStatus;
use wtd_keys::{AgentId, FunctionName, MissionName, OwnerKey, ProxyInfo, SecretKey, UserKey};
use wtd_proxy::{Proxy, ProxyConfig};
use wtd_transport::{Client, Connection};

/// Bob's grant: far more than the bench uses, so no call waits for the rate limit.
const GRANT_FLAGS: [&str; 6] = [
    "--rate",
    "1000000/min",
    "--burst",
    "1000000",
    "--concurrency",
    "64",
];
/// The outbox of the bridge whose broker is stopped: small enough that the run overflows it.
const STOPPED_QUEUE: usize = 100;
/// Calls in flight in row 3.
const IN_FLIGHT: usize = 16;
/// Calls made and thrown away on each proxy before the first turn.
const WARMUP_CALLS: usize = 200;
/// How long setting up one proxy, agent and grant may take.
const SETUP_LIMIT: Duration = Duration::from_secs(30);
/// A slice of a row stops after this long whatever its count.
const SLICE_LIMIT: Duration = Duration::from_secs(10);
/// Most calls one in-flight slice makes, whatever its time.
const MAX_IN_FLIGHT_CALLS: u64 = 200_000;

fn main() -> anyhow::Result<()> {
    if !std::env::args().any(|a| a == "--bench") {
        println!("benches/mqtt.rs: skipped (run it with `cargo bench --bench mqtt`)");
        return Ok(());
    }
    let knobs = Knobs::from_env()?;
    let dir = tempfile::tempdir()?;
    eprintln!("setting up three proxies (bridge + broker, bridge without broker, no bridge) ...");
    let mut labs = Vec::new();
    for (n, kind) in [Kind::Healthy, Kind::BrokerStopped, Kind::NoBridge]
        .into_iter()
        .enumerate()
    {
        labs.push(Lab::start(&knobs, kind, &dir.path().join(format!("lab{n}")))?);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut callers = Vec::new();
    for lab in &labs {
        callers.push(rt.block_on(Caller::connect(lab))?);
    }
    for c in &callers {
        rt.block_on(async {
            let s = c.session().await?;
            for _ in 0..WARMUP_CALLS {
                c.call(&s).await?;
            }
            anyhow::Ok(())
        })?;
    }
    let mut results: Vec<Results> = labs.iter().map(|_| Results::default()).collect();
    let turns = knobs.turns;
    for turn in 0..turns {
        eprintln!("turn {}/{turns} ...", turn + 1);
        // Each turn starts with another proxy, so none always runs first or last.
        let n = callers.len();
        for i in (0..n).map(|i| (i + turn) % n) {
            let (c, r) = (&callers[i], &mut results[i]);
            rt.block_on(async {
                let warm = rows::warm(c, knobs.calls / turns).await?;
                r.warm_turns.push(warm.p50());
                r.warm.add(warm);
                r.fresh.add(rows::fresh(c, knobs.sessions / turns).await?);
                r.busy.add(rows::in_flight(c, knobs.secs / turns as u32).await?);
                anyhow::Ok(())
            })?;
        }
    }
    // Let the healthy bridge catch up before reading what it published.
    std::thread::sleep(Duration::from_millis(500));

    println!();
    println!("MQTT bridge cost, {turns} turns, one run (p50 of each row; rates over the row's time)");
    println!(
        "{:<28} {:>10} {:>21} {:>9} {:>11} {:>10} {:>11}   bridge: published / dropped / queued / connected",
        "proxy", "warm p50", "turns' p50 min-max", "warm/s", "fresh p50", "fresh/s", "16 in fl./s"
    );
    for (lab, r) in labs.iter().zip(&results) {
        let bridge = match lab.kind {
            Kind::NoBridge => "-".to_string(),
            _ => {
                let m = scrape(lab.metrics);
                let g = |name: &str| metric(&m, name).map_or("?".into(), |v| format!("{v}"));
                format!(
                    "{} / {} / {} / {}",
                    g("wtd_proxy_mqtt_bridge_published"),
                    g("wtd_proxy_mqtt_bridge_dropped"),
                    g("wtd_proxy_mqtt_bridge_queued"),
                    g("wtd_proxy_mqtt_bridge_connected"),
                )
            }
        };
        let (lo, hi) = (
            r.warm_turns.iter().min().copied().unwrap_or_default(),
            r.warm_turns.iter().max().copied().unwrap_or_default(),
        );
        println!(
            "{:<28} {:>10} {:>21} {:>9.0} {:>11} {:>10.0} {:>11.0}   {bridge}",
            lab.kind.label(),
            us(r.warm.p50()),
            format!("{} - {}", us(lo), us(hi)),
            r.warm.rate(),
            us(r.fresh.p50()),
            r.fresh.rate(),
            r.busy.rate(),
        );
    }
    println!();
    println!("* its outbox holds {STOPPED_QUEUE} events: past that the oldest are dropped");
    println!(
        "budget: the bridge rows within noise of `no bridge` (a publish is a push into a bounded queue)"
    );
    for c in callers {
        rt.block_on(c.close());
    }
    drop(labs);
    Ok(())
}

struct Knobs {
    calls: usize,
    sessions: usize,
    secs: Duration,
    turns: usize,
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
        let turns = number("WTD_BENCH_TURNS", 5)?.clamp(1, 50) as usize;
        Ok(Knobs {
            calls: (number("WTD_BENCH_CALLS", 3000)? as usize).max(turns),
            sessions: (number("WTD_BENCH_SESSIONS", 600)? as usize).max(turns),
            secs: Duration::from_secs(number("WTD_BENCH_SECS", 3)?.clamp(1, 120))
                .max(Duration::from_millis(turns as u64 * 200)),
            turns,
            wtd: std::env::var_os("WTD_BIN")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_wtd"))),
        })
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Healthy,
    BrokerStopped,
    NoBridge,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Healthy => "bridge on, broker healthy",
            Kind::BrokerStopped => "bridge on, broker stopped*",
            Kind::NoBridge => "no bridge",
        }
    }
}

/// A future on its own runtime and thread, as if it were its own process; dropped, it is
/// cancelled and joined.
struct Daemon {
    stop: CancellationToken,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Daemon {
    fn start<F, Fut>(name: &str, workers: usize, make: F) -> anyhow::Result<Daemon>
    where
        F: FnOnce(CancellationToken) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()>,
    {
        let stop = CancellationToken::new();
        let token = stop.clone();
        let thread = std::thread::Builder::new().name(name.into()).spawn(move || {
            let rt = if workers <= 1 {
                tokio::runtime::Builder::new_current_thread().enable_all().build()
            } else {
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(workers)
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

/// A mosquitto process on 127.0.0.1, killed by PID when dropped.
struct Broker {
    port: u16,
    child: Option<Child>,
}

impl Broker {
    fn start(dir: &Path) -> anyhow::Result<Broker> {
        std::fs::create_dir_all(dir)?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let conf = dir.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!("listener {port} 127.0.0.1\npersistence false\nallow_anonymous true\nlog_dest none\n"),
        )?;
        let bin = ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .ok_or_else(|| anyhow!("mosquitto is not installed (bash scripts/test.sh installs it)"))?;
        let child = Command::new(bin)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let broker = Broker {
            port,
            child: Some(child),
        };
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if start.elapsed() > SETUP_LIMIT {
                bail!("mosquitto did not listen on {port}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(broker)
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A proxy (with or without a bridge), its agent, and Bob holding Alice's grant for `sys`.
struct Lab {
    kind: Kind,
    proxy: ProxyInfo,
    metrics: SocketAddr,
    bob: SecretKey,
    agent: AgentId,
    // Dropped in this order: the agent leaves a proxy that is still there.
    _agent: Daemon,
    _proxy: Daemon,
    _broker: Option<Broker>,
}

impl Lab {
    fn start(knobs: &Knobs, kind: Kind, dir: &Path) -> anyhow::Result<Lab> {
        std::fs::create_dir_all(dir)?;
        let mut broker = match kind {
            Kind::NoBridge => None,
            _ => Some(Broker::start(&dir.join("broker"))?),
        };
        let mut config = ProxyConfig::new(dir.join("proxy"));
        config.metrics = Some("127.0.0.1:0".parse()?);
        if let Some(b) = &broker {
            let file = wtd_telemetry::config::MqttFile {
                url: Some(format!("mqtt://127.0.0.1:{}", b.port)),
                cluster: Some("bench".into()),
                // A small queue for the stopped broker, so the run also shows the oldest
                // events being dropped rather than anything waiting.
                queue: (kind == Kind::BrokerStopped).then_some(STOPPED_QUEUE),
                ..Default::default()
            };
            config.mqtt = Some(wtd_telemetry::MqttConfig::from_file(&file, None)?);
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let proxy_daemon = Daemon::start("proxy", 2, move |stop| async move {
            let bound = UdpSocket::bind("127.0.0.1:0")
                .map_err(anyhow::Error::from)
                .and_then(|socket| Proxy::bind(config, socket));
            let proxy = match bound.and_then(|p| Ok((p.local_addr()?, p))) {
                Ok((addr, p)) => {
                    let metrics = p.metrics_addr().expect("metrics were asked for");
                    let _ = tx.send(Ok((p.id(), addr, metrics, p.ticket(&[addr]))));
                    p
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            proxy.run(stop).await;
        })?;
        let (proxy_id, proxy_addr, metrics, ticket) = rx
            .recv_timeout(SETUP_LIMIT)
            .map_err(|_| anyhow!("the proxy did not start"))??;

        let wtd = &knobs.wtd;
        let alice = dir.join("alice");
        let bob_home = dir.join("bob");
        let cli = |home: &Path, args: &[&str]| run_wtd(wtd, home, args);
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

        let missions = dir.join("agent").join("missions");
        std::fs::create_dir_all(&missions)?;
        let proxy = ProxyInfo {
            id: proxy_id,
            addrs: vec![proxy_addr],
        };
        let agent_config = AgentConfig {
            name: "bench-pi".into(),
            state_dir: dir.join("agent").join("state"),
            missions_dir: missions,
            ..AgentConfig::new(proxy.clone(), vec![OwnerKey(alice_key.public())])
        };
        let agent = Agent::new(agent_config)?;
        let agent_id = agent.id();
        cli(&alice, &["adopt", &agent_id.to_string()])?;
        let logs = agent.logs();
        let agent_daemon = Daemon::start("agent", 1, move |stop| async move {
            if let Err(e) = agent.run(stop).await {
                eprintln!("the agent stopped: {e}");
            }
        })?;
        wait_for_grant(&logs, &bob, &agent_id)?;

        if kind == Kind::BrokerStopped {
            // Connected once (so the outbox holds the whole picture), then the broker dies.
            let start = Instant::now();
            while metric(&scrape(metrics), "wtd_proxy_mqtt_bridge_connected") != Some(1.0) {
                if start.elapsed() > SETUP_LIMIT {
                    bail!("the bridge never connected to its broker");
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            if let Some(b) = broker.as_mut() {
                b.stop();
            }
        }
        Ok(Lab {
            kind,
            proxy,
            metrics,
            bob,
            agent: agent_id,
            _agent: agent_daemon,
            _proxy: proxy_daemon,
            _broker: broker,
        })
    }
}

fn wait_for_grant(logs: &LogsHandle, bob: &SecretKey, agent: &AgentId) -> anyhow::Result<()> {
    let bob = UserKey(bob.public());
    let start = Instant::now();
    loop {
        let l = logs.borrow();
        let ok = l.owners().any(|o| l.adoptions().adopts(o, agent))
            && l.grants()
                .any(|g| g.subject == bob && g.mission.as_str() == "sys");
        drop(l);
        if ok {
            return Ok(());
        }
        if start.elapsed() > SETUP_LIMIT {
            bail!("the agent did not receive Bob's grant within {SETUP_LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

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

/// One scrape of a proxy's /metrics.
fn scrape(addr: SocketAddr) -> String {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return String::new();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// The value of an unlabelled gauge in exposition text.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

type Session = Arc<wtd_caller::Session>;

/// Bob, connected to one proxy.
struct Caller {
    me: Arc<SecretKey>,
    agent: AgentId,
    mission: MissionName,
    function: FunctionName,
    client: Client,
    conn: Connection,
}

impl Caller {
    async fn connect(lab: &Lab) -> anyhow::Result<Caller> {
        let me = Arc::new(SecretKey::from_seed(&lab.bob.seed()));
        let client = Client::bind(&me, "127.0.0.1:0".parse()?)?;
        let conn = client.connect(lab.proxy.addrs[0], *lab.proxy.id.key()).await?;
        let caller = Caller {
            me,
            agent: lab.agent,
            mission: MissionName::new("sys")?,
            function: FunctionName::new("ping")?,
            client,
            conn,
        };
        let start = Instant::now();
        loop {
            match caller.session().await {
                Ok(_) => return Ok(caller),
                Err(e) if start.elapsed() > SETUP_LIMIT => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    async fn session(&self) -> anyhow::Result<Session> {
        Ok(Arc::new(
            wtd_caller::Session::open(self.me.clone(), &self.conn, self.agent).await?,
        ))
    }

    async fn call(&self, s: &Session) -> anyhow::Result<()> {
        let pending = s.call(&self.mission, &self.function, b"{}", false, &[]).await?;
        let answer = pending.finish(&mut |_| {}).await?;
        if answer.status != CallStatus::Ok {
            bail!("sys/ping ended {}", answer.status);
        }
        Ok(())
    }

    async fn close(self) {
        self.conn.close(0u32.into(), b"bye");
        let _ = tokio::time::timeout(Duration::from_millis(300), self.client.endpoint().wait_idle()).await;
    }
}

mod rows {
    use super::*;

    /// `n` calls one at a time on one warm session.
    pub(super) async fn warm(c: &Caller, n: usize) -> anyhow::Result<Stats> {
        let s = c.session().await?;
        c.call(&s).await?;
        let mut stats = Stats::default();
        let start = Instant::now();
        while stats.times.len() < n && start.elapsed() < SLICE_LIMIT {
            let t = Instant::now();
            c.call(&s).await?;
            stats.times.push(t.elapsed());
        }
        stats.elapsed = start.elapsed();
        Ok(stats)
    }

    /// `n` times: a new session, one call, the session closed (one relay, one call event).
    pub(super) async fn fresh(c: &Caller, n: usize) -> anyhow::Result<Stats> {
        let mut stats = Stats::default();
        let start = Instant::now();
        while stats.times.len() < n && start.elapsed() < SLICE_LIMIT {
            let t = Instant::now();
            let s = c.session().await?;
            c.call(&s).await?;
            drop(s);
            stats.times.push(t.elapsed());
        }
        stats.elapsed = start.elapsed();
        Ok(stats)
    }

    /// `IN_FLIGHT` sessions, each calling one at a time, for `secs`.
    pub(super) async fn in_flight(c: &Caller, secs: Duration) -> anyhow::Result<Stats> {
        let mut sessions = Vec::new();
        for _ in 0..IN_FLIGHT {
            let s = c.session().await?;
            c.call(&s).await?;
            sessions.push(s);
        }
        let start = Instant::now();
        let deadline = start + secs.min(SLICE_LIMIT);
        let each = MAX_IN_FLIGHT_CALLS / IN_FLIGHT as u64;
        let mut loops = JoinSet::new();
        for s in sessions {
            let (mission, function) = (c.mission.clone(), c.function.clone());
            loops.spawn(async move {
                let mut done = 0u64;
                while done < each && Instant::now() < deadline {
                    let pending = s.call(&mission, &function, b"{}", false, &[]).await?;
                    let a = pending.finish(&mut |_| {}).await?;
                    if a.status != CallStatus::Ok {
                        bail!("sys/ping ended {}", a.status);
                    }
                    done += 1;
                }
                anyhow::Ok(done)
            });
        }
        let mut total = 0;
        while let Some(r) = loops.join_next().await {
            total += r??;
        }
        Ok(Stats {
            times: Vec::new(),
            count: total,
            elapsed: start.elapsed(),
        })
    }
}

#[derive(Default)]
struct Stats {
    times: Vec<Duration>,
    /// Calls counted without a time each (the in-flight row).
    count: u64,
    elapsed: Duration,
}

impl Stats {
    fn add(&mut self, other: Stats) {
        self.times.extend(other.times);
        self.count += other.count;
        self.elapsed += other.elapsed;
    }

    fn p50(&self) -> Duration {
        let mut sorted = self.times.clone();
        sorted.sort_unstable();
        sorted
            .get(sorted.len().saturating_sub(1) / 2)
            .copied()
            .unwrap_or_default()
    }

    fn rate(&self) -> f64 {
        (self.times.len() as u64 + self.count) as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

#[derive(Default)]
struct Results {
    warm: Stats,
    /// Each turn's warm p50: how far one proxy's figure moves between turns is this
    /// machine's noise, the yardstick for differences between the rows.
    warm_turns: Vec<Duration>,
    fresh: Stats,
    busy: Stats,
}

fn us(d: Duration) -> String {
    if d >= Duration::from_millis(10) {
        format!("{:.2} ms", d.as_secs_f64() * 1e3)
    } else {
        format!("{:.1} us", d.as_secs_f64() * 1e6)
    }
}
