//! The `wtd` binary: parse the command line, set up logging, hand over to a library.
//! Everything interesting lives in the crates (`wtd-cli`, and soon the agent and proxy).

use std::process::ExitCode;

use clap::Parser;

/// Share a cluster of Raspberry Pis safely.
#[derive(Debug, Parser)]
#[command(name = "wtd", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: wtd_cli::Command,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match wtd_cli::run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  because: {cause}");
            }
            ExitCode::FAILURE
        }
    }
}
