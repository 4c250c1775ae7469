//! `wtd proxy`: run a discovery proxy.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;
use wtd_keys::OwnerKey;

use crate::capacity::{ConnectionLimits, Deployment};
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
    /// ...), metrics, the deployment and connection limits; see proxy.example.toml. The
    /// flags override its values.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9464).
    #[arg(long, value_name = "IP:PORT")]
    pub metrics: Option<SocketAddr>,
    /// Serve the classroom dashboard, a read-only live web page, at http://ADDR/ (e.g.
    /// 127.0.0.1:8080; 0.0.0.0:8080 to show it on other machines of the LAN). Off unless given.
    #[arg(long, value_name = "IP:PORT")]
    pub dashboard: Option<SocketAddr>,
    /// The machine hosting the proxy, which sets the connection limits: `pi` (128 in all,
    /// 32 per address; the default) or `laptop` (1024 in all, 64 per address).
    #[arg(long, value_enum)]
    pub deployment: Option<Deployment>,
    /// Connections kept at once; more are refused (overrides the deployment's number).
    #[arg(long, value_name = "N")]
    pub max_connections: Option<usize>,
    /// Connections kept at once from one IP address (overrides the deployment's number).
    #[arg(long, value_name = "N")]
    pub max_connections_per_ip: Option<usize>,
    /// Agents kept in the roster at once (default 512); more are refused as "full".
    #[arg(long, value_name = "N")]
    pub max_agents: Option<usize>,
    /// Announce this proxy on the LAN with mDNS (`_wtd._udp.local.`: its id and port, what
    /// a ticket holds), so agents with `proxy = "<id>"` or `"any-on-lan"` and `wtd join
    /// --lan` find it without a ticket. The default when listening on a LAN address or
    /// 0.0.0.0; this forces it on a loopback address too.
    #[arg(long, conflicts_with = "no_announce")]
    pub announce: bool,
    /// Never announce this proxy on the LAN.
    #[arg(long)]
    pub no_announce: bool,
    /// Announce only on this network interface (repeat for several; default every one),
    /// e.g. the classroom's Wi-Fi and not the school network.
    #[arg(long = "lan-interface", value_name = "NAME")]
    pub lan_interfaces: Vec<String>,
    /// Jobs (`wtd push`) one caller key may have waiting at once (default 100); more are
    /// refused with "queue full for your key".
    #[arg(long, value_name = "N")]
    pub max_jobs_per_caller: Option<usize>,
    /// Jobs waiting under one owner's authority at once, from every caller (default 1000).
    #[arg(long, value_name = "N")]
    pub max_jobs_per_owner: Option<usize>,
}

/// Whether to announce the proxy on the LAN: asked for, or listening where the LAN can
/// reach it (a loopback-only proxy is unreachable from other machines, so announcing it
/// would only advertise an address no one can use).
fn should_announce(args: &Args) -> bool {
    if args.no_announce {
        return false;
    }
    args.announce || !args.lan_interfaces.is_empty() || !args.listen.ip().is_loopback()
}

/// `proxy.toml`: the MQTT bridge, metrics and connection limits (the rest are flags).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    /// The machine hosting the proxy: "pi" or "laptop".
    deployment: Option<Deployment>,
    /// Overrides the deployment's total connection limit.
    max_connections: Option<usize>,
    /// Overrides the deployment's per-address connection limit.
    max_connections_per_ip: Option<usize>,
    /// Agents kept in the roster at once.
    max_agents: Option<usize>,
    /// Jobs one caller key may have waiting at once.
    max_jobs_per_caller: Option<usize>,
    /// Jobs waiting under one owner's authority at once.
    max_jobs_per_owner: Option<usize>,
    /// The MQTT bridge; see `wtd_telemetry::config`.
    mqtt: Option<wtd_telemetry::config::MqttFile>,
    /// Where to serve Prometheus metrics.
    metrics: Option<SocketAddr>,
    /// Where to serve the dashboard.
    dashboard: Option<SocketAddr>,
    /// How much and how long signed events are kept, for everyone and per owner.
    events: Option<EventsFile>,
    /// The job queue's bounds and retention, for everyone and per owner.
    jobs: Option<JobsFile>,
}

