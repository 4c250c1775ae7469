//! Requests from the CLI: the roster, a live watch, and owner logs.

use tokio::sync::broadcast::error::RecvError;
use wtd_keys::OwnerKey;
use wtd_transport::{write_frame, SendStream};
use wtd_wire::{encode, Request, Response, RosterEvent};

use crate::session::StreamCtx;

async fn reply(send: &mut SendStream, msg: &Response) -> bool {
    write_frame(send, &encode(msg)).await.is_ok()
}

pub(crate) async fn serve(ctx: StreamCtx, mut send: SendStream, req: Request) {
    match req {
        Request::Roster => {
            let snapshot = ctx.shared.roster().roster.snapshot();
            reply(&mut send, &Response::Roster(snapshot)).await;
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
            let result = ctx.shared.logs().publish(&entries);
            match result {
                Ok((owner, seq)) => {
                    ctx.shared.metrics.owner_logs_published.inc();
                    publish_log_events(&ctx, &entries);
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
    }
    let _ = send.finish();
}

/// A snapshot, then every change, until the watcher goes away or we shut down. A watcher
/// too slow to keep up gets a fresh snapshot instead of an unbounded queue.
async fn watch(ctx: &StreamCtx, send: &mut SendStream) {
    let (mut events, snapshot) = {
        let state = ctx.shared.roster();
        (ctx.shared.subscribe(&state), state.roster.snapshot())
    };
    if !reply(send, &Response::Event(RosterEvent::Snapshot(snapshot))).await {
        return;
    }
    loop {
        let event = tokio::select! {
            _ = ctx.shutdown.cancelled() => return,
            _ = send.stopped() => return,
            e = events.recv() => e,
        };
        let event = match event {
            Ok(e) => e,
            Err(RecvError::Lagged(_)) => {
                let state = ctx.shared.roster();
                events = ctx.shared.subscribe(&state);
                RosterEvent::Snapshot(state.roster.snapshot())
            }
            Err(RecvError::Closed) => return,
        };
        if !reply(send, &Response::Event(event)).await {
            return;
        }
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
