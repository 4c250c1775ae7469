//! Requests from the CLI: the roster, a live watch, owner logs, and jobs.

use tokio::sync::broadcast::error::RecvError;
use wtd_keys::{OwnerKey, UserKey};
use wtd_transport::{write_frame, SendStream};
use wtd_wire::defaults::ROSTER_CHUNK_BYTES;
use wtd_wire::{chunk_agents, encode, encode_frame_into, AgentInfo, Request, Response, RosterEvent};

use crate::session::StreamCtx;

async fn reply(send: &mut SendStream, msg: &Response) -> bool {
    write_frame(send, &encode(msg)).await.is_ok()
}

pub(crate) async fn serve(ctx: StreamCtx, mut send: SendStream, req: Request) {
    match req {
        Request::Roster => {
            // In several messages when it does not fit in one; the client reads them all,
            // to the end of the stream.
            let snapshot = ctx.shared.roster().roster.snapshot();
            for chunk in chunk_agents(snapshot, ROSTER_CHUNK_BYTES) {
                if !reply(&mut send, &Response::Roster(chunk)).await {
                    return;
                }
            }
        }
        Request::Watch => {
            ctx.shared.metrics.watchers.inc();
            watch(&ctx, &mut send).await;
            ctx.shared.metrics.watchers.dec();
        }
        Request::Waiting => {
            let waiting = ctx.shared.waiting();
            reply(&mut send, &Response::Waiting(waiting)).await;
        }
        Request::PublishLog { entries } => {
            // What the proxy held before, so the dashboard shows only what is new.
            let before = entries
                .first()
                .and_then(|b| wtd_keys::log::SignedEntry::decode(b).ok())
                .map_or(0, |e| ctx.shared.logs().head(&e.owner));
            let result = ctx.shared.logs().publish(&entries);
            match result {
                Ok((owner, seq)) => {
                    ctx.shared.metrics.owner_logs_published.inc();
                    publish_log_events(&ctx, &entries);
                    dashboard_log_events(&ctx, &entries, before);
                    log::info!(
                        "owner {} published its log, now {seq} entries",
                        owner.key().short()
                    );
                    let _ = ctx.shared.log_updates.send(owner);
                    reply(&mut send, &Response::LogStored { seq }).await;
                }
                Err(e) => {
                    log::info!("refused a log from {}: {e}", ctx.peer.short());
                    reply(&mut send, &Response::Error(e.to_string())).await;
                }
            }
        }
        Request::LogHead { owner } => {
            let seq = owner.parse().map_or(0, |k| ctx.shared.logs().head(&OwnerKey(k)));
            reply(&mut send, &Response::LogStored { seq }).await;
        }
        Request::PublishEvents { mission, entries } => {
            crate::subscriptions::publish(&ctx, &mut send, mission, entries).await;
        }
        Request::Subscribe(_) => {
            unreachable!("session::stream hands subscriptions to subscriptions::subscribe")
        }
        Request::FetchLog { owner, after_seq } => {
            let batches = match owner.parse() {
                Ok(k) => ctx.shared.logs().batches_after(&OwnerKey(k), after_seq),
                Err(_) => Vec::new(),
            };
            for entries in batches {
                if !reply(&mut send, &Response::Log { entries }).await {
                    return;
                }
            }
        }
        Request::Push { job, args } => {
            let pushed = ctx
                .shared
                .jobs()
                .push(&UserKey(ctx.peer), &job, args, crate::shared::now_ms());
            let msg = match pushed {
                Ok(expires_at_ms) => {
                    ctx.shared.metrics.jobs_pushed.inc();
                    ctx.shared.jobs_changed();
                    let id = wtd_keys::job::SignedJob::decode(&job)
                        .map(|j| j.job().request_id.0)
                        .unwrap_or_default();
                    log::info!("queued a job from {}", ctx.peer.short());
                    Response::JobQueued { id, expires_at_ms }
                }
                Err(e) => {
                    ctx.shared.metrics.jobs_refused.inc();
                    log::info!("refused a job from {}: {e}", ctx.peer.short());
                    Response::PushRefused(e.to_string())
                }
            };
            reply(&mut send, &msg).await;
        }
        Request::Jobs => {
            let list = ctx
                .shared
                .jobs()
                .list(&UserKey(ctx.peer), crate::shared::now_ms());
            reply(&mut send, &Response::Jobs(list)).await;
        }
        Request::JobResult { id, wait_ms } => job_result(&ctx, &mut send, id, wait_ms).await,
    }
    let _ = send.finish();
}

