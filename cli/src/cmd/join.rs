//! `wtd join <ticket>`: remember a proxy (and import any grants the ticket carries).

use anyhow::bail;
use wtd_keys::Ticket;

use crate::context::Context;
use crate::proxy;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The `wtdt1...` ticket printed by `wtd proxy` (or handed out by a teacher).
    pub ticket: String,
}

pub fn run(ctx: &Context, args: Args) -> anyhow::Result<()> {
    let me = ctx.identity()?;
    let ticket = Ticket::from_text(&args.ticket)?;
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
