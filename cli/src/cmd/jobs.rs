//! `wtd jobs`: your queued calls on the proxy and what became of each: queued, delivered,
//! running, done, failed, expired, refused (with the reason). Finished jobs are listed for
//! a day.

use wtd_keys::call::RequestId;
use wtd_keys::Timestamp;
use wtd_wire::jobs::JobInfo;
use wtd_wire::{Request, Response};

use crate::context::{now, Context};
use crate::exit::{self, Exit};
use crate::proxy;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(ctx: &Context, args: Args) -> anyhow::Result<()> {
    let me = ctx.identity()?;
    let info = proxy::require(&ctx.home.proxy())?;
    let jobs = proxy::runtime()?.block_on(async {
        let (client, conn) = proxy::connect(&me, &info)
            .await
            .map_err(|e| Exit::new(exit::UNREACHABLE, format!("{e:#}")))?;
        let mut recv = proxy::request(&conn, Request::Jobs).await?;
        let answer = proxy::next(&mut recv).await;
        proxy::goodbye(&client, &conn).await;
        match answer? {
            Some(Response::Jobs(list)) => Ok(list),
            _ => Err(anyhow::anyhow!(
                "the proxy did not list jobs; it may be an older wtd that knows no jobs (upgrade it)"
            )),
        }
    })?;
    if args.json {
        let list: Vec<serde_json::Value> = jobs.iter().map(json).collect();
        println!("{}", serde_json::Value::Array(list));
        return Ok(());
    }
    if jobs.is_empty() {
        println!("no jobs (`wtd push` queues one; finished jobs are listed for a day)");
        return Ok(());
    }
    let waiting = jobs.iter().filter(|j| !j.state.is_final()).count();
    println!("{} jobs, {waiting} still waiting", jobs.len());
    println!(
        "{:<30} {:<9} {:<20} {:<10} {:<8} DETAIL",
        "JOB", "STATE", "FUNCTION", "AGENT", "AGE"
    );
    let now = now();
    for j in &jobs {
        let agent = j
            .agent
            .or(j.for_agent)
            .and_then(|k| k.parse().ok())
            .map_or_else(|| "-".to_string(), |k| k.short());
        let age = wtd_keys::time::human_duration(Timestamp(j.queued_at_ms).until(now));
        println!(
            "{:<30} {:<9} {:<20} {:<10} {:<8} {}",
            RequestId(j.id).to_string(),
            j.state.word(),
            format!("{}/{}", j.mission, j.function),
            agent,
            age,
            j.detail
        );
    }
    Ok(())
}

fn json(j: &JobInfo) -> serde_json::Value {
    let key = |k: Option<wtd_wire::Key>| k.and_then(|k| k.parse().ok()).map(|k| k.to_string());
    serde_json::json!({
        "job": RequestId(j.id).to_string(),
        "state": j.state.word(),
        "mission": j.mission,
        "function": j.function,
        "for_agent": key(j.for_agent),
        "agent": key(j.agent),
        "detail": j.detail,
        "queued_at": crate::parse::format_time(Timestamp(j.queued_at_ms)),
        "expires_at": crate::parse::format_time(Timestamp(j.expires_at_ms)),
        "keep_result": j.keep_result,
    })
}
