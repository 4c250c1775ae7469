//! The TLS 1.3 settings, in one place, each with its reason.
//!
//! | setting | value | why |
//! |---|---|---|
//! | versions | TLS 1.3 only | QUIC requires it; no downgrade surface |
//! | CA, server name | none; a fixed dummy name | the key is the identity (see the verifiers) |
//! | SNI | not sent | it would only leak which proxy we talk to |
//! | client certificate | required | every peer proves its key; connecting grants nothing |
//! | signatures | ed25519 only | the identity keys are ed25519 |
//! | 0-RTT (early data) | off | early data can be replayed by anyone who recorded it |
//! | resumption, tickets | off | see below |
//! | ALPN | `wtd/1` | refuses clients speaking anything else (or another wtd version) early |
//!
//! Why no resumption: a session ticket is a bearer secret standing in for the key. Whoever
//! copies it *is* the peer until it expires, without ever proving the key again, and the
//! server would need ticket keys to guard and rotate. A full handshake costs one ed25519
//! signature each way, which even a Pi Zero makes in well under a millisecond.

use std::sync::Arc;

use quinn::{Connection, TransportErrorCode};
use rustls::client::danger::ServerCertVerifier;
use rustls::client::Resumption;
use rustls::server::danger::ClientCertVerifier;
use rustls::server::NoServerSessionStorage;
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::AlertDescription;

/// The ALPN protocol id of this version of the wtd protocol.
pub const ALPN: &[u8] = b"wtd/1";

/// The server name handed to TLS. It is never sent (SNI is off) and never checked (the key
/// is); it exists because the TLS API needs one. `.invalid` can never be a real name.
pub const SERVER_NAME: &str = "wtd.invalid";

/// Building a TLS configuration or certificate failed. These come from wtd's own setup,
/// not from a peer.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    /// rustls refused the configuration or the key. A bug in wtd: please report it.
    #[error("TLS setup failed (a bug in wtd, please report it): {0}")]
    Rustls(#[source] rustls::Error),
    /// quinn refused the TLS configuration. A bug in wtd: please report it.
    #[error("QUIC TLS setup failed (a bug in wtd, please report it): {0}")]
    Quic(#[source] quinn::crypto::rustls::NoInitialCipherSuite),
    /// The self-signed certificate could not be made. A bug in wtd: please report it.
    #[error("making our certificate failed (a bug in wtd, please report it): {0}")]
    Certificate(#[source] rcgen::Error),
    /// The certificate we made does not carry our own key. A bug in wtd: please report it.
    #[error("our certificate does not carry our key (a bug in wtd, please report it)")]
    KeyMismatch,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The client side: present `identity`, judge the server with `verifier`.
///
/// Normally `verifier` is a fresh [`crate::ServerKeyVerifier`]; [`crate::Client`] makes one
/// per connection.
pub fn client_tls_config(
    identity: Arc<CertifiedKey>,
    verifier: Arc<dyn ServerCertVerifier>,
) -> Result<rustls::ClientConfig, TlsSetupError> {
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(TlsSetupError::Rustls)?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_cert_resolver(Arc::new(SingleCertAndKey::from(identity)));
    config.alpn_protocols = vec![ALPN.to_vec()];
    config.enable_sni = false;
    config.enable_early_data = false;
    config.resumption = Resumption::disabled();
    Ok(config)
}

/// The server side: present `identity`, judge clients with `verifier`.
///
/// Normally `verifier` is a fresh [`crate::ClientKeyVerifier`]; [`crate::Server`] makes one
/// per connection.
pub fn server_tls_config(
    identity: Arc<CertifiedKey>,
    verifier: Arc<dyn ClientCertVerifier>,
) -> Result<rustls::ServerConfig, TlsSetupError> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(TlsSetupError::Rustls)?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(SingleCertAndKey::from(identity)));
    config.alpn_protocols = vec![ALPN.to_vec()];
    config.session_storage = Arc::new(NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    config.max_early_data_size = 0;
    config.send_half_rtt_data = false;
    Ok(config)
}

/// Wraps a rustls client configuration for QUIC.
pub(crate) fn quic_client(tls: rustls::ClientConfig) -> Result<quinn::ClientConfig, TlsSetupError> {
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls).map_err(TlsSetupError::Quic)?;
    Ok(quinn::ClientConfig::new(Arc::new(quic)))
}

/// Wraps a rustls server configuration for QUIC.
pub(crate) fn quic_server(
    tls: rustls::ServerConfig,
) -> Result<Arc<quinn::crypto::rustls::QuicServerConfig>, TlsSetupError> {
    let quic = quinn::crypto::rustls::QuicServerConfig::try_from(tls).map_err(TlsSetupError::Quic)?;
    Ok(Arc::new(quic))
}

/// The ALPN protocol both sides agreed on.
pub(crate) fn negotiated_protocol(connection: &Connection) -> Option<Vec<u8>> {
    let data = connection.handshake_data()?;
    data.downcast::<quinn::crypto::rustls::HandshakeData>()
        .ok()?
        .protocol
}

/// The TLS alert a QUIC error code carries, if it carries one.
pub(crate) fn tls_alert(code: TransportErrorCode) -> Option<AlertDescription> {
    let code = u64::from(code);
    (0x100..0x200)
        .contains(&code)
        .then(|| AlertDescription::from((code & 0xff) as u8))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alerts_are_read_from_crypto_codes() {
        let code = TransportErrorCode::crypto(u8::from(AlertDescription::CertificateRequired));
        assert_eq!(tls_alert(code), Some(AlertDescription::CertificateRequired));
        assert_eq!(tls_alert(TransportErrorCode::CONNECTION_REFUSED), None);
    }
}
