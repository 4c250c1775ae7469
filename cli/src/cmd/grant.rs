//! `wtd grant bob --mission demo`: let someone call one of your missions.
//!
//! The grant is signed with your key, written to your owner log (fsynced before anything
//! is printed), and printed as a ticket for the grantee to import.
//!
//! `wtd grant --class roster.txt --mission demo --until 15:45` grants a whole class at once:
//! the roster is checked first (every bad line reported, nothing granted if there is one),
//! then one grant per student, all with the same terms and expiry, is written to the log
//! in one append under a lesson label, so `wtd revoke --label` (or `--class`) can end them
//! all in one record.

use anyhow::{bail, Context as _};
use wtd_keys::defaults::{DEFAULT_CONCURRENCY, DEFAULT_GRANT_TTL_MS, MAX_GRANT_TTL_MS};
use wtd_keys::log::Record;
use wtd_keys::revocation::valid_label;
use wtd_keys::{
    AgentId, Audience, Grant, GrantId, MissionName, OwnerKey, SecretKey, SignedGrant, Ticket, Timestamp,
    UserKey,
};
use wtd_store::keyring::Keyring;

use crate::context::{now, Context};
use crate::parse::{self, format_time};
use crate::show::who;
use crate::{lessons, roster};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Who may call: a name from `wtd keys ls`, or a full `wtd1...` id.
    #[arg(required_unless_present = "class", conflicts_with = "class")]
    pub who: Option<String>,
    /// Grant every student of a roster file (one `name id` per line, `#` comments).
    #[arg(long, value_name = "FILE")]
    pub class: Option<std::path::PathBuf>,
    /// When it ends, as a time today (local, 24-hour: `15:45`) or `"tomorrow 8:30"`.
    #[arg(long, conflicts_with = "expires")]
    pub until: Option<String>,
    /// With --class: the lesson's label, shown in `wtd grants` and used by `wtd revoke
    /// --label`. Default: the roster's file name and today's date (`roster-2026-12-03`).
    #[arg(long, requires = "class")]
    pub label: Option<String>,
    /// The mission they may call, e.g. `demo`.
    #[arg(long)]
    pub mission: String,
    /// How often, as COUNT/UNIT: `10/min`, `1/s`, `100/h`.
    #[arg(long, default_value = "60/min")]
    pub rate: String,
    /// How many calls may be made back to back before the rate applies (default: the
    /// rate's count).
    #[arg(long)]
    pub burst: Option<u32>,
    /// How many of their calls may run at once on one agent.
    #[arg(long, default_value_t = DEFAULT_CONCURRENCY)]
    pub concurrency: u32,
    /// When it ends: a duration (`2h`, `7days`) or a date (`2026-12-01T12:00:00Z`).
    /// Default: 30 days. Grants always end.
    #[arg(long)]
    pub expires: Option<String>,
    /// Which of your agents it covers: `all` (default) or ids separated by commas.
    #[arg(long, default_value = "all")]
    pub agents: String,
    /// Print JSON (grant id and ticket) instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(ctx: &Context, args: Args) -> anyhow::Result<()> {
    let me = ctx.identity()?;
    if args.class.is_some() {
        return class(ctx, &me, args);
    }
    let keyring = ctx.keyring()?;
    let json = args.json;
    let grant = make(ctx, &me, &keyring, args)?;
    print(&keyring, &grant, json)
}

/// What every grant of one command shares: mission, limits, audience.
struct Terms {
    mission: MissionName,
    rate: wtd_keys::Rate,
    burst: u32,
    concurrency: u32,
    audience: Audience,
}

fn terms(keyring: &Keyring, args: &Args) -> anyhow::Result<Terms> {
    let mission = MissionName::new(&args.mission).with_context(|| format!("--mission {}", args.mission))?;
    let rate = parse::rate(&args.rate)?;
    let burst = args.burst.unwrap_or(rate.calls);
    if burst == 0 || args.concurrency == 0 {
        bail!("--burst and --concurrency must be at least 1; to stop someone, use `wtd revoke`");
    }
    let audience = if args.agents == "all" {
        Audience::AllAgents
    } else {
        let ids = args
            .agents
            .split(',')
            .map(|s| keyring.resolve(s.trim()).map(AgentId))
            .collect::<Result<Vec<_>, _>>()
            .context("--agents takes `all` or agent ids separated by commas")?;
        Audience::agents(ids)
    };
    Ok(Terms {
        mission,
        rate,
        burst,
        concurrency: args.concurrency,
        audience,
    })
}

