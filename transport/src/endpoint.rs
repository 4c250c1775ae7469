//! Opening an endpoint (a UDP socket speaking QUIC), shared by [`crate::Client`] and
//! [`crate::Server`].

use std::net::SocketAddr;

use crate::tls::TlsSetupError;

/// Opening a client or server endpoint failed.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// The UDP socket could not be opened: the port is taken by another program (is a wtd
    /// already running?), the address is not on this machine, or this was called outside a
    /// tokio runtime.
    #[error("could not open a UDP socket on {addr} (port in use? address not on this machine?): {source}")]
    Socket {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// A [`crate::Limits`] field is unusable; the message says which one. Fix the configuration.
    #[error("unusable connection limits: {0}")]
    Limits(&'static str),
    /// Setting up TLS failed (a bug in wtd).
    #[error(transparent)]
    Tls(#[from] TlsSetupError),
}
