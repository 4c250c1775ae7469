//! `wtd adopt <agent>`: say, with your key, that an agent is yours.
//! `wtd adopt --pending`: adopt every agent that proves an enrollment token you issued.
//!
//! An agent counts as yours only when both sides agree: its `agent.toml` names you as an
//! owner, and your owner log adopts its id. Adopting writes a signed adoption into your log
//! (fsynced), then sends it to the proxy: your grants start reaching the agent, you may call
//! it without a grant, and a proxy run with `--allow <you>` admits it.
//!
//! With `--pending`, each agent shows a proof (a MAC over its own id made with the token on
//! its card) and is adopted only if the proof verifies for its id with a token you issued
//! that has not expired and was never used; the adoption records the token, so it can
//! never adopt a second agent (`wtd_keys::enroll`).

use anyhow::bail;
use wtd_caller::Caller;
use wtd_keys::enroll::{decide_pending, Pending};
use wtd_keys::log::Record;
use wtd_keys::{Action, Adoption, AdoptionBook, AgentId, OwnerKey, SecretKey, TokenId};

use crate::adoptions::{known_agents, resolve, Known};
use crate::context::{now, Context};
use crate::proxy;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The agents to adopt: full ids (`wtd1...`), or names or short ids as `wtd ls` shows.
    #[arg(required_unless_present = "pending", conflicts_with = "pending")]
    pub agents: Vec<String>,
    /// Adopt every agent that proves an enrollment token you issued (`wtd enroll new`).
    #[arg(long)]
    pub pending: bool,
}

pub fn run(ctx: &Context, args: Args) -> anyhow::Result<()> {
    let me = ctx.identity()?;
    // Full ids need no proxy; everything else looks at what the proxy knows.
    let offline = !args.pending
        && args
            .agents
            .iter()
            .all(|a| a.starts_with("wtd1") && a.parse::<AgentId>().is_ok());
    let known = if offline && proxy::load(&ctx.home.proxy())?.is_none() {
        Vec::new()
    } else {
        fetch_known(ctx, &me)?
    };
    let adopted = if args.pending {
        adopt_pending(ctx, &me, &known)?
    } else {
        let mut ids = Vec::new();
        for a in &args.agents {
            ids.push(resolve(a, &known)?);
        }
        adopt(ctx, &me, &ids, &known)?
    };
    if adopted > 0 {
        crate::cmd::sync::publish_after_change(ctx, &me);
    }
    Ok(())
}

fn fetch_known(ctx: &Context, me: &SecretKey) -> anyhow::Result<Vec<Known>> {
    let info = proxy::require(&ctx.home.proxy())?;
    let me = std::sync::Arc::new(SecretKey::from_seed(&me.seed()));
    proxy::runtime()?.block_on(async {
        let (client, conn) = proxy::connect(&me, &info).await?;
        let caller = Caller::new(me.clone(), conn);
        let known = known_agents(&caller).await;
        caller.close().await;
        drop(client);
        known
    })
}

fn name_of(id: &AgentId, known: &[Known]) -> String {
    known.iter().find(|k| k.id == *id).map_or_else(
        || id.key().short(),
        |k| format!("{} ({})", k.info.advert.name, id.key().short()),
    )
}

/// Writes one adoption per agent not yet adopted. Returns how many were written.
pub fn adopt(ctx: &Context, me: &SecretKey, ids: &[AgentId], known: &[Known]) -> anyhow::Result<usize> {
    let records: Vec<(AgentId, Option<TokenId>)> = ids.iter().map(|id| (*id, None)).collect();
    let written = write(ctx, me, &records)?;
    let mine = OwnerKey(me.public());
    for id in ids {
        let name = name_of(id, known);
        if known.is_empty() && written.contains(id) {
            // Offline, by id: nothing more to say per agent than the id itself.
            println!("Adopted {name}.");
            continue;
        }
        if !written.contains(id) {
            println!("{name} is already yours.");
            continue;
        }
        println!("Adopted {name}: your grants reach it, and you may call it.");
        if let Some(k) = known.iter().find(|k| k.id == *id) {
            if !k.claims(&mine) {
                eprintln!(
                    "note: {name} does not name you as an owner in its agent.toml, so it does not obey you yet; \
                     it counts as yours once it does (add your id, `wtd id`, to its `owners`)"
                );
            }
        }
    }
    Ok(written.len())
}

/// Appends an adoption of each agent (with the token that enrolled it, if any) that the
/// log does not adopt already. Returns the agents adopted now.
fn write(
    ctx: &Context,
    me: &SecretKey,
    records: &[(AgentId, Option<TokenId>)],
) -> anyhow::Result<Vec<AgentId>> {
    let mut log = ctx.owner_log(me)?;
    let owner = OwnerKey(me.public());
    let mut written = Vec::new();
    for (agent, token) in records {
        if AdoptionBook::from_logs([log.log()]).adopts(&owner, agent) {
            continue;
        }
        let issued_at = now().max(log.log().last_issued_at().plus_ms(1));
        let record = Adoption {
            issuer: owner,
            agent: *agent,
            action: Action::Adopt,
            token: *token,
            issued_at,
        }
        .sign(me);
        let entry = log.log().next_entry(me, Record::Adoption(record))?;
        log.append(entry)?;
        written.push(*agent);
    }
    Ok(written)
}

fn adopt_pending(ctx: &Context, me: &SecretKey, known: &[Known]) -> anyhow::Result<usize> {
    let owner = OwnerKey(me.public());
    let issued = wtd_store::enroll::list(&ctx.home.enrollments())?;
    if issued.is_empty() {
        bail!("you have issued no enrollment tokens; make one with `wtd enroll new` and put it in the card's agent.toml");
    }
    let pending: Vec<Pending> = known
        .iter()
        .filter_map(|k| {
            Some(Pending {
                agent: k.id,
                claims_owner: k.claims(&owner),
                proof: k.info.advert.enrollment?.into(),
            })
        })
        .collect();
    let book = if ctx.home.owner_log().exists() {
        AdoptionBook::from_logs([ctx.owner_log(me)?.log()])
    } else {
        AdoptionBook::new()
    };
    let decided = decide_pending(&pending, &owner, &issued, &book, now());
    if decided.is_empty() {
        println!("No agent is waiting with a token of yours.");
        return Ok(0);
    }
    let mut records = Vec::new();
    for (agent, result) in &decided {
        match result {
            Ok(token) => records.push((*agent, Some(*token))),
            Err(why) => eprintln!("not adopted: {}: {why}", name_of(agent, known)),
        }
    }
    let written = write(ctx, me, &records)?;
    for (agent, token) in &records {
        if written.contains(agent) {
            let token = token.expect("pending adoptions use a token");
            println!(
                "Adopted {} with enrollment token {token} (now used).",
                name_of(agent, known)
            );
        }
    }
    println!(
        "Adopted {} of {} agent(s) showing an enrollment proof.",
        written.len(),
        decided.len()
    );
    Ok(written.len())
}
