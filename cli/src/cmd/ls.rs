//! `wtd ls`: the agents online at the joined proxy, their load and missions, and whose
//! they are.
//!
//! An agent's advert only *claims* owners. `wtd ls` fetches the claimed owners' logs from
//! the proxy, checks every entry, and shows an owner only where both sides agree (her log
//! adopts the agent); an agent that names her but is not adopted shows as
//! `claims alice, not adopted` (or `disowned`). Agents a `--allow` proxy keeps waiting for
//! adoption are listed below the table.

use std::collections::BTreeMap;

use serde::Serialize;
use std::sync::Arc;

use wtd_keys::adoption::{ownership, Ownership};
use wtd_keys::{AdoptionBook, AgentId, OwnerKey, PublicId};
use wtd_store::keyring::Keyring;
use wtd_wire::{AgentInfo, Key, Request, Response, RosterEvent};

use crate::context::{now, Context};
use crate::proxy;
use crate::show::{table, who};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print JSON instead of a table (with --watch: one JSON event per line).
    #[arg(long)]
    pub json: bool,
    /// Keep the table up to date as agents come, go and report load (Ctrl-C to stop).
    #[arg(long)]
    pub watch: bool,
}

/// An agent as `wtd ls --json` shows it: ids in their text form.
#[derive(Debug, Serialize)]
pub struct AgentView {
    pub id: String,
    pub name: String,
    /// The owners its advert names (its claim).
    pub owners: Vec<String>,
    /// Those of them whose log adopts it: the owners both sides agree on.
    pub adopted_by: Vec<String>,
    /// Those it names whose log does not adopt it (never did, or disowned it).
    pub not_adopted: Vec<String>,
    pub missions: Vec<MissionView>,
    pub tags: Vec<String>,
    pub load1: f32,
    pub cpu_percent: f32,
    pub mem_used_kb: u64,
    pub mem_total_kb: u64,
    pub temperature_c: Option<f32>,
    pub throttled: Option<u32>,
    pub model: Option<String>,
    pub software: String,
    pub warnings: Vec<String>,
    pub last_seen_ms: u64,
}

#[derive(Debug, Serialize)]
pub struct MissionView {
    pub name: String,
    pub version: String,
    pub functions: Vec<FunctionView>,
}

#[derive(Debug, Serialize)]
pub struct FunctionView {
    pub name: String,
    pub idempotent: bool,
}

fn key_text(k: &Key) -> String {
    k.parse()
        .map_or_else(|_| "(invalid key)".to_string(), |k: PublicId| k.to_string())
}

/// How each owner an agent names stands with it, by the verified logs in `book`.
fn owner_standing(a: &AgentInfo, book: &AdoptionBook) -> Vec<(PublicId, Ownership)> {
    let Ok(id) = a.id.parse() else { return Vec::new() };
    a.advert
        .owners
        .iter()
        .filter_map(|k| k.parse().ok())
        .map(|o: PublicId| (o, ownership(true, book, &OwnerKey(o), &AgentId(id))))
        .collect()
}

impl AgentView {
    fn new(a: &AgentInfo, book: &AdoptionBook) -> Self {
        let standing = owner_standing(a, book);
        let pick = |agreed: bool| {
            standing
                .iter()
                .filter(|(_, s)| (*s == Ownership::Agreed) == agreed)
                .map(|(o, _)| o.to_string())
                .collect()
        };
        AgentView {
            id: key_text(&a.id),
            name: a.advert.name.clone(),
            owners: a.advert.owners.iter().map(key_text).collect(),
            adopted_by: pick(true),
            not_adopted: pick(false),
            missions: a
                .advert
                .missions
                .iter()
                .map(|m| MissionView {
                    name: m.name.clone(),
                    version: m.version.clone(),
                    functions: m
                        .functions
                        .iter()
                        .map(|f| FunctionView {
                            name: f.name.clone(),
                            idempotent: f.idempotent,
                        })
                        .collect(),
                })
                .collect(),
            tags: a.advert.tags.clone(),
            load1: a.load.load1,
            cpu_percent: a.load.cpu_percent,
            mem_used_kb: a.load.mem_used_kb,
            mem_total_kb: a.load.mem_total_kb,
            temperature_c: a.load.temperature_c,
            throttled: a.load.throttled,
            model: a.advert.model.clone(),
            software: a.advert.software.clone(),
            warnings: a.advert.warnings.clone(),
            last_seen_ms: a.last_seen_ms,
        }
    }
}

