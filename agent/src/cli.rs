//! `wtd agent`: the command that runs the daemon. The binary only parses [`Args`] and calls
//! [`run`]; everything else is here and in the library.
//!
//! ```text
//! wtd agent                                  # /etc/wtd/agent.toml, as the systemd unit does
//! wtd agent --config ./agent.toml -v         # a test agent on a laptop, with debug lines
//! wtd agent --check                          # check the config and missions, then exit
//! ```
//!
//! SIGTERM (`systemctl stop`) or SIGINT (Ctrl-C) stops the agent gracefully: it tells the
//! proxy it is leaving, so it vanishes from `wtd ls` at once. A second signal stops it
//! immediately.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio_util::sync::CancellationToken;

use crate::config::AgentConfig;
use crate::missions::{Catalogue, Run};
use crate::notify::Notifier;
use crate::{defaults, logging};

/// Run the wtd agent: advertise this machine's missions to the proxy.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// The agent's configuration file.
    #[arg(long, value_name = "PATH", default_value = defaults::CONFIG_PATH)]
    pub config: PathBuf,
    /// Log more: -v for wtd's debug lines, -vv for everything (QUIC and TLS too).
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Check the configuration and the mission files, show what would be advertised, and
    /// exit (non-zero if a mission file has a problem). Changes nothing on disk.
    #[arg(long)]
    pub check: bool,
}

/// Runs `wtd agent` until SIGTERM or SIGINT.
pub fn run(args: Args) -> anyhow::Result<()> {
    logging::init(args.verbose);
    let config = AgentConfig::load(&args.config)?;
    if args.check {
        return check(&config);
    }
    // One thread is plenty: the agent waits on the network almost all the time, and a
    // second thread would cost a Pi Zero memory for nothing.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("could not start the async runtime")?;
    let result = runtime.block_on(run_until_signalled(config));
    // A sensor read may still be running on a blocking thread; it ends on its own, and
    // nothing is lost by not waiting for it.
    runtime.shutdown_timeout(Duration::from_millis(100));
    result
}

async fn run_until_signalled(config: AgentConfig) -> anyhow::Result<()> {
    let mut signals = StopSignals::new().context("could not listen for SIGTERM and SIGINT")?;
    let shutdown = CancellationToken::new();
    // Started (config, identity, logs, missions): tell systemd, and feed its watchdog from
    // this same event loop, so a stuck agent is restarted.
    let started = crate::Agent::new(config)?;
    let notifier = Notifier::from_env();
    notifier.ready(&format!("agent {} connecting to the proxy", started.id()));
    let watchdog = notifier.feed_watchdog(shutdown.clone());
    let agent = async {
        let run = started.run(shutdown.clone());
        tokio::pin!(run);
        tokio::select! {
            result = &mut run => result,
            // Returns at once without a watchdog, or on shutdown: the agent goes on.
            () = watchdog => run.await,
        }
    };
    tokio::pin!(agent);
    tokio::select! {
        result = &mut agent => return Ok(result?),
        name = signals.recv() => {
            log::info!("{name} received: stopping (again to stop at once)");
            shutdown.cancel();
        }
    }
    tokio::select! {
        result = &mut agent => Ok(result?),
        name = signals.recv() => {
            log::warn!("{name} received again: stopping at once");
            Ok(())
        }
    }
}

/// SIGTERM and SIGINT, listened for from the start so none is missed.
struct StopSignals {
    term: Signal,
    int: Signal,
}

impl StopSignals {
    fn new() -> std::io::Result<Self> {
        Ok(StopSignals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    /// Waits for the next stop signal and names it.
    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}

/// `--check`: what the agent would advertise, without touching the state directory.
fn check(config: &AgentConfig) -> anyhow::Result<()> {
    let catalogue = Catalogue::load(&config.missions_dir);
    println!("name:      {}", config.name);
    println!("proxy:     {}", config.proxy);
    for owner in &config.owners {
        println!("owner:     {owner}");
    }
    println!("state dir: {}", config.state_dir.display());
    println!("missions ({}):", config.missions_dir.display());
    for mission in catalogue.missions() {
        println!("  {} {}  {}", mission.name, mission.version, mission.description);
        for f in &mission.functions {
            let runs = match &f.run {
                Run::Exec(argv) => format!("{argv:?}"),
                Run::Builtin(_) => "built in".to_string(),
            };
            let limits = match &f.run {
                Run::Exec(_) => format!(
                    ", memory {}, {} processes, {} open files",
                    crate::missions::show_size(f.limits.memory),
                    f.limits.pids,
                    f.limits.open_files
                ),
                Run::Builtin(_) => String::new(),
            };
            println!(
                "    {}/{}  {}  (timeout {}, output cap {} bytes{limits}{})",
                mission.name,
                f.name,
                runs,
                humantime::format_duration(f.timeout),
                f.output_cap,
                if f.idempotent { ", idempotent" } else { "" }
            );
        }
    }
    for warning in catalogue.warnings() {
        println!("warning:   {warning}");
    }
    if !catalogue.warnings().is_empty() {
        anyhow::bail!(
            "{} mission file problem(s); the agent would skip those files",
            catalogue.warnings().len()
        );
    }
    Ok(())
}
