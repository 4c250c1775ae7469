//! `wtd push demo/echo '{"msg":"hi"}'`: queue a call on the proxy; it runs as soon as an
//! agent that can run it is online, even if none is now. Prints the job's id at once.
//!
//! 1. Find the owner whose authority the job runs under: the issuer of your grant for the
//!    mission (or you, if you own agents). Without one the job could never run, so it is
//!    refused here.
//! 2. Sign the job (`wtd_keys::job`): the function, the hash of the arguments, a fresh
//!    request id, the agent if `--agent` names one, the selector (`--tag`, `--coolest`),
//!    and its expiry (`--expires`, default an hour, at most a week). The proxy stores it;
//!    it cannot forge or alter one.
//!
//! Selectors: the proxy hands the job to the least-loaded suitable agent online when it
//! is delivered (Pis throttled right now last), or the coolest with `--coolest`; `--tag`
//! keeps it to agents with that tag, and such an agent checks the signed tag itself.
//! `--all`, `--random` and `--round-robin` are live-call selectors with no meaning for one
//! queued job that runs once; they are refused with what to do instead.
//! 3. The agent that takes it checks your signature and your grant *when it runs it*: a
//!    grant revoked meanwhile means it never runs, and `wtd jobs` says why.
//!
//! The arguments are not sealed: the proxy holding the job can read them (a live `wtd
//! call` is end-to-end encrypted; a queued one is only signed). `wtd push` says so once.
//!
//! `wtd call --async` is the same with the result kept for `wtd result`; a plain push keeps
//! only the job's state.

use wtd_keys::defaults::{DEFAULT_JOB_EXPIRY_MS, MAX_JOB_LIFETIME_MS};
use wtd_keys::job::{Job, JobSelector, Order};
use wtd_keys::names::parse_target;
use wtd_keys::time::human_duration;
use wtd_keys::{AgentId, OwnerKey, UserKey};
use wtd_wire::{Request, Response};

use crate::context::{now, Context};
use crate::exit::{self, Exit};
use crate::proxy;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// What to run: `mission/function`, for example `demo/echo`.
    pub target: String,
    /// The arguments, as JSON (default `{}`).
    pub args: Option<String>,
    /// Only this agent runs it: its name (it must be online now) or its full id
    /// (`wtd1...`, for an agent that is offline). Without it, the best online agent that
    /// offers the function and honours your grant, when it is delivered.
    #[arg(long)]
    pub agent: Option<String>,
    /// Only an agent with this tag runs it (the tag is signed: an agent without it refuses
    /// the job, whatever the proxy does).
    #[arg(long)]
    pub tag: Option<String>,
    #[command(flatten)]
    pub order: QueuedOrder,
    /// How long it may wait for an agent: `10min`, `1h` (the default), at most `7days`.
    #[arg(long)]
    pub expires: Option<String>,
    /// Print the job as JSON (`{"job": "req-...", "expires_at": ...}`).
    #[arg(long)]
    pub json: bool,
}

/// How a queued call picks among the suitable agents online when it is delivered; and the
/// live selectors that make no sense for one, accepted only to be refused clearly.
#[derive(Debug, Default, clap::Args)]
pub struct QueuedOrder {
    /// Give it to the agent reporting the lowest load when it is delivered (the default);
    /// Pis throttled right now only when no other can take it.
    #[arg(long, group = "queued_order")]
    pub least_loaded: bool,
    /// Give it to the agent reporting the lowest temperature when it is delivered.
    #[arg(long, group = "queued_order")]
    pub coolest: bool,
    /// Refused for a queued call (it runs once, on one agent).
    #[arg(long, group = "queued_order", hide = true)]
    pub random: bool,
    /// Refused for a queued call (it runs once, on one agent).
    #[arg(long, group = "queued_order", hide = true)]
    pub round_robin: bool,
    /// Refused for a queued call: push one job per agent with `--agent` instead.
    #[arg(long, group = "queued_order", hide = true)]
    pub all: bool,
}

