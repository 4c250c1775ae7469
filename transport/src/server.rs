//! The listening side: admit connection attempts, run handshakes, name each client by its key.
//!
//! Accepting is split in two so one slow client cannot stall everyone:
//!
//! ```text
//! Server::accept()      admission policy: refuse / retry / admit   (fast, no crypto)
//!        |
//!        v
//! Pending::handshake()  TLS 1.3 + client key check                 (one round trip or more;
//!        |                                                           run it in its own task)
//!        v
//! Accepted              the connection + the client's verified key
//! ```
//!
//! Both [`Pending`] and [`Accepted`] hold a slot in the server's connection counts (total and
//! per IP), released when they are dropped. Dropping an `Accepted` also closes its connection,
//! even if you cloned the [`Connection`]: the slot and the connection it pays for end together,
//! so the limits always count what is really open. Keep the `Accepted` for as long as you
//! serve that peer, typically until `accepted.connection().closed()` resolves.
//!
//! ```no_run
//! # async fn run(secret: wtd_keys::SecretKey) -> Result<(), Box<dyn std::error::Error>> {
//! use wtd_transport::{Limits, Server};
//! let server = Server::bind(&secret, "0.0.0.0:7788".parse()?, &Limits::default())?;
//! while let Some(pending) = server.accept().await {
//!     // In a real server, run this in a task owned by the server (see STYLE.md).
//!     match pending.handshake().await {
//!         Ok(peer) => println!("{} connected", peer.peer()),
//!         Err(e) => eprintln!("{e}"),
//!     }
//! }
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use quinn::{Connection, ConnectionError, Endpoint, Incoming};
use rustls::sign::CertifiedKey;
use rustls::AlertDescription;
use wtd_keys::{PublicId, SecretKey};

use crate::admission::{decide, Admission, Attempt, Load, Refusal};
use crate::cert::{certified_key, peer_id};
use crate::defaults;
use crate::endpoint::BindError;
use crate::limits::Limits;
use crate::tls::{negotiated_protocol, quic_server, server_tls_config, tls_alert, TlsSetupError, ALPN};
use crate::verify::{ClientKeyVerifier, PeerKeyError};

/// Accepting one client failed. The client is gone; the server carries on.
#[derive(Debug, thiserror::Error)]
pub enum AcceptError {
    /// The client's certificate holds a weak (small-order) key, which anyone could "prove"
    /// they hold. Such a client is broken or malicious; nothing to do on the server side.
    #[error("refused the client at {addr}: its key is weak (small-order), so it proves nothing; the client is broken or malicious")]
    WeakClientKey { addr: SocketAddr },
    /// The client sent a certificate but could not sign the handshake with its key: it
    /// copied someone's certificate. An impostor (or a badly broken client).
    #[error(
        "refused the client at {addr}: it presented a certificate for a key it does not hold (an impostor?)"
    )]
    ClientNotKeyHolder { addr: SocketAddr },
    /// The client's certificate is otherwise unusable (not ed25519, damaged, a chain): it is
    /// probably not wtd at all.
    #[error("refused the client at {addr}: {reason}")]
    BadClientCertificate {
        addr: SocketAddr,
        #[source]
        reason: PeerKeyError,
    },
    /// The client sent no certificate. Every wtd peer has a key and must present it; this is
    /// another program, or a wtd without an identity (`wtd init` creates one).
    #[error("refused the client at {addr}: it presented no certificate (every wtd peer must prove its key)")]
    NoClientCertificate { addr: SocketAddr },
    /// The client does not speak this protocol version (ALPN `wtd/1`): upgrade the older side.
    #[error(
        "refused the client at {addr}: it does not speak wtd/1 (another wtd version, or another program)"
    )]
    WrongProtocol { addr: SocketAddr },
    /// The client refused *our* key, with this TLS alert. Usually it pins a different key:
    /// its ticket predates a reinstall of this machine; it needs a fresh ticket.
    #[error("the client at {addr} refused our key ({alert}); its ticket may pin an old key of this machine")]
    ClientRefusedUs { addr: SocketAddr, alert: String },
    /// The client stopped answering during the handshake: it crashed, lost its network, or
    /// its source address was forged. Nothing to do.
    #[error("the client at {addr} stopped answering during the handshake")]
    Vanished { addr: SocketAddr },
    /// Any other failure of the connection during the handshake (e.g. the server is shutting
    /// down, or the client violated QUIC).
    #[error("handshake with {addr} failed: {source}")]
    Connection {
        addr: SocketAddr,
        #[source]
        source: ConnectionError,
    },
    /// Setting up TLS failed (a bug in wtd).
    #[error(transparent)]
    Tls(#[from] TlsSetupError),
}