/// The expiry from --until or --expires (or `default`, a duration from `issued_at`).
fn expiry(args: &Args, issued_at: Timestamp, default: Option<u64>) -> anyhow::Result<Timestamp> {
    let expires = match (&args.until, &args.expires, default) {
        (Some(u), _, _) => parse::until(u, now(), &jiff::tz::TimeZone::system())?,
        (None, Some(s), _) => parse::expiry(s, issued_at)?,
        (None, None, Some(ms)) => issued_at.plus_ms(ms),
        (None, None, None) => {
            bail!("a lesson's grants need an end: add --until 15:45 (today, local time) or --expires 45min")
        }
    };
    if expires <= issued_at {
        bail!("that end is not after the grant starts; pick a later --until or --expires");
    }
    if issued_at.until(expires) > MAX_GRANT_TTL_MS {
        bail!("a grant may last at most a year; pick an earlier --expires (you can always grant again)");
    }
    Ok(expires)
}

fn grant_for(
    me: &SecretKey,
    terms: &Terms,
    subject: UserKey,
    issued_at: Timestamp,
    expires: Timestamp,
) -> Grant {
    Grant {
        id: GrantId::random(),
        issuer: OwnerKey(me.public()),
        subject,
        audience: terms.audience.clone(),
        mission: terms.mission.clone(),
        rate: terms.rate,
        burst: terms.burst,
        concurrency: terms.concurrency,
        not_before: issued_at,
        expires,
        issued_at,
    }
}

/// Makes, signs, logs (fsynced) and publishes a grant; prints nothing but the publish note.
pub fn make(ctx: &Context, me: &SecretKey, keyring: &Keyring, args: Args) -> anyhow::Result<SignedGrant> {
    let who = args.who.as_deref().unwrap_or_default();
    let subject = UserKey(keyring.resolve(who)?);
    let terms = terms(keyring, &args)?;

    let mut log = ctx.owner_log(me)?;
    let clock = now();
    // Every record is issued after the previous one, so "revoke everything up to now"
    // never catches a grant made after it, even within one millisecond.
    let issued_at = clock.max(log.log().last_issued_at().plus_ms(1));
    let expires = expiry(&args, issued_at, Some(DEFAULT_GRANT_TTL_MS))?;
    let grant = grant_for(me, &terms, subject, issued_at, expires).sign(me);
    let entry = log.log().next_entry(me, Record::Grant(grant.clone()))?;
    log.append(entry)?;

    drop(log); // publishing reopens (and locks) the log
    crate::cmd::sync::publish_after_change(ctx, me);
    Ok(grant)
}

