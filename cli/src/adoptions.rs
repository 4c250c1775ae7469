//! Which agents each owner adopted, as this machine can verify it.
//!
//! Your own adoptions are in your owner log. Another owner's come from the proxy, which is
//! not trusted: every entry is checked (her signature, the hash chain) into a copy kept in
//! `seen-logs/<owner id>.log`, so the proxy can delay her newest records but cannot forge
//! an adoption, hide one in the middle, or roll the copy back to before a disowning.

use std::collections::BTreeSet;

use wtd_caller::Caller;
use wtd_keys::{AdoptionBook, OwnerKey, OwnerLog, SecretKey, SignedEntry};
use wtd_store::logfile::LogFile;

use crate::context::Context;

/// Most owners' logs read for one command: enough for a classroom. Beyond it, a request
/// each would cost too much, so the rest adopt nothing here (default deny): their agents
/// show as not adopted and are not called under their grants.
pub const MAX_OWNERS_FETCHED: usize = 64;

/// The adoptions in the logs of `owners` (yours from your own log, the others fetched
/// through `caller` and verified). `mine` is your own log when the command already read
/// it (it is read from disk otherwise). Problems are printed as warnings: what could not
/// be verified simply adopts nothing.
pub async fn book(
    ctx: &Context,
    me: &SecretKey,
    mine_read: Option<&OwnerLog>,
    caller: &Caller,
    owners: &[OwnerKey],
) -> AdoptionBook {
    let mut book = AdoptionBook::new();
    let owners: BTreeSet<OwnerKey> = owners.iter().copied().collect();
    let mine = OwnerKey(me.public());
    for owner in owners.into_iter().take(MAX_OWNERS_FETCHED) {
        if owner == mine {
            if let Some(log) = mine_read {
                book.add_log(log);
            } else if ctx.home.owner_log().exists() {
                match ctx.owner_log(me) {
                    Ok(file) => book.add_log(file.log()),
                    Err(e) => eprintln!("warning: {e:#}"),
                }
            }
            continue;
        }
        match seen_log(ctx, me, caller, owner).await {
            Ok(file) => book.add_log(file.log()),
            Err(e) => eprintln!("warning: {e:#}"),
        }
    }
    book
}

/// `owner`'s log as last verified here, brought up to date from the proxy.
/// The copy was verified when it was written; a seal made with `me`'s key spares
/// verifying it again on every command (`wtd_keys::seal`).
async fn seen_log(
    ctx: &Context,
    me: &SecretKey,
    caller: &Caller,
    owner: OwnerKey,
) -> anyhow::Result<LogFile> {
    let dir = ctx.home.seen_logs();
    wtd_store::atomic::ensure_dir(&dir, 0o700)?;
    let (mut file, _) = LogFile::open_sealed(
        &dir.join(format!("{owner}.log")),
        owner,
        &wtd_keys::seal::SealKey::derive(me),
    )?;
    let head = file.log().head().seq;
    let fetched = match caller.fetch_log(&owner, head).await {
        Ok(f) => f,
        Err(e) => {
            eprintln!(
                "warning: could not fetch {}'s log from the proxy ({e}); using the copy verified earlier",
                owner.key().short()
            );
            return Ok(file);
        }
    };
    let mut entries = Vec::new();
    for bytes in &fetched {
        match SignedEntry::decode(bytes) {
            Ok(e) => entries.push(e),
            Err(e) => {
                eprintln!(
                    "warning: the proxy sent a damaged entry of {}'s log ({e}); it was ignored",
                    owner.key().short()
                );
                break;
            }
        }
    }
    if let Err(e) = file.sync(entries) {
        eprintln!(
            "warning: the proxy sent {}'s log in a form that does not match the copy verified earlier ({e}); \
             keeping what was verified",
            owner.key().short()
        );
    }
    Ok(file)
}

/// An agent the proxy knows of: in its roster, or turned away waiting for adoption.
#[derive(Debug, Clone)]
pub struct Known {
    pub info: wtd_wire::AgentInfo,
    pub id: wtd_keys::AgentId,
    /// Refused by a `--allow` proxy until an allowed owner adopts it.
    pub waiting: bool,
}

impl Known {
    /// Does its advert name `owner`? (Its claim: half of "both sides agree".)
    pub fn claims(&self, owner: &OwnerKey) -> bool {
        self.info
            .advert
            .owners
            .iter()
            .any(|k| k.parse().ok() == Some(*owner.key()))
    }
}

/// The roster and the agents waiting for adoption, from the proxy.
pub async fn known_agents(caller: &Caller) -> anyhow::Result<Vec<Known>> {
    let mut out = Vec::new();
    for info in caller.roster().await? {
        let Ok(id) = info.id.parse() else { continue };
        out.push(Known {
            id: wtd_keys::AgentId(id),
            info,
            waiting: false,
        });
    }
    let mut recv = crate::proxy::request(caller.connection(), wtd_wire::Request::Waiting).await?;
    if let Some(wtd_wire::Response::Waiting(list)) = crate::proxy::next(&mut recv).await? {
        for info in list {
            let Ok(id) = info.id.parse() else { continue };
            if out.iter().all(|k| k.id.key() != &id) {
                out.push(Known {
                    id: wtd_keys::AgentId(id),
                    info,
                    waiting: true,
                });
            }
        }
    }
    Ok(out)
}

/// The one agent `what` names: a full id, or a name or id prefix (as `wtd ls` shows) that
/// exactly one known agent answers to. Names are chosen by whoever runs the agent, so two
/// agents called `pi-1` make the name ambiguous, and the full id is asked for.
pub fn resolve(what: &str, known: &[Known]) -> anyhow::Result<wtd_keys::AgentId> {
    if what.starts_with(wtd_keys::identity::PUBLIC_PREFIX) {
        if let Ok(id) = what.parse() {
            return Ok(id);
        }
    }
    let hits: Vec<&Known> = known
        .iter()
        .filter(|k| k.info.advert.name == what || (what.len() >= 8 && k.id.to_string().starts_with(what)))
        .collect();
    match hits.as_slice() {
        [one] => Ok(one.id),
        [] => anyhow::bail!(
            "no agent called `{what}` is online or waiting for adoption; check `wtd ls`, or give its full id (wtd1...)"
        ),
        many => {
            let ids: Vec<String> = many.iter().map(|k| k.id.to_string()).collect();
            anyhow::bail!(
                "{} agents answer to `{what}` (names are chosen by whoever runs an agent): {}; give the full id of yours",
                many.len(),
                ids.join(", ")
            )
        }
    }
}