pub fn run(ctx: &Context, args: Args) -> anyhow::Result<()> {
    let me = ctx.identity()?;
    let info = proxy::require(&ctx.home.proxy())?;
    let keyring = ctx.keyring()?;
    let me = Arc::new(me);
    proxy::runtime()?.block_on(async {
        let (client, conn) = proxy::connect(&me, &info).await?;
        let caller = wtd_caller::Caller::new(me.clone(), conn.clone());
        let agents = proxy::roster(&conn).await?;
        let mut waiting = Vec::new();
        let mut recv = proxy::request(&conn, Request::Waiting).await?;
        if let Some(Response::Waiting(w)) = proxy::next(&mut recv).await? {
            waiting = w;
        }
        // The owners the agents claim; a watch keeps the adoptions it found at its start.
        let claimed: Vec<OwnerKey> = agents
            .iter()
            .chain(&waiting)
            .flat_map(|a| a.advert.claimed_owners())
            .collect();
        let book = crate::adoptions::book(ctx, &me, None, &caller, &claimed).await;
        if !args.watch {
            if args.json {
                let views: Vec<AgentView> = agents.iter().map(|a| AgentView::new(a, &book)).collect();
                println!("{}", serde_json::to_string_pretty(&views)?);
            } else {
                print!("{}", render(&agents, &keyring, me.public(), &book));
                print!("{}", render_waiting(&waiting, &keyring, me.public()));
            }
            proxy::goodbye(&client, &conn).await;
            return Ok(());
        }
        let mut recv = proxy::request(&conn, Request::Watch).await?;
        let mut roster: BTreeMap<[u8; 32], AgentInfo> = BTreeMap::new();
        // Changes come in batches (one per agent that changed); read them on their own
        // task, so the screen is redrawn once a batch is in, not once per change.
        let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
        tokio::spawn(async move {
            loop {
                let got = proxy::next(&mut recv).await;
                let end = !matches!(got, Ok(Some(_)));
                if tx.send(got).await.is_err() || end {
                    return;
                }
            }
        });
        let (mut stale, mut drawn) = (false, std::time::Instant::now());
        loop {
            let got = if stale {
                match tokio::time::timeout(REDRAW_QUIET, rx.recv()).await {
                    Ok(got) => Got::Msg(got),
                    Err(_) => Got::Quiet,
                }
            } else {
                Got::Msg(rx.recv().await)
            };
            if stale && (matches!(got, Got::Quiet) || drawn.elapsed() >= REDRAW_AT_LEAST) {
                let agents: Vec<AgentInfo> = roster.values().cloned().collect();
                // Clear the screen and redraw, like `top`.
                print!("\x1b[2J\x1b[H{}", render(&agents, &keyring, me.public(), &book));
                (stale, drawn) = (false, std::time::Instant::now());
            }
            let Got::Msg(msg) = got else { continue };
            // `None`: the proxy finished the stream (or the reader stopped).
            let Some(Some(resp)) = msg.transpose()? else { break };
            let Response::Event(event) = resp else { continue };
            if args.json {
                println!("{}", event_json(&event, &book));
            }
            match event {
                RosterEvent::Snapshot(all) => roster = all.into_iter().map(|a| (a.id.0, a)).collect(),
                RosterEvent::Upsert(a) => {
                    roster.insert(a.id.0, a);
                }
                RosterEvent::Load {
                    id,
                    load,
                    last_seen_ms,
                } => {
                    if let Some(a) = roster.get_mut(&id.0) {
                        a.load = load;
                        a.last_seen_ms = last_seen_ms;
                    }
                }
                RosterEvent::Left { id, .. } => {
                    roster.remove(&id.0);
                }
            }
            stale = !args.json;
        }
        anyhow::bail!("the proxy closed the watch (is it shutting down?)")
    })
}

/// Redraw `wtd ls --watch` once the proxy has been quiet this long (a batch is in) ...
const REDRAW_QUIET: std::time::Duration = std::time::Duration::from_millis(50);
/// ... or this long after the last redraw, whichever comes first.
const REDRAW_AT_LEAST: std::time::Duration = std::time::Duration::from_millis(500);

/// What the watch loop got: a message from the reader task (`None` when it ended), or
/// nothing for [`REDRAW_QUIET`].
#[allow(clippy::large_enum_variant)] // one at a time, on the stack
enum Got {
    Msg(Option<anyhow::Result<Option<Response>>>),
    Quiet,
}

