//! `wtd sync`: send your owner log to the proxy, which passes it to your agents.
//! `wtd grant` and `wtd revoke` do this by themselves; this is for when the proxy was
//! unreachable then.

use wtd_keys::SecretKey;
use wtd_wire::{Key, Request, Response};

use crate::context::Context;
use crate::proxy;

#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(ctx: &Context, _args: Args) -> anyhow::Result<()> {
    let me = ctx.identity()?;
    proxy::require(&ctx.home.proxy())?;
    let seq = publish(ctx, &me)?;
    println!("The proxy has your log up to record {seq}; your online agents have it now.");
    Ok(())
}

/// Sends the proxy the part of this owner's log it lacks. Returns the proxy's head.
pub fn publish(ctx: &Context, me: &SecretKey) -> anyhow::Result<u64> {
    let info = proxy::require(&ctx.home.proxy())?;
    let log = ctx.owner_log(me)?;
    let entries: Vec<Vec<u8>> = log.log().entries().iter().map(|e| e.bytes().to_vec()).collect();
    drop(log);
    proxy::runtime()?.block_on(async {
        let (client, conn) = proxy::connect(me, &info).await?;
        let mut recv = proxy::request(
            &conn,
            Request::LogHead {
                owner: Key::from(me.public()),
            },
        )
        .await?;
        let head = match proxy::next(&mut recv).await? {
            Some(Response::LogStored { seq }) => seq,
            _ => 0,
        };
        let mut seq = head;
        // Send what the proxy lacks, in batches that fit a message.
        let missing = entries.get(head as usize..).unwrap_or(&[]);
        let mut batch: Vec<Vec<u8>> = Vec::new();
        let mut size = 0;
        for (i, e) in missing.iter().enumerate() {
            batch.push(e.clone());
            size += e.len();
            if size >= wtd_wire::defaults::MAX_LOG_BATCH_BYTES / 2 || i + 1 == missing.len() {
                let mut recv = proxy::request(
                    &conn,
                    Request::PublishLog {
                        entries: std::mem::take(&mut batch),
                    },
                )
                .await?;
                if let Some(Response::LogStored { seq: s }) = proxy::next(&mut recv).await? {
                    seq = s;
                }
                size = 0;
            }
        }
        proxy::goodbye(&client, &conn).await;
        Ok(seq)
    })
}

/// After a grant or revocation: publish if joined, and say what happened either way.
pub fn publish_after_change(ctx: &Context, me: &SecretKey) {
    match proxy::load(&ctx.home.proxy()) {
        Ok(Some(_)) => match publish(ctx, me) {
            Ok(_) => eprintln!("Sent to the proxy: your online agents have it now."),
            Err(e) => eprintln!(
                "warning: saved, but could not reach the proxy ({e:#}); run `wtd sync` when it is back. \
                 Agents keep the old state until then."
            ),
        },
        Ok(None) => {
            eprintln!("(Not joined to a proxy: your agents learn of this after `wtd join` and `wtd sync`.)")
        }
        Err(e) => eprintln!("warning: {e:#}"),
    }
}
