//! The wtd discovery proxy: agents and users connect out to it; it admits agents, keeps
//! the roster, streams it to watchers, and relays owners' logs to their agents.
//!
//! It is trusted for delivery only. It never holds a secret of anyone else, and what it
//! relays that matters (owner logs) is signed by the owners and verified by the agents.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let config = wtd_proxy::ProxyConfig::new("/var/lib/wtd-proxy".into());
//! let socket = std::net::UdpSocket::bind("127.0.0.1:0")?;
//! let shutdown = tokio_util::sync::CancellationToken::new();
//! let proxy = wtd_proxy::Proxy::bind(config, socket)?;
//! println!("join ticket: {}", proxy.ticket(&[proxy.local_addr()?]));
//! proxy.run(shutdown).await;
//! # Ok(()) }
//! ```
//!
//! # Layout
//! - [`defaults`]: timeouts and caps, each with its reason.
//! - [`capacity`]: connection limits per deployment (a Pi, a laptop) and their checks.
//! - [`roster`]: pure bookkeeping of connected agents, producing roster events.
//! - [`logs`]: the owner logs the proxy stores and relays.
//! - [`jobs`]: the durable queue of jobs (`wtd push`) and their outcomes.
//! - `shared`: the state every connection task shares, and why each lock is there.
//! - `session`: one agent's control stream: admission, heartbeats, log relay.
//! - `requests`: one CLI request: roster, watch, publish and fetch logs.
//! - [`streams`]: the signed event store: agents' event logs, retention, positions.
//! - `subscriptions`: publishing and subscribing to signed events, and what is checked.
//! - `relay`: splicing a caller's stream to an agent, bytes only.
//! - `mqtt`: the roster mirrored to an MQTT broker (Home Assistant, Node-RED).
//! - [`metrics`]: the Prometheus metrics and what they count.
//! - [`dashboard`]: the classroom dashboard, a read-only web page pushed live.
//! - [`cli`]: `wtd proxy`, the command that runs it.
#![forbid(unsafe_code)]

pub mod capacity;
pub mod cli;
pub mod dashboard;
pub mod defaults;
pub mod jobs;
pub mod logs;
pub mod metrics;
mod mqtt;
mod relay;
mod requests;
pub mod roster;
mod session;
mod shared;
pub mod streams;
mod subscriptions;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use wtd_keys::{OwnerKey, ProxyId, Ticket};
use wtd_transport::{Limits, Pending, Server};

use crate::shared::Shared;

/// Who may register agents.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Any agent (a classroom on its own LAN).
    Open,
    /// Only agents one of these owners adopted: the agent names her, and her log (as the
    /// proxy holds it) adopts its id. Others wait, listed by `Request::Waiting`.
    Allow(Vec<OwnerKey>),
}

/// How to run a proxy.
#[derive(Clone, Debug)]
pub struct ProxyConfig {
    /// Holds the proxy's identity (`identity.key`), the owner logs (`logs/`) and the job
    /// queue (`jobs/jobs.log`).
    pub state_dir: PathBuf,
    pub admission: Admission,
    pub limits: Limits,
    /// An agent silent this long is dropped.
    pub reap_after: Duration,
    pub max_agents: usize,
    /// The MQTT bridge (`--mqtt`, or `[mqtt]` in proxy.toml); `None`: no bridge.
    pub mqtt: Option<wtd_telemetry::MqttConfig>,
    /// Where to serve Prometheus metrics (`--metrics`); `None`: no endpoint.
    pub metrics: Option<SocketAddr>,
    /// Where to serve the dashboard (`--dashboard`); `None`: no dashboard.
    pub dashboard: Option<SocketAddr>,
    /// How many jobs may wait, per caller, per owner and in all.
    pub job_limits: jobs::JobLimits,
    /// How long and how much of each owner's events the proxy keeps (`[events]`).
    pub events: streams::EventsConfig,
}

impl ProxyConfig {
    pub fn new(state_dir: PathBuf) -> Self {
        ProxyConfig {
            state_dir,
            admission: Admission::Open,
            limits: Limits::default(),
            reap_after: defaults::REAP_AFTER,
            max_agents: defaults::MAX_AGENTS,
            mqtt: None,
            metrics: None,
            dashboard: None,
            job_limits: jobs::JobLimits::default(),
            events: streams::EventsConfig::default(),
        }
    }
}

/// A bound proxy, ready to run.
#[derive(Debug)]
pub struct Proxy {
    id: ProxyId,
    server: Server,
    shared: Arc<Shared>,
    /// The MQTT connection, run by [`Proxy::run`].
    bridge: Option<wtd_telemetry::Bridge>,
    /// The bound metrics listener, served by [`Proxy::run`].
    metrics: Option<std::net::TcpListener>,
    /// The bound dashboard listener, served by [`Proxy::run`].
    dashboard: Option<std::net::TcpListener>,
}