fn event_json(event: &RosterEvent, book: &AdoptionBook) -> serde_json::Value {
    match event {
        RosterEvent::Snapshot(all) => {
            serde_json::json!({"snapshot": all.iter().map(|a| AgentView::new(a, book)).collect::<Vec<_>>()})
        }
        RosterEvent::Upsert(a) => serde_json::json!({"upsert": AgentView::new(a, book)}),
        RosterEvent::Load {
            id,
            load,
            last_seen_ms,
        } => serde_json::json!({"load": {
            "id": key_text(id), "load1": load.load1, "cpu_percent": load.cpu_percent,
            "mem_used_kb": load.mem_used_kb, "temperature_c": load.temperature_c,
            "last_seen_ms": last_seen_ms,
        }}),
        RosterEvent::Left { id, reason } => {
            serde_json::json!({"left": {"id": key_text(id), "reason": format!("{reason:?}").to_lowercase()}})
        }
    }
}

/// Who `k` is, for a person reading the table.
fn person(keyring: &Keyring, me: PublicId, k: &PublicId) -> String {
    if *k == me {
        "you".to_string()
    } else {
        who(keyring, k)
    }
}

/// The OWNER cell: owners both sides agree on by name; a bare claim said as such.
fn owner_cell(a: &AgentInfo, keyring: &Keyring, me: PublicId, book: &AdoptionBook) -> String {
    let cells: Vec<String> = owner_standing(a, book)
        .iter()
        .map(|(o, s)| {
            let p = person(keyring, me, o);
            match s {
                Ownership::Agreed => p,
                Ownership::ClaimOnly { disowned: Some(_) } => format!("claims {p}, disowned"),
                _ => format!("claims {p}, not adopted"),
            }
        })
        .collect();
    if cells.is_empty() {
        "?".to_string()
    } else {
        cells.join("; ")
    }
}

/// Agents a `--allow` proxy turned away until an owner adopts them.
fn render_waiting(waiting: &[AgentInfo], keyring: &Keyring, me: PublicId) -> String {
    let mut out = String::new();
    for a in waiting {
        let claims: Vec<String> = a
            .advert
            .owners
            .iter()
            .filter_map(|k| k.parse().ok())
            .map(|o: PublicId| person(keyring, me, &o))
            .collect();
        let id = a.id.parse().map_or_else(|_| "?".into(), |k: PublicId| k.short());
        let token = if a.advert.enrollment.is_some() {
            " (shows an enrollment proof: `wtd adopt --pending`)"
        } else {
            ""
        };
        out.push_str(&format!(
            "waiting for adoption: {} ({id}) claims {}{token}\n",
            a.advert.name,
            claims.join(", ")
        ));
    }
    out
}

/// The roster as a table, with agents' warnings below it.
fn render(agents: &[AgentInfo], keyring: &Keyring, me: PublicId, book: &AdoptionBook) -> String {
    if agents.is_empty() {
        return "No agents online.\n".to_string();
    }
    let now = now().millis();
    let rows: Vec<Vec<String>> = agents
        .iter()
        .map(|a| {
            let owner = owner_cell(a, keyring, me, book);
            let missions: Vec<&str> = a.advert.missions.iter().map(|m| m.name.as_str()).collect();
            let temp = a
                .load
                .temperature_c
                .map(|t| format!(" {t:.0}°C"))
                .unwrap_or_default();
            // `wtd call` avoids these while others can serve; say so where people look.
            let temp = if a.load.throttled_now() {
                format!("{temp} THROTTLED")
            } else {
                temp
            };
            vec![
                a.advert.name.clone(),
                a.id.parse().map_or_else(|_| "?".into(), |k| k.short()),
                owner,
                format!("{:.2} {:.0}%{temp}", a.load.load1, a.load.cpu_percent),
                missions.join(","),
                a.advert.tags.join(","),
                format!("{:.1}s ago", now.saturating_sub(a.last_seen_ms) as f64 / 1000.0),
            ]
        })
        .collect();
    let mut out = table(
        &["NAME", "ID", "OWNER", "LOAD", "MISSIONS", "TAGS", "SEEN"],
        &rows,
    );
    for a in agents {
        for w in &a.advert.warnings {
            out.push_str(&format!("warning: {}: {w}\n", a.advert.name));
        }
    }
    out
}
