//! `wtd keys add|ls|rm`: names for other people's ids.

use std::io::Read as _;

use anyhow::bail;
use wtd_keys::identity::PUBLIC_PREFIX;
use wtd_keys::paste::{from_pasted, PasteError};
use wtd_keys::PublicId;

use crate::context::Context;
use crate::show::table;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Save someone's id under a name: `wtd keys add bob wtd1...`.
    ///
    /// The id may be pasted as it comes: the whole output of `wtd id` (its fingerprint is
    /// checked), wrapped over lines, from a QR code (`wtd:wtd1...`, capitals), or with the
    /// name as one `bob wtd1...` line from a class list. `-` reads it from standard input.
    Add {
        /// A short name (lowercase letters, digits, `-` and `_`), then their id as printed
        /// by `wtd id` on their machine; or one `name id` line.
        #[arg(required = true, num_args = 1.., value_name = "NAME ID")]
        words: Vec<String>,
    },
    /// List saved names.
    Ls {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Forget a name.
    Rm { name: String },
}

/// The name and the id in `wtd keys add`'s words, however the id was pasted.
fn name_and_id(words: &[String]) -> anyhow::Result<(String, PublicId)> {
    let first = words[0].trim();
    let looks_like_id = |w: &str| {
        let w = w.to_ascii_lowercase();
        w.starts_with(PUBLIC_PREFIX) || w.starts_with("wtd:")
    };
    let (name, text) = if words.len() == 1 && !looks_like_id(first) {
        // One `name id` line, quoted as one argument.
        let pasted = from_pasted(first).map_err(explain)?;
        match pasted.before.as_slice() {
            [name] => return Ok((name.clone(), pasted.id)),
            _ => bail!("give a name and an id: `wtd keys add bob wtd1...`"),
        }
    } else if looks_like_id(first) {
        bail!(
            "give a name before the id: `wtd keys add <name> {}`",
            first.chars().take(16).collect::<String>() + "..."
        );
    } else {
        let rest = words[1..].join(" ");
        let text = if rest.trim() == "-" {
            let mut buf = String::new();
            std::io::stdin().take(16 * 1024).read_to_string(&mut buf)?;
            buf
        } else {
            rest
        };
        (first.to_string(), text)
    };
    let pasted = from_pasted(&text).map_err(explain)?;
    // `wtd keys add bob "bob wtd1..."`: the same name twice is fine, another is a mix-up.
    match pasted.before.as_slice() {
        [] => {}
        [same] if *same == name => {}
        other => bail!(
            "`{}` came before the id; give just the name and the id: `wtd keys add {name} wtd1...`",
            other.join(" ")
        ),
    }
    Ok((name, pasted.id))
}

fn explain(e: PasteError) -> anyhow::Error {
    anyhow::anyhow!("{e}")
}

pub fn run(ctx: &Context, command: Command) -> anyhow::Result<()> {
    let mut keyring = ctx.keyring()?;
    match command {
        Command::Add { words } => {
            let (name, id) = name_and_id(&words)?;
            let key = keyring.add(&name, &id.to_string())?;
            keyring.save()?;
            println!("Saved {name} = {key} (fingerprint {})", key.fingerprint());
        }
        Command::Ls { json } => {
            if json {
                let map: serde_json::Map<String, serde_json::Value> = keyring
                    .iter()
                    .map(|(n, k)| (n.to_string(), k.to_string().into()))
                    .collect();
                println!("{}", serde_json::to_string_pretty(&map)?);
            } else if keyring.iter().next().is_none() {
                println!("Your keyring is empty. Add someone with `wtd keys add <name> <their id>`.");
            } else {
                let rows: Vec<Vec<String>> = keyring
                    .iter()
                    .map(|(n, k)| vec![n.to_string(), k.to_string(), k.fingerprint()])
                    .collect();
                print!("{}", table(&["NAME", "ID", "FINGERPRINT"], &rows));
            }
        }
        Command::Rm { name } => {
            let key = keyring.remove(&name)?;
            keyring.save()?;
            println!(
                "Removed {name} ({}). Grants you made to them still stand; use `wtd revoke` to end them.",
                key.short()
            );
        }
    }
    Ok(())
}