/// A listening wtd endpoint: a QUIC server whose identity is one ed25519 key.
pub struct Server {
    endpoint: Endpoint,
    /// quinn's settings for new connections (limits, retry token key). Each handshake gets a
    /// copy with its own TLS verifier, so a refusal can be reported with its reason.
    base: quinn::ServerConfig,
    identity: Arc<CertifiedKey>,
    limits: Limits,
    held: Arc<Held>,
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("local_addr", &self.endpoint.local_addr().ok())
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Opens a server on `bind` (port 0 picks a free port) that proves `secret`'s key to
    /// every client. Must be called inside a tokio runtime.
    pub fn bind(secret: &SecretKey, bind: SocketAddr, limits: &Limits) -> Result<Server, BindError> {
        let socket =
            std::net::UdpSocket::bind(bind).map_err(|source| BindError::Socket { addr: bind, source })?;
        Self::from_socket(secret, socket, limits)
    }

    /// Like [`Server::bind`], on a UDP socket the caller already bound (so a test can bind
    /// port 0 and know the port before the server starts, or a service manager can pass
    /// one in). Must be called inside a tokio runtime.
    pub fn from_socket(
        secret: &SecretKey,
        socket: std::net::UdpSocket,
        limits: &Limits,
    ) -> Result<Server, BindError> {
        let addr = socket
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let transport = Arc::new(limits.transport_config().map_err(BindError::Limits)?);
        let identity = certified_key(secret)?;
        // The endpoint's own TLS settings are complete (same as every connection's), though
        // `Pending::handshake` always replaces them with a per-connection copy.
        let tls = server_tls_config(identity.clone(), Arc::new(ClientKeyVerifier::new()))?;
        let mut base = quinn::ServerConfig::with_crypto(quic_server(tls)?);
        base.transport_config(transport)
            .max_incoming(defaults::MAX_INCOMING)
            .incoming_buffer_size(defaults::INCOMING_BUFFER_SIZE)
            .incoming_buffer_size_total(defaults::INCOMING_BUFFER_SIZE_TOTAL);
        let runtime = quinn::default_runtime().ok_or_else(|| BindError::Socket {
            addr,
            source: std::io::Error::other("no tokio runtime"),
        })?;
        let endpoint = Endpoint::new(endpoint_config(secret), Some(base.clone()), socket, runtime)
            .map_err(|source| BindError::Socket { addr, source })?;
        Ok(Server {
            endpoint,
            base,
            identity,
            limits: limits.clone(),
            held: Arc::default(),
        })
    }

    /// The address the server listens on (useful after binding port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }

    /// The underlying quinn endpoint, e.g. to `close()` it and `wait_idle()` on shutdown.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Waits for the next connection attempt that passes the admission policy (refusing or
    /// retrying the others on the way; see [`Limits`]). `None` once the endpoint is closed.
    ///
    /// Cancel-safe: every attempt taken off the queue is decided before the next await.
    pub async fn accept(&self) -> Option<Pending> {
        loop {
            let incoming = self.endpoint.accept().await?;
            let addr = incoming.remote_address();
            let attempt = Attempt {
                validated: incoming.remote_address_validated(),
                may_retry: incoming.may_retry(),
            };
            match self.held.admit(addr.ip(), attempt, &self.limits) {
                Ok(slot) => {
                    return Some(Pending {
                        incoming,
                        addr,
                        validated: attempt.validated,
                        base: self.base.clone(),
                        identity: self.identity.clone(),
                        slot,
                    });
                }
                Err(NotAdmitted::Retry) => {
                    log::debug!("asking {addr} to prove its address (QUIC retry)");
                    if let Err(not_allowed) = incoming.retry() {
                        not_allowed.into_incoming().refuse();
                    }
                }
                Err(NotAdmitted::Refuse(why)) => {
                    log::info!("refused a connection from {addr}: {why}");
                    incoming.refuse();
                }
            }
        }
    }
}

/// An admitted connection attempt whose handshake has not run yet. Dropping it refuses the
/// attempt and frees its slot.
pub struct Pending {
    incoming: Incoming,
    addr: SocketAddr,
    validated: bool,
    base: quinn::ServerConfig,
    identity: Arc<CertifiedKey>,
    slot: Slot,
}

impl fmt::Debug for Pending {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pending")
            .field("addr", &self.addr)
            .field("validated", &self.validated)
            .finish_non_exhaustive()
    }
}

impl Pending {
    /// The client's UDP address (IP and port).
    pub fn remote_address(&self) -> SocketAddr {
        self.addr
    }

