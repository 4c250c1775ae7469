//! `wtd ls`: the agents online at the joined proxy, their load and missions.

use std::collections::BTreeMap;

use serde::Serialize;
use wtd_keys::PublicId;
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
    pub owners: Vec<String>,
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

impl From<&AgentInfo> for AgentView {
    fn from(a: &AgentInfo) -> Self {
        AgentView {
            id: key_text(&a.id),
            name: a.advert.name.clone(),
            owners: a.advert.owners.iter().map(key_text).collect(),
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
    proxy::runtime()?.block_on(async {
        let (_client, conn) = proxy::connect(&me, &info).await?;
        if !args.watch {
            let mut recv = proxy::request(&conn, Request::Roster).await?;
            let Some(Response::Roster(agents)) = proxy::next(&mut recv).await? else {
                anyhow::bail!("the proxy sent no roster");
            };
            if args.json {
                let views: Vec<AgentView> = agents.iter().map(AgentView::from).collect();
                println!("{}", serde_json::to_string_pretty(&views)?);
            } else {
                print!("{}", render(&agents, &keyring, me.public()));
            }
            wtd_transport::close_and_flush(&conn, b"bye").await;
            return Ok(());
        }
        let mut recv = proxy::request(&conn, Request::Watch).await?;
        let mut roster: BTreeMap<[u8; 32], AgentInfo> = BTreeMap::new();
        while let Some(resp) = proxy::next(&mut recv).await? {
            let Response::Event(event) = resp else { continue };
            if args.json {
                println!("{}", event_json(&event));
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
            if !args.json {
                let agents: Vec<AgentInfo> = roster.values().cloned().collect();
                // Clear the screen and redraw, like `top`.
                print!("\x1b[2J\x1b[H{}", render(&agents, &keyring, me.public()));
            }
        }
        anyhow::bail!("the proxy closed the watch (is it shutting down?)")
    })
}

fn event_json(event: &RosterEvent) -> serde_json::Value {
    match event {
        RosterEvent::Snapshot(all) => {
            serde_json::json!({"snapshot": all.iter().map(AgentView::from).collect::<Vec<_>>()})
        }
        RosterEvent::Upsert(a) => serde_json::json!({"upsert": AgentView::from(a)}),
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

/// The roster as a table, with agents' warnings below it.
fn render(agents: &[AgentInfo], keyring: &Keyring, me: PublicId) -> String {
    if agents.is_empty() {
        return "No agents online.\n".to_string();
    }
    let now = now().millis();
    let rows: Vec<Vec<String>> = agents
        .iter()
        .map(|a| {
            let owner = a.advert.owners.first().and_then(|k| k.parse().ok()).map_or_else(
                || "?".to_string(),
                |k| {
                    if k == me {
                        "you".to_string()
                    } else {
                        who(keyring, &k)
                    }
                },
            );
            let missions: Vec<&str> = a.advert.missions.iter().map(|m| m.name.as_str()).collect();
            let temp = a
                .load
                .temperature_c
                .map(|t| format!(" {t:.0}°C"))
                .unwrap_or_default();
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