/// `[jobs]`: bounds and retention of the job queue (the defaults are in `defaults.rs`).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct JobsFile {
    /// Jobs one caller key may have waiting at once (as `max_jobs_per_caller`).
    max_per_caller: Option<usize>,
    /// Jobs waiting under one owner's authority at once (as `max_jobs_per_owner`).
    max_waiting: Option<usize>,
    /// Bytes of waiting jobs and kept results under one owner's authority.
    max_bytes: Option<usize>,
    /// How long a finished job is listed and its result kept ("1d", "12h").
    keep_finished: Option<String>,
    /// Another share for some owners.
    #[serde(default)]
    owner: Vec<OwnerJobsFile>,
}

/// `[[jobs.owner]]`: one owner's share of the queue.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct OwnerJobsFile {
    owner: String,
    max_waiting: Option<usize>,
    max_bytes: Option<usize>,
    keep_finished: Option<String>,
}

/// `base` with what a `[jobs]` or `[[jobs.owner]]` table sets, each value checked.
fn owner_jobs(
    base: crate::jobs::OwnerRetention,
    max_waiting: Option<usize>,
    max_bytes: Option<usize>,
    keep_finished: Option<&str>,
) -> anyhow::Result<crate::jobs::OwnerRetention> {
    let mut r = base;
    if let Some(n) = max_waiting {
        anyhow::ensure!(
            n >= 1,
            "jobs max_waiting is 0, which would refuse every push; use at least 1"
        );
        r.max_waiting = n;
    }
    if let Some(b) = max_bytes {
        anyhow::ensure!(
            b >= defaults::MIN_JOB_BYTES_PER_OWNER,
            "jobs max_bytes is {b}; keep at least {} (one job with the largest arguments)",
            defaults::MIN_JOB_BYTES_PER_OWNER
        );
        r.max_bytes = b;
    }
    if let Some(a) = keep_finished {
        let d = humantime::parse_duration(a)
            .with_context(|| format!("jobs keep_finished `{a}` is not a duration (try \"1d\" or \"12h\")"))?;
        anyhow::ensure!(
            (defaults::MIN_JOB_KEEP_FINISHED..=defaults::MAX_JOB_KEEP_FINISHED).contains(&d),
            "jobs keep_finished `{a}` is out of range: keep finished jobs between {} and {}",
            humantime::format_duration(defaults::MIN_JOB_KEEP_FINISHED),
            humantime::format_duration(defaults::MAX_JOB_KEEP_FINISHED)
        );
        r.keep_finished = d;
    }
    Ok(r)
}

/// The job queue's limits: `[jobs]` (or the older top-level `max_jobs_per_caller` and
/// `max_jobs_per_owner`, not both), then the flags over them, then each `[[jobs.owner]]`
/// on top of that (what a line does not set, it takes from the rest).
fn job_limits(
    flag_per_caller: Option<usize>,
    flag_per_owner: Option<usize>,
    file: &ConfigFile,
) -> anyhow::Result<crate::jobs::JobLimits> {
    let mut limits = crate::jobs::JobLimits::default();
    let empty = JobsFile::default();
    let jobs = file.jobs.as_ref().unwrap_or(&empty);
    anyhow::ensure!(
        file.max_jobs_per_caller.is_none() || jobs.max_per_caller.is_none(),
        "proxy.toml sets both max_jobs_per_caller and [jobs] max_per_caller; keep one"
    );
    anyhow::ensure!(
        file.max_jobs_per_owner.is_none() || jobs.max_waiting.is_none(),
        "proxy.toml sets both max_jobs_per_owner and [jobs] max_waiting; keep one"
    );
    if let Some(n) = flag_per_caller
        .or(jobs.max_per_caller)
        .or(file.max_jobs_per_caller)
    {
        anyhow::ensure!(
            n >= 1,
            "max_jobs_per_caller is 0, which would refuse every push; use at least 1"
        );
        limits.per_caller = n;
    }
    limits.per_owner = owner_jobs(
        limits.per_owner,
        flag_per_owner.or(jobs.max_waiting).or(file.max_jobs_per_owner),
        jobs.max_bytes,
        jobs.keep_finished.as_deref(),
    )?;
    for o in &jobs.owner {
        let owner: OwnerKey = o
            .owner
            .parse()
            .with_context(|| format!("[[jobs.owner]] owner `{}` is not an owner id (wtd1...)", o.owner))?;
        let share = owner_jobs(
            limits.per_owner,
            o.max_waiting,
            o.max_bytes,
            o.keep_finished.as_deref(),
        )
        .with_context(|| format!("[[jobs.owner]] for {}", owner.key().short()))?;
        anyhow::ensure!(
            limits.owners.insert(owner, share).is_none(),
            "[[jobs.owner]] lists the owner {} twice; keep one line per owner",
            owner.key().short()
        );
    }
    Ok(limits)
}

