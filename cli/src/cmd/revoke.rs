//! `wtd revoke`: cancel grants, permanently.
//!
//! - `wtd revoke <grant-id>`: one grant.
//! - `wtd revoke bob --mission demo`: all of Bob's grants for `demo` made so far.
//! - `wtd revoke bob --all`: all of Bob's grants made so far (a later grant still works).

use anyhow::bail;
use wtd_keys::log::Record;
use wtd_keys::{GrantId, MissionName, OwnerKey, Revocation, Target, UserKey};

use crate::context::{now, Context};
use crate::show::who;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A grant id (`grant-...`, see `wtd grants`), or a person: a name or a `wtd1...` id.
    pub target: String,
    /// With a person: revoke their grants for this mission.
    #[arg(long, conflicts_with = "all")]
    pub mission: Option<String>,
    /// With a person: revoke all their grants.
    #[arg(long)]
    pub all: bool,
}

pub fn run(ctx: &Context, args: Args) -> anyhow::Result<()> {
    let me = ctx.identity()?;
    let keyring = ctx.keyring()?;
    let mut log = ctx.owner_log(&me)?;

    let target = if args.target.starts_with("grant-") {
        if args.mission.is_some() || args.all {
            bail!("a grant id already says what to revoke; drop --mission/--all");
        }
        let id: GrantId = args.target.parse()?;
        if !log.log().grants().any(|g| g.grant().id == id) {
            bail!("you issued no grant {id}; see `wtd grants` for your grant ids");
        }
        Target::Grant(id)
    } else {
        let subject = UserKey(keyring.resolve(&args.target)?);
        match (args.mission, args.all) {
            (Some(m), false) => Target::SubjectMission(subject, MissionName::new(&m)?),
            (None, true) => Target::SubjectAll(subject),
            _ => bail!(
                "say what to revoke: `wtd revoke {0} --mission <mission>` or `wtd revoke {0} --all`",
                args.target
            ),
        }
    };

    let issued_at = now().max(log.log().last_issued_at().plus_ms(1));
    let revocation = Revocation {
        issuer: OwnerKey(me.public()),
        target: target.clone(),
        issued_at,
    };
    // How many grants this cancels, counted before it is written, to tell the user.
    let hits = log
        .log()
        .grants()
        .filter(|g| revocation.revokes(g.grant()))
        .count();
    let entry = log
        .log()
        .next_entry(&me, Record::Revocation(revocation.sign(&me)))?;
    log.append(entry)?;

    drop(log); // publishing reopens (and locks) the log
    crate::cmd::sync::publish_after_change(ctx, &me);

    let what = match &target {
        Target::Grant(id) => format!("{id}"),
        Target::SubjectMission(s, m) => format!("{}'s grants for mission `{m}`", who(&keyring, s.key())),
        Target::SubjectAll(s) => format!("all of {}'s grants", who(&keyring, s.key())),
        Target::Grants { label, .. } => format!("lesson `{label}`"),
    };
    println!(
        "Revoked {what} ({hits} grant(s)). This is permanent; agents refuse them as soon as they hear of it."
    );
    Ok(())
}
