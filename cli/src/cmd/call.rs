//! `wtd call demo/echo '{"msg":"hi"}'`: run a function on the best agent for it.
//!
//! 1. Ask the proxy for the roster; keep the agents that offer the function and whose
//!    owners granted you the mission (`dispatch`); order them by the selector.
//! 2. Ask the proxy for a stream to the first one, and run an end-to-end TLS session
//!    inside it, pinned to that agent's key: the proxy relays ciphertext only.
//! 3. Sign the call (bound to that session) and send it with the arguments; print the
//!    function's progress lines as they come; verify the agent's signed result.
//! 4. If the agent vanishes before answering, an idempotent function is retried on the
//!    next candidate; any other says it may or may not have run.

use anyhow::{anyhow, Context as _};
use tokio::io::join;
use wtd_keys::call::{args_hash, verify_result, Call, CallStatus, RequestId};
use wtd_keys::names::parse_target;
use wtd_keys::{FunctionName, Grant, MissionName, SecretKey, UserKey};
use wtd_transport::session::{self, read_msg, write_msg};
use wtd_transport::{read_frame, write_frame, Connection};
use wtd_wire::call::{AgentMsg, CallerMsg};
use wtd_wire::defaults::MAX_FRAME;
use wtd_wire::{decode, encode, Key, Open, RelayReply, Request, Response};

use crate::context::{now, Context};
use crate::dispatch::{self, Candidate, Filter, NoCandidate, Selector};
use crate::exit::{self, Exit};
use crate::proxy;

/// Largest JSON argument accepted, in bytes. Agents refuse more.
const MAX_ARGS: usize = 64 * 1024;
/// Largest answer read from an agent (a result with its output).
const MAX_ANSWER: usize = 2 * 1024 * 1024;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// What to call: `mission/function`, for example `demo/echo`.
    pub target: String,
    /// The arguments, as JSON (default `{}`).
    pub args: Option<String>,
    /// Pick the agent reporting the lowest load (the default).
    #[arg(long, group = "selector")]
    pub least_loaded: bool,
    /// Pick an agent at random.
    #[arg(long, group = "selector")]
    pub random: bool,
    /// Take turns among the agents, call after call.
    #[arg(long, group = "selector")]
    pub round_robin: bool,
    /// Call every agent that can, and gather the results.
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
}

/// One answered call.
#[derive(Debug)]
struct Answer {
    agent: String,
    status: CallStatus,
    output: Vec<u8>,
    detail: String,
    events: Vec<String>,
}

/// Why one attempt failed.
enum Attempt {
    /// Nothing was sent: trying another agent is always safe.
    NotSent(anyhow::Error),
    /// The call was sent, and then the session broke: it may have run.
    Lost(anyhow::Error),
    /// The agent refused it (exit code 3).
    Refused(Exit),
}

