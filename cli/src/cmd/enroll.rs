//! `wtd enroll new`: issue a one-time enrollment token for a headless Pi.
//! `wtd enroll`: list the tokens you issued, and which agent each adopted.
//!
//! The token goes into the card's `agent.toml` (`enroll = "wtdenroll1..."`) and stays in
//! your home (`enroll/`, mode 0600). The agent shows only a proof made with it; `wtd adopt
//! --pending` adopts the agent whose proof verifies, once (see `wtd_keys::enroll`).

use anyhow::bail;
use wtd_keys::defaults::{DEFAULT_ENROLL_TTL_MS, MAX_ENROLL_TTL_MS};
use wtd_keys::{AdoptionBook, EnrollmentToken, IssuedToken, OwnerKey};

use crate::context::{now, Context};
use crate::parse::{self, format_time};
use crate::show::table;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Issue a new token and print it (a secret: for one card's agent.toml only).
    New {
        /// A note for you, shown by `wtd enroll`: which card it is for.
        #[arg(long, default_value = "")]
        label: String,
        /// When it stops adopting: a duration (`2h`, `7days`) or a date. Default 7 days.
        #[arg(long)]
        expires: Option<String>,
    },
    /// List the tokens you issued (the default).
    Ls {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(ctx: &Context, args: Args) -> anyhow::Result<()> {
    let me = ctx.identity()?;
    match args.command.unwrap_or(Command::Ls { json: false }) {
        Command::New { label, expires } => {
            if label.len() > 64 || label.chars().any(char::is_control) {
                bail!("--label takes up to 64 printable characters");
            }
            let issued_at = now();
            let expires = match expires {
                Some(s) => parse::expiry(&s, issued_at)?,
                None => issued_at.plus_ms(DEFAULT_ENROLL_TTL_MS),
            };
            if issued_at.until(expires) > MAX_ENROLL_TTL_MS {
                bail!("an enrollment token may last at most 120 days; pick an earlier --expires");
            }
            let issued = IssuedToken {
                token: EnrollmentToken::generate(),
                label,
                issued_at,
                expires,
            };
            wtd_store::enroll::save(&ctx.home.enrollments(), &issued)?;
            println!(
                "Enrollment token {} (until {}). Put this line in the card's agent.toml, with your id in `owners`:",
                issued.token.id(),
                format_time(expires)
            );
            println!();
            println!("enroll = \"{}\"", &*issued.token.to_text());
            println!("owners = [\"{}\"]", me.public());
            println!();
            println!("Once the Pi is up, run `wtd adopt --pending`. The token is a secret and works once.");
        }
        Command::Ls { json } => {
            let issued = wtd_store::enroll::list(&ctx.home.enrollments())?;
            let book = if ctx.home.owner_log().exists() {
                AdoptionBook::from_logs([ctx.owner_log(&me)?.log()])
            } else {
                AdoptionBook::new()
            };
            let owner = OwnerKey(me.public());
            let now = now();
            let status = |t: &IssuedToken| match book.token_used_by(&owner, &t.token.id()) {
                Some(agent) => format!("used by {agent}"),
                None if now >= t.expires => "expired".to_string(),
                None => "unused".to_string(),
            };
            if json {
                let items: Vec<serde_json::Value> = issued
                    .iter()
                    .map(|t| {
                        serde_json::json!({
                            "token": t.token.id().to_string(),
                            "label": t.label,
                            "expires": format_time(t.expires),
                            "status": status(t),
                        })
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&items)?);
            } else if issued.is_empty() {
                println!("No enrollment tokens issued; make one with `wtd enroll new`.");
            } else {
                let rows: Vec<Vec<String>> = issued
                    .iter()
                    .map(|t| {
                        vec![
                            t.token.id().to_string(),
                            t.label.clone(),
                            format_time(t.expires),
                            status(t),
                        ]
                    })
                    .collect();
                print!("{}", table(&["TOKEN", "LABEL", "EXPIRES", "STATUS"], &rows));
            }
        }
    }
    Ok(())
}
