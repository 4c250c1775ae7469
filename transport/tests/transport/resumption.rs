//! Every connection is a full handshake in which both keys are proven again: no session
//! tickets, no resumption, no 0-RTT early data (which anyone who recorded it could replay).
//!
//! How we can tell: a peer's certificate is verified only in a full handshake. A resumed
//! session skips it. So the tests count verifier calls across two connections, against a
//! deliberately permissive peer that *would* resume if our side let it. A control test shows
//! that two permissive peers do resume, so the counting really detects resumption.

use std::sync::Arc;

use rustls::client::Resumption;
use rustls::server::ServerSessionMemoryCache;
use wtd_keys::SecretKey;
use wtd_transport::{certified_key, client_tls_config, server_tls_config, ClientKeyVerifier, Limits, ALPN};

use crate::harness::{
    self, ping, pong, raw_accept, raw_client, raw_connect, raw_server, CountingClientVerifier,
    CountingServerVerifier,
};

/// A server that issues session tickets, resumes sessions and accepts 0-RTT.
fn permissive_server(key: &SecretKey, verifier: Arc<CountingClientVerifier>) -> quinn::Endpoint {
    let mut tls = server_tls_config(certified_key(key).expect("cert"), verifier).expect("server TLS");
    tls.session_storage = ServerSessionMemoryCache::new(16);
    tls.send_tls13_tickets = 2;
    tls.max_early_data_size = u32::MAX; // QUIC's value for "0-RTT allowed"
    raw_server(tls)
}

/// A client that keeps session tickets and tries 0-RTT.
fn permissive_client(verifier: Arc<CountingServerVerifier>) -> quinn::Endpoint {
    let identity = certified_key(&SecretKey::generate()).expect("cert");
    let mut tls = client_tls_config(identity, verifier).expect("client TLS");
    tls.resumption = Resumption::in_memory_sessions(16);
    tls.enable_early_data = true;
    raw_client(tls)
}

#[test]
fn the_configurations_forbid_tickets_resumption_and_early_data() {
    let identity = certified_key(&SecretKey::generate()).expect("cert");
    let server = server_tls_config(identity.clone(), Arc::new(ClientKeyVerifier::new())).expect("server TLS");
    assert_eq!(server.send_tls13_tickets, 0);
    assert_eq!(server.max_early_data_size, 0);
    assert!(!server.session_storage.can_cache());
    assert!(!server.ticketer.enabled());
    assert_eq!(server.alpn_protocols, vec![ALPN.to_vec()]);

    let pin = SecretKey::generate().public();
    let client = client_tls_config(identity, Arc::new(wtd_transport::ServerKeyVerifier::new(pin)))
        .expect("client TLS");
    assert!(!client.enable_early_data);
    assert!(!client.enable_sni);
    assert_eq!(client.alpn_protocols, vec![ALPN.to_vec()]);
}

#[tokio::test]
async fn control_permissive_peers_do_resume() {
    let server_key = SecretKey::generate();
    let server_counter = Arc::new(CountingClientVerifier::default());
    let client_counter = Arc::new(CountingServerVerifier::new(server_key.public()));
    let server = permissive_server(&server_key, server_counter.clone());
    let client = permissive_client(client_counter.clone());
    let to = server.local_addr().expect("bound");

    // First connection: a full handshake, and the server hands out a ticket.
    let connecting = client.connect(to, wtd_transport::SERVER_NAME).expect("connect");
    tokio::join!(
        async { ping(&connecting.await.expect("first connection")).await },
        async { pong(&raw_accept(&server).await.expect("first accepted")).await }
    );

    // Second connection: resumed, with 0-RTT available.
    let connecting = client.connect(to, wtd_transport::SERVER_NAME).expect("connect");
    let (connection, _zero_rtt) = connecting.into_0rtt().expect("permissive peers allow 0-RTT");
    tokio::join!(async move { ping(&connection).await }, async {
        pong(&raw_accept(&server).await.expect("second accepted")).await
    });
    assert_eq!(
        server_counter.calls(),
        1,
        "the second handshake skipped the client certificate"
    );
    assert_eq!(
        client_counter.calls(),
        1,
        "the second handshake skipped the server certificate"
    );
}

