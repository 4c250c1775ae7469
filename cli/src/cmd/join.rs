//! `wtd join <ticket>`: remember a proxy (and import any grants the ticket carries).
//!
//! `wtd join --lan` finds proxies on the LAN instead (mDNS, `_wtd._udp.local.`), lists them
//! with their ids, and joins the one a person picks: `--pick N` or `--id <id>` for
//! scripts, a prompt at a terminal. An announced id is only a claim (anyone on the LAN can
//! announce any id), so the pick is joined only after its handshake proves the id, and
//! only then saved; compare the id with the one the proxy's owner shows you.

use std::io::{BufRead as _, IsTerminal as _, Write as _};

use anyhow::bail;
use wtd_keys::{ProxyInfo, Ticket};
use wtd_transport::lan::{Browser, Sighting, SERVICE_TYPE};

use crate::context::Context;
use crate::defaults;
use crate::exit::{self, Exit};
use crate::proxy;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The `wtdt1...` ticket printed by `wtd proxy` (or handed out by a teacher).
    #[arg(required_unless_present = "lan", conflicts_with = "lan")]
    pub ticket: Option<String>,
    /// No ticket: list the proxies announcing themselves on the LAN, and join one.
    #[arg(long)]
    pub lan: bool,
    /// With --lan: join the Nth proxy of the list (as printed), without asking.
    #[arg(long, requires = "lan", value_name = "N", conflicts_with = "id")]
    pub pick: Option<usize>,
    /// With --lan: join the proxy with this id (or the start of it, as `wtd ls` shortens
    /// ids), without asking.
    #[arg(long, requires = "lan", value_name = "PROXY_ID")]
    pub id: Option<String>,
    /// With --lan: how long to listen for announcements.
    #[arg(long, requires = "lan", default_value = defaults::LAN_WAIT)]
    pub wait: String,
    /// With --lan: listen only on this network interface (repeat for several).
    #[arg(long = "lan-interface", requires = "lan", value_name = "NAME")]
    pub lan_interfaces: Vec<String>,
    /// With --lan and no pick: print the proxies found as JSON, and join none.
    #[arg(long, requires = "lan")]
    pub json: bool,
}

pub fn run(ctx: &Context, args: Args) -> anyhow::Result<()> {
    if args.lan {
        return run_lan(ctx, args);
    }
    let me = ctx.identity()?;
    let ticket = Ticket::from_text(args.ticket.as_deref().unwrap_or_default())?;
    let Some(info) = ticket.proxy.clone() else {
        bail!("this ticket names no proxy (is it a grant? use `wtd grants import` for those)");
    };
    for g in &ticket.grants {
        wtd_store::grants::import(&ctx.home.received_grants(), &me.public(), g)?;
        println!("Imported {} (mission `{}`).", g.grant().id, g.grant().mission);
    }
    proxy::save(&ctx.home.proxy(), &info)?;
    println!("Saved proxy {} at {:?}.", info.id.key().short(), info.addrs);
    // Try it now, so a wrong address or a wrong id shows up here and not later.
    proxy::runtime()?.block_on(async {
        let (client, conn) = proxy::connect(&me, &info).await?;
        if let Ok(agents) = proxy::roster(&conn).await {
            println!(
                "Connected: {} agent(s) online. See them with `wtd ls`.",
                agents.len()
            );
        }
        proxy::goodbye(&client, &conn).await;
        anyhow::Ok(())
    })
}

