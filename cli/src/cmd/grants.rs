//! `wtd grants`: list grants you issued and received; `wtd grants import <ticket>`.

use anyhow::bail;
use wtd_keys::{Revocation, Ticket};
use wtd_store::grants;

use crate::context::{now, Context};
use crate::parse::format_time;
use crate::show::{status, table, who, GrantRow};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub action: Option<Action>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Subcommand)]
pub enum Action {
    /// Save the grants in a ticket someone sent you.
    Import {
        /// The `wtdt1...` ticket, as printed by `wtd grant`.
        ticket: String,
    },
}

pub fn run(ctx: &Context, args: Args) -> anyhow::Result<()> {
    match args.action {
        Some(Action::Import { ticket }) => import(ctx, &ticket),
        None => list(ctx, args.json),
    }
}

fn import(ctx: &Context, text: &str) -> anyhow::Result<()> {
    let me = ctx.identity()?.public();
    let keyring = ctx.keyring()?;
    let ticket = Ticket::from_text(text)?;
    if ticket.grants.is_empty() {
        bail!("this ticket holds no grant (is it a join ticket? use `wtd join` for those)");
    }
    for g in &ticket.grants {
        let new = grants::import(&ctx.home.received_grants(), &me, g)?;
        let g = g.grant();
        let from = who(&keyring, g.issuer.key());
        let verb = if new { "Imported" } else { "Already had" };
        println!(
            "{verb} {}: mission `{}` from {from}, {}, until {}.",
            g.id,
            g.mission,
            g.rate,
            format_time(g.expires)
        );
        if keyring.name_of(g.issuer.key()).is_none() {
            println!("  (tip: name its owner with `wtd keys add <name> {}`)", g.issuer);
        }
    }
    Ok(())
}

fn list(ctx: &Context, json: bool) -> anyhow::Result<()> {
    let me = ctx.identity()?;
    let keyring = ctx.keyring()?;
    let now = now();
    let mut rows = Vec::new();

    let log = ctx.owner_log(&me)?;
    let revocations: Vec<&Revocation> = log.log().revocations().map(|r| r.revocation()).collect();
    for g in log.log().grants() {
        rows.push(GrantRow::new(
            "issued",
            g.grant(),
            status(g.grant(), &revocations, now),
            &keyring,
        ));
    }
    drop(revocations);
    drop(log);

    let (received, damaged) = grants::list(&ctx.home.received_grants())?;
    for d in &damaged {
        eprintln!("warning: skipped {}: {}", d.path.display(), d.error);
    }
    for g in &received {
        // Revocations reach agents, not grantees; until this machine hears the owner's
        // log from a proxy, a received grant shows as active until it expires.
        rows.push(GrantRow::new(
            "received",
            g.grant(),
            status(g.grant(), &[], now),
            &keyring,
        ));
    }

    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    if rows.is_empty() {
        println!("No grants yet. Make one with `wtd grant <who> --mission <mission>`.");
        return Ok(());
    }
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let (other_name, other) = match r.direction {
                "issued" => (&r.subject_name, &r.subject),
                _ => (&r.issuer_name, &r.issuer),
            };
            let other = other_name.clone().unwrap_or_else(|| other[..12].to_string());
            vec![
                r.direction.to_string(),
                r.id.clone(),
                other,
                r.mission.clone(),
                r.rate.clone(),
                r.expires.clone(),
                r.status.word().to_string(),
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &["", "GRANT", "WITH", "MISSION", "RATE", "EXPIRES", "STATUS"],
            &cells
        )
    );
    Ok(())
}
