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
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
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
