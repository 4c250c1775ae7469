//! `wtd call demo/echo '{"msg":"hi"}'`: run a function on the best agent for it.
//!
//! 1. Ask the proxy for the roster and the logs of your grants' issuers (each entry checked,
//!    see `adoptions`); keep the agents that offer the function and whose owners granted
//!    you the mission *and adopted them* (`wtd_caller::dispatch`): an agent that only
//!    claims an owner is never called with her grant. Order them by the selector.
//! 2. Open an end-to-end session to the first one through the proxy, pinned to that
//!    agent's key (the proxy relays ciphertext only), and send the call on it. The
//!    session's handshake proved your key, so the call needs no signature of its own;
//!    with `--receipt` it is signed anyway and the agent signs its result, and the pair is
//!    kept under `receipts/` in your wtd home (`wtd receipts` lists and checks them).
//! 3. Print the function's progress lines as they come, then its output.
//! 4. If the agent vanishes before answering, an idempotent function is retried on the
//!    next candidate; any other says it may or may not have run.
//!
//! Run by a handler that handles an event, `wtd call` finds the event in `WTD_CAUSE` (the
//! agent sets it) and sends it with the call as its *cause*: the events the called function
//! emits then depend on it, so no subscriber sees them before it (`wtd_keys::cause`).
//!
//! All of it is `wtd_caller`, the same library the tests and the benchmark use.

use std::sync::Arc;

use wtd_caller::dispatch::{self, Candidate, Filter, NoCandidate, Selector};
use wtd_caller::{Answer, CallError, CallRequest, Caller, Failure, Notice};
use wtd_keys::call::CallStatus;
use wtd_keys::cause::CAUSE_VAR;
use wtd_keys::event::Dep;
use wtd_keys::names::parse_target;
use wtd_keys::{FunctionName, Grant, MissionName, OwnerKey, UserKey};

use crate::context::Context;
use crate::exit::{self, Exit};
use crate::proxy;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// What to call: `mission/function`, for example `demo/echo`.
    pub target: String,
    /// The arguments, as JSON (default `{}`).
    pub args: Option<String>,
    /// Pick the agent reporting the lowest load (the default). Pis throttled right now
    /// (too hot, weak power) are used only when no other agent can serve.
    #[arg(long, group = "selector")]
    pub least_loaded: bool,
    /// Pick the agent reporting the lowest temperature (throttled Pis last, agents with no
    /// sensor after those with one).
    #[arg(long, group = "selector")]
    pub coolest: bool,
    /// Pick an agent at random.
    #[arg(long, group = "selector")]
    pub random: bool,
    /// Take turns among the agents, call after call.
    #[arg(long, group = "selector")]
    pub round_robin: bool,
    /// Call every agent that can, all at once, and gather the results.
    #[arg(long, group = "selector")]
    pub all: bool,
    /// Only agents with this tag.
    #[arg(long)]
    pub tag: Option<String>,
    /// Only this agent: its name or id (or the short id `wtd ls` shows).
    #[arg(long)]
    pub agent: Option<String>,
    /// Give up after this long: `5s`, `1min`.
    #[arg(long, default_value = "30s")]
    pub timeout: String,
    /// Print a JSON envelope (agent, status, output, events) instead of the bare output.
    #[arg(long)]
    pub json: bool,
    /// Keep a receipt: you sign the call, the agent signs its result, and the pair is
    /// saved so anyone can later check who asked what and what was answered
    /// (`wtd receipts`). Costs two signatures and two checks per call.
    #[arg(long)]
    pub receipt: bool,
    /// Do not wait: queue the call on the proxy and print its job id at once; it runs when
    /// an agent can take it, and `wtd result <job>` collects the result (see `wtd push`).
    /// `--tag`, `--coolest` and `--least-loaded` apply to it (signed with the job);
    /// `--all`, `--random` and `--round-robin` do not, and are refused with what to do.
    #[arg(long = "async", conflicts_with_all = ["receipt"])]
    pub async_: bool,
    /// With `--async`: how long it may wait for an agent (`1h` by default, at most `7days`).
    #[arg(long, requires = "async_")]
    pub expires: Option<String>,
}