/// The signed selector of a queued call, from its flags; the live-only selectors are
/// refused with what to use instead.
pub fn selector(tag: Option<&str>, order: &QueuedOrder) -> anyhow::Result<JobSelector> {
    if order.all {
        return Err(Exit::new(
            exit::USAGE,
            "--all does not apply to a queued call: a job runs once, on one agent. To run it on every \
             agent, push one job per agent with --agent <id> (their ids are in `wtd ls`), or call them \
             live with `wtd call --all`"
                .to_string(),
        )
        .into());
    }
    if order.random || order.round_robin {
        let flag = if order.random { "--random" } else { "--round-robin" };
        return Err(Exit::new(
            exit::USAGE,
            format!(
                "{flag} does not apply to a queued call: the proxy gives a job to the least-loaded suitable \
                 agent online when it is delivered (or the coolest, with --coolest), which spreads jobs by \
                 itself. Drop {flag}, or use it on a live `wtd call`"
            ),
        )
        .into());
    }
    let tag = match tag {
        None => None,
        Some(t) => Some(wtd_keys::MissionName::new(t).map_err(|e| {
            Exit::new(
                exit::USAGE,
                format!("--tag {t}: {e}; tags are short lowercase names such as `gpu` or `room-2`"),
            )
        })?),
    };
    Ok(JobSelector {
        tag,
        order: if order.coolest {
            Order::Coolest
        } else {
            Order::LeastLoaded
        },
    })
}

/// What `wtd push` and `wtd call --async` share.
#[derive(Debug)]
pub struct Submit<'a> {
    pub target: &'a str,
    pub args: Option<&'a str>,
    pub agent: Option<&'a str>,
    pub selector: JobSelector,
    pub expires: Option<&'a str>,
    pub keep_result: bool,
    pub json: bool,
}

pub fn run(ctx: &Context, args: Args) -> anyhow::Result<()> {
    submit(
        ctx,
        Submit {
            target: &args.target,
            args: args.args.as_deref(),
            agent: args.agent.as_deref(),
            selector: selector(args.tag.as_deref(), &args.order)?,
            expires: args.expires.as_deref(),
            keep_result: false,
            json: args.json,
        },
    )
}

/// Signs and queues one job; prints its id.
pub fn submit(ctx: &Context, s: Submit<'_>) -> anyhow::Result<()> {
    let me = ctx.identity()?;
    let info = proxy::require(&ctx.home.proxy())?;
    let (mission, function) = parse_target(s.target).map_err(|e| Exit::new(exit::USAGE, e.to_string()))?;
    let arg_text = s.args.unwrap_or("{}");
    let parsed: serde_json::Value = serde_json::from_str(arg_text).map_err(|e| {
        Exit::new(
            exit::USAGE,
            format!("the arguments are not valid JSON ({e}); for example: '{{\"msg\":\"hi\"}}'"),
        )
    })?;
    let args = serde_json::to_vec(&parsed)?;
    if std::env::var_os(wtd_keys::cause::CAUSE_VAR).is_some_and(|v| !v.is_empty()) {
        // A job is a signed record the proxy queues; it has no field for a cause yet.
        eprintln!(
            "wtd: note: a queued job does not carry {} (the event this handler handles); the events \
             {mission}/{function} emits will not wait for it. Use `wtd call` (without --async) for that",
            wtd_keys::cause::CAUSE_VAR
        );
    }
    let now = now();
    let expires_at = match s.expires {
        None => now.plus_ms(DEFAULT_JOB_EXPIRY_MS),
        Some(text) => {
            crate::parse::expiry(text, now).map_err(|e| Exit::new(exit::USAGE, format!("--expires: {e}")))?
        }
    };
    if now.until(expires_at) > MAX_JOB_LIFETIME_MS {
        return Err(Exit::new(
            exit::USAGE,
            format!(
                "--expires: a job may wait at most {}; pick a shorter time",
                human_duration(MAX_JOB_LIFETIME_MS)
            ),
        )
        .into());
    }
    let owner = authority_for(ctx, &me, &mission, now)?;

    proxy::runtime()?.block_on(async {
        let (client, conn) = proxy::connect(&me, &info)
            .await
            .map_err(|e| Exit::new(exit::UNREACHABLE, format!("{e:#}")))?;
        let agent = match s.agent {
            None => None,
            Some(name) => Some(resolve_agent(&conn, name).await?),
        };
        let job = Job::new(
            UserKey(me.public()),
            agent,
            mission.clone(),
            function.clone(),
            &args,
            now,
            expires_at,
            s.keep_result,
            owner,
        )
        .with_selector(s.selector.clone())
        .sign(&me);
        let id = job.job().request_id;
        let mut recv = proxy::request(&conn, Request::Push { job: job.bytes().to_vec(), args }).await?;
        let answer = proxy::next(&mut recv).await;
        proxy::goodbye(&client, &conn).await;
        match answer? {
            Some(Response::JobQueued { expires_at_ms, .. }) => {
                warn_readable_once(ctx);
                if s.json {
                    println!(
                        "{}",
                        serde_json::json!({
                            "job": id.to_string(),
                            "expires_at": crate::parse::format_time(wtd_keys::Timestamp(expires_at_ms)),
                            "keep_result": s.keep_result,
                        })
                    );
                } else {
                    println!("{id}");
                    let then = if s.keep_result {
                        format!("`wtd result {id} --wait` collects its result")
                    } else {
                        "`wtd jobs` shows what became of it".to_string()
                    };
                    eprintln!(
                        "wtd: queued {mission}/{function}; it runs when an agent can take it, until {}; {then}",
                        crate::parse::format_time(wtd_keys::Timestamp(expires_at_ms))
                    );
                }
                Ok(())
            }
            Some(Response::PushRefused(why)) => {
                Err(Exit::new(exit::DENIED, format!("the proxy did not queue it: {why}")).into())
            }
            Some(other) => Err(anyhow::anyhow!(
                "the proxy answered {other:?} to a push; is it an older wtd (before jobs)? upgrade it"
            )),
            None => Err(anyhow::anyhow!(
                "the proxy closed the stream without an answer; it may be an older wtd that knows no jobs (upgrade it)"
            )),
        }
    })
}

