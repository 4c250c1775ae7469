//! The `wtd` command line, as a library: each subcommand is one file under [`cmd`], and
//! the `wtd` binary only parses arguments and calls [`run`].
//!
//! This crate is application code, so it uses `anyhow` for errors; every message it
//! prints says what happened and what to do next.
//!
//! Exit codes are listed in [`exit`].
//!
//! # Layout
//! - [`adoptions`]: which agents each owner adopted, from logs verified here.
//! - [`cmd`]: one module per subcommand.
//! - [`context`]: the user's home, identity, keyring and owner log, loaded on demand.
//! - [`defaults`]: the CLI's numbers, each with its reason.
//! - [`exit`]: exit codes, for scripts.
//! - [`lessons`]: which grants each lesson label stands for (`wtd revoke --label`).
//! - [`parse`]: parsing of rates, durations and agent lists.
//! - [`proxy`]: the joined proxy: where it is, and one request at a time.
//! - [`roster`]: a class roster (`name id` per line), checked all or nothing.
//! - [`show`]: how grants and their status are printed.
#![forbid(unsafe_code)]

pub mod adoptions;
pub mod cmd;
pub mod context;
pub mod defaults;
pub mod exit;
pub mod lessons;
pub mod parse;
pub mod proxy;
pub mod roster;
pub mod show;

use clap::Subcommand;

/// The user-facing subcommands (the binary adds `agent` and `proxy`).
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create your identity (an ed25519 key) in $WTD_HOME or ~/.config/wtd.
    Init(cmd::init::Args),
    /// Print your public id, to give to people who will grant you missions.
    Id(cmd::id::Args),
    /// Name other people's ids: `wtd keys add bob wtd1...`.
    #[command(subcommand)]
    Keys(cmd::keys::Command),
    /// Let someone call one of your missions.
    Grant(cmd::grant::Args),
    /// List grants you issued and received, or import one from a ticket.
    Grants(cmd::grants::Args),
    /// Cancel grants, permanently.
    Revoke(cmd::revoke::Args),
    /// Say, with your key, that agents are yours: `wtd adopt pi-1`, or `wtd adopt --pending`
    /// for every agent that proves an enrollment token you issued.
    Adopt(cmd::adopt::Args),
    /// Say, with your key, that an agent is no longer yours; your grants stop reaching it.
    Disown(cmd::disown::Args),
    /// Issue one-time enrollment tokens for headless Pis (`wtd enroll new`), or list them.
    Enroll(cmd::enroll::Args),
    /// Remember a proxy from its join ticket.
    Join(cmd::join::Args),
    /// List the agents online: load, missions, tags.
    Ls(cmd::ls::Args),
    /// Send your grants and revocations to the proxy (grant and revoke do it themselves).
    Sync(cmd::sync::Args),
    /// Call a function on the best agent for it: `wtd call demo/echo '{"msg":"hi"}'`.
    Call(cmd::call::Args),
    /// Queue a call on the proxy; it runs as soon as an agent can take it: `wtd push demo/echo '{}'`.
    Push(cmd::push::Args),
    /// List your queued calls and what became of each.
    Jobs(cmd::jobs::Args),
    /// Print a queued call's result (`wtd call --async`), or wait for it with `--wait`.
    Result(cmd::result::Args),
    /// List the receipts `wtd call --receipt` kept, or check one offline.
    Receipts(cmd::receipts::Args),
    /// Stream a mission's signed events as JSON lines, each verified:
    /// `wtd subscribe social/unfriend --from start`.
    Subscribe(cmd::subscribe::Args),
    /// Explain, as an owner, whether someone may call a function on your agents, and why.
    Why(cmd::why::Args),
    /// Run a whole cluster on this machine: a proxy and some agents (Ctrl-C stops it).
    Up(cmd::up::Args),
}

/// Runs one subcommand.
pub fn run(command: Command) -> anyhow::Result<()> {
    let ctx = context::Context::from_env()?;
    match command {
        Command::Init(a) => cmd::init::run(&ctx, a),
        Command::Id(a) => cmd::id::run(&ctx, a),
        Command::Keys(c) => cmd::keys::run(&ctx, c),
        Command::Grant(a) => cmd::grant::run(&ctx, a),
        Command::Grants(a) => cmd::grants::run(&ctx, a),
        Command::Revoke(a) => cmd::revoke::run(&ctx, a),
        Command::Join(a) => cmd::join::run(&ctx, a),
        Command::Adopt(a) => cmd::adopt::run(&ctx, a),
        Command::Disown(a) => cmd::disown::run(&ctx, a),
        Command::Enroll(a) => cmd::enroll::run(&ctx, a),
        Command::Ls(a) => cmd::ls::run(&ctx, a),
        Command::Sync(a) => cmd::sync::run(&ctx, a),
        Command::Up(a) => cmd::up::run(&ctx, a),
        Command::Call(a) => cmd::call::run(&ctx, a),
        Command::Why(a) => cmd::why::run(&ctx, a),
        Command::Subscribe(a) => cmd::subscribe::run(&ctx, a),
        Command::Receipts(a) => cmd::receipts::run(&ctx, a),
        Command::Push(a) => cmd::push::run(&ctx, a),
        Command::Jobs(a) => cmd::jobs::run(&ctx, a),
        Command::Result(a) => cmd::result::run(&ctx, a),
    }
}
