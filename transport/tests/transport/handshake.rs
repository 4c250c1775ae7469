//! The handshake between honest peers, and the mistakes honest users make.

use std::sync::Arc;

use wtd_keys::SecretKey;
use wtd_transport::{
    certified_key, client_tls_config, peer_id, server_tls_config, AcceptError, Client, ClientKeyVerifier,
    ConnectError, Limits, ServerKeyVerifier,
};

use crate::harness::{self, attempt, raw_accept, raw_client, raw_connect, raw_server, Link};

#[tokio::test]
async fn both_sides_see_each_others_verified_key() {
    let link = Link::new().await;

    // The server learns who connected...
    assert_eq!(link.accepted.peer(), link.client_key.public());
    assert_eq!(
        peer_id(link.accepted.connection()),
        Some(link.client_key.public())
    );
    // ...and the client knows it reached the key it pinned.
    assert_eq!(peer_id(&link.connection), Some(link.server_key.public()));

    // And the connection carries data both ways.
    tokio::join!(harness::ping(&link.connection), async {
        let (mut send, mut recv) = link.accepted.connection().accept_bi().await.expect("stream");
        let msg = recv.read_to_end(64).await.expect("read");
        send.write_all(&msg).await.expect("write");
        send.finish().expect("finish");
    });
}

#[tokio::test]
async fn pinning_the_wrong_key_fails_with_a_clear_error() {
    let (server, server_key) = harness::server(&Limits::default());
    let (client, _) = harness::client();
    let stale_ticket_key = SecretKey::generate().public();

    let (connected, accepted) = attempt(&server, &client, stale_ticket_key).await;

    let err = connected.expect_err("a connection to the wrong key must fail");
    let ConnectError::WrongKey {
        expected, presented, ..
    } = &err
    else {
        panic!("expected WrongKey, got {err:?}");
    };
    assert_eq!(*expected, stale_ticket_key);
    assert_eq!(*presented, server_key.public());
    assert!(
        err.to_string().contains("fresh ticket"),
        "the message says what to do: {err}"
    );
    // The server hears that the client refused it.
    assert!(
        matches!(accepted, Err(AcceptError::ClientRefusedUs { .. })),
        "{accepted:?}"
    );
}

#[tokio::test]
async fn a_client_speaking_another_protocol_is_refused() {
    let (server, server_key) = harness::server(&Limits::default());
    let identity = certified_key(&SecretKey::generate()).expect("certificate");
    let mut tls = client_tls_config(identity, Arc::new(ServerKeyVerifier::new(server_key.public())))
        .expect("client TLS");
    tls.alpn_protocols = vec![b"wtd/2".to_vec()];
    let other_version = raw_client(tls);

    let (_, accepted) = tokio::join!(raw_connect(&other_version, harness::addr(&server)), async {
        server.accept().await.expect("open").handshake().await
    });
    assert!(
        matches!(accepted, Err(AcceptError::WrongProtocol { .. })),
        "{accepted:?}"
    );
}

#[tokio::test]
async fn a_server_speaking_another_protocol_is_refused() {
    let server_key = SecretKey::generate();
    let identity = certified_key(&server_key).expect("certificate");
    let mut tls = server_tls_config(identity, Arc::new(ClientKeyVerifier::new())).expect("server TLS");
    tls.alpn_protocols = vec![b"wtd/2".to_vec()];
    let other_version = raw_server(tls);
    let (client, _) = harness::client();

    let (connected, _) = tokio::join!(
        client.connect(other_version.local_addr().expect("bound"), server_key.public()),
        raw_accept(&other_version),
    );
    assert!(
        matches!(connected, Err(ConnectError::WrongProtocol { .. })),
        "{connected:?}"
    );
}

#[tokio::test]
async fn nobody_answering_is_reported_as_such() {
    // A UDP socket that receives and never answers: a firewall dropping packets, or a
    // machine that is off.
    let silent = std::net::UdpSocket::bind(harness::localhost()).expect("bind");
    let client = Client::bind(&SecretKey::generate(), harness::localhost()).expect("client");

    let result = client
        .connect(
            silent.local_addr().expect("bound"),
            SecretKey::generate().public(),
        )
        .await;
    assert!(matches!(result, Err(ConnectError::NoAnswer { .. })), "{result:?}");
}
