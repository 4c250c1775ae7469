//! The certificate an endpoint presents: a self-signed X.509 wrapper around its ed25519 key.
//!
//! The certificate is only an envelope that carries the public key through TLS. Nothing in it
//! but the key matters: no CA signed it, its names and dates are ignored (a Pi without a
//! real-time clock often boots in 1970), and its self-signature proves nothing. What proves
//! that the peer *holds* the key is the TLS 1.3 `CertificateVerify` signature over the
//! handshake, which the verifiers ([`crate::ServerKeyVerifier`], [`crate::ClientKeyVerifier`])
//! check against the key in this certificate.
//!
//! An ed25519 `SubjectPublicKeyInfo` (RFC 8410) is always the same 44 bytes: a fixed 12-byte
//! header naming the algorithm, then the 32-byte key. So reading the key is one prefix
//! comparison on the SPKI that rustls's (fuzzed) X.509 parser hands us.

use std::sync::Arc;

use quinn::Connection;
use rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer};
use rustls::server::ParsedCertificate;
use rustls::sign::{CertifiedKey, SigningKey};
use rustls::SignatureScheme;
use wtd_keys::{KeyError, PublicId, SecretKey};
use zeroize::Zeroizing;

use crate::tls::TlsSetupError;
use crate::verify::PeerKeyError;

/// DER header of an ed25519 `SubjectPublicKeyInfo`: SEQUENCE { SEQUENCE { OID 1.3.101.112 },
/// BIT STRING (0 unused bits) }, followed by the 32 key bytes.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// DER header of an ed25519 PKCS#8 v1 private key (RFC 8410): version 0, algorithm ed25519,
/// OCTET STRING { OCTET STRING (32 bytes) }, followed by the 32-byte seed.
const ED25519_PKCS8_V1_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// Builds the certificate and TLS signing key for `secret`.
///
/// Call it once per endpoint and share the result: the secret is copied into the TLS
/// library's signer here and nowhere else (the PKCS#8 buffer is wiped on return).
pub fn certified_key(secret: &SecretKey) -> Result<Arc<CertifiedKey>, TlsSetupError> {
    let seed = secret.seed();
    let mut pkcs8 = Zeroizing::new(Vec::with_capacity(ED25519_PKCS8_V1_PREFIX.len() + seed.len()));
    pkcs8.extend_from_slice(&ED25519_PKCS8_V1_PREFIX);
    pkcs8.extend_from_slice(seed.as_ref());
    let signer = rustls::crypto::ring::sign::any_eddsa_type(&PrivatePkcs8KeyDer::from(pkcs8.as_slice()))
        .map_err(TlsSetupError::Rustls)?;

    let public = secret.public();
    let cert = self_signed(*public.as_bytes(), signer.clone(), &public.to_string())?;
    let key = CertifiedKey::new(vec![cert], signer);
    // Belt and braces: the signer and the certificate must name the same key, or every
    // handshake would fail (and look like an impostor to the other side).
    key.keys_match().map_err(TlsSetupError::Rustls)?;
    match key_in_certificate(&key.cert[0]) {
        Ok(k) if k == public => Ok(Arc::new(key)),
        _ => Err(TlsSetupError::KeyMismatch),
    }
}

/// Makes a self-signed certificate for the ed25519 `public` key, signed by `signer`.
///
/// rcgen signs through [`RustlsSigner`], the same object TLS will sign with, so the secret
/// never passes through rcgen's own key type. `common_name` is informational (we put the
/// `wtd1...` id there so the certificate reads well in Wireshark); nothing checks it.
pub(crate) fn self_signed(
    public: [u8; 32],
    signer: Arc<dyn SigningKey>,
    common_name: &str,
) -> Result<CertificateDer<'static>, TlsSetupError> {
    let key_pair = rcgen::KeyPair::from_remote(Box::new(RustlsSigner { public, signer }))
        .map_err(TlsSetupError::Certificate)?;
    let mut params =
        rcgen::CertificateParams::new(Vec::<String>::new()).map_err(TlsSetupError::Certificate)?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, common_name);
    let cert = params
        .self_signed(&key_pair)
        .map_err(TlsSetupError::Certificate)?;
    Ok(cert.der().clone())
}

/// Lets rcgen sign a certificate with a rustls ed25519 signer.
struct RustlsSigner {
    public: [u8; 32],
    signer: Arc<dyn SigningKey>,
}

impl rcgen::RemoteKeyPair for RustlsSigner {
    fn public_key(&self) -> &[u8] {
        &self.public
    }

    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        let signer = self
            .signer
            .choose_scheme(&[SignatureScheme::ED25519])
            .ok_or(rcgen::Error::RemoteKeyError)?;
        signer.sign(msg).map_err(|_| rcgen::Error::RemoteKeyError)
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &rcgen::PKCS_ED25519
    }
}

/// Reads the ed25519 key out of a certificate, refusing anything else.
///
/// This does **not** prove the sender holds the key; only the handshake signature does.
pub fn key_in_certificate(cert: &CertificateDer<'_>) -> Result<PublicId, PeerKeyError> {
    let parsed = ParsedCertificate::try_from(cert).map_err(|_| PeerKeyError::Malformed)?;
    let spki = parsed.subject_public_key_info();
    let raw = spki
        .as_ref()
        .strip_prefix(&ED25519_SPKI_PREFIX[..])
        .ok_or(PeerKeyError::NotEd25519)?;
    let raw: &[u8; 32] = raw.try_into().map_err(|_| PeerKeyError::NotEd25519)?;
    PublicId::from_bytes(raw).map_err(|e| match e {
        KeyError::Weak => PeerKeyError::Weak,
        _ => PeerKeyError::NotAPoint,
    })
}

/// The verified key of the other side of an established connection.
///
/// Every connection made by [`crate::Client`] or accepted by [`crate::Server`] has one: the
/// handshake only completes once the peer proved it holds this key. `None` means the
/// connection was made some other way (or the handshake has not finished).
pub fn peer_id(connection: &Connection) -> Option<PublicId> {
    let identity = connection.peer_identity()?;
    let chain = identity.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    key_in_certificate(chain.first()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_certificate_carries_our_key() {
        let secret = SecretKey::generate();
        let key = certified_key(&secret).expect("certificate");
        assert_eq!(key.cert.len(), 1, "a chain of exactly one certificate");
        assert_eq!(key_in_certificate(&key.cert[0]), Ok(secret.public()));
    }

    #[test]
    fn the_same_secret_gives_the_same_key_every_time() {
        let secret = SecretKey::generate();
        let a = certified_key(&secret).expect("certificate");
        let b = certified_key(&SecretKey::from_seed(&secret.seed())).expect("certificate");
        assert_eq!(key_in_certificate(&a.cert[0]), key_in_certificate(&b.cert[0]));
    }

    #[test]
    fn garbage_is_not_a_certificate() {
        let junk = CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x00]);
        assert_eq!(key_in_certificate(&junk), Err(PeerKeyError::Malformed));
    }

    #[test]
    fn a_non_ed25519_certificate_is_refused() {
        // An ECDSA P-256 certificate, as any ordinary TLS server would present.
        let key_pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("p256 key");
        let params = rcgen::CertificateParams::new(vec!["example.invalid".to_string()]).expect("params");
        let cert = params.self_signed(&key_pair).expect("self-signed");
        assert_eq!(key_in_certificate(cert.der()), Err(PeerKeyError::NotEd25519));
    }
}