/// `wtd grant --class roster.txt ...`: one grant per student, one log append, one label.
fn class(ctx: &Context, me: &SecretKey, args: Args) -> anyhow::Result<()> {
    let path = args.class.clone().expect("checked by the caller");
    let students = roster::load(&path)?;
    let mut keyring = ctx.keyring()?;
    let terms = terms(&keyring, &args)?;
    let label = match &args.label {
        Some(l) => l.clone(),
        None => default_label(&path),
    };
    if !valid_label(&label) {
        bail!("--label `{label}`: a label is 1 to 64 characters, with no control characters or spaces at its ends");
    }
    // Names go into the keyring, so `wtd grants` shows them; a clash is an error before
    // anything is written (a name that already means someone else).
    let mut clashes = Vec::new();
    let mut new_names = Vec::new();
    for s in &students {
        match keyring.resolve(&s.name) {
            Ok(k) if k == *s.id.key() => {}
            Ok(_) => clashes.push(format!(
                "line {}: `{}` is already in your keys as another id (`wtd keys ls`); rename them in the roster",
                s.line, s.name
            )),
            Err(_) if keyring.name_of(s.id.key()).is_some() => {}
            Err(_) => new_names.push(s),
        }
    }
    if !clashes.is_empty() {
        bail!(
            "the roster {} has {} problem(s); nothing was granted:\n{}",
            path.display(),
            clashes.len(),
            clashes.join("\n")
        );
    }

    let mut log = ctx.owner_log(me)?;
    let first = now().max(log.log().last_issued_at().plus_ms(1));
    let expires = expiry(&args, first, None)?;
    // Chained in memory first, then written in one append (one fsync).
    let mut scratch = log.log().clone();
    let mut entries = Vec::with_capacity(students.len());
    let mut grants = Vec::with_capacity(students.len());
    for (i, s) in students.iter().enumerate() {
        let g = grant_for(me, &terms, s.id, first.plus_ms(i as u64), expires).sign(me);
        let entry = scratch.next_entry(me, Record::Grant(g.clone()))?;
        scratch.append(entry.clone())?;
        entries.push(entry);
        grants.push(g);
    }
    log.append_batch(entries)?;
    drop(log); // publishing reopens (and locks) the log
    lessons::add(
        &ctx.home.lessons(),
        lessons::Lesson {
            label: label.clone(),
            roster: path.display().to_string(),
            mission: terms.mission.to_string(),
            grants: grants.iter().map(|g| g.grant().id.to_string()).collect(),
        },
    )?;
    for s in new_names {
        keyring.add(&s.name, &s.id.to_string())?;
    }
    keyring.save()?;
    crate::cmd::sync::publish_after_change(ctx, me);

    let tickets: Vec<(String, String)> = students
        .iter()
        .zip(&grants)
        .map(|(s, g)| {
            let ticket = Ticket {
                proxy: None,
                grants: vec![g.clone()],
            }
            .to_text();
            (s.name.clone(), ticket)
        })
        .collect();
    if args.json {
        let out = serde_json::json!({
            "label": label,
            "mission": terms.mission.to_string(),
            "expires": format_time(expires),
            "grants": students.iter().zip(&grants).zip(&tickets).map(|((s, g), (_, t))| serde_json::json!({
                "name": s.name,
                "subject": s.id.to_string(),
                "grant_id": g.grant().id.to_string(),
                "ticket": t,
            })).collect::<Vec<_>>(),
        });
        println!("{out}");
        return Ok(());
    }
    println!(
        "Granted {} students mission `{}` until {} (lesson `{label}`).",
        students.len(),
        terms.mission,
        format_time(expires)
    );
    println!("End it early for everyone with `wtd revoke --label {label:?}`.");
    println!();
    println!("Each student runs their own line:");
    for (name, ticket) in &tickets {
        println!("  {name}: wtd grants import {ticket}");
    }
    Ok(())
}

/// `roster-2026-12-03`: the roster's file name and today's local date.
fn default_label(path: &std::path::Path) -> String {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "class".into());
    let today = jiff::Timestamp::from_millisecond(now().millis() as i64)
        .map(|t| {
            t.to_zoned_datetime(jiff::tz::TimeZone::system())
                .date()
                .to_string()
        })
        .unwrap_or_default();
    let stem: String = stem.chars().filter(|c| !c.is_control()).take(40).collect();
    format!("{}-{today}", stem.trim())
}

fn print(keyring: &Keyring, grant: &SignedGrant, json: bool) -> anyhow::Result<()> {
    let subject = grant.grant().subject;
    let ticket = Ticket {
        proxy: None,
        grants: vec![grant.clone()],
    }
    .to_text();
    let g = grant.grant();
    if json {
        let out = serde_json::json!({
            "grant_id": g.id.to_string(),
            "subject": g.subject.to_string(),
            "mission": g.mission.to_string(),
            "expires": format_time(g.expires),
            "ticket": ticket,
        });
        println!("{out}");
        return Ok(());
    }
    let name = who(keyring, subject.key());
    let on = match &g.audience {
        Audience::AllAgents => "all your agents".to_string(),
        Audience::Agents(list) => format!("{} of your agents", list.len()),
    };
    println!(
        "Granted {name} mission `{}` on {on}: {}, burst {}, {} at once, until {}.",
        g.mission,
        g.rate,
        g.burst,
        g.concurrency,
        format_time(g.expires)
    );
    println!("Grant id: {} (revoke it with `wtd revoke {}`)", g.id, g.id);
    println!();
    println!("Send {name} this command to run on their machine:");
    println!("  wtd grants import {ticket}");
    Ok(())
}
