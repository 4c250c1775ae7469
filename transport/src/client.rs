//! The connecting side: reach a server whose key you already know (from a ticket), and
//! nobody else.
//!
//! ```no_run
//! # use wtd_keys::{ProxyId, SecretKey};
//! # async fn run(secret: SecretKey, proxy: ProxyId) -> Result<(), Box<dyn std::error::Error>> {
//! use wtd_transport::Client;
//! let client = Client::bind(&secret, "0.0.0.0:0".parse()?)?;
//! let connection = client.connect("192.168.1.10:7788".parse()?, *proxy.key()).await?;
//! let (mut send, mut recv) = connection.open_bi().await?;
//! wtd_transport::write_frame(&mut send, b"hello").await?;
//! # Ok(()) }
//! ```
//!
//! A note on TLS 1.3 ordering: the client finishes its half of the handshake *before* the
//! server has checked the client's certificate. So if a server refuses our key, `connect`
//! may still succeed, and the refusal shows up as the connection closing with a TLS alert
//! on the first stream operation. (wtd keys are never weak, so this only happens with a
//! server that refuses us on purpose.)

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use quinn::{Connection, ConnectionError, Endpoint, TransportConfig, TransportErrorCode};
use rustls::sign::CertifiedKey;
use rustls::AlertDescription;
use wtd_keys::{PublicId, SecretKey};

use crate::cert::{certified_key, peer_id};
use crate::endpoint::BindError;
use crate::limits::Limits;
use crate::tls::{
    client_tls_config, negotiated_protocol, quic_client, tls_alert, TlsSetupError, ALPN, SERVER_NAME,
};
use crate::verify::{PeerKeyError, ServerKeyVerifier};

/// Connecting to a server failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The server proved it holds a key, but not the one we pinned. You may be talking to an
    /// impostor, or the server was reinstalled and has a new key: get a fresh ticket from its
    /// owner, and compare fingerprints if in doubt.
    #[error("{addr} answered with key {presented}, but your ticket pins {expected}: you may be talking to an impostor, or it was reinstalled with a new key; get a fresh ticket from its owner")]
    WrongKey {
        addr: SocketAddr,
        expected: PublicId,
        presented: PublicId,
    },
    /// The server presented the certificate of the pinned key but could not sign the
    /// handshake with it: someone is replaying a copied certificate. Do not retry blindly;
    /// tell the owner.
    #[error("{addr} presented the certificate of the key you pinned but could not prove it holds that key: an impostor is replaying a copied certificate")]
    ServerNotKeyHolder { addr: SocketAddr },
    /// The server's certificate is unusable (weak key, not ed25519, damaged, a chain): this
    /// is probably not a wtd server. Check the address and port.
    #[error("{addr} is not a usable wtd server (check the address and port): {reason}")]
    BadServerCertificate {
        addr: SocketAddr,
        #[source]
        reason: PeerKeyError,
    },
    /// The server refused our key during the handshake, with this TLS alert.
    #[error("{addr} refused our key during the handshake ({alert})")]
    RejectedByServer { addr: SocketAddr, alert: String },
    /// The server refused the connection before any handshake: it is at its connection
    /// limit, or has too many connections from our IP address. Try again shortly.
    #[error("{addr} refused the connection: it is full, or has too many connections from your address; try again shortly")]
    Refused { addr: SocketAddr },
    /// Nothing answered in time. Check the address and port, that the proxy or agent is
    /// running, and that no firewall blocks UDP.
    #[error("nothing answered at {addr}: check the address and port, that the proxy or agent is running, and that no firewall blocks UDP")]
    NoAnswer { addr: SocketAddr },
    /// The server does not speak this protocol version (ALPN `wtd/1`): one side is a
    /// different wtd version, or it is another program. Upgrade the older side.
    #[error(
        "{addr} does not speak wtd/1: it runs another wtd version or another program; upgrade the older side"
    )]
    WrongProtocol { addr: SocketAddr },
    /// The connection could not even be started: the address is unusable from this socket
    /// (e.g. port 0, or IPv6 from an IPv4 socket), or the endpoint is closing.
    #[error("cannot start a connection to {addr}: {source}")]
    Start {
        addr: SocketAddr,
        #[source]
        source: quinn::ConnectError,
    },
    /// Any other failure during the handshake (the server reset or closed the connection,
    /// or violated QUIC). Retrying may help; if it persists, check the server's log.
    #[error("connection to {addr} failed: {source}")]
    Connection {
        addr: SocketAddr,
        #[source]
        source: ConnectionError,
    },
    /// Setting up TLS failed (a bug in wtd).
    #[error(transparent)]
    Tls(#[from] TlsSetupError),
}

/// A connecting wtd endpoint: proves `secret`'s key to every server it connects to, and
/// accepts only servers whose key it pins.
pub struct Client {
    endpoint: Endpoint,
    identity: Arc<CertifiedKey>,
    transport: Arc<TransportConfig>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("local_addr", &self.endpoint.local_addr().ok())
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Opens a client on `bind` (usually `0.0.0.0:0`) with the default [`Limits`]. Must be
    /// called inside a tokio runtime.
    pub fn bind(secret: &SecretKey, bind: SocketAddr) -> Result<Client, BindError> {
        Client::bind_with(secret, bind, &Limits::default())
    }

