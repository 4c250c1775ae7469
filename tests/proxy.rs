//! The discovery proxy against misbehaving and mistaken clients: real `wtd proxy`
//! processes, real QUIC on 127.0.0.1, clients built from the same transport crate.

mod common;

use std::time::Duration;

use common::{wait_for, TestCluster};
use wtd_keys::{ProxyId, ProxyInfo, SecretKey, Ticket};
use wtd_transport::{read_frame, write_frame, Client, ConnectError};
use wtd_wire::{decode, encode, Open, Request, Response};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

async fn roster(client: &Client, proxy: &common::Proxy) -> Vec<wtd_wire::AgentInfo> {
    let conn = client
        .connect(proxy.addr, *proxy.id.key())
        .await
        .expect("connect");
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    write_frame(&mut send, &encode(&Open::Request(Request::Roster)))
        .await
        .unwrap();
    let bytes = read_frame(&mut recv, 1 << 20).await.unwrap().unwrap();
    match decode::<Response>(&bytes).unwrap() {
        Response::Roster(r) => r,
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn a_client_given_a_wrong_proxy_id_refuses_to_connect() {
    let lab = TestCluster::new();
    let proxy = lab.start_proxy();
    let bob = lab.user("bob");
    bob.init();

    // A ticket with the right address but another key: an impostor, as far as Bob knows.
    let forged = Ticket {
        proxy: Some(ProxyInfo {
            id: ProxyId(SecretKey::generate().public()),
            addrs: vec![proxy.addr],
        }),
        grants: vec![],
    }
    .to_text();
    let err = bob.fails(["join", &forged]);
    assert!(err.contains("impostor"), "{err}");

    // The real ticket works.
    let out = bob.ok(["join", &proxy.ticket]);
    assert!(out.contains("Connected: 0 agent(s) online"), "{out}");
    assert!(bob.ok(["ls"]).contains("No agents online"));
}

#[test]
fn ls_before_join_says_what_to_do() {
    let lab = TestCluster::new();
    let bob = lab.user("bob");
    bob.init();
    assert!(bob.fails(["ls"]).contains("wtd join"));
}

#[test]
fn garbage_and_oversized_frames_close_the_offender_only() {
    let lab = TestCluster::new();
    let proxy = lab.start_proxy();
    runtime().block_on(async {
        let good = Client::bind(&SecretKey::generate(), "127.0.0.1:0".parse().unwrap()).unwrap();
        let evil = Client::bind(&SecretKey::generate(), "127.0.0.1:0".parse().unwrap()).unwrap();

        // Garbage in a well-formed frame.
        let conn = evil.connect(proxy.addr, *proxy.id.key()).await.unwrap();
        let (mut send, _recv) = conn.open_bi().await.unwrap();
        write_frame(&mut send, &[0xde, 0xad, 0xbe, 0xef, 0xff, 0xff])
            .await
            .unwrap();
        let closed = tokio::time::timeout(Duration::from_secs(10), conn.closed())
            .await
            .expect("closed");
        assert!(format!("{closed}").contains("malformed"), "{closed}");

        // A frame that claims to be 4 GiB: refused from its length alone.
        let conn = evil.connect(proxy.addr, *proxy.id.key()).await.unwrap();
        let (mut send, _recv) = conn.open_bi().await.unwrap();
        send.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
        let closed = tokio::time::timeout(Duration::from_secs(10), conn.closed())
            .await
            .expect("closed");
        assert!(format!("{closed}").contains("bad frame"), "{closed}");

        // Streams opened and left silent are not kept forever.
        let conn = evil.connect(proxy.addr, *proxy.id.key()).await.unwrap();
        let mut held = Vec::new();
        for _ in 0..8 {
            let (mut send, recv) = conn.open_bi().await.unwrap();
            // QUIC opens a stream lazily; one byte makes it exist at the proxy.
            send.write_all(&[0]).await.unwrap();
            held.push((send, recv));
        }
        let closed = tokio::time::timeout(Duration::from_secs(20), conn.closed())
            .await
            .expect("closed");
        assert!(
            format!("{closed}").contains("said nothing") || format!("{closed}").contains("bad frame"),
            "{closed}"
        );

        // Meanwhile a well-behaved client is served as usual.
        assert!(roster(&good, &proxy).await.is_empty());
    });
    assert!(proxy.daemon.output().contains("closing"), "the proxy logged why");
}

#[test]
fn a_burst_of_connections_from_one_address_is_capped_and_memory_stays_bounded() {
    let lab = TestCluster::new();
    let proxy = lab.start_proxy();
    let rss_before = proxy.daemon.rss_kb();
    runtime().block_on(async {
        let mut attempts = tokio::task::JoinSet::new();
        for _ in 0..48 {
            let client = Client::bind(&SecretKey::generate(), "127.0.0.1:0".parse().unwrap()).unwrap();
            let (addr, id) = (proxy.addr, *proxy.id.key());
            attempts.spawn(async move {
                let r = client.connect(addr, id).await;
                (client, r)
            });
        }
        let mut clients = Vec::new();
        let mut results = Vec::new();
        while let Some(done) = attempts.join_next().await {
            let (client, r) = done.unwrap();
            clients.push(client);
            results.push(r);
        }
        let ok = results.iter().filter(|r| r.is_ok()).count();
        let refused = results
            .iter()
            .filter(|r| matches!(r, Err(ConnectError::Refused { .. })))
            .count();
        // The per-address cap (32 by default) holds; the rest were refused, not queued.
        assert!(ok <= 32, "{ok} connections accepted from one address");
        assert!(
            refused >= 16,
            "{refused} refused: {:?}",
            results.iter().filter_map(|r| r.as_ref().err()).next()
        );
        drop(results);
        drop(clients);
        // Once they are gone, a new client gets in.
        let fresh = Client::bind(&SecretKey::generate(), "127.0.0.1:0".parse().unwrap()).unwrap();
        let mut served = false;
        for _ in 0..100 {
            if fresh.connect(proxy.addr, *proxy.id.key()).await.is_ok() {
                served = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(served, "the proxy serves again after the burst");
    });
    let rss_after = proxy.daemon.rss_kb();
    assert!(
        rss_after < rss_before + 64 * 1024,
        "proxy RSS grew from {rss_before} kB to {rss_after} kB"
    );
}

#[test]
fn the_proxy_keeps_owner_logs_across_restarts() {
    let lab = TestCluster::new();
    let mut proxy = lab.start_proxy();
    let alice = lab.user("alice");
    alice.init();
    alice.ok(["join", &proxy.ticket]);
    let bob = lab.user("bob");
    let bob_id = bob.init();
    alice.ok(["grant", &bob_id, "--mission", "demo"]);
    let out = alice.ok(["sync"]);
    assert!(out.contains("up to record 1"), "{out}");

    proxy.daemon.stop();
    let port = proxy.addr.port();
    drop(proxy);
    let proxy = lab.start_proxy_on(port, &[]);
    wait_for("the proxy to answer", Duration::from_secs(10), || {
        alice.cli(["sync"]).status.success()
    });
    assert!(alice.ok(["sync"]).contains("up to record 1"));
    drop(proxy);
}

/// A client on its own loopback address (the whole of 127.0.0.0/8 reaches the proxy).
fn client_on(ip: &str) -> Client {
    Client::bind(&SecretKey::generate(), format!("{ip}:0").parse().unwrap()).unwrap()
}

#[test]
fn connection_limits_come_from_the_flags_and_refuse_past_them() {
    let lab = TestCluster::new();
    let proxy = lab.start_proxy_on(
        0,
        &[
            "--deployment",
            "laptop",
            "--max-connections",
            "3",
            "--max-connections-per-ip",
            "2",
        ],
    );
    wait_for("the limits line", Duration::from_secs(10), || {
        proxy.daemon.output().contains("connection limits:")
    });
    let out = proxy.daemon.output();
    assert!(
        out.contains("connection limits: 3 in all, 2 per address (deployment laptop)"),
        "{out}"
    );
    runtime().block_on(async {
        let (addr, id) = (proxy.addr, *proxy.id.key());
        let a = [
            client_on("127.0.0.1"),
            client_on("127.0.0.1"),
            client_on("127.0.0.1"),
        ];
        let _a0 = a[0].connect(addr, id).await.expect("first from 127.0.0.1");
        let _a1 = a[1].connect(addr, id).await.expect("second from 127.0.0.1");
        // The per-address branch: a third from the same address is refused...
        let third = a[2].connect(addr, id).await;
        assert!(matches!(third, Err(ConnectError::Refused { .. })), "{third:?}");
        let err = third.unwrap_err().to_string();
        assert!(err.contains("too many connections from your address"), "{err}");
        // ...while another address still gets in,
        let b = client_on("127.0.0.2");
        let _b0 = b.connect(addr, id).await.expect("one from 127.0.0.2");
        // and the total branch: the proxy is now full for everyone.
        let c = client_on("127.0.0.3");
        let full = c.connect(addr, id).await;
        assert!(matches!(full, Err(ConnectError::Refused { .. })), "{full:?}");
    });
    assert!(
        proxy.daemon.output().contains("at its connection limit"),
        "the proxy logged the refusals"
    );
}

#[test]
fn the_default_limits_are_the_pi_profile_and_bad_limits_stop_the_proxy() {
    let lab = TestCluster::new();
    let proxy = lab.start_proxy();
    wait_for("the limits line", Duration::from_secs(10), || {
        proxy.daemon.output().contains("connection limits:")
    });
    assert!(
        proxy
            .daemon
            .output()
            .contains("connection limits: 128 in all, 32 per address (deployment pi)"),
        "{}",
        proxy.daemon.output()
    );
    let alice = lab.user("alice");
    let err = alice.fails([
        "proxy",
        "--listen",
        "127.0.0.1:0",
        "--max-connections-per-ip",
        "0",
    ]);
    assert!(err.contains("use at least 1"), "{err}");
    let err = alice.fails(["proxy", "--listen", "127.0.0.1:0", "--max-agents", "0"]);
    assert!(err.contains("would refuse every agent"), "{err}");
    let config = lab.dir().join("proxy.toml");
    std::fs::write(&config, "max_connections = 8\nmax_connections_per_ip = 9\n").unwrap();
    let err = alice.fails([
        "proxy",
        "--listen",
        "127.0.0.1:0",
        "--config",
        config.to_str().unwrap(),
    ]);
    assert!(err.contains("above max_connections"), "{err}");
}
