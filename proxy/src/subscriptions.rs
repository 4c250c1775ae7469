//! Signed event streams, served: an agent's `PublishEvents`, a subscriber's `Subscribe`.
//!
//! What the proxy's checks protect, and what they do not:
//! - Only the agent itself publishes into its logs (its connection's TLS key must be the
//!   events' signer), and only for missions it advertises: nobody fills the store in an
//!   agent's name, and garbage is refused with what was dropped and why.
//! - A subscriber is served a log only if it may read it ([`crate::logs::LogStore::may_read`]:
//!   the publisher itself, an owner who adopted it, or the holder of a valid, unrevoked
//!   grant for the mission from such an owner). This keeps events from people without a
//!   grant *as long as the proxy is honest*: the proxy itself reads every event (they are
//!   signed, not encrypted), so confidentiality from the proxy is not offered.
//! - Integrity does not depend on the proxy at all: subscribers verify every signature and
//!   the chain (`wtd_keys::event`), so this code can drop or delay events, never forge,
//!   alter, reorder or hide one unnoticed.

use std::collections::HashMap;

use wtd_keys::event::LogId;
use wtd_keys::{AgentId, MissionName, PublicId, Timestamp};
use wtd_transport::{read_frame, write_frame, RecvStream, SendStream};
use wtd_wire::defaults::MAX_FRAME;
use wtd_wire::{decode, encode, Delivery, Key, LogPosition, Response, StartAt, Subscribe, SubscriberMsg};

use crate::defaults::{MAX_SUBSCRIBED_MISSIONS, SUBSCRIBE_BATCH, SUBSCRIPTION_RECHECK};
use crate::session::StreamCtx;
use crate::shared::now_ms;

async fn reply(send: &mut SendStream, msg: &Response) -> bool {
    write_frame(send, &encode(msg)).await.is_ok()
}

/// `Request::PublishEvents` from an agent: store, answer with the head, wake subscribers.
pub(crate) async fn publish(ctx: &StreamCtx, send: &mut SendStream, mission: String, entries: Vec<Vec<u8>>) {
    let answer = match check_publish(ctx, &mission, &entries) {
        Ok(seq) => Response::EventsStored { mission, seq },
        Err(why) => {
            log::info!("events of {mission} from agent {}: {why}", ctx.peer.short());
            Response::Error(why)
        }
    };
    reply(send, &answer).await;
}

fn check_publish(ctx: &StreamCtx, mission: &str, entries: &[Vec<u8>]) -> Result<u64, String> {
    if !ctx.is_agent.load(std::sync::atomic::Ordering::SeqCst) {
        return Err(
            "dropped: only a connected agent publishes events (this connection has no agent session)".into(),
        );
    }
    let mission = MissionName::new(mission).map_err(|e| format!("dropped: mission name: {e}"))?;
    let offers = ctx
        .shared
        .roster()
        .roster
        .advert_of(&Key::from(ctx.peer))
        .is_some_and(|a| a.missions.iter().any(|m| m.name == mission.as_str()));
    if !offers {
        return Err(format!(
            "dropped: this agent does not offer mission {mission}, so it publishes no events for it"
        ));
    }
    let agent = AgentId(ctx.peer);
    let owner = ctx.shared.logs().adopters(&agent).first().copied();
    let result = ctx
        .shared
        .events()
        .publish(&agent, &mission, entries, owner, now_ms());
    let (seq, trimmed) = result.map_err(|e| e.to_string())?;
    for t in trimmed {
        log::info!("events of {} before {} dropped: {}", t.log, t.before, t.reason);
    }
    ctx.shared.metrics.events_stored.inc_by(entries.len() as u64);
    Ok(seq)
}

