//! Who gets a handshake: connection caps, and QUIC retry for unproven addresses.
//!
//! All peers here share 127.0.0.1, so the per-IP cap sees them as one machine.

use wtd_transport::{ConnectError, Limits, RetryPolicy, Server};

use crate::harness::{self, admitted};

/// Connects once more and expects the server to refuse before any handshake.
async fn expect_refused(server: &Server, client: &wtd_transport::Client, key: wtd_keys::PublicId) {
    let refused = tokio::select! {
        result = client.connect(harness::addr(server), key) => result,
        pending = server.accept() => panic!("an attempt over the limit was admitted: {pending:?}"),
    };
    assert!(
        matches!(refused, Err(ConnectError::Refused { .. })),
        "{refused:?}"
    );
}

#[tokio::test]
async fn a_full_server_refuses_until_a_slot_frees() {
    let limits = Limits {
        max_connections: 1,
        ..Limits::default()
    };
    let (server, server_key) = harness::server(&limits);
    let (alice, _) = harness::client();
    let (bob, bob_key) = harness::client();

    let (_alice_conn, alice_accepted) = admitted(&server, &alice, server_key.public()).await;

    expect_refused(&server, &bob, server_key.public()).await;

    // Alice leaves: her slot is free again.
    drop(alice_accepted);
    let (_bob_conn, bob_accepted) = admitted(&server, &bob, server_key.public()).await;
    assert_eq!(bob_accepted.peer(), bob_key.public());
}

#[tokio::test]
async fn one_address_cannot_take_every_slot() {
    let limits = Limits {
        max_connections_per_ip: 2,
        ..Limits::default()
    };
    let (server, server_key) = harness::server(&limits);
    let (client, _) = harness::client();

    let (_c1, first) = admitted(&server, &client, server_key.public()).await;
    let (_c2, _second) = admitted(&server, &client, server_key.public()).await;

    expect_refused(&server, &client, server_key.public()).await;

    drop(first);
    let (_c3, _third) = admitted(&server, &client, server_key.public()).await;
}

#[tokio::test]
async fn retry_always_makes_every_client_prove_its_address() {
    let limits = Limits {
        retry: RetryPolicy::Always,
        ..Limits::default()
    };
    let (server, server_key) = harness::server(&limits);
    let (client, client_key) = harness::client();

    let (connected, accepted) = tokio::join!(
        client.connect(harness::addr(&server), server_key.public()),
        async {
            let pending = server.accept().await.expect("open");
            assert!(
                pending.address_validated(),
                "the attempt that reached us came after a retry"
            );
            pending.handshake().await
        }
    );
    connected.expect("the client follows the retry transparently");
    assert_eq!(accepted.expect("accepted").peer(), client_key.public());
}

#[tokio::test]
async fn an_idle_server_spares_clients_the_retry() {
    let (server, server_key) = harness::server(&Limits::default());
    let (client, _) = harness::client();

    let (connected, accepted) = tokio::join!(
        client.connect(harness::addr(&server), server_key.public()),
        async {
            let pending = server.accept().await.expect("open");
            assert!(
                !pending.address_validated(),
                "no retry: the first packet started the handshake"
            );
            pending.handshake().await
        }
    );
    assert!(
        connected.is_ok() && accepted.is_ok(),
        "{connected:?} {accepted:?}"
    );
}

#[tokio::test]
async fn a_busy_server_retries_new_clients() {
    // Busy = at least one handshake from an unproven address is in progress.
    let limits = Limits {
        retry: RetryPolicy::WhenBusy { unvalidated_over: 1 },
        ..Limits::default()
    };
    let (server, server_key) = harness::server(&limits);
    let (first_client, _) = harness::client();
    let (second_client, _) = harness::client();
    let to = harness::addr(&server);
    let key = server_key.public();

    // The first client's attempt is admitted without a retry, and left waiting.
    // Each task hands back its client with the result, so nothing is closed early.
    let first_connect = tokio::spawn(async move {
        let result = first_client.connect(to, key).await;
        (first_client, result)
    });
    let first = server.accept().await.expect("open");
    assert!(!first.address_validated());

    // While it is pending, the next client must prove its address first.
    let second_connect = tokio::spawn(async move {
        let result = second_client.connect(to, key).await;
        (second_client, result)
    });
    let second = server.accept().await.expect("open");
    assert!(second.address_validated(), "the second client was retried");

    let (a, b) = tokio::join!(first.handshake(), second.handshake());
    assert!(a.is_ok() && b.is_ok(), "{a:?} {b:?}");
    let (_first_client, first_result) = first_connect.await.expect("task");
    let (_second_client, second_result) = second_connect.await.expect("task");
    assert!(
        first_result.is_ok() && second_result.is_ok(),
        "{first_result:?} {second_result:?}"
    );
}
