//! `wtd proxy`: run a discovery proxy.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;
use wtd_keys::OwnerKey;

use crate::{defaults, Admission, Proxy, ProxyConfig};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The UDP address to listen on.
    #[arg(long, default_value_t = SocketAddr::from(([0, 0, 0, 0], defaults::PORT)))]
    pub listen: SocketAddr,
    /// Where the proxy keeps its identity and the owner logs.
    /// Default: $WTD_HOME/proxy (or ~/.config/wtd/proxy).
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// Admit only agents this owner adopted (repeat for several): the agent must name her
    /// as its owner and her log must adopt it (`wtd adopt`). Others are told they are
    /// waiting for adoption, and keep retrying. Without it, any agent may join.
    #[arg(long = "allow", value_name = "OWNER_ID")]
    pub allow: Vec<String>,
    /// Addresses to put in the join ticket, if not the listen address (for example the
    /// laptop's LAN address when listening on 0.0.0.0).
    #[arg(long = "advertise", value_name = "IP:PORT")]
    pub advertise: Vec<SocketAddr>,
    /// Mirror the cluster to an MQTT broker (mqtt://host:1883 or mqtts://host:8883), for
    /// Home Assistant and Node-RED. The password comes from WTD_MQTT_PASSWORD or the config.
    #[arg(long, value_name = "URL")]
    pub mqtt: Option<String>,
    /// Topics are wtd/<cluster>/... (default `home`).
    #[arg(long, value_name = "NAME")]
    pub mqtt_cluster: Option<String>,
    /// A TOML file with an [mqtt] section (url, cluster, username, password_file, ca_file,
    /// ...; see proxy.example.toml). --mqtt and --mqtt-cluster override its values.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9464).
    #[arg(long, value_name = "IP:PORT")]
    pub metrics: Option<SocketAddr>,
}

/// `proxy.toml`: for now, the MQTT bridge (every other setting is a flag).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    /// The MQTT bridge; see `wtd_telemetry::config`.
    mqtt: Option<wtd_telemetry::config::MqttFile>,
    /// Where to serve Prometheus metrics.
    metrics: Option<SocketAddr>,
}

/// Runs the proxy until Ctrl-C or SIGTERM.
pub fn run(args: Args) -> anyhow::Result<()> {
    let state_dir = match args.state_dir {
        Some(d) => d,
        None => wtd_store::home::Home::from_env()?.dir().join("proxy"),
    };
    let mut config = ProxyConfig::new(state_dir.clone());
    if !args.allow.is_empty() {
        let owners = args
            .allow
            .iter()
            .map(|s| s.parse::<OwnerKey>().with_context(|| format!("--allow {s}")))
            .collect::<anyhow::Result<Vec<_>>>()?;
        config.admission = Admission::Allow(owners);
    }
    let file = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("could not read the proxy config {}", path.display()))?;
            toml::from_str::<ConfigFile>(&text).with_context(|| format!("{}", path.display()))?
        }
        None => ConfigFile::default(),
    };
    config.metrics = args.metrics.or(file.metrics);
    let mut mqtt = file.mqtt.clone();
    if args.mqtt.is_some() || args.mqtt_cluster.is_some() {
        let m = mqtt.get_or_insert_with(Default::default);
        if let Some(url) = &args.mqtt {
            m.url = Some(url.clone());
        }
        if let Some(cluster) = &args.mqtt_cluster {
            m.cluster = Some(cluster.clone());
        }
    }
    if let Some(m) = mqtt {
        let checked = wtd_telemetry::MqttConfig::from_file(&m, std::env::var("WTD_MQTT_PASSWORD").ok())
            .context("the MQTT bridge")?;
        config.mqtt = Some(checked);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let config_mqtt_url = config.mqtt.as_ref().map(|m| m.url());
    runtime.block_on(async move {
        let socket = std::net::UdpSocket::bind(args.listen)
            .with_context(|| format!("could not listen on {} (is another proxy running?)", args.listen))?;
        let proxy = Proxy::bind(config, socket)?;
        let local = proxy.local_addr()?;
        let addrs = if !args.advertise.is_empty() {
            args.advertise.clone()
        } else if local.ip().is_unspecified() {
            vec![SocketAddr::from(([127, 0, 0, 1], local.port()))]
        } else {
            vec![local]
        };
        let ticket = proxy.ticket(&addrs);
        if let Some(m) = &config_mqtt_url {
            println!("MQTT bridge to {m}");
        }
        if let Some(addr) = proxy.metrics_addr() {
            println!("metrics at http://{addr}/metrics");
        }
        wtd_store::atomic::write_atomic(&state_dir.join("ticket.txt"), format!("{ticket}\n").as_bytes(), 0o644)?;
        println!("wtd proxy {} listening on {local}", proxy.id());
        if local.ip().is_unspecified() && args.advertise.is_empty() {
            println!("(the ticket names 127.0.0.1; for other machines, add --advertise <this machine's LAN ip>:{})", local.port());
        }
        println!("Join ticket (agents: `proxy = \"...\"` in agent.toml; people: `wtd join ...`):");
        println!("{ticket}");
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        let signals = async move {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            log::info!("stopping");
            stop.cancel();
            anyhow::Ok(())
        };
        let (_, signal_result) = tokio::join!(proxy.run(shutdown.clone()), async {
            tokio::select! {
                r = signals => r,
                _ = shutdown.cancelled() => Ok(()),
            }
        });
        signal_result
    })
}
