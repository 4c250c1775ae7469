//! Talking to the proxy this machine joined: where it is (saved by `wtd join`), and one
//! request at a time over a pinned QUIC connection.

use std::net::SocketAddr;
use std::path::Path;

use anyhow::{anyhow, bail, Context as _};
use serde::{Deserialize, Serialize};
use wtd_keys::{ProxyId, ProxyInfo, SecretKey};
use wtd_transport::{read_frame, write_frame, Client, Connection, RecvStream};
use wtd_wire::defaults::MAX_FRAME;
use wtd_wire::{decode, encode, Open, Request, Response};

/// `proxy.toml`: the proxy this machine joined.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Joined {
    /// The proxy's id, pinned: a proxy that cannot prove it holds this key is refused.
    id: String,
    /// Where to reach it, tried in order.
    addrs: Vec<SocketAddr>,
}

pub fn save(path: &Path, info: &ProxyInfo) -> anyhow::Result<()> {
    let joined = Joined {
        id: info.id.to_string(),
        addrs: info.addrs.clone(),
    };
    let text = format!(
        "# The proxy this machine joined. Written by `wtd join`.\n{}",
        toml::to_string(&joined).expect("serializable")
    );
    if let Some(dir) = path.parent() {
        wtd_store::atomic::ensure_dir(dir, 0o700)?;
    }
    wtd_store::atomic::write_atomic(path, text.as_bytes(), 0o600)?;
    Ok(())
}

/// The joined proxy, or None if this machine joined none.
pub fn load(path: &Path) -> anyhow::Result<Option<ProxyInfo>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let joined: Joined = toml::from_str(&text)
        .with_context(|| format!("{} is damaged; run `wtd join <ticket>` again", path.display()))?;
    let id: ProxyId = joined
        .id
        .parse()
        .with_context(|| format!("the proxy id in {}", path.display()))?;
    Ok(Some(ProxyInfo {
        id,
        addrs: joined.addrs,
    }))
}

/// Loads the joined proxy, or says how to join one.
pub fn require(path: &Path) -> anyhow::Result<ProxyInfo> {
    load(path)?.ok_or_else(|| anyhow!("this machine has not joined a proxy; run `wtd join <ticket>` first (ask whoever runs the proxy for the ticket)"))
}

/// Connects to the proxy, trying each address; the proxy must prove it holds its id.
pub async fn connect(me: &SecretKey, info: &ProxyInfo) -> anyhow::Result<(Client, Connection)> {
    let mut last = None;
    for addr in &info.addrs {
        let bind: SocketAddr = if addr.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }
            .parse()
            .expect("literal");
        let client = Client::bind(me, bind)?;
        match client.connect(*addr, *info.id.key()).await {
            Ok(conn) => return Ok((client, conn)),
            Err(e) => {
                last = Some(anyhow::Error::new(e).context(format!("could not reach the proxy at {addr}")))
            }
        }
    }
    Err(last.unwrap_or_else(|| anyhow!("the saved proxy has no address; run `wtd join <ticket>` again")))
}

/// Closes the connection politely and waits for the close to be sent
/// ([`wtd_transport::close_and_flush`]): without it the process may exit before the close
/// leaves, and the proxy holds the connection (one of the few it allows per address) until
/// its idle timeout; a script polling `wtd ls` would fill them. `client` is taken so its
/// endpoint is still there while the close goes out.
pub async fn goodbye(client: &Client, conn: &Connection) {
    wtd_transport::close_and_flush(conn, b"bye").await;
    let _ = client;
}

/// Sends one request; returns the stream to read responses from.
pub async fn request(conn: &Connection, req: Request) -> anyhow::Result<RecvStream> {
    let (mut send, recv) = conn.open_bi().await.context("opening a stream to the proxy")?;
    write_frame(&mut send, &encode(&Open::Request(req))).await?;
    send.finish().ok();
    Ok(recv)
}

/// The next response on a stream; None when the proxy has finished it.
pub async fn next(recv: &mut RecvStream) -> anyhow::Result<Option<Response>> {
    match read_frame(recv, MAX_FRAME).await? {
        Some(bytes) => match decode::<Response>(&bytes)? {
            Response::Error(e) => bail!("the proxy said: {e}"),
            r => Ok(Some(r)),
        },
        None => Ok(None),
    }
}

/// The roster, whole: the proxy sends a big one in several `Roster` messages, to the end
/// of the stream (an older proxy sends one).
pub async fn roster(conn: &Connection) -> anyhow::Result<Vec<wtd_wire::AgentInfo>> {
    let mut recv = request(conn, Request::Roster).await?;
    let mut all = Vec::new();
    let mut any = false;
    while let Some(resp) = next(&mut recv).await? {
        match resp {
            Response::Roster(chunk) => {
                any = true;
                all.extend(chunk);
            }
            other => bail!("the proxy answered the roster with {other:?}; is it a wtd proxy?"),
        }
    }
    if !any {
        bail!("the proxy sent no roster; try again, or check it is running (`wtd proxy`)");
    }
    Ok(all)
}

/// A tokio runtime for one command: one thread is plenty for a CLI.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}