impl Proxy {
    /// Loads (or creates) the proxy's identity and stored logs, and takes over `socket`.
    /// Must be called inside a tokio runtime.
    pub fn bind(config: ProxyConfig, socket: std::net::UdpSocket) -> anyhow::Result<Proxy> {
        wtd_store::atomic::ensure_dir(&config.state_dir, 0o700)?;
        let (secret, created) = wtd_store::identity::load_or_create(&config.state_dir.join("identity.key"))?;
        if created {
            log::info!("created the proxy's identity {}", secret.public());
        }
        receive_buffer(&socket);
        let server = Server::from_socket(&secret, socket, &config.limits)?;
        let logs = logs::LogStore::open(&config.state_dir.join("logs"))?;
        let (jobs, opened) = jobs::JobQueue::open(
            &config.state_dir.join("jobs"),
            config.job_limits.clone(),
            shared::now_ms(),
        )?;
        if opened.torn_tail_bytes > 0 || opened.skipped > 0 {
            log::warn!(
                "job queue: cut off a torn last record of {} bytes (it was never acknowledged) and \
                 skipped {} unreadable records",
                opened.torn_tail_bytes,
                opened.skipped
            );
        }
        log::info!(
            "job queue: {} jobs, {} of them out for delivery when the proxy stopped (delivered again)",
            opened.jobs,
            opened.requeued
        );
        let events = streams::EventStore::open(
            &config.state_dir.join("events"),
            config.events.clone(),
            shared::now_ms(),
        )?;
        let id = ProxyId(secret.public());
        let bridge = match &config.mqtt {
            Some(mqtt) => {
                let topics = wtd_telemetry::Topics::new(&mqtt.cluster, &mqtt.discovery_prefix);
                let client_id = format!("wtd-proxy-{}", id.0.short());
                let (bridge, handle) = wtd_telemetry::Bridge::new(mqtt, &client_id, topics.bridge_status())?;
                Some((bridge, handle))
            }
            None => None,
        };
        let metrics = match config.metrics {
            Some(addr) => {
                let std = std::net::TcpListener::bind(addr).with_context(|| {
                    format!("could not listen for metrics on {addr} (is another proxy using it?)")
                })?;
                std.set_nonblocking(true)?;
                Some(std)
            }
            None => None,
        };
        let dashboard = match config.dashboard {
            Some(addr) => {
                let std = std::net::TcpListener::bind(addr).with_context(|| {
                    format!(
                        "could not serve the dashboard on {addr} (is another program using it? \
                         pick another port with --dashboard 127.0.0.1:PORT)"
                    )
                })?;
                std.set_nonblocking(true)?;
                Some(std)
            }
            None => None,
        };
        let handle = bridge.as_ref().map(|(_, h)| h.clone());
        let mut shared = Shared::new(config, logs, jobs, events, handle);
        if dashboard.is_some() {
            let d = dashboard::Dashboard::new(defaults::DASHBOARD_CONNECTIONS);
            // The same gauge: `/metrics` shows the pages open.
            shared.metrics.dashboard_pages = d.pages.clone();
            shared.dashboard = Some(Arc::new(d));
        }
        Ok(Proxy {
            id,
            server,
            shared: Arc::new(shared),
            bridge: bridge.map(|(b, _)| b),
            metrics,
            dashboard,
        })
    }

    pub fn id(&self) -> ProxyId {
        self.id
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.server.local_addr()
    }

    /// The join ticket: this proxy's id and the addresses to reach it at.
    pub fn ticket(&self, addrs: &[SocketAddr]) -> String {
        Ticket {
            proxy: Some(wtd_keys::ProxyInfo {
                id: self.id,
                addrs: addrs.to_vec(),
            }),
            grants: Vec::new(),
        }
        .to_text()
    }

    /// Serves until `shutdown` is cancelled, then closes every connection and waits for
    /// every task it started.
    /// The address metrics are served on, if any.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The address the dashboard is served on, if any.
    pub fn dashboard_addr(&self) -> Option<SocketAddr> {
        self.dashboard.as_ref().and_then(|l| l.local_addr().ok())
    }