fn run_lan(ctx: &Context, args: Args) -> anyhow::Result<()> {
    let me = ctx.identity()?;
    let wait = humantime::parse_duration(&args.wait).map_err(|_| {
        Exit::new(
            exit::USAGE,
            format!("--wait {}: write a duration like 3s or 10s", args.wait),
        )
    })?;
    let found = proxy::runtime()?.block_on(async {
        let mut browser = Browser::start(&args.lan_interfaces)?;
        anyhow::Ok(browser.collect_for(wait).await)
    })?;
    if found.is_empty() {
        return Err(Exit::new(
            exit::UNREACHABLE,
            format!(
                "no wtd proxy answered on the LAN within {} (mDNS {SERVICE_TYPE}). Is the proxy running, \
                 with announcements on (`wtd proxy --announce` if it listens on 127.0.0.1), and is this \
                 machine on the same network? Try a longer --wait, or join with a ticket: `wtd join wtdt1...`",
                humantime::format_duration(wait)
            ),
        )
        .into());
    }
    let chosen = match (args.pick, &args.id) {
        (Some(n), _) => Some(by_number(&found, n)?),
        (None, Some(id)) => Some(by_id(&found, id)?),
        (None, None) if args.json => None,
        (None, None) => {
            print_list(&found, Some(wait));
            if std::io::stdin().is_terminal() {
                Some(prompt(&found)?)
            } else {
                println!("Join one with `wtd join --lan --pick N` (or `--id <proxy id>`).");
                None
            }
        }
    };
    let Some(info) = chosen else {
        if args.json {
            println!("{}", serde_json::to_string_pretty(&json_list(&found))?);
        }
        return Ok(());
    };
    // Connect first and save after: an impostor announcing this id fails its handshake
    // here, and is never written down as the proxy this machine joined.
    proxy::runtime()?.block_on(async {
        let (client, conn) = proxy::connect(&me, &info).await.map_err(|e| {
            Exit::new(
                exit::UNREACHABLE,
                format!(
                    "{e:#}\nNot joined: the proxy announced as {} could not prove that id (or could not be reached). \
                     Compare the id with the one its owner shows, and try again or use a ticket.",
                    info.id
                ),
            )
        })?;
        proxy::save(&ctx.home.proxy(), &info)?;
        println!("Joined proxy {} at {:?}, found on the LAN.", info.id, info.addrs);
        if let Ok(agents) = proxy::roster(&conn).await {
            println!(
                "Connected: {} agent(s) online. See them with `wtd ls`.",
                agents.len()
            );
        }
        proxy::goodbye(&client, &conn).await;
        anyhow::Ok(())
    })
}

fn print_list(found: &[Sighting], wait: Option<std::time::Duration>) {
    match wait {
        Some(wait) => println!(
            "Proxies on the LAN (listened {}):",
            humantime::format_duration(wait)
        ),
        None => println!("Proxies on the LAN:"),
    }
    for (i, s) in found.iter().enumerate() {
        println!("  {}  {}  {}", i + 1, s.proxy.id, addrs(&s.proxy.addrs));
    }
    let mut ids: Vec<_> = found.iter().map(|s| s.proxy.id).collect();
    ids.sort();
    if ids.windows(2).any(|w| w[0] == w[1]) {
        println!(
            "The same id is announced more than once: at most one of them holds it, and joining checks which."
        );
    }
    println!("Compare the id with the one the proxy's owner shows you (`wtd proxy` prints it).");
}

fn prompt(found: &[Sighting]) -> anyhow::Result<ProxyInfo> {
    print!("Which one? [1-{}] ", found.len());
    std::io::stdout().flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    let n: usize = line.trim().parse().map_err(|_| {
        Exit::new(
            exit::USAGE,
            format!("`{}` is not a number from the list", line.trim()),
        )
    })?;
    by_number(found, n)
}

fn by_number(found: &[Sighting], n: usize) -> anyhow::Result<ProxyInfo> {
    match n.checked_sub(1).and_then(|i| found.get(i)) {
        Some(s) => Ok(s.proxy.clone()),
        None => {
            print_list(found, None);
            Err(Exit::new(
                exit::USAGE,
                format!(
                    "--pick {n}: the list has {} proxies, numbered from 1",
                    found.len()
                ),
            )
            .into())
        }
    }
}

fn by_id(found: &[Sighting], want: &str) -> anyhow::Result<ProxyInfo> {
    let want = want.trim();
    let matching: Vec<&Sighting> = found
        .iter()
        .filter(|s| !want.is_empty() && s.proxy.id.to_string().starts_with(want))
        .collect();
    let mut ids: Vec<_> = matching.iter().map(|s| s.proxy.id).collect();
    ids.sort();
    ids.dedup();
    match ids.as_slice() {
        [id] => {
            // One id, maybe announced at several places (one real, others impostors): try
            // every address any of them gave; the handshake decides.
            let mut addrs: Vec<_> = matching.iter().flat_map(|s| s.proxy.addrs.clone()).collect();
            addrs.sort();
            addrs.dedup();
            Ok(ProxyInfo { id: *id, addrs })
        }
        [] => {
            print_list(found, None);
            Err(Exit::new(
                exit::UNREACHABLE,
                format!("no proxy on the LAN has an id starting with `{want}`"),
            )
            .into())
        }
        _ => Err(Exit::new(
            exit::USAGE,
            format!("`{want}` matches {} proxies; give more of the id", ids.len()),
        )
        .into()),
    }
}

fn addrs(list: &[std::net::SocketAddr]) -> String {
    list.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(", ")
}

fn json_list(found: &[Sighting]) -> serde_json::Value {
    serde_json::Value::Array(
        found
            .iter()
            .enumerate()
            .map(|(i, s)| {
                serde_json::json!({
                    "pick": i + 1,
                    "id": s.proxy.id.to_string(),
                    "addrs": s.proxy.addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
                    "instance": s.instance,
                })
            })
            .collect(),
    )
}