pub fn run(ctx: &Context, args: Args) -> anyhow::Result<()> {
    if args.async_ {
        return crate::cmd::push::submit(
            ctx,
            crate::cmd::push::Submit {
                target: &args.target,
                args: args.args.as_deref(),
                agent: args.agent.as_deref(),
                selector: crate::cmd::push::selector(
                    args.tag.as_deref(),
                    &crate::cmd::push::QueuedOrder {
                        least_loaded: args.least_loaded,
                        coolest: args.coolest,
                        random: args.random,
                        round_robin: args.round_robin,
                        all: args.all,
                    },
                )?,
                expires: args.expires.as_deref(),
                keep_result: true,
                json: args.json,
            },
        );
    }
    let me = Arc::new(ctx.identity()?);
    let info = proxy::require(&ctx.home.proxy())?;
    let (mission, function) = parse_target(&args.target)?;
    let arg_text = args.args.clone().unwrap_or_else(|| "{}".to_string());
    let parsed: serde_json::Value = serde_json::from_str(&arg_text).map_err(|e| {
        Exit::new(
            exit::USAGE,
            format!("the arguments are not valid JSON ({e}); for example: '{{\"msg\":\"hi\"}}'"),
        )
    })?;
    let mut request = CallRequest::new(mission.as_str(), function.as_str(), serde_json::to_vec(&parsed)?)
        .map_err(|e| Exit::new(exit::USAGE, e.to_string()))?;
    request.receipt = args.receipt;
    request.cause = cause_from_env()?;
    let timeout = humantime::parse_duration(&args.timeout).map_err(|_| {
        Exit::new(
            exit::USAGE,
            format!("--timeout {}: write a duration like 5s or 1min", args.timeout),
        )
    })?;
    let selector = if args.all {
        Selector::All
    } else if args.random {
        Selector::Random
    } else if args.round_robin {
        Selector::RoundRobin
    } else if args.coolest {
        Selector::Coolest
    } else {
        Selector::LeastLoaded
    };
    let filter = Filter {
        tag: args.tag.clone(),
        agent: args.agent.clone(),
    };
    // Grants others gave you, and grants you gave yourself as an owner (`wtd up` does).
    let (received, _) = wtd_store::grants::list(&ctx.home.received_grants())?;
    let mut grants: Vec<Grant> = received.iter().map(|g| g.grant().clone()).collect();
    // Read once (and not held: its lock would block `wtd grant` for the whole call); the
    // adoption book below uses the same copy.
    let own_log = if ctx.home.owner_log().exists() {
        Some(ctx.owner_log(&me)?.log().clone())
    } else {
        None
    };
    if let Some(log) = &own_log {
        let mine = log.grants().filter(|g| *g.grant().subject.key() == me.public());
        grants.extend(mine.map(|g| g.grant().clone()));
    }
    let turn = if selector == Selector::RoundRobin {
        next_turn(ctx)
    } else {
        0
    };
    let random = if selector == Selector::Random {
        random_u64()
    } else {
        0
    };

    proxy::runtime()?.block_on(async {
        let (client, conn) = proxy::connect(&me, &info)
            .await
            .map_err(|e| Exit::new(exit::UNREACHABLE, format!("{e:#}")))?;
        let caller = Caller::new(me.clone(), conn).with_identity(client.identity());
        let me_user = UserKey(me.public());
        let grant_refs: Vec<&Grant> = grants.iter().collect();
        let mut issuers: Vec<OwnerKey> = grants.iter().map(|g| g.issuer).collect();
        issuers.push(OwnerKey(me.public()));
        // The roster and the issuers' logs at once: two round trips to the proxy in the
        // time of one, on the path every `wtd call` takes.
        let (roster, adoptions) = tokio::join!(
            caller.roster(),
            crate::adoptions::book(ctx, &me, own_log.as_ref(), &caller, &issuers)
        );
        let roster = roster?;
        let cands = dispatch::candidates(
            &roster,
            &me_user,
            &grant_refs,
            &adoptions,
            &mission,
            &function,
            &filter,
        )
        .map_err(|e| no_candidate(e, &mission, &function, &me_user))?;
        let ordered = dispatch::order(cands, selector, turn, random);
        let call = async {
            if selector == Selector::All {
                call_all(ctx, &caller, &ordered, &request, args.json).await
            } else {
                call_one(ctx, &caller, &ordered, &request, args.json).await
            }
        };
        let result = tokio::time::timeout(timeout, call).await.unwrap_or_else(|_| {
            Err(Exit::new(
                exit::TIMEOUT,
                format!(
                    "no answer within {}; the call may still be running on the agent",
                    humantime::format_duration(timeout)
                ),
            )
            .into())
        });
        caller.close().await;
        drop(client);
        result
    })
}

