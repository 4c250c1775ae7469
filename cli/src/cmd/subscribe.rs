//! `wtd subscribe social/unfriend photos --from start`: stream signed events as JSON
//! lines, verifying each one.
//!
//! Every event is checked here, not trusted from the proxy: its publisher's signature, and
//! that it chains onto the previous event of its log (same publisher, same mission). So a
//! proxy can drop or delay events, but a forged, altered or reordered event, or a hidden
//! gap, stops the stream with an error saying so (exit code 8). Events that depend on other
//! events (emitted while handling them) are printed only after those, whatever order the
//! proxy sends them in.
//!
//! With `--name`, the subscription is durable: each event printed is acknowledged, the
//! proxy keeps the position, and the next `wtd subscribe --name` with the same name goes on
//! from there (`--from` overrides it).

use std::collections::BTreeSet;
use std::io::Write;
use std::time::Duration;

use anyhow::Context as _;
use wtd_keys::event::{Accepted, CausalOrder, Chain, LogId, SignedEvent};
use wtd_keys::{AgentId, MissionName, TopicName};
use wtd_transport::{read_frame, write_frame};
use wtd_wire::defaults::MAX_FRAME;
use wtd_wire::{
    decode, encode, Delivery, Key, LogPosition, Open, Request, Response, StartAt, Subscribe, SubscriberMsg,
};

use crate::context::Context;
use crate::exit::{Exit, DENIED, TAMPERED, UNREACHABLE, USAGE};
use crate::proxy;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// What to stream: `mission` (every topic) or `mission/topic`, one or more.
    #[arg(required = true)]
    pub targets: Vec<String>,
    /// Where to start: `start` (every event the proxy holds), `now` (only new ones), or a
    /// position printed with an event (`<publisher>:<mission>:<seq>`, comma-separated for
    /// several logs). Default: `now`, or where `--name` left off.
    #[arg(long)]
    pub from: Option<String>,
    /// Make the subscription durable under this name: the proxy keeps the position of the
    /// last event printed, and the next run with this name goes on from there.
    #[arg(long)]
    pub name: Option<String>,
    /// Stop after this many events.
    #[arg(long)]
    pub count: Option<u64>,
    /// Stop when no event has come for this long (`5s`); default: run until Ctrl-C.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub idle: Option<Duration>,
}

struct Target {
    mission: MissionName,
    topic: Option<TopicName>,
}

fn parse_target(text: &str) -> Result<Target, String> {
    let (m, t) = match text.split_once('/') {
        Some((m, t)) => (
            m,
            Some(TopicName::new(t).map_err(|e| format!("topic in `{text}`: {e}"))?),
        ),
        None => (text, None),
    };
    Ok(Target {
        mission: MissionName::new(m).map_err(|e| format!("mission in `{text}`: {e}"))?,
        topic: t,
    })
}

/// Parses `--from`.
pub fn parse_from(text: &str) -> Result<StartAt, String> {
    match text {
        "start" => return Ok(StartAt::Start),
        "now" => return Ok(StartAt::Now),
        _ => {}
    }
    let mut logs = Vec::new();
    for part in text.split(',') {
        let mut it = part.trim().split(':');
        let (Some(p), Some(m), Some(seq), None) = (it.next(), it.next(), it.next(), it.next()) else {
            return Err(format!(
                "`{part}` is not a position: use start, now, or <publisher>:<mission>:<seq> as printed with an event"
            ));
        };
        let publisher: AgentId = p.parse().map_err(|e| format!("publisher `{p}`: {e}"))?;
        let mission = MissionName::new(m).map_err(|e| format!("mission `{m}`: {e}"))?;
        let seq: u64 = seq
            .parse()
            .map_err(|_| format!("`{seq}` is not an event number"))?;
        logs.push(LogPosition {
            publisher: Key::from(*publisher.key()),
            mission: mission.to_string(),
            seq,
        });
    }
    Ok(StartAt::After(logs))
}

/// One event as a JSON line.
fn event_json(e: &SignedEvent) -> serde_json::Value {
    let ev = e.event();
    let body: serde_json::Value =
        serde_json::from_str(&ev.body).unwrap_or(serde_json::Value::String(ev.body.clone()));
    serde_json::json!({
        "mission": ev.log.mission.as_str(),
        "topic": ev.topic.as_str(),
        "body": body,
        "publisher": ev.log.publisher.to_string(),
        "seq": ev.seq,
        "at": ev.at.0,
        "deps": ev.deps.iter().map(|d| format!("{}:{}:{}", d.log.publisher, d.log.mission, d.seq)).collect::<Vec<_>>(),
        "position": format!("{}:{}:{}", ev.log.publisher, ev.log.mission, ev.seq),
    })
}

