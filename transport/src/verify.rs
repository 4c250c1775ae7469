//! The two TLS certificate verifiers: this is where a connection learns *who* is on the
//! other end.
//!
//! There is no certificate authority. A peer *is* its ed25519 key, so each verifier does two
//! things, both required:
//!
//! 1. **Read the key** from the peer's (self-signed) certificate and judge it: a client
//!    pins the exact key it expects (from a ticket); a server accepts any client key that
//!    is a valid, non-weak ed25519 key, and hands it to the application, which decides what
//!    that key may do (connecting grants nothing).
//! 2. **Check the TLS 1.3 handshake signature** (`CertificateVerify`) with that key. Anyone
//!    can copy someone else's certificate; only the holder of the secret key can sign this
//!    connection's handshake transcript. Only ed25519 signatures are accepted.
//!
//! Each verifier is made for one connection, and remembers why it refused (see
//! [`ServerKeyVerifier::rejection`]), because TLS reduces every refusal to a one-byte alert
//! and the user deserves a sentence.

use std::sync::{Arc, LazyLock, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};
use wtd_keys::PublicId;

use crate::cert::key_in_certificate;

/// Why a peer's identity was refused during the handshake.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerKeyError {
    /// The peer's key is valid but is not the one we pinned.
    #[error("the peer's key is {presented}, but {expected} was expected")]
    WrongKey { expected: PublicId, presented: PublicId },
    /// The handshake signature does not verify with the key in the certificate: the peer
    /// copied someone's certificate but does not hold its secret key.
    #[error("the peer presented a certificate for a key it does not hold (its handshake signature does not verify)")]
    NotKeyHolder,
    /// The handshake was signed with something other than ed25519.
    #[error("the peer signed the handshake with {0:?}; wtd accepts only ed25519")]
    NotEd25519Signature(SignatureScheme),
    /// A small-order ("weak") key: signatures "verify" against it without any secret.
    #[error("the peer's certificate holds a weak (small-order) ed25519 key")]
    Weak,
    /// The key bytes are not a canonical point on the curve.
    #[error("the peer's certificate holds bytes that are not a valid ed25519 key")]
    NotAPoint,
    /// The certificate holds an RSA or ECDSA key: this is not a wtd peer.
    #[error("the peer's certificate is not for an ed25519 key: it is not a wtd peer")]
    NotEd25519,
    /// The certificate could not be parsed as X.509.
    #[error("the peer's certificate is damaged (not valid X.509)")]
    Malformed,
    /// The peer sent a certificate chain; wtd peers send exactly one certificate.
    #[error("the peer sent a certificate chain; wtd peers send exactly one self-signed certificate")]
    Chain,
}

/// Verifies the server, on the client side: its certificate must hold exactly the pinned key,
/// and it must prove it holds that key.
#[derive(Debug)]
pub struct ServerKeyVerifier {
    expected: PublicId,
    /// Why the handshake was refused, if it was. Set once: the first reason is the real one.
    rejection: OnceLock<PeerKeyError>,
}

impl ServerKeyVerifier {
    /// A verifier for one connection to a server that must hold `expected`.
    pub fn new(expected: PublicId) -> Self {
        ServerKeyVerifier {
            expected,
            rejection: OnceLock::new(),
        }
    }

    /// Why this verifier refused the server, if it did.
    pub fn rejection(&self) -> Option<PeerKeyError> {
        self.rejection.get().cloned()
    }

    fn refuse(&self, why: PeerKeyError) -> rustls::Error {
        refuse(&self.rejection, why)
    }
}