    /// Like [`Client::bind`], with the per-connection part of `limits` (streams, windows,
    /// timeouts).
    pub fn bind_with(secret: &SecretKey, bind: SocketAddr, limits: &Limits) -> Result<Client, BindError> {
        let transport = Arc::new(limits.transport_config().map_err(BindError::Limits)?);
        let identity = certified_key(secret)?;
        let endpoint = Endpoint::client(bind).map_err(|source| BindError::Socket { addr: bind, source })?;
        Ok(Client {
            endpoint,
            identity,
            transport,
        })
    }

    /// Our certificate and signer, as this client presents them: share it with
    /// end-to-end sessions (`session::connect_as`) instead of making another.
    pub fn identity(&self) -> Arc<CertifiedKey> {
        self.identity.clone()
    }

    /// The local address (useful after binding port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }

    /// The underlying quinn endpoint, e.g. to `close()` it and `wait_idle()` on shutdown.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Connects to `addr` and succeeds only if the server proves it holds `expected`.
    ///
    /// Every connection is a full handshake: no session resumption, no 0-RTT.
    pub async fn connect(&self, addr: SocketAddr, expected: PublicId) -> Result<Connection, ConnectError> {
        let verifier = Arc::new(ServerKeyVerifier::new(expected));
        let tls = client_tls_config(self.identity.clone(), verifier.clone())?;
        let mut config = quic_client(tls)?;
        config.transport_config(self.transport.clone());
        let connecting = self
            .endpoint
            .connect_with(config, addr, SERVER_NAME)
            .map_err(|source| ConnectError::Start { addr, source })?;
        let connection = connecting
            .await
            .map_err(|e| handshake_error(addr, e, verifier.rejection()))?;

        if negotiated_protocol(&connection).as_deref() != Some(ALPN) {
            connection.close(0u32.into(), b"wtd/1 required");
            return Err(ConnectError::WrongProtocol { addr });
        }
        // The verifier already insisted on `expected`; checking the finished connection too
        // costs nothing and guards against a verifier that was somehow bypassed.
        match peer_id(&connection) {
            Some(presented) if presented == expected => Ok(connection),
            Some(presented) => {
                connection.close(0u32.into(), b"wrong key");
                Err(ConnectError::WrongKey {
                    addr,
                    expected,
                    presented,
                })
            }
            None => {
                connection.close(0u32.into(), b"no key");
                Err(ConnectError::BadServerCertificate {
                    addr,
                    reason: PeerKeyError::Malformed,
                })
            }
        }
    }
}

fn handshake_error(
    addr: SocketAddr,
    error: ConnectionError,
    rejection: Option<PeerKeyError>,
) -> ConnectError {
    // Our verifier's own reason is the most precise; TLS reduced it to an alert.
    match rejection {
        Some(PeerKeyError::WrongKey { expected, presented }) => {
            return ConnectError::WrongKey {
                addr,
                expected,
                presented,
            }
        }
        Some(PeerKeyError::NotKeyHolder) => return ConnectError::ServerNotKeyHolder { addr },
        Some(reason) => return ConnectError::BadServerCertificate { addr, reason },
        None => {}
    }
    match &error {
        ConnectionError::TimedOut => ConnectError::NoAnswer { addr },
        ConnectionError::ConnectionClosed(close)
            if close.error_code == TransportErrorCode::CONNECTION_REFUSED =>
        {
            ConnectError::Refused { addr }
        }
        ConnectionError::ConnectionClosed(close) => match tls_alert(close.error_code) {
            Some(AlertDescription::NoApplicationProtocol) => ConnectError::WrongProtocol { addr },
            Some(a) => ConnectError::RejectedByServer {
                addr,
                alert: format!("{a:?}"),
            },
            None => ConnectError::Connection { addr, source: error },
        },
        ConnectionError::TransportError(e) => match tls_alert(e.code) {
            Some(AlertDescription::NoApplicationProtocol) => ConnectError::WrongProtocol { addr },
            _ => ConnectError::Connection { addr, source: error },
        },
        _ => ConnectError::Connection { addr, source: error },
    }
}

/// Closes `conn` and gives its driver the chance to send the CONNECTION_CLOSE before the
/// caller goes on (typically: before a short-lived command exits).
///
/// `Connection::close` only queues the frame; a process that exits right after it often
/// never sends it, and the server then keeps the connection (and the slot it holds against
/// the per-address limit) until its idle timeout. A script making calls in a loop would
/// find the proxy "full" after a few dozen calls. Waiting for `Endpoint::wait_idle` would
/// be correct too, but it lasts the whole draining period (three probe timeouts, tens of
/// milliseconds); the frame itself leaves on the driver's next turn, so this yields until
/// the connection's statistics show it sent, at most [`CLOSE_FLUSH_TURNS`] turns.
pub async fn close_and_flush(conn: &Connection, reason: &[u8]) {
    conn.close(0u32.into(), reason);
    for _ in 0..crate::defaults::CLOSE_FLUSH_TURNS {
        if conn.stats().frame_tx.connection_close > 0 {
            return;
        }
        tokio::task::yield_now().await;
    }
}