pub fn run(ctx: &Context, args: Args) -> anyhow::Result<()> {
    let me = ctx.identity()?;
    let info = proxy::require(&ctx.home.proxy())?;
    let (mission, function) = parse_target(&args.target)?;
    let arg_text = args.args.clone().unwrap_or_else(|| "{}".to_string());
    let parsed: serde_json::Value = serde_json::from_str(&arg_text).map_err(|e| {
        Exit::new(
            exit::USAGE,
            format!("the arguments are not valid JSON ({e}); for example: '{{\"msg\":\"hi\"}}'"),
        )
    })?;
    let arg_bytes = serde_json::to_vec(&parsed)?;
    if arg_bytes.len() > MAX_ARGS {
        return Err(Exit::new(
            exit::USAGE,
            format!(
                "the arguments are {} bytes; the limit is {MAX_ARGS}",
                arg_bytes.len()
            ),
        )
        .into());
    }
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
    if ctx.home.owner_log().exists() {
        let log = ctx.owner_log(&me)?;
        let mine = log
            .log()
            .grants()
            .filter(|g| *g.grant().subject.key() == me.public());
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
        let (_client, conn) = proxy::connect(&me, &info)
            .await
            .map_err(|e| Exit::new(exit::UNREACHABLE, format!("{e:#}")))?;
        let mut recv = proxy::request(&conn, Request::Roster).await?;
        let Some(Response::Roster(roster)) = proxy::next(&mut recv).await? else {
            return Err(anyhow!("the proxy sent no roster"));
        };
        let me_user = UserKey(me.public());
        let grant_refs: Vec<&Grant> = grants.iter().collect();
        let cands = dispatch::candidates(&roster, &me_user, &grant_refs, &mission, &function, &filter)
            .map_err(|e| no_candidate(e, &mission, &function, &me_user))?;
        let ordered = dispatch::order(cands, selector, turn, random);
        let call = async {
            if selector == Selector::All {
                call_all(&me, &conn, &ordered, &mission, &function, &arg_bytes, args.json).await
            } else {
                call_one(&me, &conn, &ordered, &mission, &function, &arg_bytes, args.json).await
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
        conn.close(0u32.into(), b"bye");
        result
    })
}

/// Tries candidates in order until one answers, moving on only when it is safe.
async fn call_one(
    me: &SecretKey,
    conn: &Connection,
    cands: &[Candidate],
    mission: &MissionName,
    function: &FunctionName,
    args: &[u8],
    json: bool,
) -> anyhow::Result<()> {
    let mut last = None;
    for (i, cand) in cands.iter().enumerate() {
        match attempt(me, conn, cand, mission, function, args, !json).await {
            Ok(answer) => return finish(&[answer], json, false),
            Err(Attempt::Refused(e)) => return Err(e.into()),
            Err(Attempt::NotSent(e)) => {
                eprintln!(
                    "wtd: could not reach {} ({e:#}){}",
                    cand.name,
                    next_note(cands, i)
                );
                last = Some(e);
            }
            Err(Attempt::Lost(e)) if cand.idempotent => {
                eprintln!(
                    "wtd: {} went away before answering ({e:#}); {mission}/{function} is idempotent{}",
                    cand.name,
                    next_note(cands, i)
                );
                last = Some(e);
            }
            Err(Attempt::Lost(e)) => {
                return Err(Exit::new(
                    exit::MAY_HAVE_RUN,
                    format!(
                        "{} went away before answering ({e:#}). {mission}/{function} may or may not have run \
                         there; it is not marked idempotent, so it was not retried elsewhere",
                        cand.name
                    ),
                )
                .into())
            }
        }
    }
    Err(Exit::new(
        exit::UNREACHABLE,
        format!(
            "no agent could run {mission}/{function}: {}",
            last.map_or_else(String::new, |e| format!("{e:#}"))
        ),
    )
    .into())
}

fn next_note(cands: &[Candidate], i: usize) -> String {
    cands
        .get(i + 1)
        .map_or_else(String::new, |n| format!("; trying {}", n.name))
}

/// Calls every candidate; gathers what each answered.
async fn call_all(
    me: &SecretKey,
    conn: &Connection,
    cands: &[Candidate],
    mission: &MissionName,
    function: &FunctionName,
    args: &[u8],
    json: bool,
) -> anyhow::Result<()> {
    let mut answers = Vec::new();
    let mut problems = false;
    for cand in cands {
        match attempt(me, conn, cand, mission, function, args, !json).await {
            Ok(a) => answers.push(a),
            Err(Attempt::Refused(e)) => {
                problems = true;
                eprintln!("wtd: {}: {e}", cand.name);
            }
            Err(Attempt::NotSent(e) | Attempt::Lost(e)) => {
                problems = true;
                eprintln!("wtd: {}: {e:#}", cand.name);
            }
        }
    }
    finish(&answers, json, true)?;
    if problems {
        return Err(Exit::new(exit::FAILED, "some agents did not answer (see above)".into()).into());
    }
    Ok(())
}

/// Prints answers; an error (with the right exit code) if a function did not succeed.
fn finish(answers: &[Answer], json: bool, gathered: bool) -> anyhow::Result<()> {
    let output_value = |a: &Answer| {
        serde_json::from_slice::<serde_json::Value>(&a.output)
            .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&a.output).into_owned()))
    };
    if json || gathered {
        let items: Vec<serde_json::Value> = answers
            .iter()
            .map(|a| {
                serde_json::json!({
                    "agent": a.agent,
                    "status": status_word(a.status),
                    "output": output_value(a),
                    "detail": a.detail,
                    "events": a.events,
                })
            })
            .collect();
        let out = if gathered {
            serde_json::Value::Array(items)
        } else {
            items[0].clone()
        };
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        let a = &answers[0];
        let text = String::from_utf8_lossy(&a.output);
        print!("{text}");
        if !text.is_empty() && !text.ends_with('\n') {
            println!();
        }
    }
    for a in answers {
        let code = match a.status {
            CallStatus::Ok => continue,
            CallStatus::TimedOut => exit::TIMEOUT,
            _ => exit::FAILED,
        };
        return Err(Exit::new(code, format!("on {}: {}", a.agent, a.detail)).into());
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

/// One call to one agent: relay, end-to-end session, signed call, verified result.
async fn attempt(
    me: &SecretKey,
    conn: &Connection,
    cand: &Candidate,
    mission: &MissionName,
    function: &FunctionName,
    args: &[u8],
    print_events: bool,
) -> Result<Answer, Attempt> {
    let not_sent = |e: anyhow::Error| Attempt::NotSent(e);
    // The relay.
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| not_sent(e.into()))?;
    write_frame(
        &mut send,
        &encode(&Open::Relay {
            to: Key::from(*cand.id.key()),
        }),
    )
    .await
    .map_err(|e| not_sent(e.into()))?;
    let reply = read_frame(&mut recv, MAX_FRAME)
        .await
        .map_err(|e| not_sent(e.into()))?
        .ok_or_else(|| not_sent(anyhow!("the proxy closed the stream")))?;
    match decode::<RelayReply>(&reply).map_err(|e| not_sent(e.into()))? {
        RelayReply::Connected => {}
        RelayReply::NoSuchAgent => return Err(not_sent(anyhow!("it is no longer connected to the proxy"))),
        RelayReply::Unreachable(why) => return Err(not_sent(anyhow!("the proxy could not reach it: {why}"))),
    }
    // The end-to-end session, pinned to the agent's key.
    let (mut tls, binding) = session::connect(me, *cand.id.key(), join(recv, send))
        .await
        .map_err(|e| not_sent(e.into()))?;
    // The signed call, bound to this session.
    let call = Call {
        caller: UserKey(me.public()),
        agent: cand.id,
        mission: mission.clone(),
        function: function.clone(),
        args_hash: args_hash(args),
        request_id: RequestId::random(),
        session: binding,
        issued_at: now(),
    }
    .sign(me);
    let msg = CallerMsg::Invoke {
        call: call.bytes().to_vec(),
        args: args.to_vec(),
    };
    write_msg(&mut tls, &encode(&msg))
        .await
        .map_err(|e| not_sent(e.into()))?;

    let lost = |e: anyhow::Error| Attempt::Lost(e);
    let mut events = Vec::new();
    loop {
        let bytes = read_msg(&mut tls, MAX_ANSWER)
            .await
            .map_err(|e| lost(e.into()))?
            .ok_or_else(|| lost(anyhow!("the session ended")))?;
        match decode::<AgentMsg>(&bytes).map_err(|e| lost(e.into()))? {
            AgentMsg::Event { line } => {
                if print_events {
                    eprintln!("[{}] {line}", cand.name);
                }
                events.push(line);
            }
            AgentMsg::Refused(r) => {
                let mut message = format!("{} refused the call: {}", cand.name, r.message);
                if let Some(ms) = r.retry_after_ms {
                    message.push_str(&format!(" (retry after {ms} ms)"));
                }
                return Err(Attempt::Refused(Exit::new(exit::DENIED, message)));
            }
            AgentMsg::Done {
                result,
                output,
                detail,
            } => {
                let verified = verify_result(&result, &output, &cand.id, &call)
                    .context("the agent's signed result does not match the call")
                    .map_err(lost)?;
                return Ok(Answer {
                    agent: cand.name.clone(),
                    status: verified.status(),
                    output,
                    detail,
                    events,
                });
            }
        }
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