/// Why a subscription cannot start.
fn check_subscribe(req: &Subscribe) -> Result<(Vec<MissionName>, Option<String>), String> {
    if req.missions.is_empty() || req.missions.len() > MAX_SUBSCRIBED_MISSIONS {
        return Err(format!(
            "a subscription names 1 to {MAX_SUBSCRIBED_MISSIONS} missions"
        ));
    }
    let missions = req
        .missions
        .iter()
        .map(|m| MissionName::new(m).map_err(|e| format!("mission `{m}`: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    let name = match &req.name {
        Some(n) => Some(
            MissionName::new(n)
                .map_err(|e| format!("subscription name `{n}`: {e}"))?
                .to_string(),
        ),
        None => None,
    };
    if req.start == StartAt::Kept && name.is_none() {
        return Err("--from kept needs a subscription name (--name)".into());
    }
    Ok((missions, name))
}

/// The logs of `missions` that `reader` may read now, and for each refused mission why.
fn readable(ctx: &StreamCtx, reader: &PublicId, missions: &[MissionName]) -> (Vec<LogId>, Vec<String>) {
    let now = Timestamp(now_ms());
    let candidates: Vec<LogId> = {
        let store = ctx.shared.events();
        missions.iter().flat_map(|m| store.logs_of(m)).collect()
    };
    let logs = ctx.shared.logs();
    let mut ok = Vec::new();
    let mut refused = Vec::new();
    for l in candidates {
        match logs.may_read(reader, &l.mission, &l.publisher, now) {
            Ok(()) => ok.push(l),
            Err(why) => refused.push(format!("{}: {why}", l)),
        }
    }
    (ok, refused)
}

/// `Request::Subscribe`: the stream of events, until the subscriber goes or we shut down.
pub(crate) async fn subscribe(ctx: StreamCtx, mut send: SendStream, mut recv: RecvStream, req: Subscribe) {
    let (missions, name) = match check_subscribe(&req) {
        Ok(v) => v,
        Err(why) => {
            reply(&mut send, &Response::Delivery(Delivery::Refused(why))).await;
            let _ = send.finish();
            return;
        }
    };
    let reader = ctx.peer;
    // Refuse at once if the reader may read none of the logs there are, so `wtd subscribe`
    // without a grant says so instead of waiting silently.
    let (ok, refused) = readable(&ctx, &reader, &missions);
    if ok.is_empty() && !refused.is_empty() {
        let why = format!(
            "refused: you may not read these events ({}); ask the mission's owner for a grant (wtd grant <you> --mission <mission>)",
            refused.join("; ")
        );
        reply(&mut send, &Response::Delivery(Delivery::Refused(why))).await;
        let _ = send.finish();
        return;
    }
    let mut positions: HashMap<LogId, u64> = {
        let store = ctx.shared.events();
        match &req.start {
            StartAt::Start => HashMap::new(),
            StartAt::Now => ok.iter().map(|l| (l.clone(), store.head(l))).collect(),
            StartAt::After(list) => list.iter().filter_map(position_of).collect(),
            StartAt::Kept => store.position(&reader, name.as_deref().unwrap_or_default()),
        }
    };
    let accepted: Vec<LogPosition> = ok
        .iter()
        .map(|l| to_position(l, positions.get(l).copied().unwrap_or(0)))
        .collect();
    if !reply(
        &mut send,
        &Response::Delivery(Delivery::Accepted { logs: accepted }),
    )
    .await
    {
        return;
    }
    ctx.shared.metrics.subscribers.inc();
    let acks = read_acks(&ctx, &mut recv, &reader, name.as_deref());
    let deliver = deliver(&ctx, &mut send, &reader, &missions, &mut positions);
    tokio::select! {
        () = acks => {}
        () = deliver => {}
        _ = ctx.shutdown.cancelled() => {}
    }
    ctx.shared.metrics.subscribers.dec();
    let _ = send.finish();
}

fn position_of(p: &LogPosition) -> Option<(LogId, u64)> {
    Some((
        LogId {
            publisher: AgentId(p.publisher.parse().ok()?),
            mission: MissionName::new(&p.mission).ok()?,
        },
        p.seq,
    ))
}

fn to_position(l: &LogId, seq: u64) -> LogPosition {
    LogPosition {
        publisher: Key::from(*l.publisher.key()),
        mission: l.mission.to_string(),
        seq,
    }
}

/// Reads acknowledgements until the subscriber closes its side (or breaks the protocol).
async fn read_acks(ctx: &StreamCtx, recv: &mut RecvStream, reader: &PublicId, name: Option<&str>) {
    loop {
        let frame = match read_frame(recv, MAX_FRAME).await {
            Ok(Some(f)) => f,
            _ => return,
        };
        let Ok(SubscriberMsg::Ack(pos)) = decode::<SubscriberMsg>(&frame) else {
            return;
        };
        let (Some(name), Some((log, seq))) = (name, position_of(&pos)) else {
            continue; // nothing is kept for an unnamed subscription
        };
        if let Err(e) = ctx.shared.events().acknowledge(reader, name, log, seq) {
            log::warn!("could not keep the position of subscription {name}: {e}");
        }
    }
}

/// Sends what is new, waits for more, again; stops when the reader may read nothing.
async fn deliver(
    ctx: &StreamCtx,
    send: &mut SendStream,
    reader: &PublicId,
    missions: &[MissionName],
    positions: &mut HashMap<LogId, u64>,
) {
    let mut changes = ctx.shared.events().changes();
    let mut announced: HashMap<LogId, u64> = HashMap::new();
    loop {
        changes.mark_unchanged();
        let (ok, refused) = readable(ctx, reader, missions);
        if ok.is_empty() && !refused.is_empty() {
            let why = format!("your access ended: {}", refused.join("; "));
            reply(send, &Response::Delivery(Delivery::Refused(why))).await;
            return;
        }
        let mut frames = Vec::new();
        let mut more = false;
        {
            let store = ctx.shared.events();
            for l in &ok {
                let pos = positions.get(l).copied().unwrap_or(0);
                let (events, gone) = store.after(l, pos, SUBSCRIBE_BATCH);
                if let Some((before, reason)) = gone {
                    if announced.get(l) != Some(&before) {
                        announced.insert(l.clone(), before);
                        frames.push(Delivery::Trimmed {
                            publisher: Key::from(*l.publisher.key()),
                            mission: l.mission.to_string(),
                            first: before,
                            reason,
                        });
                    }
                }
                more |= events.len() == SUBSCRIBE_BATCH;
                if let Some(last) = events.last() {
                    positions.insert(l.clone(), last.event().seq);
                }
                frames.extend(events.into_iter().map(|e| Delivery::Event(e.bytes().to_vec())));
            }
        }
        for f in frames {
            if !reply(send, &Response::Delivery(f)).await {
                return;
            }
        }
        if more {
            continue;
        }
        tokio::select! {
            changed = changes.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep(SUBSCRIPTION_RECHECK) => {}
        }
    }
}