#[tokio::test]
async fn our_client_never_resumes_even_when_the_server_offers() {
    let server_key = SecretKey::generate();
    let counter = Arc::new(CountingClientVerifier::default());
    let server = permissive_server(&server_key, counter.clone());
    let (client, _) = harness::client();
    let to = server.local_addr().expect("bound");

    for _ in 0..2 {
        tokio::join!(
            async { ping(&client.connect(to, server_key.public()).await.expect("connects")).await },
            async { pong(&raw_accept(&server).await.expect("accepted")).await }
        );
    }
    assert_eq!(counter.calls(), 2, "both connections were full handshakes");
}

#[tokio::test]
async fn our_client_settings_never_resume_even_when_reused() {
    // `Client` makes fresh TLS settings for every connection, which alone rules out
    // resumption. Here one set of settings is reused, so only the settings themselves
    // (resumption disabled) stand between the two connections and a resumed session.
    let server_key = SecretKey::generate();
    let counter = Arc::new(CountingClientVerifier::default());
    let server = permissive_server(&server_key, counter.clone());
    let identity = certified_key(&SecretKey::generate()).expect("cert");
    let pin = Arc::new(wtd_transport::ServerKeyVerifier::new(server_key.public()));
    let client = raw_client(client_tls_config(identity, pin).expect("client TLS"));
    let to = server.local_addr().expect("bound");

    for _ in 0..2 {
        tokio::join!(
            async { ping(&raw_connect(&client, to).await.expect("connects")).await },
            async { pong(&raw_accept(&server).await.expect("accepted")).await }
        );
    }
    assert_eq!(counter.calls(), 2, "both connections were full handshakes");
}

#[tokio::test]
async fn our_server_never_resumes_nor_takes_early_data() {
    let (server, server_key) = harness::server(&Limits::default());
    let counter = Arc::new(CountingServerVerifier::new(server_key.public()));
    let client = permissive_client(counter.clone());
    let to = harness::addr(&server);

    for attempt in 0..2 {
        let connecting = client.connect(to, wtd_transport::SERVER_NAME).expect("connect");
        // Without a ticket from the server there is nothing to send early data with.
        let Err(connecting) = connecting.into_0rtt() else {
            panic!("attempt {attempt}: 0-RTT must not be possible");
        };
        tokio::join!(
            async { ping(&connecting.await.expect("connects")).await },
            async {
                let accepted = server
                    .accept()
                    .await
                    .expect("open")
                    .handshake()
                    .await
                    .expect("accepted");
                pong(accepted.connection()).await;
            }
        );
    }
    assert_eq!(counter.calls(), 2, "both connections were full handshakes");
}

#[tokio::test]
async fn our_server_settings_never_resume_even_when_reused() {
    // Like `Client`, `Server` makes fresh TLS settings per connection (so even a session
    // cache would start empty); here one set is reused, so the settings alone must refuse.
    let server_key = SecretKey::generate();
    let tls = server_tls_config(
        certified_key(&server_key).expect("cert"),
        Arc::new(ClientKeyVerifier::new()),
    )
    .expect("server TLS");
    let server = raw_server(tls);
    let counter = Arc::new(CountingServerVerifier::new(server_key.public()));
    let client = permissive_client(counter.clone());
    let to = server.local_addr().expect("bound");

    for attempt in 0..2 {
        let connecting = client.connect(to, wtd_transport::SERVER_NAME).expect("connect");
        let Err(connecting) = connecting.into_0rtt() else {
            panic!("attempt {attempt}: 0-RTT must not be possible");
        };
        tokio::join!(
            async { ping(&connecting.await.expect("connects")).await },
            async { pong(&raw_accept(&server).await.expect("accepted")).await }
        );
    }
    assert_eq!(counter.calls(), 2, "both connections were full handshakes");
}
