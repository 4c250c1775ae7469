//! End-to-end sessions: TLS 1.3 between a caller and an agent, *inside* a stream that the
//! proxy relays.
//!
//! The proxy splices bytes between the two QUIC streams and never sees a key. Inside, the
//! caller and the agent run their own handshake with the same key pinning as the transport:
//! the caller pins the agent's id (from the roster), the agent learns the caller's key. So
//! a proxy that connects the caller to a different agent fails this handshake, and a proxy
//! that flips a byte breaks the TLS record it lands in.
//!
//! Both ends also derive a 32-byte *channel binding* from the TLS exporter. Calls are
//! signed over it, so a signed call captured on one session is worthless on any other.
//!
//! The handshake also says which session messages both ends read (ALPN, see
//! [`SESSION_ALPN_V6`]): the proxy never reads a session, so it cannot tell either end
//! what the other speaks, and nobody has to spend a round trip asking.

use std::sync::Arc;

use rustls::sign::CertifiedKey;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use wtd_keys::{PublicId, SecretKey};

use crate::cert::{certified_key, key_in_certificate};
use crate::tls::{client_tls_config, server_tls_config, TlsSetupError, ALPN, SERVER_NAME};
use crate::verify::{ClientKeyVerifier, PeerKeyError, ServerKeyVerifier};

/// The label both ends feed the TLS exporter (RFC 8446, section 7.5).
const BINDING_LABEL: &[u8] = wtd_keys::call::SESSION_EXPORTER_LABEL;

/// A 32-byte value unique to one session, known to both ends and to nobody else.
pub type ChannelBinding = [u8; 32];

/// The session ALPN of wire protocol version 6 (`wtd_wire::CALL_CAUSES_VERSION`): "this end
/// reads what version 6 added to a session", a call's cause. Callers and agents before it
/// offered only [`ALPN`] (`wtd/1`); now both ends offer this one first, then `wtd/1`
/// ([`SESSION_PROTOCOLS`]). The agent picks the first of its own list that the caller
/// offered, so two new ends agree on this one and a new end with an old one on `wtd/1`.
/// The choice is inside the authenticated handshake: the proxy cannot change it.
pub const SESSION_ALPN_V6: &[u8] = b"wtd/1 v6";

/// The caller's end of an established session.
pub type CallerStream<IO> = tokio_rustls::client::TlsStream<IO>;

/// What an end-to-end session offers, newest first.
pub const SESSION_PROTOCOLS: &[&[u8]] = &[SESSION_ALPN_V6, ALPN];

/// Whether both ends of a handshake chose [`SESSION_ALPN_V6`], so the other end reads a
/// call's cause. Pass the TLS stream's connection (`stream.get_ref().1`).
pub fn speaks_v6(conn: &rustls::CommonState) -> bool {
    conn.alpn_protocol() == Some(SESSION_ALPN_V6)
}

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The other end is not the agent we meant to reach: the proxy connected us elsewhere,
    /// or the agent was reinstalled with a new key.
    #[error("the end-to-end handshake failed: the other end is not the agent we asked for ({0}); the proxy may be redirecting calls")]
    WrongPeer(PeerKeyError),
    /// The handshake broke: the relay dropped, altered or delayed it.
    #[error("the end-to-end handshake failed: {0}")]
    Handshake(#[source] std::io::Error),
    #[error(transparent)]
    Setup(#[from] TlsSetupError),
}

fn binding<C>(conn: &rustls::ConnectionCommon<C>) -> Result<ChannelBinding, SessionError> {
    conn.export_keying_material([0u8; 32], BINDING_LABEL, None)
        .map_err(|e| SessionError::Handshake(std::io::Error::other(e)))
}

/// Runs the caller's side of the handshake over `io`, pinning `agent`.
pub async fn connect<IO>(
    me: &SecretKey,
    agent: PublicId,
    io: IO,
) -> Result<(tokio_rustls::client::TlsStream<IO>, ChannelBinding), SessionError>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    connect_as(certified_key(me)?, agent, io).await
}

/// [`connect_as`], offering `protocols` (newest first) instead of [`SESSION_PROTOCOLS`]: a
/// test plays an older caller with `&[ALPN]`.
pub async fn connect_offering<IO>(
    identity: Arc<CertifiedKey>,
    agent: PublicId,
    io: IO,
    protocols: &[&[u8]],
) -> Result<(tokio_rustls::client::TlsStream<IO>, ChannelBinding), SessionError>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let verifier = Arc::new(ServerKeyVerifier::new(agent));
    let mut config = client_tls_config(identity, verifier.clone())?;
    config.alpn_protocols = protocols.iter().map(|p| p.to_vec()).collect();
    let name = rustls::pki_types::ServerName::try_from(SERVER_NAME).expect("a valid name");
    let stream = TlsConnector::from(Arc::new(config))
        .connect(name, io)
        .await
        .map_err(|e| match verifier.rejection() {
            Some(reason) => SessionError::WrongPeer(reason),
            None => SessionError::Handshake(e),
        })?;
    let b = binding(stream.get_ref().1)?;
    Ok((stream, b))
}

