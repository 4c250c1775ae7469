//! `wtd revoke`: cancel grants, permanently.
//!
//! - `wtd revoke <grant-id>`: one grant.
//! - `wtd revoke bob --mission demo`: all of Bob's grants for `demo` made so far.
//! - `wtd revoke bob --all`: all of Bob's grants made so far (a later grant still works).
//! - `wtd revoke --label roster-2026-12-03`: the lesson `wtd grant --class` made, in one record.
//! - `wtd revoke --class roster.txt`: every grant still running for the roster's students
//!   (narrowed with `--mission` or `--label`), in one record.

use anyhow::bail;
use wtd_keys::log::Record;
use wtd_keys::{GrantId, MissionName, OwnerKey, Revocation, Target, UserKey};

use wtd_keys::defaults::MAX_REVOKED_SET;
use wtd_keys::revocation::valid_label;

use crate::context::{now, Context};
use crate::show::{self, who};
use crate::{lessons, roster};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A grant id (`grant-...`, see `wtd grants`), or a person: a name or a `wtd1...` id.
    #[arg(required_unless_present_any = ["class", "label"], conflicts_with_all = ["class", "label"])]
    pub target: Option<String>,
    /// With a person or --class: revoke their grants for this mission.
    #[arg(long, conflicts_with = "all")]
    pub mission: Option<String>,
    /// With a person: revoke all their grants.
    #[arg(long)]
    pub all: bool,
    /// End every running grant of the students in this roster file, in one record.
    #[arg(long, value_name = "FILE", conflicts_with = "all")]
    pub class: Option<std::path::PathBuf>,
    /// End the lesson `wtd grant --class` labelled so, in one record (with --class: only
    /// that lesson's grants of those students).
    #[arg(long, conflicts_with = "all")]
    pub label: Option<String>,
}

pub fn run(ctx: &Context, args: Args) -> anyhow::Result<()> {
    let me = ctx.identity()?;
    if args.class.is_some() || args.label.is_some() {
        return lesson(ctx, &me, args);
    }
    let keyring = ctx.keyring()?;
    let mut log = ctx.owner_log(&me)?;
    let target_text = args.target.clone().unwrap_or_default();

    let target = if target_text.starts_with("grant-") {
        if args.mission.is_some() || args.all {
            bail!("a grant id already says what to revoke; drop --mission/--all");
        }
        let id: GrantId = target_text.parse()?;
        if !log.log().grants().any(|g| g.grant().id == id) {
            bail!("you issued no grant {id}; see `wtd grants` for your grant ids");
        }
        Target::Grant(id)
    } else {
        let subject = UserKey(keyring.resolve(&target_text)?);
        match (args.mission, args.all) {
            (Some(m), false) => Target::SubjectMission(subject, MissionName::new(&m)?),
            (None, true) => Target::SubjectAll(subject),
            _ => bail!(
                "say what to revoke: `wtd revoke {0} --mission <mission>` or `wtd revoke {0} --all`",
                target_text
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

/// `--class` and/or `--label`: a set of grants, ended by one set revocation (several only
/// past [`MAX_REVOKED_SET`] grants, which one roster never reaches).
fn lesson(ctx: &Context, me: &wtd_keys::SecretKey, args: Args) -> anyhow::Result<()> {
    let students = match &args.class {
        Some(path) => Some(roster::load(path)?),
        None => None,
    };
    let lessons = lessons::load(&ctx.home.lessons())?;
    let in_lesson: Option<Vec<GrantId>> = match &args.label {
        Some(label) => match lessons.iter().find(|l| l.label == *label) {
            Some(l) => Some(l.grant_ids()?),
            None => {
                let known: Vec<&str> = lessons.iter().map(|l| l.label.as_str()).collect();
                bail!(
                    "no lesson labelled `{label}`{}; `wtd revoke --class <roster>` ends the grants of a roster's students",
                    if known.is_empty() {
                        String::new()
                    } else {
                        format!(" (your lessons: {})", known.join(", "))
                    }
                );
            }
        },
        None => None,
    };
    let mission = args.mission.as_deref().map(MissionName::new).transpose()?;
    let mut log = ctx.owner_log(me)?;
    let clock = now();
    let revocations: Vec<Revocation> = log.log().revocations().map(|r| r.revocation().clone()).collect();
    let revs: Vec<&Revocation> = revocations.iter().collect();
    let students_ids = students.as_deref().map(roster::ids);
    let mut ids: Vec<GrantId> = log
        .log()
        .grants()
        .map(|g| g.grant())
        .filter(|g| students_ids.as_ref().is_none_or(|s| s.contains(g.subject.key())))
        .filter(|g| in_lesson.as_ref().is_none_or(|l| l.contains(&g.id)))
        .filter(|g| mission.as_ref().is_none_or(|m| g.mission == *m))
        // Only what still runs: an expired or revoked grant needs no second ending.
        .filter(|g| {
            matches!(
                show::status(g, &revs, clock),
                show::Status::Active | show::Status::NotYetValid
            )
        })
        .map(|g| g.id)
        .collect();
    ids.sort();
    ids.dedup();
    if ids.is_empty() {
        bail!("nothing to revoke: none of those grants is still running (see `wtd grants`)");
    }
    let label = match (&args.label, &args.class) {
        (Some(l), _) => l.clone(),
        (None, Some(path)) => path
            .file_stem()
            .map(|s| {
                s.to_string_lossy()
                    .chars()
                    .filter(|c| !c.is_control())
                    .take(64)
                    .collect::<String>()
            })
            .map(|s| s.trim().to_string())
            .filter(|s| valid_label(s))
            .unwrap_or_else(|| "class".into()),
        (None, None) => unreachable!("called with --class or --label"),
    };
    let mut scratch = log.log().clone();
    let mut entries = Vec::new();
    let mut issued_at = clock.max(log.log().last_issued_at().plus_ms(1));
    for chunk in ids.chunks(MAX_REVOKED_SET) {
        let revocation = Revocation {
            issuer: OwnerKey(me.public()),
            target: Target::Grants {
                label: label.clone(),
                grants: chunk.to_vec(),
            },
            issued_at,
        };
        let entry = scratch.next_entry(me, Record::Revocation(revocation.sign(me)))?;
        scratch.append(entry.clone())?;
        entries.push(entry);
        issued_at = issued_at.plus_ms(1);
    }
    let records = entries.len();
    log.append_batch(entries)?;
    drop(log); // publishing reopens (and locks) the log
    crate::cmd::sync::publish_after_change(ctx, me);
    println!(
        "Revoked lesson `{label}`: {} grant(s), in {records} record(s). This is permanent; agents refuse them as soon as they hear of it.",
        ids.len()
    );
    Ok(())
}
