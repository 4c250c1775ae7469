//! Shared set-up: our endpoints on 127.0.0.1, a connected pair, and the parts adversarial
//! peers are built from.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{Connection, Endpoint};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::sign::{CertifiedKey, Signer, SigningKey};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureAlgorithm, SignatureScheme};
use wtd_keys::{PublicId, SecretKey};
use wtd_transport::{
    certified_key, AcceptError, Accepted, Client, ClientKeyVerifier, ConnectError, Limits, Server,
    ServerKeyVerifier,
};

pub fn localhost() -> SocketAddr {
    "127.0.0.1:0".parse().expect("a socket address")
}

pub fn server(limits: &Limits) -> (Server, SecretKey) {
    let key = SecretKey::generate();
    (
        Server::bind(&key, localhost(), limits).expect("server binds"),
        key,
    )
}

pub fn client() -> (Client, SecretKey) {
    let key = SecretKey::generate();
    (Client::bind(&key, localhost()).expect("client binds"), key)
}

pub fn addr(server: &Server) -> SocketAddr {
    server.local_addr().expect("bound")
}

/// Runs one connection attempt from `client` to `server` (pinning `expected`) and the
/// server's side of it, and returns what each side saw.
pub async fn attempt(
    server: &Server,
    client: &Client,
    expected: PublicId,
) -> (Result<Connection, ConnectError>, Result<Accepted, AcceptError>) {
    tokio::join!(client.connect(addr(server), expected), async {
        server.accept().await.expect("server is open").handshake().await
    })
}

/// Connects `client` to `server` and expects both sides to succeed. Unlike [`attempt`], a
/// client that fails (e.g. is refused before any handshake, so the server never sees it)
/// fails the test at once instead of leaving the server waiting forever.
pub async fn admitted(server: &Server, client: &Client, expected: PublicId) -> (Connection, Accepted) {
    let connect = client.connect(addr(server), expected);
    let accept = async { server.accept().await.expect("server is open").handshake().await };
    tokio::pin!(connect, accept);
    tokio::select! {
        connected = &mut connect => {
            let connection = connected.expect("the client connects");
            (connection, accept.await.expect("the server accepts"))
        }
        accepted = &mut accept => {
            let accepted = accepted.expect("the server accepts");
            (connect.await.expect("the client connects"), accepted)
        }
    }
}

/// A server and a client, connected.
pub struct Link {
    pub server_key: SecretKey,
    pub client_key: SecretKey,
    /// The server's view: the connection and the client's key.
    pub accepted: Accepted,
    /// The client's view.
    pub connection: Connection,
    // Kept so the endpoints live as long as the link.
    _server: Server,
    _client: Client,
}

