//! `wtd result req-...`: what became of a job, and its output if it was kept (`wtd call
//! --async`); `--wait` waits for it to finish.
//!
//! The proxy hands back the job as you signed it and the agent's signed result; both are
//! checked here before a byte of output is printed (`wtd_keys::job::verify_job_result`):
//! the job must be yours and the one asked for, the result signed by the agent that ran it
//! (the one you named with `--agent`, if you did; otherwise one that the owner the job names
//! adopted, by her log as verified here), for exactly this job and this output.
//! So the proxy cannot forge or alter a result; it can only withhold one.
//!
//! Exit codes as for `wtd call` (`cli/src/exit.rs`): 0 done, 7 it ran and failed, 3 the
//! agent refused it (no grant, revoked, ...), 4 it expired before any agent took it, 5 not
//! finished yet (or not within `--timeout`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use wtd_caller::Caller;

use wtd_keys::call::{CallStatus, RequestId, ResultError};
use wtd_keys::job::{verify_job_result, SignedJob};
use wtd_wire::call::Status;
use wtd_wire::jobs::{JobAnswer, JobOutcome, JobState};
use wtd_wire::{Request, Response};

use crate::context::Context;
use crate::exit::{self, Exit};
use crate::proxy;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The job, as `wtd push` or `wtd call --async` printed it (`req-...`).
    pub job: String,
    /// Wait for it to finish (up to `--timeout`).
    #[arg(long)]
    pub wait: bool,
    /// With `--wait`, give up after this long: `30s`, `10min`.
    #[arg(long, default_value = "10min")]
    pub timeout: String,
    /// Print a JSON envelope (job, state, agent, status, output, detail).
    #[arg(long)]
    pub json: bool,
}

pub fn run(ctx: &Context, args: Args) -> anyhow::Result<()> {
    let me = ctx.identity()?;
    let info = proxy::require(&ctx.home.proxy())?;
    let id: RequestId = args.job.parse().map_err(|_| {
        Exit::new(
            exit::USAGE,
            format!(
                "`{}` is not a job id; they look like req-... (`wtd jobs` lists yours)",
                args.job
            ),
        )
    })?;
    let timeout = humantime::parse_duration(&args.timeout).map_err(|_| {
        Exit::new(
            exit::USAGE,
            format!("--timeout {}: write a duration like 30s or 10min", args.timeout),
        )
    })?;
    let answer = proxy::runtime()?.block_on(async {
        let (client, conn) = proxy::connect(&me, &info)
            .await
            .map_err(|e| Exit::new(exit::UNREACHABLE, format!("{e:#}")))?;
        let deadline = Instant::now() + if args.wait { timeout } else { Duration::ZERO };
        let answer = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let wait_ms = left.as_millis() as u64;
            let mut recv = proxy::request(&conn, Request::JobResult { id: id.0, wait_ms }).await?;
            let answer = match proxy::next(&mut recv).await? {
                Some(Response::JobResult(a)) => a,
                _ => {
                    anyhow::bail!("the proxy did not answer with a job; it may be an older wtd (upgrade it)")
                }
            };
            // The proxy answers after at most a minute; ask again until the deadline.
            if answer.info.state.is_final() || Instant::now() >= deadline {
                break answer;
            }
        };
        // A job for any agent: the result's signer must be an agent the job's owner adopted
        // (as her verified log says), or the proxy could have run it on a key of its own.
        let signer_adopted = match (&answer.outcome, SignedJob::decode(&answer.job)) {
            (Some(JobOutcome::Ran { signed, .. }), Ok(job)) if job.job().agent.is_none() => {
                match wtd_keys::call::SignedResult::decode(signed) {
                    Ok(r) => {
                        let owner = job.job().owner;
                        let caller = Caller::new(Arc::new(ctx.identity()?), conn.clone());
                        let book = crate::adoptions::book(ctx, &me, None, &caller, &[owner]).await;
                        let agent = r.result().agent;
                        Some((agent, owner, book.adopts(&owner, &agent)))
                    }
                    Err(_) => None,
                }
            }
            _ => None,
        };
        proxy::goodbye(&client, &conn).await;
        Ok::<_, anyhow::Error>((answer, signer_adopted))
    })?;
    let (answer, signer_adopted) = answer;
    if let Some((agent, owner, false)) = signer_adopted {
        anyhow::bail!(
            "the result of {id} is signed by {}, which {} (whose authority the job named) has not adopted: \
             not showing it; the proxy may have run the job on a machine of its own",
            agent.key().short(),
            owner.key().short()
        );
    }
    show(&me, id, answer, args.json)
}