    pub async fn run(mut self, shutdown: CancellationToken) {
        let tasks = TaskTracker::new();
        tasks.spawn(shared::reaper(self.shared.clone(), shutdown.clone()));
        tasks.spawn(shared::batcher(self.shared.clone(), shutdown.clone()));
        tasks.spawn(shared::job_sweeper(self.shared.clone(), shutdown.clone()));
        // The bridge outlives the connections a little: it stops after them, so the last
        // roster changes (and "offline") can still go out.
        let bridge_stop = CancellationToken::new();
        let bridge_tasks = TaskTracker::new();
        if let (Some(bridge), Some(handle), Some(mqtt)) = (
            self.bridge.take(),
            self.shared.bridge.clone(),
            self.shared.config.mqtt.clone(),
        ) {
            bridge_tasks.spawn(bridge.run(bridge_stop.clone()));
            tasks.spawn(mqtt::follow_roster(
                self.shared.clone(),
                mqtt,
                handle,
                shutdown.clone(),
            ));
        }
        if let Some(listener) = self.metrics.take() {
            match tokio::net::TcpListener::from_std(listener) {
                Ok(listener) => {
                    let shared = self.shared.clone();
                    let server = wtd_telemetry::exposition::MetricsServer::from_listener(listener);
                    tasks.spawn(server.run(move || metrics::render(&shared), shutdown.clone()));
                }
                Err(e) => log::error!("metrics endpoint could not start: {e}"),
            }
        }
        if let (Some(listener), Some(dashboard)) = (self.dashboard.take(), self.shared.dashboard.clone()) {
            match tokio::net::TcpListener::from_std(listener) {
                Ok(listener) => {
                    tasks.spawn(dashboard::follow_roster(
                        self.shared.clone(),
                        dashboard.clone(),
                        shutdown.clone(),
                    ));
                    tasks.spawn(dashboard::http::serve(listener, dashboard, shutdown.clone()));
                }
                Err(e) => log::error!("the dashboard could not start: {e}"),
            }
        }
        loop {
            let pending = tokio::select! {
                _ = shutdown.cancelled() => break,
                p = self.server.accept() => p,
            };
            let Some(pending) = pending else { break };
            tasks.spawn(connection(self.shared.clone(), pending, shutdown.clone()));
        }
        self.server.endpoint().close(0u32.into(), b"proxy shutting down");
        tasks.close();
        tasks.wait().await;
        bridge_stop.cancel();
        bridge_tasks.close();
        bridge_tasks.wait().await;
        let _ = tokio::time::timeout(Duration::from_millis(300), self.server.endpoint().wait_idle()).await;
    }
}

/// Binds and runs a proxy until `shutdown`; the entry point tests use.
pub async fn run(
    config: ProxyConfig,
    socket: std::net::UdpSocket,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    Proxy::bind(config, socket)?.run(shutdown).await;
    Ok(())
}

/// One client connection: accepts its streams until it closes or we shut down.
async fn connection(shared: Arc<Shared>, pending: Pending, shutdown: CancellationToken) {
    let addr = pending.remote_address();
    shared.metrics.connections.inc();
    let accepted = match tokio::time::timeout(defaults::OPEN_TIMEOUT, pending.handshake()).await {
        Ok(Ok(a)) => a,
        Ok(Err(e)) => {
            log::info!("handshake with {addr} failed: {e}");
            return;
        }
        Err(_) => {
            log::info!("handshake with {addr} timed out");
            return;
        }
    };
    let conn = accepted.connection().clone();
    let peer = accepted.peer();
    let streams = TaskTracker::new();
    let is_agent = Arc::new(std::sync::atomic::AtomicBool::new(false));
    loop {
        let (send, recv) = tokio::select! {
            _ = shutdown.cancelled() => break,
            s = conn.accept_bi() => match s {
                Ok(s) => s,
                Err(_) => break,
            },
        };
        let ctx = session::StreamCtx {
            shared: shared.clone(),
            conn: conn.clone(),
            peer,
            is_agent: is_agent.clone(),
            shutdown: shutdown.clone(),
        };
        streams.spawn(session::stream(ctx, send, recv));
    }
    streams.close();
    streams.wait().await;
    // `accepted` holds this client's connection slot until here.
    drop(accepted);
}

/// Asks the kernel for a receive buffer of [`defaults::UDP_RECEIVE_BUFFER`] on the proxy's
/// one UDP socket (every agent, watcher and caller sends to it), and says how to raise the
/// kernel's cap if it gave less.
fn receive_buffer(socket: &std::net::UdpSocket) {
    let sock = socket2::SockRef::from(socket);
    let want = defaults::UDP_RECEIVE_BUFFER;
    if let Err(e) = sock.set_recv_buffer_size(want) {
        log::warn!("could not enlarge the UDP receive buffer: {e}");
    }
    // Linux reports twice what it grants (half is its bookkeeping), capped by rmem_max.
    match sock.recv_buffer_size() {
        Ok(got) if got < want => log::warn!(
            "the kernel gave the proxy a {} KiB UDP receive buffer, not the {} KiB asked for; \
             with many agents, packets arriving while the proxy is busy for a moment are dropped. \
             Raise the cap with `sysctl -w net.core.rmem_max={}`",
            got / 1024,
            want / 1024,
            want
        ),
        Ok(got) => log::debug!("UDP receive buffer: {} KiB", got / 1024),
        Err(e) => log::debug!("could not read the UDP receive buffer size: {e}"),
    }
}

/// Closes a connection whose peer broke the protocol.
pub(crate) fn close_offender(conn: &wtd_transport::Connection, why: &str) {
    log::info!(
        "closing {} ({}): {why}",
        conn.remote_address(),
        "protocol violation"
    );
    conn.close(1u32.into(), why.as_bytes());
}