impl Link {
    pub async fn new() -> Link {
        let (server, server_key) = server(&Limits::default());
        let (client, client_key) = client();
        let (connection, accepted) = attempt(&server, &client, server_key.public()).await;
        Link {
            server_key,
            client_key,
            accepted: accepted.expect("server accepts"),
            connection: connection.expect("client connects"),
            _server: server,
            _client: client,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Raw endpoints: quinn with a rustls configuration the test controls completely.

pub fn raw_server(tls: rustls::ServerConfig) -> Endpoint {
    let quic = QuicServerConfig::try_from(tls).expect("QUIC-compatible TLS");
    Endpoint::server(quinn::ServerConfig::with_crypto(Arc::new(quic)), localhost()).expect("raw server binds")
}

pub fn raw_client(tls: rustls::ClientConfig) -> Endpoint {
    let quic = QuicClientConfig::try_from(tls).expect("QUIC-compatible TLS");
    let mut endpoint = Endpoint::client(localhost()).expect("raw client binds");
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(quic)));
    endpoint
}

/// The server's side of one connection on a raw server.
pub async fn raw_accept(endpoint: &Endpoint) -> Result<Connection, quinn::ConnectionError> {
    endpoint.accept().await.expect("raw server is open").await
}

/// The client's side of one connection from a raw client.
pub async fn raw_connect(endpoint: &Endpoint, to: SocketAddr) -> Result<Connection, quinn::ConnectionError> {
    endpoint
        .connect(to, wtd_transport::SERVER_NAME)
        .expect("connect starts")
        .await
}

/// One message there and back: proves the connection works, and gives TLS time to deliver
/// any post-handshake messages (such as session tickets) before the client moves on.
pub async fn ping(connection: &Connection) {
    let (mut send, mut recv) = connection.open_bi().await.expect("open stream");
    send.write_all(b"ping").await.expect("write");
    send.finish().expect("finish");
    let reply = recv.read_to_end(64).await.expect("reply");
    assert_eq!(reply, b"ping");
}

/// The server's half of [`ping`]; then waits for the client to close.
pub async fn pong(connection: &Connection) {
    let (mut send, mut recv) = connection.accept_bi().await.expect("accept stream");
    let msg = recv.read_to_end(64).await.expect("read");
    send.write_all(&msg).await.expect("write");
    send.finish().expect("finish");
    let _ = connection.closed().await;
}

// ---------------------------------------------------------------------------------------
// Impostors.

/// A certificate for `claimed`'s key, with a signer holding `actual`'s key: what someone
/// who copied `claimed`'s certificate (but not its secret) would present.
pub fn copied_certificate(claimed: &SecretKey, actual: &SecretKey) -> Arc<CertifiedKey> {
    let claimed = certified_key(claimed).expect("certificate");
    let actual = certified_key(actual).expect("certificate");
    Arc::new(CertifiedKey::new(claimed.cert.clone(), actual.key.clone()))
}

/// The identity point of edwards25519, encoded: a small-order ("weak") public key.
pub const WEAK_KEY: [u8; 32] = {
    let mut k = [0u8; 32];
    k[0] = 1;
    k
};

/// A "signature" that verifies against [`WEAK_KEY`] for *every* message under the plain
/// (cofactorless) ed25519 equation `[s]B == R + [h]A`: with A the identity, `[h]A` vanishes
/// whatever h is, so s = 1 and R = B (the base point, y = 4/5) satisfy it. No secret needed.
pub fn forged_signature() -> Vec<u8> {
    let mut sig = vec![0x66u8; 64];
    sig[0] = 0x58; // R = encoding of the base point: 0x58 followed by 31 bytes of 0x66
    sig[32..].fill(0);
    sig[32] = 1; // s = 1, little-endian
    sig
}

/// Signs anything with the forged signature: the weak key's "secret".
#[derive(Debug)]
pub struct Forger;

impl SigningKey for Forger {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn Signer>> {
        offered
            .contains(&SignatureScheme::ED25519)
            .then(|| Box::new(Forger) as Box<dyn Signer>)
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        SignatureAlgorithm::ED25519
    }
}

impl Signer for Forger {
    fn sign(&self, _message: &[u8]) -> Result<Vec<u8>, rustls::Error> {
        Ok(forged_signature())
    }

    fn scheme(&self) -> SignatureScheme {
        SignatureScheme::ED25519
    }
}

impl rcgen::RemoteKeyPair for Forger {
    fn public_key(&self) -> &[u8] {
        &WEAK_KEY
    }

    fn sign(&self, _msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        Ok(forged_signature())
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &rcgen::PKCS_ED25519
    }
}

/// A certificate for the weak key, and the forger to sign handshakes "with" it.
pub fn weak_identity() -> Arc<CertifiedKey> {
    let key_pair = rcgen::KeyPair::from_remote(Box::new(Forger)).expect("remote key");
    let cert = rcgen::CertificateParams::new(Vec::<String>::new())
        .expect("params")
        .self_signed(&key_pair)
        .expect("self-signed");
    Arc::new(CertifiedKey::new(vec![cert.der().clone()], Arc::new(Forger)))
}

/// A client verifier *without* the weak-key check: accepts any certificate and checks the
/// handshake signature with ring. The control group for the weak-key test.
#[derive(Debug)]
pub struct LaxClientVerifier;

impl ClientCertVerifier for LaxClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.3 only".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = rustls::crypto::ring::default_provider().signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, &algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

// ---------------------------------------------------------------------------------------
// Counting verifiers: a certificate is verified only in a full handshake, never in a
// resumed one, so counting calls tells full handshakes from resumptions.

#[derive(Debug, Default)]
pub struct CountingClientVerifier {
    inner: ClientKeyVerifier,
    calls: AtomicUsize,
}

impl CountingClientVerifier {
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

impl ClientCertVerifier for CountingClientVerifier {
    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.inner.verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[derive(Debug)]
pub struct CountingServerVerifier {
    inner: ServerKeyVerifier,
    calls: AtomicUsize,
}

impl CountingServerVerifier {
    pub fn new(expected: PublicId) -> Self {
        CountingServerVerifier {
            inner: ServerKeyVerifier::new(expected),
            calls: AtomicUsize::new(0),
        }
    }

    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

impl ServerCertVerifier for CountingServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