/// `[events]`: retention of signed events (the defaults are in `defaults.rs`).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct EventsFile {
    /// Bytes of events kept per owner, over all its agents' logs.
    max_bytes: Option<u64>,
    /// How long events are kept ("7d", "12h").
    max_age: Option<String>,
    /// Another retention for some owners' agents.
    #[serde(default)]
    owner: Vec<OwnerRetention>,
}

/// `[[events.owner]]`: one owner's retention.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct OwnerRetention {
    owner: String,
    max_bytes: Option<u64>,
    max_age: Option<String>,
}

fn retention(
    base: crate::streams::Retention,
    max_bytes: Option<u64>,
    max_age: Option<&str>,
) -> anyhow::Result<crate::streams::Retention> {
    let mut r = base;
    if let Some(b) = max_bytes {
        anyhow::ensure!(
            b >= 64 * 1024,
            "events max_bytes is {b}; keep at least 65536 (64 KiB)"
        );
        r.max_bytes = b;
    }
    if let Some(a) = max_age {
        r.max_age = humantime::parse_duration(a)
            .with_context(|| format!("events max_age `{a}` is not a duration (try \"7d\" or \"12h\")"))?;
    }
    Ok(r)
}

fn events_config(file: &Option<EventsFile>) -> anyhow::Result<crate::streams::EventsConfig> {
    let mut config = crate::streams::EventsConfig::default();
    let Some(f) = file else { return Ok(config) };
    config.default = retention(config.default, f.max_bytes, f.max_age.as_deref())?;
    for o in &f.owner {
        let owner: OwnerKey = o.owner.parse().with_context(|| {
            format!(
                "[[events.owner]] owner `{}` is not an owner id (wtd1...)",
                o.owner
            )
        })?;
        let r = retention(config.default, o.max_bytes, o.max_age.as_deref())?;
        config.owners.insert(owner, r);
    }
    Ok(config)
}

/// Parses and checks the text of a proxy.toml as `wtd proxy --config` does, except that
/// the files it names (MQTT password, CA) are not read. For the fuzz targets.
pub fn check_config_text(text: &str) -> anyhow::Result<()> {
    let file = toml::from_str::<ConfigFile>(text)?;
    connection_limits(&args_from_nothing(), &file)?;
    events_config(&file.events)?;
    job_limits(None, None, &file)?;
    if let Some(m) = &file.mqtt {
        let mut m = m.clone();
        m.password_file = None;
        m.ca_file = None;
        wtd_telemetry::MqttConfig::from_file(&m, None).context("the MQTT bridge")?;
    }
    Ok(())
}

