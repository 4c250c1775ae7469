//! Peers that claim a key they cannot prove, or prove nothing at all.
//!
//! A certificate is public: anyone can copy it. What an impostor cannot do is sign this
//! connection's handshake with the certificate's key. These tests present a copied
//! certificate (the key of A, signatures by B) from each side, no certificate, and a weak
//! key for which signatures can be forged without any secret.

use std::sync::Arc;

use wtd_keys::SecretKey;
use wtd_transport::{
    certified_key, client_tls_config, server_tls_config, AcceptError, ClientKeyVerifier, ConnectError,
    Limits, ServerKeyVerifier, ALPN,
};

use crate::harness::{
    self, copied_certificate, raw_accept, raw_client, raw_connect, raw_server, weak_identity,
    LaxClientVerifier,
};

#[tokio::test]
async fn a_server_with_a_copied_certificate_is_refused() {
    let real_proxy = SecretKey::generate();
    let impostor = SecretKey::generate();
    let (client, _) = harness::client();

    // Control: the raw server set-up works when the certificate and the key match.
    let honest = raw_server(
        server_tls_config(
            certified_key(&real_proxy).expect("cert"),
            Arc::new(ClientKeyVerifier::new()),
        )
        .expect("server TLS"),
    );
    let (connected, _) = tokio::join!(
        client.connect(honest.local_addr().expect("bound"), real_proxy.public()),
        raw_accept(&honest),
    );
    assert!(
        connected.is_ok(),
        "the honest raw server is reachable: {connected:?}"
    );

    // The impostor presents the real proxy's certificate but signs with its own key.
    let fake = raw_server(
        server_tls_config(
            copied_certificate(&real_proxy, &impostor),
            Arc::new(ClientKeyVerifier::new()),
        )
        .expect("server TLS"),
    );
    let (connected, _) = tokio::join!(
        client.connect(fake.local_addr().expect("bound"), real_proxy.public()),
        raw_accept(&fake),
    );
    assert!(
        matches!(connected, Err(ConnectError::ServerNotKeyHolder { .. })),
        "{connected:?}"
    );
}

#[tokio::test]
async fn a_client_with_a_copied_certificate_is_refused() {
    let (server, server_key) = harness::server(&Limits::default());
    let alice = SecretKey::generate();
    let mallory = SecretKey::generate();
    let pin = || Arc::new(ServerKeyVerifier::new(server_key.public()));

    // Control: a raw client with a matching certificate and key is accepted as Alice.
    let honest =
        raw_client(client_tls_config(certified_key(&alice).expect("cert"), pin()).expect("client TLS"));
    let (_, accepted) = tokio::join!(raw_connect(&honest, harness::addr(&server)), async {
        server.accept().await.expect("open").handshake().await
    });
    assert_eq!(
        accepted.expect("the honest raw client is accepted").peer(),
        alice.public()
    );

    // Mallory presents Alice's certificate but signs with her own key.
    let fake =
        raw_client(client_tls_config(copied_certificate(&alice, &mallory), pin()).expect("client TLS"));
    let (_, accepted) = tokio::join!(raw_connect(&fake, harness::addr(&server)), async {
        server.accept().await.expect("open").handshake().await
    });
    assert!(
        matches!(accepted, Err(AcceptError::ClientNotKeyHolder { .. })),
        "{accepted:?}"
    );
}

#[tokio::test]
async fn a_client_without_a_certificate_is_refused() {
    let (server, server_key) = harness::server(&Limits::default());
    let mut tls =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("TLS 1.3")
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(ServerKeyVerifier::new(server_key.public())))
            .with_no_client_auth();
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let anonymous = raw_client(tls);

    let (_, accepted) = tokio::join!(raw_connect(&anonymous, harness::addr(&server)), async {
        server.accept().await.expect("open").handshake().await
    });
    assert!(
        matches!(accepted, Err(AcceptError::NoClientCertificate { .. })),
        "{accepted:?}"
    );
}

#[tokio::test]
async fn a_client_with_a_weak_key_is_refused() {
    let server_key = SecretKey::generate();
    let pin = || Arc::new(ServerKeyVerifier::new(server_key.public()));

    // Control: a verifier that checks the handshake signature but not the key's strength
    // lets the forger in. The forged signature is valid, so only the weak-key check stops it.
    let lax = raw_server(
        server_tls_config(
            certified_key(&server_key).expect("cert"),
            Arc::new(LaxClientVerifier),
        )
        .expect("server TLS"),
    );
    let forger = raw_client(client_tls_config(weak_identity(), pin()).expect("client TLS"));
    let (_, accepted) = tokio::join!(
        raw_connect(&forger, lax.local_addr().expect("bound")),
        raw_accept(&lax)
    );
    assert!(
        accepted.is_ok(),
        "without the weak-key check the forgery passes: {accepted:?}"
    );

    // wtd's server refuses it.
    let server =
        wtd_transport::Server::bind(&server_key, harness::localhost(), &Limits::default()).expect("bind");
    let (_, accepted) = tokio::join!(raw_connect(&forger, harness::addr(&server)), async {
        server.accept().await.expect("open").handshake().await
    });
    assert!(
        matches!(accepted, Err(AcceptError::WeakClientKey { .. })),
        "{accepted:?}"
    );
}
