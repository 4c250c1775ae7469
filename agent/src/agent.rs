//! The agent as a whole: start-up (identity, owner logs, missions, advert), then the link
//! to the proxy until shutdown.
//!
//! Start-up is synchronous and fails fast with an error a person can act on; after it, the
//! agent never gives up on its own: a lost proxy is retried forever, a bad mission file or
//! a bad owner log from the proxy is logged and skipped.
//!
//! ```no_run
//! # async fn demo(config: wtd_agent::AgentConfig) -> Result<(), wtd_agent::AgentError> {
//! use tokio_util::sync::CancellationToken;
//!
//! let shutdown = CancellationToken::new();
//! let agent = wtd_agent::Agent::new(config)?;
//! println!("I am {}", agent.id());
//! let logs = agent.logs(); // watch the verified grants and revocations
//! agent.run(shutdown).await // until `shutdown.cancel()`
//! # }
//! ```

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use wtd_keys::seal::SealKey;
use wtd_keys::{AgentId, SecretKey};
use wtd_store::identity::{load_or_create, IdentityError};
use wtd_transport::{BindError, Client};
use wtd_wire::{Advert, PROTOCOL_VERSION};

use crate::advert;
use crate::backoff::Backoff;
use crate::calls::CallService;
use crate::clock::Clock;
use crate::config::{AgentConfig, ConfigError, ProxySource};
use crate::defaults;
use crate::events::MissionEvents;
use crate::lan::LanFinder;
use crate::link::{Link, ProxyTarget};
use crate::load::{poll_sensors, LoadSampler};
use crate::missions::Catalogue;
use crate::mqtt::Direct;
use crate::owner_logs::{LogsHandle, OpenLogsError, OwnerLogs};
use crate::sensors::{self, PiSensors};

