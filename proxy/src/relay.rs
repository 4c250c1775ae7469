//! The relay: a caller asks for a stream to agent X; the proxy opens one on X's
//! connection and splices bytes between the two, without parsing them.
//!
//! What flows inside is an end-to-end TLS session between caller and agent
//! (`wtd_transport::session`), so the proxy can drop or delay it, but cannot read, forge,
//! replay or redirect a call: connecting the caller to another agent fails the caller's
//! pinned handshake.

use tokio::io::join;
use wtd_transport::{write_frame, RecvStream, SendStream};
use wtd_wire::{encode, Key, RelayReply, Relayed};

use crate::defaults::OPEN_TIMEOUT;
use crate::session::StreamCtx;

pub(crate) async fn relay(ctx: StreamCtx, mut send: SendStream, recv: RecvStream, to: Key) {
    let agent = {
        let state = ctx.shared.roster();
        state
            .roster
            .generation_of(&to)
            .and_then(|g| state.conns.get(&g).cloned())
    };
    let Some(agent) = agent else {
        let _ = write_frame(&mut send, &encode(&RelayReply::NoSuchAgent)).await;
        let _ = send.finish();
        return;
    };
    let opened = tokio::time::timeout(OPEN_TIMEOUT, async {
        let (mut a_send, a_recv) = agent.open_bi().await?;
        write_frame(
            &mut a_send,
            &encode(&Relayed {
                from: Key::from(ctx.peer),
            }),
        )
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))?;
        anyhow::Ok((a_send, a_recv))
    })
    .await;
    let (a_send, a_recv) = match opened {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return unreachable(&mut send, e.to_string()).await,
        Err(_) => return unreachable(&mut send, "the agent did not take the stream in time".into()).await,
    };
    if write_frame(&mut send, &encode(&RelayReply::Connected))
        .await
        .is_err()
    {
        return;
    }
    let mut caller = join(recv, send);
    let mut callee = join(a_recv, a_send);
    tokio::select! {
        _ = ctx.shutdown.cancelled() => {}
        r = tokio::io::copy_bidirectional(&mut caller, &mut callee) => {
            if let Err(e) = r {
                log::debug!("relay from {} ended: {e}", ctx.peer.short());
            }
        }
    }
}

async fn unreachable(send: &mut SendStream, why: String) {
    let _ = write_frame(send, &encode(&RelayReply::Unreachable(why))).await;
    let _ = send.finish();
}
