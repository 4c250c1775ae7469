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
        ctx.shared.metrics.relays_failed.inc();
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
    if !matches!(opened, Ok(Ok(_))) {
        ctx.shared.metrics.relays_failed.inc();
    }
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
    let caller = Key::from(ctx.peer);
    if let Some(d) = &ctx.shared.dashboard {
        // The agent's name from the roster itself: the feed learns of agents from roster
        // batches, which on a busy proxy can lag a session to an agent that just came.
        let name = ctx.shared.roster().roster.advert_of(&to).map(|a| a.name.clone());
        d.change(|f| f.relay_opened(&to, &caller, name.as_deref(), crate::shared::now_ms()));
    }
    // However the session ends (even if this task is dropped), the dashboard hears.
    let _closed = OnDrop(|| {
        if let Some(d) = &ctx.shared.dashboard {
            d.feed().relay_closed(&to, &caller, crate::shared::now_ms());
        }
    });
    let metrics = &ctx.shared.metrics;
    metrics.relays.inc();
    metrics.relays_open.inc();
    let started = std::time::Instant::now();
    let started_ms = crate::shared::now_ms();
    let bytes = |d: &str| crate::metrics::DirectionLabels { direction: d.into() };
    // Counted as they flow, so a session that ends by a lost connection (the usual end:
    // the caller's process exits) still counts.
    let up_counter = metrics.relay_bytes.get_or_create(&bytes("to_agent")).clone();
    let down_counter = metrics.relay_bytes.get_or_create(&bytes("from_agent")).clone();
    let up_before = up_counter.get();
    let down_before = down_counter.get();
    let mut caller = join(
        Counted {
            inner: recv,
            counter: up_counter.clone(),
        },
        send,
    );
    let mut callee = join(
        Counted {
            inner: a_recv,
            counter: down_counter.clone(),
        },
        a_send,
    );
    let outcome = tokio::select! {
        _ = ctx.shutdown.cancelled() => "proxy_shutdown",
        r = tokio::io::copy_bidirectional(&mut caller, &mut callee) => match r {
            Ok(_) => "closed",
            Err(e) => {
                log::debug!("relay from {} ended: {e}", ctx.peer.short());
                "lost"
            }
        },
    };
    metrics.relays_open.dec();
    // Other sessions add to the same counters meanwhile: this is approximate for the event,
    // exact for the metric.
    let up = up_counter.get().saturating_sub(up_before);
    let down = down_counter.get().saturating_sub(down_before);
    if let Some(bridge) = &ctx.shared.bridge {
        if let Some(mqtt) = &ctx.shared.config.mqtt {
            let name = ctx
                .shared
                .roster()
                .roster
                .advert_of(&to)
                .map(|a| a.name.clone())
                .unwrap_or_default();
            let event = wtd_telemetry::events::session(
                &ctx.peer.short(),
                &wtd_telemetry::topics::agent_id_text(&to),
                &name,
                started_ms,
                started.elapsed().as_millis() as u64,
                up,
                down,
                outcome,
            );
            let topics = wtd_telemetry::Topics::new(&mqtt.cluster, &mqtt.discovery_prefix);
            bridge.publish(wtd_telemetry::Publication::event(
                topics.events(),
                event.to_string(),
            ));
        }
    }
}

async fn unreachable(send: &mut SendStream, why: String) {
    let _ = write_frame(send, &encode(&RelayReply::Unreachable(why))).await;
    let _ = send.finish();
}

/// Runs a closure when dropped.
struct OnDrop<F: FnMut()>(F);

impl<F: FnMut()> Drop for OnDrop<F> {
    fn drop(&mut self) {
        (self.0)()
    }
}

/// A reader that adds every byte it reads to a counter.
struct Counted<R> {
    inner: R,
    counter: prometheus_client::metrics::counter::Counter,
}

impl<R: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Counted<R> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            self.counter.inc_by(n as u64);
        }
        r
    }
}