/// The agent could not start. Each variant says what to fix; once started, the agent
/// does not stop on errors.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// A value in the configuration is wrong.
    #[error("the agent configuration is invalid: {0}")]
    Config(#[from] ConfigError),
    /// The identity key could not be created or read (permissions on the state
    /// directory? a damaged key file?).
    #[error("the agent's identity: {0}")]
    Identity(#[from] IdentityError),
    /// An owner log could not be opened, or is damaged (the message says what to do).
    #[error("the agent's owner logs: {0}")]
    Logs(#[from] OpenLogsError),
    /// No UDP socket could be opened to reach the proxy.
    #[error("cannot open a socket to reach the proxy: {0}")]
    Bind(#[from] BindError),
    /// The metrics address is taken, or not this machine's.
    #[error("could not listen for metrics on {addr}: {source} (is another agent using this port? change `metrics` in agent.toml)")]
    Metrics {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// The signed event logs could not be opened (the message says which and what to do).
    #[error("the agent's event logs: {0}")]
    Events(#[from] wtd_store::eventfile::EventFileError),
    /// The `[mqtt]` section cannot be used (its CA file, or TLS set-up).
    #[error("the agent's MQTT publisher: {0}")]
    Mqtt(#[from] wtd_telemetry::bridge::BridgeError),
    /// `proxy` is to be found on the LAN, but mDNS could not start (the message says why).
    #[error("cannot look for the proxy on the LAN: {0}; or set `proxy` to a join ticket")]
    Lan(#[from] wtd_transport::lan::LanError),
    /// The record of queued calls this agent ran cannot be read (the message says what to do).
    #[error("the agent's record of jobs it ran: {0}")]
    Jobs(String),
    /// The test-only clock offset is set but unreadable (debug builds; see `clock`).
    #[error(transparent)]
    Clock(#[from] crate::clock::OffsetError),
}

/// A started agent: identity loaded, logs open, missions read, not yet connected.
#[derive(Debug)]
pub struct Agent {
    config: AgentConfig,
    secret: SecretKey,
    id: AgentId,
    catalogue: Arc<Catalogue>,
    advert: Advert,
    logs: OwnerLogs,
    /// The first sensor reading, taken at start for the model in the advert.
    pi: PiSensors,
    /// The wall clock grants are checked by, read from the environment once, here.
    clock: Clock,
}

impl Agent {
    /// Starts the agent: checks the config, loads (or on first start creates) the identity
    /// in `state_dir`, opens and verifies the owner logs, and reads the mission files.
    pub fn new(config: AgentConfig) -> Result<Agent, AgentError> {
        config.validate()?;
        let clock = Clock::from_env()?;
        let (secret, created) = load_or_create(&config.identity_path())?;
        let id = AgentId(secret.public());
        if created {
            log::info!(agent:% = id; "created a new identity in {}", config.identity_path().display());
        }
        let logs = OwnerLogs::open(&config.logs_dir(), &config.owners, &SealKey::derive(&secret))?;
        let catalogue = Catalogue::load(&config.missions_dir);
        let pi = sensors::read(&config.sensor_paths());
        let advert = advert::build(&config, &id, &catalogue, pi.model.clone());
        if let Some(t) = &config.enroll {
            log::info!(
                agent:% = id, token:% = t.id();
                "this agent holds enrollment token {}; its owner can adopt it with `wtd adopt --pending`",
                t.id()
            );
        }
        log::info!(
            agent:% = id, name = config.name.as_str();
            "agent ready: {} missions, {} warnings, model {}",
            advert.missions.len(),
            advert.warnings.len(),
            advert.model.as_deref().unwrap_or("unknown")
        );
        Ok(Agent {
            config,
            secret,
            id,
            catalogue: Arc::new(catalogue),
            advert,
            logs,
            pi,
            clock,
        })
    }

    /// This agent's id (its public key), as owners name it in grants.
    pub fn id(&self) -> AgentId {
        self.id
    }

    /// What the agent tells the proxy about itself.
    pub fn advert(&self) -> &Advert {
        &self.advert
    }

    /// The missions this agent offers, with how to run each function.
    pub fn catalogue(&self) -> &Arc<Catalogue> {
        &self.catalogue
    }

    /// A read-only, always-current view of the verified owner logs.
    pub fn logs(&self) -> LogsHandle {
        self.logs.handle()
    }

    /// Connects to the proxy and stays connected (reconnecting as needed) until
    /// `shutdown` is cancelled; then says goodbye and returns.
    ///
    /// Everything runs inside this one future: the link and the sensor poller are joined,
    /// not spawned, so nothing the agent started can outlive this call.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), AgentError> {
        let (target, bind) = match &self.config.proxy {
            ProxySource::Ticket(info) => {
                if !self.config.lan_interfaces.is_empty() {
                    log::info!(agent:% = self.id; "`lan_interfaces` is unused: `proxy` is a join ticket");
                }
                (ProxyTarget::Ticket(info.clone()), bind_addr(&info.addrs))
            }
            // LAN announcements are read for their IPv4 addresses only (see wtd_transport::lan).
            ProxySource::Lan(policy) => {
                log::info!(
                    agent:% = self.id;
                    "no join ticket: looking for {} on the LAN (mDNS {})",
                    self.config.proxy,
                    wtd_transport::lan::SERVICE_TYPE
                );
                let finder = LanFinder::start(*policy, &self.config.lan_interfaces)?;
                (ProxyTarget::Lan(finder), (Ipv4Addr::UNSPECIFIED, 0).into())
            }
        };
        let client = Client::bind(&self.secret, bind)?;
        // Probe (and log, once) how this machine contains calls, before the first call.
        crate::sandbox::Sandbox::global();
        let (latest, sensors) = watch::channel(self.pi);
        let (mission_events, events_rx) = MissionEvents::new(self.config.mission_events.clone());
        let (reports, reports_rx) = crate::reports::CallReports::new(self.config.report_calls);
        let streams = Arc::new(crate::streams::EventStreams::open(
            &self.config.state_dir.join("events"),
            SecretKey::from_seed(&self.secret.seed()),
        )?);
        let handlers: Vec<Arc<crate::subscriber::Handler>> =
            crate::subscriber::Handler::all(&self.catalogue, &self.config.state_dir)
                .into_iter()
                .map(Arc::new)
                .collect();
        // The call service gets its own copy of the key: it signs results and runs the
        // end-to-end handshakes, while the link's endpoint holds the other.
        let calls = Arc::new(CallService::new(
            SecretKey::from_seed(&self.secret.seed()),
            self.config.name.clone(),
            self.catalogue.clone(),
            self.logs.handle(),
            self.config.state_dir.join("time-floor"),
            Arc::new(mission_events),
            Arc::new(reports),
            streams.clone(),
            self.clock,
        ));
        // Mission events go to the agent's own broker if it has one, else to the proxy.
        let mut events_rx = Some(events_rx);
        let direct = match &self.config.mqtt {
            Some(mqtt) => Some(Direct::new(
                mqtt,
                self.id,
                self.advert.clone(),
                LoadSampler::new(self.config.test_pinned_load),
                sensors.clone(),
                events_rx.take().expect("not taken yet"),
            )?),
            None => None,
        };
        if self.config.mission_events.is_empty() {
            events_rx = None;
        }
        let metrics = match self.config.metrics {
            Some(addr) => {
                let server = wtd_telemetry::exposition::MetricsServer::bind(addr)
                    .await
                    .map_err(|e| match e {
                        wtd_telemetry::exposition::ServeError::Bind { addr, source } => {
                            AgentError::Metrics { addr, source }
                        }
                    })?;
                log::info!(agent:% = self.id; "metrics at http://{addr}/metrics");
                let (calls, mqtt) = (calls.clone(), direct.as_ref().map(Direct::handle));
                Some(server.run(
                    move || crate::metrics::render(&calls, mqtt.as_ref()),
                    shutdown.clone(),
                ))
            }
            None => None,
        };
        // Jobs: the link hands deliveries to the runner, which answers through the link.
        let (jobs_tx, jobs_rx) = tokio::sync::mpsc::channel(defaults::JOB_QUEUE);
        let (updates_tx, updates_rx) = tokio::sync::mpsc::channel(defaults::JOB_UPDATES);
        // "Now" for the seen-set's horizon, should its record be damaged: the later of the
        // clock and the time floor (a Pi without a clock may boot in the past).
        let clock = wtd_keys::Timestamp(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
        );
        let floor = wtd_store::floor::read(&self.config.state_dir.join("time-floor"))
            .ok()
            .flatten()
            .map_or(clock, |f| f.0);
        let seen = crate::jobs::SeenJobs::open(
            &self.config.state_dir.join("jobs"),
            defaults::MAX_SEEN_JOBS,
            clock.max(floor),
        )
        .map(|seen| seen.with_per_caller(defaults::MAX_SEEN_JOBS_PER_CALLER))
        .map_err(|e| AgentError::Jobs(format!("{e:#}")))?;
        // The tags it advertises are the tags it checks a job's signed tag against.
        let job_runner = crate::jobs::run(
            calls.clone(),
            self.advert.tags.clone(),
            seen,
            jobs_rx,
            updates_tx,
            shutdown.clone(),
        );
        let link = Link {
            calls: calls.clone(),
            id: self.id,
            client,
            proxy: target,
            advert: self.advert,
            logs: self.logs,
            sampler: LoadSampler::new(self.config.test_pinned_load),
            sensors,
            heartbeat: self.config.heartbeat_interval,
            backoff: Backoff::default(),
            events: events_rx,
            reports: reports_rx,
            version: PROTOCOL_VERSION,
            jobs: jobs_tx,
            job_updates: updates_rx,
            streams,
            handlers: Arc::new(handlers),
        };
        // The link only returns on shutdown; the poller stops with it.
        let poller = poll_sensors(
            self.config.sensor_paths(),
            defaults::SENSOR_INTERVAL,
            latest,
            shutdown.clone(),
        );
        let enforcer = calls.enforce_revocations(shutdown.clone());
        let direct = async {
            if let Some(d) = direct {
                d.run(shutdown.clone()).await;
            }
        };
        let metrics = async {
            if let Some(m) = metrics {
                m.await;
            }
        };
        tokio::join!(
            link.run(shutdown.clone()),
            poller,
            enforcer,
            direct,
            metrics,
            job_runner
        );
        log::info!(agent:% = self.id; "agent stopped");
        Ok(())
    }
}

/// Starts an agent with `config` and runs it until `shutdown` (see [`Agent::run`]).
pub async fn run(config: AgentConfig, shutdown: CancellationToken) -> Result<(), AgentError> {
    Agent::new(config)?.run(shutdown).await
}

/// Where our UDP socket binds: any address, any port, of the family the proxy needs.
/// An IPv6 socket also reaches IPv4 addresses on Linux (as v4-mapped), so one socket serves
/// a ticket that lists both.
fn bind_addr(proxy: &[SocketAddr]) -> SocketAddr {
    if proxy.iter().any(SocketAddr::is_ipv6) {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    }
}