/// `wtd proxy` with no flags.
fn args_from_nothing() -> Args {
    Args {
        listen: SocketAddr::from(([0, 0, 0, 0], defaults::PORT)),
        state_dir: None,
        allow: Vec::new(),
        advertise: Vec::new(),
        mqtt: None,
        mqtt_cluster: None,
        config: None,
        metrics: None,
        dashboard: None,
        deployment: None,
        max_connections: None,
        max_connections_per_ip: None,
        max_agents: None,
        announce: false,
        no_announce: false,
        lan_interfaces: Vec::new(),
        max_jobs_per_caller: None,
        max_jobs_per_owner: None,
    }
}

/// The connection limits from the flags, else the config file, else the deployment's.
fn connection_limits(args: &Args, file: &ConfigFile) -> anyhow::Result<ConnectionLimits> {
    let deployment = args.deployment.or(file.deployment).unwrap_or_default();
    ConnectionLimits::for_deployment(deployment)
        .with_overrides(
            args.max_connections.or(file.max_connections),
            args.max_connections_per_ip.or(file.max_connections_per_ip),
        )
        .context("the proxy's connection limits (--max-connections, --max-connections-per-ip or proxy.toml)")
}

/// The address a browser opens for a dashboard bound to `addr` (0.0.0.0 is no address to
/// open: this machine is 127.0.0.1 to its own browser).
pub fn dashboard_url(addr: SocketAddr) -> String {
    let mut addr = addr;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    format!("http://{addr}/")
}