/// The cause this call carries: `WTD_CAUSE`, which the agent sets for a handler that runs
/// because of events. Unset or empty: none.
fn cause_from_env() -> Result<Vec<Dep>, Exit> {
    let Some(text) = std::env::var_os(CAUSE_VAR) else {
        return Ok(Vec::new());
    };
    let unusable = |why: String| {
        Exit::new(
            exit::USAGE,
            format!(
                "{CAUSE_VAR} is set but unusable: {why}. The agent sets it for a handler that runs \
                 because of an event; to call without a cause, unset it (env -u {CAUSE_VAR} wtd call ...)"
            ),
        )
    };
    let text = text.to_str().ok_or_else(|| unusable("it is not UTF-8".into()))?;
    wtd_keys::cause::parse(text).map_err(|e| unusable(e.to_string()))
}

/// Says so when `agent` is too old to take the call's cause (it was sent without it).
fn note_dropped_cause(agent: &Candidate, answer: &Answer, req: &CallRequest) {
    if answer.cause_dropped {
        eprintln!(
            "wtd: note: {} runs a wtd older than protocol version 6, which does not take a call's cause; \
             the events {}/{} emitted there do not wait for the events in {CAUSE_VAR}",
            agent.name, req.mission, req.function
        );
    }
}

/// Tries candidates in order until one answers (the failover rules are `wtd_caller`'s).
async fn call_one(
    ctx: &Context,
    caller: &Caller,
    cands: &[Candidate],
    req: &CallRequest,
    json: bool,
) -> anyhow::Result<()> {
    let (mission, function) = (&req.mission, &req.function);
    let mut notice = |n: Notice<'_>| match n {
        Notice::Event { agent, line } if !json => eprintln!("[{}] {line}", agent.name),
        Notice::Event { .. } => {}
        Notice::Retrying { agent, error, next } => {
            let why = if error.may_have_run() {
                format!(
                    "{} went away before answering ({error}); {mission}/{function} is idempotent",
                    agent.name
                )
            } else {
                format!("could not reach {} ({error})", agent.name)
            };
            eprintln!("wtd: {why}; trying {}", next.name);
        }
    };
    match caller.call_first(cands, req, &mut notice).await {
        Ok((agent, answer)) => {
            save_receipt(ctx, &answer)?;
            note_dropped_cause(&agent, &answer, req);
            finish(&[(agent, answer)], json, false)
        }
        Err(Failure::Refused { agent, error }) => Err(refusal(&agent, &error).into()),
        Err(Failure::MayHaveRun { agent, error }) => Err(Exit::new(
            exit::MAY_HAVE_RUN,
            format!(
                "{} went away before answering ({error}). {mission}/{function} may or may not have run \
                 there; it is not marked idempotent, so it was not retried elsewhere",
                agent.name
            ),
        )
        .into()),
        Err(Failure::NoneAnswered { last }) => Err(Exit::new(
            exit::UNREACHABLE,
            format!(
                "no agent could run {mission}/{function}: {}",
                last.map_or_else(String::new, |(a, e)| format!("{}: {e}", a.name))
            ),
        )
        .into()),
    }
}

/// An agent's refusal, with its reason and what to do.
fn refusal(agent: &Candidate, error: &CallError) -> Exit {
    let mut message = format!("{} refused the call: {error}", agent.name);
    if let CallError::Refused(r) = error {
        if let Some(ms) = r.retry_after_ms {
            message.push_str(&format!(" (retry after {ms} ms)"));
        }
    }
    Exit::new(exit::DENIED, message)
}

/// Calls every candidate at once; gathers what each answered.
async fn call_all(
    ctx: &Context,
    caller: &Caller,
    cands: &[Candidate],
    req: &CallRequest,
    json: bool,
) -> anyhow::Result<()> {
    let on_event = |agent: &Candidate, line: &str| {
        if !json {
            eprintln!("[{}] {line}", agent.name);
        }
    };
    let results = caller.call_all(cands, req, &on_event).await;
    let mut answers = Vec::new();
    let mut problems = false;
    for (agent, result) in results {
        match result {
            Ok(a) => {
                save_receipt(ctx, &a)?;
                note_dropped_cause(&agent, &a, req);
                answers.push((agent, a));
            }
            Err(e @ CallError::Refused(_)) => {
                problems = true;
                eprintln!("wtd: {}", refusal(&agent, &e));
            }
            Err(e) => {
                problems = true;
                eprintln!("wtd: {}: {e}", agent.name);
            }
        }
    }
    finish(&answers, json, true)?;
    if problems {
        return Err(Exit::new(exit::FAILED, "some agents did not answer (see above)".into()).into());
    }
    Ok(())
}