/// The owner whose authority a job for `mission` runs under: the issuer of an unexpired
/// grant you hold for it, else you, if you keep an owner log (your own agents).
fn authority_for(
    ctx: &Context,
    me: &wtd_keys::SecretKey,
    mission: &wtd_keys::MissionName,
    now: wtd_keys::Timestamp,
) -> anyhow::Result<OwnerKey> {
    let (received, _) = wtd_store::grants::list(&ctx.home.received_grants())?;
    let mut grants: Vec<&wtd_keys::Grant> = received
        .iter()
        .map(|g| g.grant())
        .filter(|g| g.mission == *mission && g.subject.key() == &me.public() && g.expires > now)
        .collect();
    grants.sort_by_key(|g| std::cmp::Reverse(g.expires));
    if let Some(g) = grants.first() {
        return Ok(g.issuer);
    }
    if ctx.home.owner_log().exists() {
        return Ok(OwnerKey(me.public()));
    }
    Err(Exit::new(
        exit::DENIED,
        format!(
            "you hold no unexpired grant for mission `{mission}`, so no agent would run this job; ask the \
             mission's owner for one (wtd grant {} --mission {mission}) and import it with `wtd grants import`",
            me.public()
        ),
    )
    .into())
}

/// `--agent`: a full id is taken as is (the agent may be offline); a name or short id must
/// match exactly one agent online now.
async fn resolve_agent(conn: &wtd_transport::Connection, name: &str) -> anyhow::Result<AgentId> {
    if let Ok(id) = name.parse::<AgentId>() {
        return Ok(id);
    }
    let roster = proxy::roster(conn).await?;
    let matches: Vec<&wtd_wire::AgentInfo> = roster
        .iter()
        .filter(|a| {
            a.advert.name == name
                || a.id
                    .parse()
                    .is_ok_and(|k: wtd_keys::PublicId| k.short() == name || k.to_string() == name)
        })
        .collect();
    match matches.as_slice() {
        [one] => Ok(AgentId(one.id.parse().map_err(|e| anyhow::anyhow!("{e}"))?)),
        [] => Err(Exit::new(
            exit::UNREACHABLE,
            format!(
                "no online agent is called {name}; to queue a job for an agent that is offline, give its full id \
                 (wtd1..., as `wtd ls` showed it)"
            ),
        )
        .into()),
        _ => Err(Exit::new(
            exit::USAGE,
            format!("{} agents answer to {name}; give its full id (wtd1...) instead", matches.len()),
        )
        .into()),
    }
}

/// Says once per wtd home who can read a queued call's arguments.
fn warn_readable_once(ctx: &Context) {
    let marker = ctx.home.dir().join("jobs-warned");
    if marker.exists() {
        return;
    }
    eprintln!(
        "wtd: note: a queued call's arguments are stored by the proxy until it runs, and the proxy can read \
         them (it cannot alter them: you signed them). A live `wtd call` is end-to-end encrypted instead. \
         (Said once.)"
    );
    let _ = wtd_store::atomic::write_atomic(&marker, b"", 0o600);
}
