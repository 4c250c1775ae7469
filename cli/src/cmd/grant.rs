//! `wtd grant bob --mission demo`: let someone call one of your missions.
//!
//! The grant is signed with your key, written to your owner log (fsynced before anything
//! is printed), and printed as a ticket for the grantee to import.

use anyhow::{bail, Context as _};
use wtd_keys::defaults::{DEFAULT_CONCURRENCY, DEFAULT_GRANT_TTL_MS, MAX_GRANT_TTL_MS};
use wtd_keys::log::Record;
use wtd_keys::{
    AgentId, Audience, Grant, GrantId, MissionName, OwnerKey, SecretKey, SignedGrant, Ticket, UserKey,
};
use wtd_store::keyring::Keyring;

use crate::context::{now, Context};
use crate::parse::{self, format_time};
use crate::show::who;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Who may call: a name from `wtd keys ls`, or a full `wtd1...` id.
    pub who: String,
    /// The mission they may call, e.g. `demo`.
    #[arg(long)]
    pub mission: String,
    /// How often, as COUNT/UNIT: `10/min`, `1/s`, `100/h`.
    #[arg(long, default_value = "60/min")]
    pub rate: String,
    /// How many calls may be made back to back before the rate applies (default: the
    /// rate's count).
    #[arg(long)]
    pub burst: Option<u32>,
    /// How many of their calls may run at once on one agent.
    #[arg(long, default_value_t = DEFAULT_CONCURRENCY)]
    pub concurrency: u32,
    /// When it ends: a duration (`2h`, `7days`) or a date (`2026-12-01T12:00:00Z`).
    /// Default: 30 days. Grants always end.
    #[arg(long)]
    pub expires: Option<String>,
    /// Which of your agents it covers: `all` (default) or ids separated by commas.
    #[arg(long, default_value = "all")]
    pub agents: String,
    /// Print JSON (grant id and ticket) instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(ctx: &Context, args: Args) -> anyhow::Result<()> {
    let me = ctx.identity()?;
    let keyring = ctx.keyring()?;
    let json = args.json;
    let grant = make(ctx, &me, &keyring, args)?;
    print(&keyring, &grant, json)
}

/// Makes, signs, logs (fsynced) and publishes a grant; prints nothing but the publish note.
pub fn make(ctx: &Context, me: &SecretKey, keyring: &Keyring, args: Args) -> anyhow::Result<SignedGrant> {
    let subject = UserKey(keyring.resolve(&args.who)?);
    let mission = MissionName::new(&args.mission).with_context(|| format!("--mission {}", args.mission))?;
    let rate = parse::rate(&args.rate)?;
    let burst = args.burst.unwrap_or(rate.calls);
    if burst == 0 || args.concurrency == 0 {
        bail!("--burst and --concurrency must be at least 1; to stop someone, use `wtd revoke`");
    }
    let audience = if args.agents == "all" {
        Audience::AllAgents
    } else {
        let ids = args
            .agents
            .split(',')
            .map(|s| keyring.resolve(s.trim()).map(AgentId))
            .collect::<Result<Vec<_>, _>>()
            .context("--agents takes `all` or agent ids separated by commas")?;
        Audience::agents(ids)
    };

    let mut log = ctx.owner_log(me)?;
    let clock = now();
    // Every record is issued after the previous one, so "revoke everything up to now"
    // never catches a grant made after it, even within one millisecond.
    let issued_at = clock.max(log.log().last_issued_at().plus_ms(1));
    let expires = match &args.expires {
        Some(s) => parse::expiry(s, issued_at)?,
        None => issued_at.plus_ms(DEFAULT_GRANT_TTL_MS),
    };
    if issued_at.until(expires) > MAX_GRANT_TTL_MS {
        bail!("a grant may last at most a year; pick an earlier --expires (you can always grant again)");
    }
    let grant = Grant {
        id: GrantId::random(),
        issuer: OwnerKey(me.public()),
        subject,
        audience,
        mission,
        rate,
        burst,
        concurrency: args.concurrency,
        not_before: issued_at,
        expires,
        issued_at,
    }
    .sign(me);
    let entry = log.log().next_entry(me, Record::Grant(grant.clone()))?;
    log.append(entry)?;

    drop(log); // publishing reopens (and locks) the log
    crate::cmd::sync::publish_after_change(ctx, me);
    Ok(grant)
}

fn print(keyring: &Keyring, grant: &SignedGrant, json: bool) -> anyhow::Result<()> {
    let subject = grant.grant().subject;
    let ticket = Ticket {
        proxy: None,
        grants: vec![grant.clone()],
    }
    .to_text();
    let g = grant.grant();
    if json {
        let out = serde_json::json!({
            "grant_id": g.id.to_string(),
            "subject": g.subject.to_string(),
            "mission": g.mission.to_string(),
            "expires": format_time(g.expires),
            "ticket": ticket,
        });
        println!("{out}");
        return Ok(());
    }
    let name = who(keyring, subject.key());
    let on = match &g.audience {
        Audience::AllAgents => "all your agents".to_string(),
        Audience::Agents(list) => format!("{} of your agents", list.len()),
    };
    println!(
        "Granted {name} mission `{}` on {on}: {}, burst {}, {} at once, until {}.",
        g.mission,
        g.rate,
        g.burst,
        g.concurrency,
        format_time(g.expires)
    );
    println!("Grant id: {} (revoke it with `wtd revoke {}`)", g.id, g.id);
    println!();
    println!("Send {name} this command to run on their machine:");
    println!("  wtd grants import {ticket}");
    Ok(())
}
