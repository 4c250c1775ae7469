//! The proxy is not trusted: a proxy that alters, drops or forges owner-log records is
//! caught by the agent. Here the test itself plays a malicious proxy (real QUIC, the real
//! wire protocol) in front of a real `wtd agent` process.

mod common;

use std::sync::mpsc;
use std::time::Duration;

use common::{wait_for, TestCluster};
use wtd_keys::log::{OwnerLog, Record};
use wtd_keys::{
    Audience, Grant, GrantId, OwnerKey, ProxyId, ProxyInfo, Rate, SecretKey, Ticket, Timestamp, UserKey,
};
use wtd_transport::{read_frame, write_frame, Limits, Server};
use wtd_wire::{decode, encode, Key, Open, ToAgent};

/// Alice's log with three grants to Bob, as signed bytes.
fn alices_log(alice: &SecretKey) -> Vec<Vec<u8>> {
    let bob = UserKey(SecretKey::from_seed(&[2; 32]).public());
    let mut log = OwnerLog::new(OwnerKey(alice.public()));
    for n in 1..=3u8 {
        let now = Timestamp(1_900_000_000_000 + u64::from(n));
        let grant = Grant {
            id: GrantId([n; 16]),
            issuer: OwnerKey(alice.public()),
            subject: bob,
            audience: Audience::AllAgents,
            mission: "demo".parse().unwrap(),
            rate: Rate {
                calls: 10,
                period_ms: 60_000,
            },
            burst: 10,
            concurrency: 1,
            not_before: now,
            expires: now.plus_ms(3_600_000),
            issued_at: now,
        }
        .sign(alice);
        let entry = log.next_entry(alice, Record::Grant(grant)).unwrap();
        log.append(entry).unwrap();
    }
    log.entries().iter().map(|e| e.bytes().to_vec()).collect()
}

/// Serves one agent connection: welcome, then `entries` as Alice's log. Runs until the
/// test drops the returned sender.
fn evil_proxy(
    key: SecretKey,
    socket: std::net::UdpSocket,
    owner: OwnerKey,
    entries: Vec<Vec<u8>>,
) -> mpsc::Sender<()> {
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let server = Server::from_socket(&key, socket, &Limits::default()).unwrap();
            let accepted = server.accept().await.unwrap().handshake().await.unwrap();
            let (mut send, mut recv) = accepted.connection().accept_bi().await.unwrap();
            let hello = read_frame(&mut recv, 1 << 20).await.unwrap().unwrap();
            assert!(matches!(decode::<Open>(&hello).unwrap(), Open::Agent(_)));
            write_frame(
                &mut send,
                &encode(&ToAgent::Welcome {
                    proxy_software: "evil".into(),
                }),
            )
            .await
            .unwrap();
            let msg = ToAgent::Log {
                owner: Key::from(*owner.key()),
                entries,
            };
            write_frame(&mut send, &encode(&msg)).await.unwrap();
            // Keep the agent connected (reading its heartbeats) until the test is done.
            let keep = async { while let Ok(Some(_)) = read_frame(&mut recv, 1 << 20).await {} };
            let stop = tokio::task::spawn_blocking(move || stop_rx.recv());
            tokio::select! { _ = keep => {}, _ = stop => {} }
        });
    });
    stop_tx
}

fn run_case(entries: impl FnOnce(&[Vec<u8>]) -> Vec<Vec<u8>>, expect_kept: usize, expect_in_log: &str) {
    let lab = TestCluster::new();
    let alice = SecretKey::from_seed(&[1; 32]);
    let owner = OwnerKey(alice.public());
    let log = alices_log(&alice);
    let sent = entries(&log);

    let proxy_key = SecretKey::generate();
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    let ticket = Ticket {
        proxy: Some(ProxyInfo {
            id: ProxyId(proxy_key.public()),
            addrs: vec![addr],
        }),
        grants: vec![],
    }
    .to_text();
    let _stop = evil_proxy(proxy_key, socket, owner, sent);

    let mut pi = lab.add_agent(&ticket, "pi-1", &[&alice.public().to_string()], "");
    wait_for("the agent to report the bad log", Duration::from_secs(20), || {
        pi.daemon.output().contains(expect_in_log)
    });
    pi.daemon.kill();
    println!("agent log:\n{}", pi.daemon.output());
    let path = pi
        .dir
        .join("state")
        .join("logs")
        .join(format!("{}.log", alice.public()));
    let (file, _) = wtd_store::logfile::LogFile::open(&path, owner).unwrap();
    assert_eq!(
        file.log().entries().len(),
        expect_kept,
        "good records before the bad one are kept, the rest refused"
    );
    assert_eq!(file.log().entries()[0].bytes(), &log[0][..]);
}

#[test]
fn an_altered_record_is_refused() {
    run_case(
        |log| {
            let mut altered = log.to_vec();
            let i = altered[1].len() / 2;
            altered[1][i] ^= 0x01;
            altered
        },
        1,
        // Not just "owner log": the agent logs "owner log opened" at start, before any
        // entry arrives, and killing it then would find nothing stored yet.
        "bad owner log",
    );
}

#[test]
fn a_dropped_record_is_detected() {
    run_case(|log| vec![log[0].clone(), log[2].clone()], 1, "gap");
}

#[test]
fn a_rolled_back_log_changes_nothing_and_a_reordered_one_is_refused() {
    run_case(
        |log| vec![log[0].clone(), log[2].clone(), log[1].clone()],
        1,
        // Not just "owner log": the agent logs "owner log opened" at start, before any
        // entry arrives, and killing it then would find nothing stored yet.
        "bad owner log",
    );
}