pub fn run(ctx: &Context, args: Args) -> anyhow::Result<()> {
    let targets = args
        .targets
        .iter()
        .map(|t| parse_target(t))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Exit::new(USAGE, e))?;
    let start = match (&args.from, &args.name) {
        (Some(f), _) => parse_from(f).map_err(|e| Exit::new(USAGE, e))?,
        (None, Some(_)) => StartAt::Kept,
        (None, None) => StartAt::Now,
    };
    let missions: BTreeSet<MissionName> = targets.iter().map(|t| t.mission.clone()).collect();
    let me = ctx.identity()?;
    let info = proxy::require(&ctx.home.proxy())?;
    proxy::runtime()?.block_on(async {
        let (client, conn) = proxy::connect(&me, &info)
            .await
            .map_err(|e| Exit::new(UNREACHABLE, format!("{e:#}")))?;
        let (mut send, mut recv) = conn.open_bi().await.context("opening a stream to the proxy")?;
        let request = Open::Request(Request::Subscribe(Subscribe {
            missions: missions.iter().map(|m| m.to_string()).collect(),
            start: start.clone(),
            name: args.name.clone(),
        }));
        write_frame(&mut send, &encode(&request)).await?;
        let mut chain = Chain::new();
        if let StartAt::After(list) = &start {
            for p in list {
                if let (Ok(k), Ok(m)) = (p.publisher.parse(), MissionName::new(&p.mission)) {
                    chain.start_at(
                        LogId {
                            publisher: AgentId(k),
                            mission: m,
                        },
                        p.seq,
                        None,
                    );
                }
            }
        }
        let reads = missions.clone();
        let mut order = CausalOrder::new(move |l| reads.contains(&l.mission));
        let mut printed = 0u64;
        let stdout = std::io::stdout();
        let result: anyhow::Result<()> = async {
            loop {
                if args.count.is_some_and(|n| printed >= n) {
                    return Ok(());
                }
                let frame = match args.idle {
                    Some(idle) => match tokio::time::timeout(idle, read_frame(&mut recv, MAX_FRAME)).await {
                        Ok(f) => f?,
                        Err(_) => return Ok(()),
                    },
                    None => read_frame(&mut recv, MAX_FRAME).await?,
                };
                let Some(frame) = frame else {
                    anyhow::bail!("the proxy ended the subscription");
                };
                let delivery = match decode::<Response>(&frame)? {
                    Response::Delivery(d) => d,
                    Response::Error(e) => anyhow::bail!("the proxy said: {e}"),
                    other => anyhow::bail!(
                        "the proxy answered a subscription with {other:?}; is it older than this wtd?"
                    ),
                };
                match delivery {
                    Delivery::Accepted { logs } => {
                        // Starting `now` or from a kept position: each log goes on from
                        // where the proxy says this subscription starts.
                        if matches!(start, StartAt::Now | StartAt::Kept) {
                            for p in logs {
                                if let (Ok(k), Ok(m)) = (p.publisher.parse(), MissionName::new(&p.mission)) {
                                    let l = LogId {
                                        publisher: AgentId(k),
                                        mission: m,
                                    };
                                    chain.start_at(l.clone(), p.seq, None);
                                    order.delivered_up_to(l, p.seq);
                                }
                            }
                        }
                    }
                    Delivery::Refused(why) => {
                        return Err(Exit::new(DENIED, format!("subscription refused: {why}")).into())
                    }
                    Delivery::Trimmed {
                        publisher,
                        mission,
                        first,
                        reason,
                    } => {
                        let (Ok(k), Ok(m)) = (publisher.parse(), MissionName::new(&mission)) else {
                            continue;
                        };
                        let l = LogId {
                            publisher: AgentId(k),
                            mission: m,
                        };
                        let have = chain.head(&l).map_or(0, |h| h.seq);
                        if have + 1 < first {
                            eprintln!(
                                "note: events {}..{} of {l} are gone from the proxy: {reason}",
                                have + 1,
                                first - 1
                            );
                            chain.start_at(l.clone(), first - 1, None);
                            order.delivered_up_to(l, first - 1);
                        }
                    }
                    Delivery::Event(bytes) => {
                        let event = SignedEvent::decode(&bytes).map_err(|e| {
                            Exit::new(
                                TAMPERED,
                                format!("the proxy sent an event that was altered or forged: {e}"),
                            )
                        })?;
                        match chain.accept(&event) {
                            Ok(Accepted::Duplicate) => continue,
                            Ok(Accepted::Next) => {}
                            Err(e) => return Err(Exit::new(TAMPERED, format!("{e}")).into()),
                        }
                        for e in order
                            .offer(event)
                            .map_err(|e| Exit::new(TAMPERED, e.to_string()))?
                        {
                            let ev = e.event();
                            let wanted = targets.iter().any(|t| {
                                t.mission == ev.log.mission && t.topic.as_ref().is_none_or(|x| x == &ev.topic)
                            });
                            if wanted {
                                let mut out = stdout.lock();
                                writeln!(out, "{}", event_json(&e))?;
                                out.flush()?;
                                printed += 1;
                            }
                            if args.name.is_some() {
                                let ack = SubscriberMsg::Ack(LogPosition {
                                    publisher: Key::from(*ev.log.publisher.key()),
                                    mission: ev.log.mission.to_string(),
                                    seq: ev.seq,
                                });
                                write_frame(&mut send, &encode(&ack)).await?;
                            }
                            if args.count.is_some_and(|n| printed >= n) {
                                return Ok(());
                            }
                        }
                    }
                }
            }
        }
        .await;
        let _ = send.finish();
        // Let the last acknowledgements reach the proxy before closing.
        if args.name.is_some() {
            let _ = tokio::time::timeout(Duration::from_millis(500), send.stopped()).await;
        }
        proxy::goodbye(&client, &conn).await;
        result
    })
}
