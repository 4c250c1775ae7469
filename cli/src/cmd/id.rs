//! `wtd id`: print your public id and fingerprint.

use crate::context::Context;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print only the id, for scripts.
    #[arg(long)]
    pub quiet: bool,
}

pub fn run(ctx: &Context, args: Args) -> anyhow::Result<()> {
    let key = ctx.identity()?.public();
    println!("{key}");
    if !args.quiet {
        println!("fingerprint: {}", key.fingerprint());
    }
    Ok(())
}