/// Runs the proxy until Ctrl-C or SIGTERM.
pub fn run(args: Args) -> anyhow::Result<()> {
    let state_dir = match args.state_dir.clone() {
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
    config.dashboard = args.dashboard.or(file.dashboard);
    config.events = events_config(&file.events)?;
    let deployment = args.deployment.or(file.deployment).unwrap_or_default();
    let connections = connection_limits(&args, &file)?;
    connections.apply(&mut config.limits);
    if let Some(n) = args.max_agents.or(file.max_agents) {
        anyhow::ensure!(
            n >= 1,
            "max_agents is 0, which would refuse every agent; use at least 1"
        );
        config.max_agents = n;
    }
    config.job_limits = job_limits(args.max_jobs_per_caller, args.max_jobs_per_owner, &file)?;
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
        // Written before the ticket, so whoever waits for the ticket finds it (`wtd up`).
        let dashboard_file = state_dir.join("dashboard.txt");
        match proxy.dashboard_addr() {
            Some(addr) => {
                let url = dashboard_url(addr);
                println!("dashboard at {url}");
                wtd_store::atomic::write_atomic(&dashboard_file, format!("{url}\n").as_bytes(), 0o644)?;
            }
            None => {
                let _ = std::fs::remove_file(&dashboard_file);
            }
        }
        wtd_store::atomic::write_atomic(&state_dir.join("ticket.txt"), format!("{ticket}\n").as_bytes(), 0o644)?;
        println!("wtd proxy {} listening on {local}", proxy.id());
        println!(
            "connection limits: {} in all, {} per address (deployment {deployment})",
            connections.max_connections, connections.max_connections_per_ip
        );
        if local.ip().is_unspecified() && args.advertise.is_empty() {
            println!("(the ticket names 127.0.0.1; for other machines, add --advertise <this machine's LAN ip>:{})", local.port());
        }
        println!("Join ticket (agents: `proxy = \"...\"` in agent.toml; people: `wtd join ...`):");
        println!("{ticket}");
        // Held for the proxy's life; dropping it withdraws the announcement.
        let _announcer = if should_announce(&args) {
            match wtd_transport::lan::Announcer::start(&proxy.id(), local.port(), &args.lan_interfaces) {
                Ok(a) => {
                    println!(
                        "announced on the LAN (mDNS {}); agents with proxy = \"{}\" or \"any-on-lan\" find it",
                        wtd_transport::lan::SERVICE_TYPE,
                        proxy.id()
                    );
                    Some(a)
                }
                // Asked for by name: a proxy that silently is not found would be a puzzle.
                Err(e) if args.announce || !args.lan_interfaces.is_empty() => {
                    return Err(anyhow::Error::new(e).context("--announce"));
                }
                // On by default: tickets still work, so say so and go on.
                Err(e) => {
                    log::warn!("not announced on the LAN: {e}; join tickets still work");
                    None
                }
            }
        } else {
            None
        };
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    #[derive(Debug, clap::Parser)]
    struct Cmd {
        #[command(flatten)]
        args: Args,
    }

    fn args(flags: &[&str]) -> Args {
        Cmd::try_parse_from(std::iter::once("proxy").chain(flags.iter().copied()))
            .expect("flags parse")
            .args
    }

    fn file(text: &str) -> ConfigFile {
        toml::from_str(text).expect("config parses")
    }

    #[test]
    fn the_default_is_the_pi_profile() {
        let l = connection_limits(&args(&[]), &ConfigFile::default()).unwrap();
        assert_eq!(l, ConnectionLimits::for_deployment(Deployment::Pi));
    }

    #[test]
    fn a_laptop_deployment_from_the_flag_or_the_file() {
        let laptop = ConnectionLimits::for_deployment(Deployment::Laptop);
        let from_flag =
            connection_limits(&args(&["--deployment", "laptop"]), &ConfigFile::default()).unwrap();
        assert_eq!(from_flag, laptop);
        let from_file = connection_limits(&args(&[]), &file("deployment = \"laptop\"")).unwrap();
        assert_eq!(from_file, laptop);
    }

    #[test]
    fn flags_override_the_file_and_the_file_overrides_the_deployment() {
        let f = file("deployment = \"laptop\"\nmax_connections = 300\nmax_connections_per_ip = 20");
        let l = connection_limits(&args(&[]), &f).unwrap();
        assert_eq!((l.max_connections, l.max_connections_per_ip), (300, 20));
        let l = connection_limits(&args(&["--max-connections-per-ip", "5"]), &f).unwrap();
        assert_eq!((l.max_connections, l.max_connections_per_ip), (300, 5));
    }

    #[test]
    fn unusable_limits_are_refused_with_what_to_do() {
        let err = connection_limits(&args(&["--max-connections", "0"]), &ConfigFile::default()).unwrap_err();
        assert!(format!("{err:#}").contains("use at least 1"), "{err:#}");
        // 33 per address is above a total of 20.
        let err = connection_limits(
            &args(&["--max-connections", "20", "--max-connections-per-ip", "33"]),
            &ConfigFile::default(),
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("above max_connections"), "{err:#}");
    }

    #[test]
    fn an_unknown_deployment_is_refused() {
        let err = Cmd::try_parse_from(["proxy", "--deployment", "mainframe"]).unwrap_err();
        assert!(err.to_string().contains("possible values: pi, laptop"), "{err}");
        let err = toml::from_str::<ConfigFile>("deployment = \"mainframe\"").unwrap_err();
        assert!(err.to_string().contains("unknown variant"), "{err}");
        let err = toml::from_str::<ConfigFile>("max_conections = 3").unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
    }

    #[test]
    fn the_proxy_announces_itself_where_the_lan_can_reach_it() {
        assert!(should_announce(&args(&[])), "0.0.0.0 by default");
        assert!(should_announce(&args(&["--listen", "192.168.1.10:4433"])));
        assert!(
            !should_announce(&args(&["--listen", "127.0.0.1:4433"])),
            "loopback: nobody else can reach it"
        );
        assert!(should_announce(&args(&["--listen", "127.0.0.1:0", "--announce"])));
        assert!(should_announce(&args(&[
            "--listen",
            "127.0.0.1:0",
            "--lan-interface",
            "lo"
        ])));
        assert!(!should_announce(&args(&["--no-announce"])));
        assert!(Cmd::try_parse_from(["proxy", "--announce", "--no-announce"]).is_err());
    }

    #[test]
    fn the_example_config_parses() {
        let text = include_str!("../../proxy.example.toml");
        let f = file(text);
        assert!(connection_limits(&args(&[]), &f).is_ok());
        check_config_text(text).expect("the example is a valid config");
        assert!(check_config_text("max_connections = 0").is_err());
        assert!(
            check_config_text("[events]\nmax_bytes = 10").is_err(),
            "too small"
        );
        assert!(check_config_text("[events]\nmax_age = \"soon\"").is_err());
        assert!(check_config_text("[[events.owner]]\nowner = \"alice\"").is_err());
    }

    #[test]
    fn the_job_queue_is_configured_per_owner_and_bad_values_are_refused() {
        let alice = wtd_keys::SecretKey::from_seed(&[1; 32]).public();
        let bob = wtd_keys::SecretKey::from_seed(&[2; 32]).public();
        let text = format!(
            "[jobs]\nmax_per_caller = 7\nmax_waiting = 50\nmax_bytes = 1048576\nkeep_finished = \"2h\"\n\
             [[jobs.owner]]\nowner = \"{alice}\"\nmax_waiting = 500\nkeep_finished = \"7d\"\n"
        );
        let l = job_limits(None, None, &file(&text)).unwrap();
        assert_eq!(l.per_caller, 7);
        assert_eq!(l.per_owner.max_waiting, 50);
        assert_eq!(l.per_owner.max_bytes, 1_048_576);
        assert_eq!(l.per_owner.keep_finished, std::time::Duration::from_secs(7200));
        let a = l.of(&OwnerKey(alice));
        assert_eq!(a.max_waiting, 500);
        assert_eq!(
            a.max_bytes, 1_048_576,
            "what her line does not set comes from [jobs]"
        );
        assert_eq!(a.keep_finished, std::time::Duration::from_secs(7 * 86400));
        assert_eq!(l.of(&OwnerKey(bob)), l.per_owner);
        // The flags still win over the file, and the older top-level keys still work.
        let l = job_limits(Some(3), Some(9), &file(&text)).unwrap();
        assert_eq!((l.per_caller, l.per_owner.max_waiting), (3, 9));
        assert_eq!(l.of(&OwnerKey(alice)).max_waiting, 500);
        let l = job_limits(
            None,
            None,
            &file("max_jobs_per_caller = 4\nmax_jobs_per_owner = 8"),
        )
        .unwrap();
        assert_eq!((l.per_caller, l.per_owner.max_waiting), (4, 8));
        assert_eq!(
            job_limits(None, None, &file("")).unwrap(),
            crate::jobs::JobLimits::default()
        );
        // Every bad value is refused, with what is wrong.
        for (bad, says) in [
            ("[jobs]\nmax_waiting = 0".to_string(), "max_waiting is 0"),
            (
                "[jobs]\nmax_per_caller = 0".to_string(),
                "max_jobs_per_caller is 0",
            ),
            ("[jobs]\nmax_bytes = 100".to_string(), "keep at least"),
            ("[jobs]\nkeep_finished = \"soon\"".to_string(), "not a duration"),
            ("[jobs]\nkeep_finished = \"1s\"".to_string(), "out of range"),
            ("[jobs]\nkeep_finished = \"400d\"".to_string(), "out of range"),
            ("[jobs]\nmax_age = \"1d\"".to_string(), "unknown field"),
            ("[[jobs.owner]]\nowner = \"alice\"".to_string(), "not an owner id"),
            (
                format!("[[jobs.owner]]\nowner = \"{alice}\"\nmax_waiting = 0"),
                "max_waiting is 0",
            ),
            (
                format!("[[jobs.owner]]\nowner = \"{alice}\"\n[[jobs.owner]]\nowner = \"{alice}\""),
                "twice",
            ),
            (
                "max_jobs_per_owner = 5\n[jobs]\nmax_waiting = 6".to_string(),
                "keep one",
            ),
            (
                "max_jobs_per_caller = 5\n[jobs]\nmax_per_caller = 6".to_string(),
                "keep one",
            ),
        ] {
            let err = check_config_text(&bad).unwrap_err();
            let text = format!("{err:#}");
            assert!(text.contains(says), "{bad}: {text}");
        }
    }
}