    /// Whether the client proved it receives packets at its address before we started the
    /// handshake (after a Retry, or with a token from an earlier connection).
    pub fn address_validated(&self) -> bool {
        self.validated
    }

    /// Runs the TLS handshake: the client must prove it holds the key in its certificate.
    /// Returns the connection and that key. Connecting grants nothing: what the key may do
    /// is for the application to decide.
    pub async fn handshake(mut self) -> Result<Accepted, AcceptError> {
        let addr = self.addr;
        let verifier = Arc::new(ClientKeyVerifier::new());
        let tls = server_tls_config(self.identity.clone(), verifier.clone())?;
        let mut config = self.base.clone();
        config.crypto = quic_server(tls)?;
        let result = match self.incoming.accept_with(Arc::new(config)) {
            Ok(connecting) => connecting.await,
            Err(e) => Err(e),
        };
        // Finished either way: this address no longer counts as an unvalidated handshake.
        self.slot.handshake_done();
        let connection = result.map_err(|e| handshake_error(addr, e, verifier.rejection()))?;

        if negotiated_protocol(&connection).as_deref() != Some(ALPN) {
            connection.close(0u32.into(), b"wtd/1 required");
            return Err(AcceptError::WrongProtocol { addr });
        }
        // The verifier accepted the certificate, so this is the verified key.
        let Some(peer) = peer_id(&connection) else {
            connection.close(0u32.into(), b"no client key");
            return Err(AcceptError::NoClientCertificate { addr });
        };
        log::debug!("{addr} connected as {}", peer.short());
        Ok(Accepted {
            connection,
            peer,
            _slot: self.slot,
        })
    }
}

/// An established connection and the verified key of the client.
///
/// Holds the client's slot in the server's connection counts. Dropping it closes the
/// connection (call `connection().close(code, reason)` first to send a specific reason).
pub struct Accepted {
    connection: Connection,
    peer: PublicId,
    _slot: Slot,
}

impl fmt::Debug for Accepted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Accepted")
            .field("peer", &self.peer)
            .field("addr", &self.connection.remote_address())
            .finish()
    }
}

impl Drop for Accepted {
    fn drop(&mut self) {
        // Closing twice is harmless: quinn ignores a close on a closed connection.
        self.connection.close(0u32.into(), b"");
    }
}

impl Accepted {
    /// The QUIC connection: open and accept streams on it.
    pub fn connection(&self) -> &Connection {
        &self.connection
    }

    /// The client's key, proven during the handshake.
    pub fn peer(&self) -> PublicId {
        self.peer
    }
}

fn handshake_error(addr: SocketAddr, error: ConnectionError, rejection: Option<PeerKeyError>) -> AcceptError {
    // Our verifier's own reason is the most precise; TLS reduced it to an alert.
    match rejection {
        Some(PeerKeyError::Weak) => return AcceptError::WeakClientKey { addr },
        Some(PeerKeyError::NotKeyHolder) => return AcceptError::ClientNotKeyHolder { addr },
        Some(reason) => return AcceptError::BadClientCertificate { addr, reason },
        None => {}
    }
    match &error {
        ConnectionError::TransportError(e) => match tls_alert(e.code) {
            Some(AlertDescription::CertificateRequired) => AcceptError::NoClientCertificate { addr },
            Some(AlertDescription::NoApplicationProtocol) => AcceptError::WrongProtocol { addr },
            _ => AcceptError::Connection { addr, source: error },
        },
        ConnectionError::ConnectionClosed(close) => match tls_alert(close.error_code) {
            Some(AlertDescription::NoApplicationProtocol) => AcceptError::WrongProtocol { addr },
            Some(alert) => AcceptError::ClientRefusedUs {
                addr,
                alert: format!("{alert:?}"),
            },
            None => AcceptError::Connection { addr, source: error },
        },
        ConnectionError::TimedOut => AcceptError::Vanished { addr },
        _ => AcceptError::Connection { addr, source: error },
    }
}

/// The server's connection counts: total, per IP, and unvalidated handshakes.
#[derive(Debug, Default)]
struct Held(Mutex<Counts>);

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    unvalidated: usize,
    per_ip: HashMap<IpAddr, usize>,
}