fn show(me: &wtd_keys::SecretKey, id: RequestId, answer: JobAnswer, json: bool) -> anyhow::Result<()> {
    // The job must be ours and the one asked for: a proxy cannot make one up.
    let job = SignedJob::decode(&answer.job).map_err(|e| {
        anyhow::anyhow!("the proxy sent back a job that does not verify ({e}); it may be tampering")
    })?;
    if job.job().caller.key() != &me.public() || job.job().request_id != id {
        anyhow::bail!("the proxy sent back another job than {id}; it may be tampering");
    }
    let state = answer.info.state;
    let mut envelope = serde_json::json!({
        "job": id.to_string(),
        "state": state.word(),
        "detail": answer.info.detail,
    });
    let result = match (state, &answer.outcome) {
        (
            JobState::Done | JobState::Failed,
            Some(JobOutcome::Ran {
                status,
                output,
                detail,
                signed,
            }),
        ) => {
            let keep = job.job().keep_result;
            let checked = verify_job_result(signed, output, &job);
            let (verified, output_kept) = match checked {
                Ok(v) => (v, true),
                // A pushed job's (or a too-big) output is not kept: check everything else.
                Err(ResultError::OutputMismatch) if output.is_empty() => {
                    let v = wtd_keys::call::SignedResult::decode(signed)
                        .map_err(|e| anyhow::anyhow!("the result does not verify: {e}"))?;
                    verify_fields(&v, &job)?;
                    (v, false)
                }
                Err(e) => anyhow::bail!("{e}; not showing this result (the proxy may be tampering)"),
            };
            let r = verified.result();
            if wire(r.status) != *status {
                anyhow::bail!("the proxy reported another status than the agent signed; it may be tampering");
            }
            envelope["agent"] = r.agent.to_string().into();
            envelope["status"] = format!("{:?}", r.status).to_lowercase().into();
            let text = String::from_utf8_lossy(output).into_owned();
            envelope["output"] =
                serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text.clone()));
            if !json {
                if output_kept {
                    print!("{text}");
                    if !text.ends_with('\n') && !text.is_empty() {
                        println!();
                    }
                } else if keep {
                    eprintln!("wtd: {detail}");
                } else {
                    eprintln!(
                        "wtd: it ran on {} ({}); a pushed job's output is not kept (use `wtd call --async` to collect it)",
                        r.agent.key().short(),
                        if r.status == CallStatus::Ok { "ok" } else { "failed" }
                    );
                }
            }
            if r.status == CallStatus::Ok {
                Ok(())
            } else {
                Err(Exit::new(exit::FAILED, format!("{id} ran and failed: {detail}")))
            }
        }
        (JobState::Refused, _) => Err(Exit::new(
            exit::DENIED,
            format!(
                "{id} was refused by the agent and never ran: {}",
                answer.info.detail
            ),
        )),
        (JobState::Expired, _) => Err(Exit::new(
            exit::UNREACHABLE,
            format!("{id} expired: {}", answer.info.detail),
        )),
        (s, _) if s.is_final() => Err(Exit::new(exit::FAILED, format!("{id}: {}", answer.info.detail))),
        (s, _) => Err(Exit::new(
            exit::TIMEOUT,
            format!(
                "{id} is {} (not finished yet); `wtd result {id} --wait` waits for it",
                s.word()
            ),
        )),
    };
    if json {
        println!("{envelope}");
    }
    result.map_err(Into::into)
}

/// The checks of `verify_job_result` other than the output's.
fn verify_fields(v: &wtd_keys::call::SignedResult, job: &SignedJob) -> anyhow::Result<()> {
    let r = v.result();
    if let Some(a) = job.job().agent {
        anyhow::ensure!(
            r.agent == a,
            "the result is signed by another agent than the job names"
        );
    }
    anyhow::ensure!(
        r.request_id == job.job().request_id && r.call_hash == job.hash(),
        "the result answers another job; the proxy may be tampering"
    );
    Ok(())
}

fn wire(s: CallStatus) -> Status {
    match s {
        CallStatus::Ok => Status::Ok,
        CallStatus::Failed => Status::Failed,
        CallStatus::TimedOut => Status::TimedOut,
        CallStatus::Cancelled => Status::Cancelled,
        CallStatus::OutputTooLarge => Status::OutputTooLarge,
    }
}
