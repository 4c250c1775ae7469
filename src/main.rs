//! The `wtd` binary: parse the command line, set up logging, hand over to a library.
//! Everything interesting lives in the crates (`wtd-cli`, and soon the agent and proxy).

use std::process::ExitCode;

use clap::Parser;

/// Share a cluster of Raspberry Pis safely.
#[derive(Debug, Parser)]
#[command(name = "wtd", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Run the agent daemon: offer this machine's missions through a proxy.
    Agent(wtd_agent::cli::Args),
    /// Apply wtd.toml from the boot partition (the Pi image runs this at every boot).
    Firstboot(wtd_agent::firstboot::Args),
    /// Run a discovery proxy (agents and people connect out to it).
    Proxy(wtd_proxy::cli::Args),
    #[command(flatten)]
    User(wtd_cli::Command),
}

fn main() -> ExitCode {
    // `wtd agent-box ...`: the agent starting one of its calls in the mission box. Not a
    // clap subcommand: it is internal, takes the handler's argv verbatim after `--`, and
    // must not print help or suggestions.
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == wtd_agent::sandbox::BOX_COMMAND) {
        wtd_agent::sandbox::box_main(&[wtd_agent::sandbox::BOX_COMMAND], &args[2..]);
    }
    exit_with_parent();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Agent(args) => wtd_agent::cli::run(args),
        Command::Firstboot(args) => {
            init_logging();
            wtd_agent::firstboot::run(args)
        }
        Command::Proxy(args) => {
            init_logging();
            wtd_proxy::cli::run(args)
        }
        Command::User(command) => {
            quiet_on_broken_pipe();
            wtd_cli::run(command)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if is_broken_pipe(&e) => ExitCode::from(BROKEN_PIPE),
        Err(e) => {
            eprintln!("error: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  because: {cause}");
            }
            ExitCode::from(wtd_cli::exit::code_of(&e))
        }
    }
}

/// The exit status of a process that wrote to a pipe nobody reads any more (`wtd ls | head
/// -1`): what a shell shows for one killed by SIGPIPE (128 + 13), as `cat` or `ls` would be.
const BROKEN_PIPE: u8 = 141;

/// A user command whose reader went away stops quietly, as Unix tools do. Rust ignores
/// SIGPIPE (so the daemons' sockets report EPIPE instead of killing them), which makes a
/// write to a closed pipe fail and `println!` panic with a backtrace. Changing the signal's
/// disposition needs unsafe code, so instead that one panic becomes exit status 141 with
/// nothing printed; every other panic is reported as before. Only for user commands: a
/// daemon that cannot write is a fault worth a report.
fn quiet_on_broken_pipe() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("");
        // std's words for it: "failed printing to stdout: Broken pipe (os error 32)".
        if message.starts_with("failed printing to std") && message.contains("Broken pipe") {
            std::process::exit(BROKEN_PIPE.into());
        }
        report(info);
    }));
}

/// Whether a command failed because its output's reader went away (a `write!` to stdout
/// that returned EPIPE): then there is nobody to tell, and nothing to report.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Daemon logs: to the systemd journal (with structured fields) under systemd, else
/// stderr; `RUST_LOG` picks the level (default info). The agent's logger serves both.
fn init_logging() {
    wtd_agent::logging::init(0);
}

/// Set by `wtd up` for the proxy and agents it starts: the parent's pid.
const EXIT_WITH_PARENT: &str = "WTD_EXIT_WITH_PARENT";

/// Under `wtd up`, its proxy and agents get SIGTERM (and stop cleanly) when it dies, even
/// by SIGKILL, which gives it no chance to stop them itself. If it died before this ran,
/// there is nobody left to serve: exit at once.
fn exit_with_parent() {
    let Some(parent) = std::env::var(EXIT_WITH_PARENT)
        .ok()
        .and_then(|p| p.parse::<i32>().ok())
    else {
        return;
    };
    if let Err(e) = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM) {
        eprintln!("warning: cannot arrange to stop with wtd up ({e}); stop this process by hand");
    }
    if nix::unistd::getppid().as_raw() != parent {
        std::process::exit(0);
    }
}