/// Keeps the receipt of an answer, if it has one.
fn save_receipt(ctx: &Context, answer: &Answer) -> anyhow::Result<()> {
    let Some(receipt) = &answer.receipt else {
        return Ok(());
    };
    let path = super::receipts::save(&ctx.home.receipts(), receipt)?;
    eprintln!("wtd: receipt kept in {}", path.display());
    Ok(())
}

/// Prints answers; an error (with the right exit code) if a function did not succeed.
fn finish(answers: &[(Candidate, Answer)], json: bool, gathered: bool) -> anyhow::Result<()> {
    let output_value = |a: &Answer| {
        serde_json::from_slice::<serde_json::Value>(&a.output)
            .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&a.output).into_owned()))
    };
    if json || gathered {
        let items: Vec<serde_json::Value> = answers
            .iter()
            .map(|(agent, a)| {
                let mut item = serde_json::json!({
                    "agent": agent.name,
                    "status": status_word(a.status),
                    "output": output_value(a),
                    "detail": a.detail,
                    "events": a.events,
                });
                if let Some(id) = &a.receipt_id {
                    item["receipt"] = serde_json::Value::String(id.to_string());
                }
                item
            })
            .collect();
        let out = if gathered {
            serde_json::Value::Array(items)
        } else {
            items[0].clone()
        };
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else if let Some((_, a)) = answers.first() {
        let text = String::from_utf8_lossy(&a.output);
        print!("{text}");
        if !text.is_empty() && !text.ends_with('\n') {
            println!();
        }
    }
    for (agent, a) in answers {
        let code = match a.status {
            CallStatus::Ok => continue,
            CallStatus::TimedOut => exit::TIMEOUT,
            _ => exit::FAILED,
        };
        return Err(Exit::new(code, format!("on {}: {}", agent.name, a.detail)).into());
    }
    Ok(())
}

fn status_word(s: CallStatus) -> &'static str {
    match s {
        CallStatus::Ok => "ok",
        CallStatus::Failed => "failed",
        CallStatus::TimedOut => "timed_out",
        CallStatus::Cancelled => "cancelled",
        CallStatus::OutputTooLarge => "output_too_large",
    }
}

fn no_candidate(
    e: NoCandidate,
    mission: &MissionName,
    function: &FunctionName,
    me: &UserKey,
) -> anyhow::Error {
    match e {
        NoCandidate::NobodyOffers => Exit::new(
            exit::UNREACHABLE,
            format!("no online agent offers {mission}/{function}; `wtd ls` shows what each agent offers"),
        ),
        NoCandidate::Filtered => Exit::new(
            exit::UNREACHABLE,
            format!("no online agent matching --tag/--agent offers {mission}/{function}; check `wtd ls`"),
        ),
        NoCandidate::NotAdopted { agents } => {
            let list: Vec<String> = agents
                .iter()
                .map(|a| match a.disowned {
                    Some(at) => format!(
                        "{} ({}) was disowned by {} at {}",
                        a.name,
                        a.id.key().short(),
                        a.owner.key().short(),
                        crate::parse::format_time(at)
                    ),
                    None => format!(
                        "{} ({}) claims to be {}'s, but is not adopted by {}",
                        a.name,
                        a.id.key().short(),
                        a.owner.key().short(),
                        a.owner.key().short()
                    ),
                })
                .collect();
            Exit::new(
                exit::DENIED,
                format!(
                    "not calling {mission}/{function} there: {}. Your grant is from that owner, and her grants are \
                     used only on agents she adopted (so an agent that merely claims her never sees your call); \
                     ask her to `wtd adopt` it if it is really hers",
                    list.join("; ")
                ),
            )
        }
        NoCandidate::NotGranted { owners } => {
            let owners: Vec<String> = owners.iter().map(|o| o.short()).collect();
            Exit::new(
                exit::DENIED,
                format!(
                    "you have no grant for mission `{mission}` from the owners of the agents that offer it ({}); \
                     ask one of them to run: wtd grant {me} --mission {mission}, then import the ticket with \
                     `wtd grants import`",
                    owners.join(", ")
                ),
            )
        }
    }
    .into()
}

/// The round-robin counter, kept in the home dir so turns continue across calls.
fn next_turn(ctx: &Context) -> u64 {
    let path = ctx.home.dir().join("round-robin");
    let n = std::fs::read_to_string(&path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0u64);
    let _ = wtd_store::atomic::write_atomic(&path, format!("{}\n", n.wrapping_add(1)).as_bytes(), 0o600);
    n
}

fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    let _ = getrandom::getrandom(&mut b);
    u64::from_le_bytes(b)
}
