//! `wtd init`: create your identity.

use wtd_store::identity::{self, IdentityError};

use crate::context::Context;

#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(ctx: &Context, _args: Args) -> anyhow::Result<()> {
    let path = ctx.home.identity();
    match identity::create(&path) {
        Ok(key) => {
            println!("Created your identity in {}", path.display());
            println!("Your id: {}", key.public());
            println!("Fingerprint: {}", key.public().fingerprint());
            println!("Give your id to people who will grant you missions (`wtd id` prints it again).");
            Ok(())
        }
        Err(e @ IdentityError::AlreadyExists(_)) => Err(e.into()),
        Err(e) => Err(anyhow::Error::new(e).context("could not create your identity")),
    }
}
