//! `wtd disown <agent>`: say, with your key, that an agent is no longer yours.
//!
//! A signed disowning goes into your owner log (fsynced) and to the proxy. From then on:
//! callers holding your grants no longer choose the agent; the agent itself refuses your
//! grants (and you, as its owner) as soon as the record reaches it, and **cancels** calls
//! running there under your authority, as a revocation does: disowning withdraws your
//! word that the machine is yours, and work done in your name there stops with it. A proxy
//! run with `--allow <you>` lets the agent go. `wtd adopt` takes it back.

use anyhow::bail;
use wtd_keys::log::Record;
use wtd_keys::{Action, Adoption, AdoptionBook, AgentId, OwnerKey};

use crate::adoptions::{known_agents, resolve, Known};
use crate::context::{now, Context};
use crate::proxy;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The agent: its full id (`wtd1...`), or its name or short id as `wtd ls` shows it.
    pub agent: String,
}

pub fn run(ctx: &Context, args: Args) -> anyhow::Result<()> {
    let me = ctx.identity()?;
    let owner = OwnerKey(me.public());
    let mut log = ctx.owner_log(&me)?;
    let book = AdoptionBook::from_logs([log.log()]);
    let mine: Vec<AgentId> = book.adopted_by(&owner).collect();
    // A name or short id is looked up among the agents online, then among yours: only an
    // agent you adopted can be disowned.
    let id = match args.agent.parse::<AgentId>() {
        Ok(id) => id,
        Err(_) => {
            let known: Vec<Known> = match proxy::load(&ctx.home.proxy())? {
                Some(info) => {
                    let me = std::sync::Arc::new(wtd_keys::SecretKey::from_seed(&me.seed()));
                    proxy::runtime()?.block_on(async {
                        let (client, conn) = proxy::connect(&me, &info).await?;
                        let caller = wtd_caller::Caller::new(me.clone(), conn);
                        let k = known_agents(&caller).await;
                        caller.close().await;
                        drop(client);
                        k
                    })?
                }
                None => Vec::new(),
            };
            let known: Vec<Known> = known.into_iter().filter(|k| mine.contains(&k.id)).collect();
            match resolve(&args.agent, &known) {
                Ok(id) => id,
                Err(e) => {
                    let prefix: Vec<&AgentId> = mine
                        .iter()
                        .filter(|a| args.agent.len() >= 8 && a.to_string().starts_with(&args.agent))
                        .collect();
                    match prefix.as_slice() {
                        [one] => **one,
                        _ => return Err(e.context("among the agents you adopted")),
                    }
                }
            }
        }
    };
    if !book.adopts(&owner, &id) {
        bail!(
            "{} is not an agent you adopted, so there is nothing to disown",
            id.key().short()
        );
    }
    let issued_at = now().max(log.log().last_issued_at().plus_ms(1));
    let record = Adoption {
        issuer: owner,
        agent: id,
        action: Action::Disown,
        token: None,
        issued_at,
    }
    .sign(&me);
    let entry = log.log().next_entry(&me, Record::Adoption(record))?;
    log.append(entry)?;
    drop(log); // publishing reopens (and locks) the log
    crate::cmd::sync::publish_after_change(ctx, &me);
    println!(
        "Disowned {}: your grants no longer reach it, and calls running there under them are cancelled \
         as soon as it hears (`wtd adopt {}` takes it back).",
        id.key().short(),
        id
    );
    Ok(())
}