/// [`connect`] with the certificate and signer already made ([`crate::certified_key`]):
/// a caller opening many sessions makes them once.
pub async fn connect_as<IO>(
    identity: Arc<CertifiedKey>,
    agent: PublicId,
    io: IO,
) -> Result<(tokio_rustls::client::TlsStream<IO>, ChannelBinding), SessionError>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    connect_offering(identity, agent, io, SESSION_PROTOCOLS).await
}

/// Runs the agent's side of the handshake over `io`; returns the caller's proven key.
pub async fn accept<IO>(
    me: &SecretKey,
    io: IO,
) -> Result<(tokio_rustls::server::TlsStream<IO>, PublicId, ChannelBinding), SessionError>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    accept_as(certified_key(me)?, io).await
}

/// [`accept_as`], choosing among `protocols` (preferred first) instead of
/// [`SESSION_PROTOCOLS`]: a test plays an older agent with `&[ALPN]`.
pub async fn accept_offering<IO>(
    identity: Arc<CertifiedKey>,
    io: IO,
    protocols: &[&[u8]],
) -> Result<(tokio_rustls::server::TlsStream<IO>, PublicId, ChannelBinding), SessionError>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let verifier = Arc::new(ClientKeyVerifier::new());
    let mut config = server_tls_config(identity, verifier.clone())?;
    config.alpn_protocols = protocols.iter().map(|p| p.to_vec()).collect();
    let stream = TlsAcceptor::from(Arc::new(config))
        .accept(io)
        .await
        .map_err(|e| match verifier.rejection() {
            Some(reason) => SessionError::WrongPeer(reason),
            None => SessionError::Handshake(e),
        })?;
    let conn = stream.get_ref().1;
    let cert = conn
        .peer_certificates()
        .and_then(|c| c.first())
        .ok_or(SessionError::WrongPeer(PeerKeyError::Weak))?;
    let peer = key_in_certificate(cert).map_err(SessionError::WrongPeer)?;
    let b = binding(conn)?;
    Ok((stream, peer, b))
}

/// [`accept`] with the certificate and signer already made ([`crate::certified_key`]):
/// an agent accepting many sessions makes them once.
pub async fn accept_as<IO>(
    identity: Arc<CertifiedKey>,
    io: IO,
) -> Result<(tokio_rustls::server::TlsStream<IO>, PublicId, ChannelBinding), SessionError>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    accept_offering(identity, io, SESSION_PROTOCOLS).await
}

/// Writes one length-prefixed frame to any async stream.
pub async fn write_msg<W: AsyncWrite + Unpin>(w: &mut W, payload: &[u8]) -> std::io::Result<()> {
    let len = u32::try_from(payload.len()).map_err(|_| std::io::Error::other("frame too long"))?;
    w.write_all(&len.to_be_bytes()).await?;
    w.write_all(payload).await?;
    w.flush().await
}

/// Reads one length-prefixed frame of at most `max` bytes; `None` at a clean end.
pub async fn read_msg<R: AsyncRead + Unpin>(r: &mut R, max: usize) -> std::io::Result<Option<Vec<u8>>> {
    let mut buf = Vec::new();
    Ok(read_msg_into(r, &mut buf, max).await?.then_some(buf))
}

/// [`read_msg`] into a buffer the caller reuses from frame to frame: false at a clean end;
/// an `InvalidData` error for a frame over `max` (whose body is then not read).
pub async fn read_msg_into<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<bool> {
    let mut prefix = [0u8; 4];
    match r.read_exact(&mut prefix).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(false),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes(prefix) as usize;
    if len > max {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("a {len}-byte message is over the {max}-byte limit"),
        ));
    }
    buf.clear();
    buf.resize(len, 0);
    r.read_exact(buf).await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs one handshake, the caller offering `caller` and the agent `agent`; returns
    /// whether each end thinks the other reads version 6.
    async fn meet(caller: &[&[u8]], agent: &[&[u8]]) -> (bool, bool) {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let agent_key = SecretKey::generate();
        let caller_key = SecretKey::generate();
        let (c, s) = tokio::join!(
            connect_offering(certified_key(&caller_key).unwrap(), agent_key.public(), a, caller),
            accept_offering(certified_key(&agent_key).unwrap(), b, agent)
        );
        let (c, _) = c.unwrap();
        let (s, peer, _) = s.unwrap();
        assert_eq!(peer, caller_key.public());
        (speaks_v6(c.get_ref().1), speaks_v6(s.get_ref().1))
    }

    #[tokio::test]
    async fn new_and_old_ends_agree_on_what_both_read() {
        assert_eq!(meet(SESSION_PROTOCOLS, SESSION_PROTOCOLS).await, (true, true));
        // An agent of before version 6 offers `wtd/1` only: the caller learns it.
        assert_eq!(meet(SESSION_PROTOCOLS, &[ALPN]).await, (false, false));
        // A caller of before version 6: the new agent speaks the old session to it.
        assert_eq!(meet(&[ALPN], SESSION_PROTOCOLS).await, (false, false));
    }
}