impl ServerCertVerifier for ServerKeyVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        // No SNI and no names: the key is the identity.
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        // Validity dates are ignored: Pis often have no real-time clock, and a key does not
        // expire (revocation of *grants* is handled above this layer).
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if !intermediates.is_empty() {
            return Err(self.refuse(PeerKeyError::Chain));
        }
        let presented = key_in_certificate(end_entity).map_err(|e| self.refuse(e))?;
        if presented != self.expected {
            return Err(self.refuse(PeerKeyError::WrongKey {
                expected: self.expected,
                presented,
            }));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // Unreachable: only TLS 1.3 is enabled. Refuse rather than trust.
        Err(rustls::Error::General("wtd speaks TLS 1.3 only".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_ed25519_handshake(message, cert, dss).map_err(|e| self.refuse(e))
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

/// Verifies the client, on the server side: it must present a certificate (client
/// authentication is mandatory), for a valid non-weak ed25519 key, and prove it holds it.
/// Which keys may do what is decided later, by the application.
#[derive(Debug, Default)]
pub struct ClientKeyVerifier {
    /// Why the handshake was refused, if it was.
    rejection: OnceLock<PeerKeyError>,
}

impl ClientKeyVerifier {
    /// A verifier for one incoming connection.
    pub fn new() -> Self {
        ClientKeyVerifier::default()
    }

    /// Why this verifier refused the client, if it did.
    pub fn rejection(&self) -> Option<PeerKeyError> {
        self.rejection.get().cloned()
    }

    fn refuse(&self, why: PeerKeyError) -> rustls::Error {
        refuse(&self.rejection, why)
    }
}

impl ClientCertVerifier for ClientKeyVerifier {
    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // No CA to hint at: any self-signed ed25519 certificate will do.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        if !intermediates.is_empty() {
            return Err(self.refuse(PeerKeyError::Chain));
        }
        // `key_in_certificate` parses with `PublicId::from_bytes`, which refuses weak and
        // non-canonical keys: a weak key would let anyone "prove" they hold it.
        key_in_certificate(end_entity).map_err(|e| self.refuse(e))?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("wtd speaks TLS 1.3 only".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_ed25519_handshake(message, cert, dss).map_err(|e| self.refuse(e))
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

/// Records the first reason for refusing and turns it into the error rustls reports.
fn refuse(slot: &OnceLock<PeerKeyError>, why: PeerKeyError) -> rustls::Error {
    let _first_reason_wins = slot.set(why.clone());
    let cert_error = match why {
        PeerKeyError::NotKeyHolder | PeerKeyError::NotEd25519Signature(_) => CertificateError::BadSignature,
        other => CertificateError::Other(rustls::OtherError(Arc::new(other))),
    };
    rustls::Error::InvalidCertificate(cert_error)
}

/// ring's signature algorithms, restricted to ed25519.
///
/// Built from a sub-slice of the provider's own table rather than a second copy of it, so
/// it is exactly the algorithm rustls would use, and needs no extra dependency.
static ED25519_ONLY: LazyLock<Option<WebPkiSupportedAlgorithms>> = LazyLock::new(|| {
    let all = rustls::crypto::ring::default_provider().signature_verification_algorithms;
    let at = all
        .mapping
        .iter()
        .position(|(scheme, _)| *scheme == SignatureScheme::ED25519)?;
    let mapping = &all.mapping[at..=at];
    Some(WebPkiSupportedAlgorithms {
        all: mapping[0].1,
        mapping,
    })
});

/// Checks that `dss` is an ed25519 signature over the handshake `message` by the key in
/// `cert`. This is the proof that the peer holds the key it claims.
fn verify_ed25519_handshake(
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
) -> Result<HandshakeSignatureValid, PeerKeyError> {
    if dss.scheme != SignatureScheme::ED25519 {
        return Err(PeerKeyError::NotEd25519Signature(dss.scheme));
    }
    // Fail closed if the provider somehow lacks ed25519.
    let algorithms = ED25519_ONLY.as_ref().ok_or(PeerKeyError::NotKeyHolder)?;
    rustls::crypto::verify_tls13_signature(message, cert, dss, algorithms)
        .map_err(|_| PeerKeyError::NotKeyHolder)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ed25519_is_available_and_alone() {
        let algorithms = ED25519_ONLY.as_ref().expect("ring provides ed25519");
        assert_eq!(algorithms.mapping.len(), 1);
        assert_eq!(algorithms.mapping[0].0, SignatureScheme::ED25519);
        assert_eq!(algorithms.all.len(), 1);
    }

    #[test]
    fn the_first_reason_is_kept() {
        let v = ClientKeyVerifier::new();
        let _ = v.refuse(PeerKeyError::Weak);
        let _ = v.refuse(PeerKeyError::Malformed);
        assert_eq!(v.rejection(), Some(PeerKeyError::Weak));
    }

    #[test]
    fn wrong_key_is_refused_before_the_signature() {
        let pinned = wtd_keys::SecretKey::generate().public();
        let other = wtd_keys::SecretKey::generate();
        let cert = crate::cert::certified_key(&other).expect("certificate");
        let v = ServerKeyVerifier::new(pinned);
        let name = ServerName::try_from(crate::tls::SERVER_NAME).expect("name");
        assert!(v
            .verify_server_cert(&cert.cert[0], &[], &name, &[], UnixTime::now())
            .is_err());
        assert_eq!(
            v.rejection(),
            Some(PeerKeyError::WrongKey {
                expected: pinned,
                presented: other.public()
            })
        );
    }

    #[test]
    fn chains_are_refused() {
        let secret = wtd_keys::SecretKey::generate();
        let cert = crate::cert::certified_key(&secret).expect("certificate");
        let v = ClientKeyVerifier::new();
        assert!(v
            .verify_client_cert(&cert.cert[0], &[cert.cert[0].clone()], UnixTime::now())
            .is_err());
        assert_eq!(v.rejection(), Some(PeerKeyError::Chain));
        let v = ServerKeyVerifier::new(secret.public());
        let name = ServerName::try_from(crate::tls::SERVER_NAME).expect("name");
        assert!(v
            .verify_server_cert(
                &cert.cert[0],
                &[cert.cert[0].clone()],
                &name,
                &[],
                UnixTime::now()
            )
            .is_err());
        assert_eq!(v.rejection(), Some(PeerKeyError::Chain));
    }
}
