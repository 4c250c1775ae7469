//! `wtd keys add|ls|rm`: names for other people's ids.

use crate::context::Context;
use crate::show::table;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Save someone's id under a name: `wtd keys add bob wtd1...`.
    Add {
        /// A short name: lowercase letters, digits, `-` and `_`.
        name: String,
        /// Their id, as printed by `wtd id` on their machine.
        id: String,
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

pub fn run(ctx: &Context, command: Command) -> anyhow::Result<()> {
    let mut keyring = ctx.keyring()?;
    match command {
        Command::Add { name, id } => {
            let key = keyring.add(&name, &id)?;
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