impl Held {
    fn lock(&self) -> MutexGuard<'_, Counts> {
        // The counts are plain numbers, consistent after every statement, so a panic
        // elsewhere while holding the lock cannot leave them half-updated.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Decides on an attempt and, if admitted, takes its slot, under one lock so concurrent
    /// accepts cannot overshoot the limits.
    fn admit(self: &Arc<Self>, ip: IpAddr, attempt: Attempt, limits: &Limits) -> Result<Slot, NotAdmitted> {
        let mut counts = self.lock();
        let load = Load {
            connections: counts.total,
            unvalidated_handshakes: counts.unvalidated,
            from_same_ip: counts.per_ip.get(&ip).copied().unwrap_or(0),
        };
        match decide(attempt, load, limits) {
            Admission::Accept => {
                counts.total += 1;
                *counts.per_ip.entry(ip).or_insert(0) += 1;
                let unvalidated = !attempt.validated;
                if unvalidated {
                    counts.unvalidated += 1;
                }
                Ok(Slot {
                    held: self.clone(),
                    ip,
                    unvalidated,
                })
            }
            Admission::Retry => Err(NotAdmitted::Retry),
            Admission::Refuse(why) => Err(NotAdmitted::Refuse(why)),
        }
    }
}

/// What to do with an attempt that was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NotAdmitted {
    Retry,
    Refuse(Refusal),
}

/// One admitted connection's place in [`Held`]; gives it back when dropped.
#[derive(Debug)]
struct Slot {
    held: Arc<Held>,
    ip: IpAddr,
    /// Still counted as an unvalidated handshake.
    unvalidated: bool,
}

impl Slot {
    fn handshake_done(&mut self) {
        if std::mem::take(&mut self.unvalidated) {
            let mut counts = self.held.lock();
            counts.unvalidated = counts.unvalidated.saturating_sub(1);
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.handshake_done();
        let mut counts = self.held.lock();
        counts.total = counts.total.saturating_sub(1);
        if let Some(n) = counts.per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                // Forget the address entirely, so the table stays as small as the set of
                // addresses connected right now.
                counts.per_ip.remove(&self.ip);
            }
        }
    }
}

/// The endpoint settings, with a stateless-reset key derived from the server's identity.
///
/// QUIC lets a server that lost a connection's state (because it restarted) tell the
/// client so at once, with a "stateless reset" only the real server can produce. quinn
/// derives the reset tokens from this key; a random key per process (the default) makes a
/// restarted proxy unable to reset the old connections, so its agents only notice after
/// their idle timeout. Deriving it from the identity key lets the restarted proxy reset
/// them on their next packet, and agents reconnect right away. The derivation is one-way
/// and domain-separated, so the reset key reveals nothing about the identity key.
fn endpoint_config(secret: &SecretKey) -> quinn::EndpointConfig {
    use sha2::{Digest, Sha256};
    let seed = secret.seed();
    let derived: zeroize::Zeroizing<[u8; 32]> = zeroize::Zeroizing::new(
        Sha256::new_with_prefix(b"wtd quic stateless reset key v1\0")
            .chain_update(seed.as_ref())
            .finalize()
            .into(),
    );
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, derived.as_ref());
    let mut config = quinn::EndpointConfig::new(Arc::new(key));
    // Connection ids carry a keyed check, and packets whose id fails it are dropped
    // without an answer. With a random key per process a restarted proxy would drop the
    // old connections' packets silently instead of resetting them; so derive it too.
    let cid_key = u64::from_le_bytes(derived[24..32].try_into().expect("8 bytes"));
    config.cid_generator(move || Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key)));
    config
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_given_back() {
        let held = Arc::new(Held::default());
        let limits = Limits {
            max_connections_per_ip: 1,
            ..Limits::default()
        };
        let ip: IpAddr = [10, 0, 0, 1].into();
        let fresh = Attempt {
            validated: false,
            may_retry: false,
        };
        let mut slot = held.admit(ip, fresh, &limits).expect("first is admitted");
        assert_eq!(held.lock().unvalidated, 1);
        assert!(matches!(
            held.admit(ip, fresh, &limits),
            Err(NotAdmitted::Refuse(_))
        ));
        slot.handshake_done();
        assert_eq!(held.lock().unvalidated, 0);
        drop(slot);
        let counts = held.lock();
        assert_eq!((counts.total, counts.unvalidated, counts.per_ip.len()), (0, 0, 0));
        drop(counts);
        assert!(held.admit(ip, fresh, &limits).is_ok());
    }

    #[test]
    fn the_total_counts_every_address() {
        let held = Arc::new(Held::default());
        let limits = Limits {
            max_connections: 2,
            ..Limits::default()
        };
        let proven = Attempt {
            validated: true,
            may_retry: false,
        };
        let _a = held.admit([10, 0, 0, 1].into(), proven, &limits).expect("first");
        let _b = held.admit([10, 0, 0, 2].into(), proven, &limits).expect("second");
        assert!(matches!(
            held.admit([10, 0, 0, 3].into(), proven, &limits),
            Err(NotAdmitted::Refuse(Refusal::Full))
        ));
    }
}
