//! `wtd why bob demo/echo [--agent X]`: explain, as the owner, whether Bob may call a
//! function on your agents, and why: which grant would be used, which revocation or
//! expiry stops the others.
//!
//! It runs the agents' own pure authorization (`wtd_keys::authz::evaluate`) on your
//! owner log, for each of your agents online that offers the function. Rate limits and
//! calls in flight are counted on each agent, so they are not part of this answer.

use anyhow::bail;
use wtd_keys::authz::{evaluate, Deny, GrantStatus, Policy, RateLimits, Request};
use wtd_keys::names::parse_target;
use wtd_keys::time::human_duration;
use wtd_keys::{AgentId, Grant, OwnerKey, Revocation, TimeFloor, UserKey};

use crate::context::{now, Context};
use crate::proxy;
use crate::show::who;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Who: a name from your keyring, or a `wtd1...` id.
    pub who: String,
    /// What: `mission/function`.
    pub target: String,
    /// Only this agent (its name or id). Needed when this machine joined no proxy.
    #[arg(long)]
    pub agent: Option<String>,
}

fn explain(status: &GrantStatus) -> String {
    match status {
        GrantStatus::Usable => "usable".into(),
        GrantStatus::IssuerNotOwner => "made by a key this agent does not obey".into(),
        GrantStatus::NotAdopted { disowned: None } => {
            "you have not adopted this agent (`wtd adopt` it)".into()
        }
        GrantStatus::NotAdopted { disowned: Some(at) } => {
            format!("you disowned this agent at {}", crate::parse::format_time(*at))
        }
        GrantStatus::NotForThisAgent => "covers other agents, not this one".into(),
        GrantStatus::NotYetValid { in_ms } => format!("not valid yet (starts in {})", human_duration(*in_ms)),
        GrantStatus::Expired { ago_ms } => format!("expired {} ago", human_duration(*ago_ms)),
        GrantStatus::Revoked(by) => format!("revoked ({by})"),
        GrantStatus::RateLimited { retry_after_ms } => {
            format!("rate limit reached (retry in {retry_after_ms} ms)")
        }
        GrantStatus::AtConcurrencyLimit { limit } => format!("{limit} call(s) already running"),
    }
}

fn deny_text(d: &Deny) -> String {
    match d {
        Deny::NoGrant => "no grant".into(),
        Deny::IssuerNotOwner { grant } => format!("{grant} is not from an owner of this agent"),
        Deny::NotAdopted { grant, disowned, .. } => match disowned {
            Some(_) => format!("{grant} is yours, but you disowned this agent"),
            None => format!("{grant} is yours, but you have not adopted this agent (`wtd adopt` it)"),
        },
        Deny::OwnerNotAdopted { .. } => {
            "you have not adopted this agent, so you may not call it as its owner".into()
        }
        Deny::NotForThisAgent { grant } => format!("{grant} covers other agents"),
        Deny::NotYetValid { grant, in_ms } => format!("{grant} starts in {}", human_duration(*in_ms)),
        Deny::Expired { grant, ago_ms } => format!("{grant} expired {} ago", human_duration(*ago_ms)),
        Deny::Revoked { grant, by } => format!("{grant} was revoked ({by})"),
        Deny::RateLimited {
            grant,
            retry_after_ms,
        } => format!("{grant} is at its rate limit (retry in {retry_after_ms} ms)"),
        Deny::AtConcurrencyLimit { grant, limit } => format!("{grant} has {limit} call(s) running"),
    }
}

pub fn run(ctx: &Context, args: Args) -> anyhow::Result<()> {
    let me = ctx.identity()?;
    let keyring = ctx.keyring()?;
    let caller = UserKey(keyring.resolve(&args.who)?);
    let (mission, function) = parse_target(&args.target)?;
    let log = ctx.owner_log(&me)?;
    let adoptions = wtd_keys::AdoptionBook::from_logs([log.log()]);
    let grants: Vec<Grant> = log.log().grants().map(|g| g.grant().clone()).collect();
    let revocations: Vec<Revocation> = log.log().revocations().map(|r| r.revocation().clone()).collect();
    drop(log);

    // Which agents to ask about: yours online that offer the function, or the one named.
    let mut agents: Vec<(String, AgentId)> = Vec::new();
    match proxy::load(&ctx.home.proxy())? {
        Some(info) => {
            let roster = proxy::runtime()?.block_on(async {
                let (client, conn) = proxy::connect(&me, &info).await?;
                let r = proxy::roster(&conn).await.unwrap_or_default();
                proxy::goodbye(&client, &conn).await;
                anyhow::Ok(r)
            })?;
            for a in roster {
                let Ok(id) = a.id.parse() else { continue };
                let id = AgentId(id);
                let mine = a
                    .advert
                    .owners
                    .iter()
                    .any(|o| o.parse().ok() == Some(me.public()));
                let offers = a.advert.missions.iter().any(|m| {
                    m.name == mission.as_str() && m.functions.iter().any(|f| f.name == function.as_str())
                });
                let named = args
                    .agent
                    .as_ref()
                    .is_none_or(|n| a.advert.name == *n || id.to_string().starts_with(n.as_str()));
                if mine && offers && named {
                    agents.push((a.advert.name.clone(), id));
                }
            }
        }
        None => match &args.agent {
            Some(id) if id.starts_with("wtd1") => agents.push((id.clone(), AgentId(id.parse()?))),
            _ => bail!("this machine joined no proxy, so name the agent by its full id: --agent wtd1..."),
        },
    }
    if agents.is_empty() {
        bail!(
            "none of your agents online offers {mission}/{function}{}; `wtd ls` shows them",
            args.agent
                .as_ref()
                .map_or(String::new(), |a| format!(" (looking for {a})"))
        );
    }

    let owners = [OwnerKey(me.public())];
    let grant_refs: Vec<&Grant> = grants.iter().collect();
    let revocation_refs: Vec<&Revocation> = revocations.iter().collect();
    let policy = Policy {
        owners: &owners,
        grants: &grant_refs,
        revocations: &revocation_refs,
        adoptions: &adoptions,
    };
    let name = who(&keyring, caller.key());
    for (agent_name, id) in &agents {
        let req = Request {
            caller: &caller,
            agent: id,
            mission: &mission,
            function: &function,
            now: now(),
        };
        let eval = evaluate(&req, &policy, &RateLimits::default(), TimeFloor::default());
        match (&eval.usable, &eval.deny) {
            _ if eval.as_owner.is_some() => {
                println!(
                    "{agent_name}: ALLOW {name} to call {mission}/{function}, as its owner (no grant needed)"
                )
            }
            (Some(g), _) => println!("{agent_name}: ALLOW {name} to call {mission}/{function}, using {g}"),
            (None, Some(d)) => println!("{agent_name}: DENY {name} {mission}/{function}: {}", deny_text(d)),
            (None, None) => println!("{agent_name}: DENY"),
        }
        if eval.grants.is_empty() {
            println!("  no grant of yours names {name} for mission `{mission}`; to allow it: wtd grant {} --mission {mission}", args.who);
        }
        for (id, status) in &eval.grants {
            let g = grants
                .iter()
                .find(|g| g.id == *id)
                .expect("evaluated grants come from the list");
            println!(
                "  {id}: {} ({}, burst {}, {} at once)",
                explain(status),
                g.rate,
                g.burst,
                g.concurrency
            );
        }
    }
    println!(
        "(Rate limits and calls in flight are counted on each agent; this shows grants and revocations.)"
    );
    Ok(())
}
