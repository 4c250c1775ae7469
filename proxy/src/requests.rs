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
        Request::Watch => watch(&ctx, &mut send).await,
        Request::Waiting => {
            let waiting = ctx.shared.waiting();
            reply(&mut send, &Response::Waiting(waiting)).await;
        }
        Request::PublishLog { entries } => {
            let result = ctx.shared.logs().publish(&entries);
            match result {
                Ok((owner, seq)) => {
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