/// One of the sender's jobs; if it is not final yet, waits (up to `wait_ms`, capped) for
/// it to be, or for the caller to go away.
async fn job_result(ctx: &StreamCtx, send: &mut SendStream, id: wtd_wire::jobs::JobId, wait_ms: u64) {
    let me = UserKey(ctx.peer);
    let wait = std::time::Duration::from_millis(wait_ms).min(crate::defaults::MAX_RESULT_WAIT);
    let deadline = tokio::time::Instant::now() + wait;
    // Subscribe before looking, so a change in between is not missed.
    let mut changes = ctx.shared.job_changes.subscribe();
    loop {
        let answer = ctx.shared.jobs().answer(&me, &id, crate::shared::now_ms());
        let Some(answer) = answer else {
            let why = "you have no job with that id on this proxy (finished jobs are kept for a day; \
                       `wtd jobs` lists yours)";
            reply(send, &Response::Error(why.into())).await;
            return;
        };
        if answer.info.state.is_final() || tokio::time::Instant::now() >= deadline {
            reply(send, &Response::JobResult(answer)).await;
            return;
        }
        tokio::select! {
            _ = ctx.shutdown.cancelled() => return,
            _ = send.stopped() => return,
            _ = tokio::time::sleep_until(deadline) => {}
            changed = changes.changed() => if changed.is_err() { return },
        }
    }
}

/// A watch's snapshot as frames: a `Snapshot` of the agents that fit in one frame, then
/// the rest as `Upsert`s, so a roster of any size arrives whole, and a watcher of any
/// version (which replaces its roster on a `Snapshot` and adds on an `Upsert`) ends up
/// with every agent.
pub(crate) fn snapshot_frames(all: Vec<AgentInfo>) -> Vec<u8> {
    let mut chunks = chunk_agents(all, ROSTER_CHUNK_BYTES).into_iter();
    let mut buf = Vec::new();
    let first = chunks.next().unwrap_or_default();
    encode_frame_into(&Response::Event(RosterEvent::Snapshot(first)), &mut buf);
    for a in chunks.flatten() {
        encode_frame_into(&Response::Event(RosterEvent::Upsert(a)), &mut buf);
    }
    buf
}

/// A snapshot, then the roster's changes, one batch per interval holding the latest
/// change per agent, until the watcher goes away or we shut down. A watcher too slow to
/// keep up gets a fresh snapshot instead of an unbounded queue.
async fn watch(ctx: &StreamCtx, send: &mut SendStream) {
    let (mut batches, snapshot) = {
        let state = ctx.shared.roster();
        (ctx.shared.subscribe(&state), state.roster.snapshot())
    };
    if send.write_all(&snapshot_frames(snapshot)).await.is_err() {
        return;
    }
    loop {
        let batch = tokio::select! {
            _ = ctx.shutdown.cancelled() => return,
            _ = send.stopped() => return,
            b = batches.recv() => b,
        };
        let written = match batch {
            Ok(batch) => send.write_all(batch.frames()).await,
            Err(RecvError::Lagged(_)) => {
                let snapshot = {
                    let state = ctx.shared.roster();
                    batches = ctx.shared.subscribe(&state);
                    state.roster.snapshot()
                };
                send.write_all(&snapshot_frames(snapshot)).await
            }
            Err(RecvError::Closed) => return,
        };
        if written.is_err() {
            return;
        }
    }
}

/// Grants, revocations and adoptions on the dashboard, as they happen. Entries the proxy
/// had already (up to `before`) are not shown again.
fn dashboard_log_events(ctx: &StreamCtx, entries: &[Vec<u8>], before: u64) {
    let Some(dashboard) = &ctx.shared.dashboard else {
        return;
    };
    let now = crate::shared::now_ms();
    // Verified by `publish` (which took them); one that does not decode is skipped.
    let decoded: Vec<wtd_keys::log::SignedEntry> = entries
        .iter()
        .filter_map(|b| wtd_keys::log::SignedEntry::decode(b).ok())
        .filter(|e| e.seq > before)
        .collect();
    if decoded.is_empty() {
        return;
    }
    let mut adoptions = false;
    dashboard.change(|f| {
        for e in &decoded {
            adoptions |= matches!(e.record, wtd_keys::log::Record::Adoption(_));
            f.push(crate::dashboard::log_event(e, now));
        }
    });
    if adoptions {
        crate::dashboard::refresh_adoptions(&ctx.shared, dashboard);
    }
}

