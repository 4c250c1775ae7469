//! wtd's transport: QUIC connections whose two ends are ed25519 keys.
//!
//! A wtd peer *is* its key. Every connection is QUIC (quinn) with TLS 1.3 in which both sides
//! present a self-signed certificate for their identity key and sign the handshake with it.
//! There is no certificate authority: a client pins the key it expects (from a ticket), a
//! server learns the client's key and leaves authorization to the layers above. Connecting
//! proves who you are; it grants nothing.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use wtd_keys::SecretKey;
//! use wtd_transport::{read_frame, write_frame, Client, Limits, Server};
//!
//! let (proxy_key, bob_key) = (SecretKey::generate(), SecretKey::generate());
//! let server = Server::bind(&proxy_key, "127.0.0.1:0".parse()?, &Limits::default())?;
//! let client = Client::bind(&bob_key, "127.0.0.1:0".parse()?)?;
//!
//! let (accepted, connection) = tokio::join!(
//!     async { server.accept().await.expect("open").handshake().await },
//!     client.connect(server.local_addr()?, proxy_key.public()),
//! );
//! assert_eq!(accepted?.peer(), bob_key.public()); // the server knows it is Bob
//! let (mut send, _recv) = connection?.open_bi().await?;
//! write_frame(&mut send, b"hello").await?;
//! # Ok(()) }
//! ```
//!
//! # Why certificates and not raw public keys
//!
//! TLS can carry a bare key instead of a certificate (RFC 7250, "raw public keys"), which would
//! fit "a peer is its key" even better, and rustls 0.23 supports it. We still wrap the key in a
//! minimal self-signed X.509 certificate because that is the path every QUIC and TLS stack,
//! every debugging tool (Wireshark, `openssl s_client`) and rustls's and quinn's own tests
//! exercise daily, while raw public keys are a young, rarely used path in both libraries. The
//! certificate costs ~300 bytes per handshake and one prefix comparison to read the key; what
//! it says besides the key (names, dates, its self-signature) is ignored. The security
//! argument is identical either way: the key is pinned ([`ServerKeyVerifier`]) or judged
//! ([`ClientKeyVerifier`]), and the TLS 1.3 handshake signature proves the peer holds it.
//!
//! # Why a verifier per connection
//!
//! TLS reports every refusal to the application as a one-byte alert. [`Client`] and
//! [`Server`] build fresh TLS settings, with a fresh verifier, for each connection; the
//! verifier remembers *why* it refused, so the error can say "this proxy presented another
//! key: get a fresh ticket" instead of "bad certificate". As a side effect no TLS state
//! (such as a session cache) is ever shared between connections.
//!
//! # Layout
//! - [`defaults`]: every number (timeouts, windows, connection caps), each with its reason.
//! - [`limits`]: [`Limits`] and [`RetryPolicy`], what a peer may ask of us.
//! - `cert`: our self-signed certificate, and reading the key out of a peer's ([`peer_id`]).
//! - `verify`: the two TLS verifiers that pin or judge the peer's key and check its proof.
//! - `tls`: the TLS 1.3 settings (no CA, no SNI, no 0-RTT, no resumption, ALPN `wtd/1`).
//! - `admission`: the pure decision to accept, retry or refuse a connection attempt.
//! - `endpoint`: [`BindError`], opening a UDP socket.
//! - `client`: [`Client`], connecting to a pinned key.
//! - `server`: [`Server`], [`Pending`], [`Accepted`]: admitting clients and naming them.
//! - `frame`: [`write_frame`] / [`read_frame`], length-prefixed messages on a stream.
//! - [`session`]: end-to-end TLS between a caller and an agent inside a relayed stream.
//! - [`lan`]: finding a proxy on the LAN with mDNS/DNS-SD, and announcing one.
#![forbid(unsafe_code)]

mod admission;
mod cert;
mod client;
pub mod defaults;
mod endpoint;
mod frame;
pub mod lan;
pub mod limits;
mod server;
pub mod session;
mod tls;
mod verify;

pub use cert::{certified_key, key_in_certificate, peer_id};
pub use client::{close_and_flush, Client, ConnectError};
pub use endpoint::BindError;
pub use frame::{read_frame, write_frame, FrameError, WriteFrameError};
pub use limits::{Limits, RetryPolicy};
/// A certificate and its signer, made once by [`certified_key`] and shared.
pub use rustls::sign::CertifiedKey;
pub use server::{AcceptError, Accepted, Pending, Server};
pub use tls::{client_tls_config, server_tls_config, TlsSetupError, ALPN, SERVER_NAME};
pub use verify::{ClientKeyVerifier, PeerKeyError, ServerKeyVerifier};

/// quinn's connection and stream types, re-exported so users of this crate need not depend
/// on quinn directly (and cannot end up with a second, incompatible version of it).
pub use quinn::{Connection, RecvStream, SendStream};