/// Grants and revocations as MQTT events: who may call what until when (metadata only).
fn publish_log_events(ctx: &StreamCtx, entries: &[Vec<u8>]) {
    let (Some(bridge), Some(mqtt)) = (&ctx.shared.bridge, &ctx.shared.config.mqtt) else {
        return;
    };
    let topics = wtd_telemetry::Topics::new(&mqtt.cluster, &mqtt.discovery_prefix);
    let now = crate::shared::now_ms();
    for bytes in entries {
        // Stored entries were verified by `publish`; one that does not decode is skipped.
        let Ok(entry) = wtd_keys::log::SignedEntry::decode(bytes) else {
            continue;
        };
        let owner = entry.owner.key().short();
        let event = match &entry.record {
            wtd_keys::log::Record::Grant(g) => {
                let g = g.grant();
                wtd_telemetry::events::grant(
                    &owner,
                    &g.subject.key().short(),
                    g.mission.as_str(),
                    g.expires.0,
                    now,
                )
            }
            wtd_keys::log::Record::Revocation(r) => {
                let what = match &r.revocation().target {
                    wtd_keys::revocation::Target::Grant(id) => format!("grant {id:?}"),
                    wtd_keys::revocation::Target::SubjectMission(u, m) => {
                        format!("{}'s grants for {}", u.key().short(), m.as_str())
                    }
                    wtd_keys::revocation::Target::SubjectAll(u) => {
                        format!("all of {}'s grants", u.key().short())
                    }
                    wtd_keys::revocation::Target::Grants { label, grants } => {
                        format!("lesson {label:?} ({} grants)", grants.len())
                    }
                };
                wtd_telemetry::events::revocation(&owner, &what, now)
            }
            wtd_keys::log::Record::Adoption(a) => {
                let a = a.adoption();
                let adopt = a.action == wtd_keys::adoption::Action::Adopt;
                wtd_telemetry::events::adoption(&owner, &a.agent.key().short(), adopt, now)
            }
        };
        bridge.publish(wtd_telemetry::Publication::event(
            topics.events(),
            event.to_string(),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wtd_wire::defaults::MAX_FRAME;
    use wtd_wire::{decode, Advert, Key};

    #[test]
    fn a_watch_snapshot_bigger_than_a_frame_arrives_whole_in_frames_that_fit() {
        // A roster built in-process, larger than one frame.
        let mut roster = crate::roster::Roster::default();
        for i in 0..10_000u32 {
            let mut id = [0; 32];
            id[..4].copy_from_slice(&i.to_be_bytes());
            let advert = Advert {
                name: format!("pi-{i:05}"),
                owners: vec![Key([9; 32])],
                missions: vec![],
                tags: vec![],
                model: Some("Raspberry Pi 4 Model B Rev 1.4 and some more words".into()),
                software: "wtd 0.1.0".into(),
                warnings: vec![],
                enrollment: None,
            };
            roster.join(Key(id), advert, 1);
        }
        let all = roster.snapshot();
        assert!(encode(&Response::Event(RosterEvent::Snapshot(all.clone()))).len() > MAX_FRAME);

        // Read the frames as `wtd ls --watch` does: replace on Snapshot, add on Upsert.
        let bytes = snapshot_frames(all.clone());
        let (mut rest, mut frames) = (&bytes[..], 0);
        let mut seen: Vec<wtd_wire::AgentInfo> = Vec::new();
        while !rest.is_empty() {
            let len = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
            assert!(len <= MAX_FRAME);
            match decode::<Response>(&rest[4..4 + len]).unwrap() {
                Response::Event(RosterEvent::Snapshot(s)) => {
                    assert_eq!(frames, 0, "the snapshot comes first");
                    seen = s;
                }
                Response::Event(RosterEvent::Upsert(a)) => seen.push(a),
                other => panic!("unexpected {other:?}"),
            }
            frames += 1;
            rest = &rest[4 + len..];
        }
        assert!(frames > 1);
        assert_eq!(seen, all, "every agent, once");
    }
}
