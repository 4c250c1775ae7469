//! Hostile peers against a real `wtd proxy` and `wtd agent`, while an honest owner keeps
//! calling through them. Each attack must end with the attacker closed or refused, the
//! proxy's memory bounded (RSS from /proc), and the honest calls still working. The honest
//! calls' figures (done, failed, p50 and slowest) are measured and printed, never asserted
//! as times: this machine is shared and noisy.
//!
//! Attackers are in-process QUIC clients on their own loopback addresses (127.0.0.0/8),
//! so the per-address limit protects the honest caller on 127.0.0.1.
//!
//! # Index (one phase each, in `hostile_peers_are_closed_and_honest_calls_keep_working`)
//! - slowloris: ten clients each open the most streams allowed and stall
//! - one address floods connections; many addresses flood connections and hold them
//! - a handshake flood: handshakes begun and abandoned, and raw UDP garbage
//! - oversized frames, garbage after the handshake, garbage relayed to the agent
//! - valid frames in the wrong order: a second agent control stream, a heartbeat first

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{wait_for, TestCluster, User};
use wtd_keys::{PublicId, SecretKey};
use wtd_transport::{read_frame, write_frame, Client, ConnectError, Connection};
use wtd_wire::{encode, FromAgent, Key, Open, Request};

const LIMIT: Duration = Duration::from_secs(30);

/// The honest owner calling `demo/echo` in a loop on another thread, and what it saw.
struct Honest {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<(bool, Duration)>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Honest {
    fn start(alice: &User) -> Honest {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let home = alice.home.clone();
        let (s, v) = (stop.clone(), seen.clone());
        let thread = std::thread::spawn(move || {
            let alice = User {
                name: "alice".into(),
                home,
            };
            // Bounded: at most 2,000 calls, whatever happens.
            for _ in 0..2_000 {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let start = Instant::now();
                let out = alice.cli(["call", "demo/echo", r#"{"msg":"still here"}"#]);
                let ok = out.status.success() && String::from_utf8_lossy(&out.stdout).contains("still here");
                v.lock().unwrap().push((ok, start.elapsed()));
            }
        });
        Honest {
            stop,
            seen,
            thread: Some(thread),
        }
    }

    /// Calls seen so far.
    fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    /// Forgets what it saw (between phases); returns it.
    fn take(&self) -> Vec<(bool, Duration)> {
        std::mem::take(&mut *self.seen.lock().unwrap())
    }
}

impl Drop for Honest {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One phase's figures, as a table row.
fn row(
    phase: &str,
    calls: &[(bool, Duration)],
    rss_before: u64,
    rss_peak: u64,
    rss_after: u64,
    outcome: &str,
) -> String {
    let mut times: Vec<Duration> = calls.iter().filter(|c| c.0).map(|c| c.1).collect();
    times.sort();
    let p50 = times.get(times.len() / 2).copied().unwrap_or_default();
    let max = times.last().copied().unwrap_or_default();
    let ok = times.len();
    format!(
        "| {phase} | {ok} | {} | {:.0} ms | {:.0} ms | {} / {} / {} MB | {outcome} |",
        calls.len() - ok,
        p50.as_secs_f64() * 1e3,
        max.as_secs_f64() * 1e3,
        rss_before / 1024,
        rss_peak / 1024,
        rss_after / 1024,
    )
}

fn client_on(ip: &str) -> Client {
    Client::bind(&SecretKey::generate(), format!("{ip}:0").parse().unwrap()).unwrap()
}

/// Waits for the proxy to close `conn`; returns the reason it gave.
async fn closed(conn: &Connection) -> String {
    tokio::time::timeout(Duration::from_secs(20), conn.closed())
        .await
        .expect("the proxy closes the attacker")
        .to_string()
}

#[test]
fn hostile_peers_are_closed_and_honest_calls_keep_working() {
    let lab = TestCluster::new();
    let proxy = lab.start_proxy();
    let alice = lab.user("alice");
    let alice_id = alice.init();
    alice.ok(["join", &proxy.ticket]);
    let agent = lab.add_agent(&proxy.ticket, "pi", &[&alice_id], "");
    alice.adopt(&agent);
    let agent_key: PublicId = agent.id().parse().unwrap();
    wait_for("the agent to be online", LIMIT, || alice.agent_names() == ["pi"]);
    alice.ok(["call", "demo/echo", r#"{"msg":"warm"}"#]);

    let (addr, id): (SocketAddr, PublicId) = (proxy.addr, *proxy.id.key());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let honest = Honest::start(&alice);
    wait_for("the first honest calls", LIMIT, || honest.count() >= 3);
    honest.take();
    let mut table = vec![
        "| attack | honest calls ok | failed | p50 | slowest | proxy RSS before / peak / after | attacker |"
            .to_string(),
        "|---|---|---|---|---|---|---|".to_string(),
    ];
    let baseline_rss = proxy.daemon.rss_kb();

    // Runs one attack while sampling the proxy's RSS; then lets honest calls run a moment
    // more, and records the row.
    let mut phase = |name: &str, attack: &mut dyn FnMut() -> String| {
        let before = proxy.daemon.rss_kb();
        let peak = Arc::new(std::sync::atomic::AtomicU64::new(before));
        let sampling = Arc::new(AtomicBool::new(true));
        let pid = proxy.daemon.pid();
        let sampler = {
            let (peak, sampling) = (peak.clone(), sampling.clone());
            std::thread::spawn(move || {
                while sampling.load(Ordering::SeqCst) {
                    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
                    let rss = status
                        .lines()
                        .find_map(|l| l.strip_prefix("VmRSS:"))
                        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                        .unwrap_or(0);
                    peak.fetch_max(rss, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
        };
        let outcome = attack();
        let seen_during = honest.count();
        wait_for("honest calls after the attack", LIMIT, || {
            honest.count() >= seen_during + 2
        });
        sampling.store(false, Ordering::SeqCst);
        sampler.join().unwrap();
        let after = proxy.daemon.rss_kb();
        let calls = honest.take();
        table.push(row(
            name,
            &calls,
            before,
            peak.load(Ordering::SeqCst),
            after,
            &outcome,
        ));
        assert!(
            calls.iter().rev().take(2).all(|c| c.0),
            "{name}: honest calls fail after the attack: {calls:?}"
        );
        assert!(
            after < baseline_rss + 64 * 1024,
            "{name}: proxy RSS grew from {baseline_rss} kB to {after} kB"
        );
    };

    phase("slowloris: 10 addresses x 32 stalled streams", &mut || {
        rt.block_on(async {
            let mut tasks = tokio::task::JoinSet::new();
            for i in 0..10 {
                tasks.spawn(async move {
                    let c = client_on(&format!("127.0.0.{}", 50 + i));
                    let conn = c.connect(addr, id).await.expect("connects");
                    let mut held = Vec::new();
                    for _ in 0..32 {
                        let Ok((mut send, recv)) = conn.open_bi().await else {
                            break;
                        };
                        // One byte of a length prefix, then nothing.
                        let _ = send.write_all(&[0]).await;
                        held.push((send, recv));
                    }
                    let why = closed(&conn).await;
                    (held.len(), why)
                });
            }
            let mut reasons = Vec::new();
            while let Some(r) = tasks.join_next().await {
                let (streams, why) = r.unwrap();
                assert!(why.contains("said nothing") || why.contains("bad frame"), "{why}");
                reasons.push(streams);
            }
            format!(
                "all 10 closed ({} streams held at most)",
                reasons.iter().max().unwrap()
            )
        })
    });

    phase("one address, 200 connections at once", &mut || {
        rt.block_on(async {
            let mut tasks = tokio::task::JoinSet::new();
            for _ in 0..200 {
                tasks.spawn(async move {
                    let c = client_on("127.0.0.66");
                    let r = c.connect(addr, id).await;
                    (c, r)
                });
            }
            // Every connection that got in is held until the last attempt is answered, so
            // the count is of connections open at once.
            let (mut held, mut refused) = (Vec::new(), 0);
            while let Some(r) = tasks.join_next().await {
                match r.unwrap() {
                    (c, Ok(conn)) => held.push((c, conn)),
                    (_, Err(ConnectError::Refused { .. })) => refused += 1,
                    (_, Err(_)) => {}
                }
            }
            let ok = held.len();
            assert!(ok <= 32, "{ok} admitted from one address");
            tokio::time::sleep(Duration::from_secs(1)).await;
            format!("{ok} admitted, {refused} refused (per-address limit 32)")
        })
    });

    phase("100 addresses, a connection each, held 3 s", &mut || {
        rt.block_on(async {
            let mut conns = Vec::new();
            for i in 0..100 {
                let c = client_on(&format!("127.0.1.{}", 1 + i));
                if let Ok(conn) = c.connect(addr, id).await {
                    conns.push((c, conn));
                }
            }
            let held = conns.len();
            tokio::time::sleep(Duration::from_secs(3)).await;
            format!("{held} held (total limit 128), then dropped")
        })
    });

    phase(
        "handshake flood: 300 begun and abandoned, 20,000 garbage datagrams",
        &mut || {
            rt.block_on(async {
                for round in 0..10 {
                    let mut tasks = tokio::task::JoinSet::new();
                    for i in 0..30 {
                        tasks.spawn(async move {
                            let c = client_on(&format!("127.0.2.{}", 1 + i + round));
                            // Give up after the first flight: the proxy is left holding a
                            // half-done handshake until it times out.
                            let _ = tokio::time::timeout(Duration::from_millis(1), c.connect(addr, id)).await;
                        });
                    }
                    while tasks.join_next().await.is_some() {}
                }
                let garbage = vec![0xc3u8; 1200];
                for i in 0..20 {
                    let s = std::net::UdpSocket::bind(format!("127.0.3.{}:0", 1 + i)).unwrap();
                    for _ in 0..1000 {
                        let _ = s.send_to(&garbage, addr);
                    }
                }
                "handshakes timed out, garbage dropped".to_string()
            })
        },
    );

    phase(
        "oversized frame, garbage after the handshake, garbage relayed to the agent",
        &mut || {
            rt.block_on(async {
                let c = client_on("127.0.0.70");
                let conn = c.connect(addr, id).await.unwrap();
                let (mut send, _r) = conn.open_bi().await.unwrap();
                send.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
                let oversized = closed(&conn).await;
                assert!(oversized.contains("bad frame"), "{oversized}");

                let conn = c.connect(addr, id).await.unwrap();
                let (mut send, _r) = conn.open_bi().await.unwrap();
                let _ = send.write_all(&[0x00, 0x00, 0x10, 0x00]).await;
                let _ = send.write_all(&vec![0xee; 4096]).await;
                let garbage = closed(&conn).await;
                assert!(garbage.contains("malformed"), "{garbage}");

                // Relayed to the agent, garbage meets its TLS: the agent drops that stream and
                // keeps serving (the honest calls show it).
                let conn = c.connect(addr, id).await.unwrap();
                let (mut send, mut recv) = conn.open_bi().await.unwrap();
                write_frame(
                    &mut send,
                    &encode(&Open::Relay {
                        to: Key::from(agent_key),
                    }),
                )
                .await
                .unwrap();
                let reply = read_frame(&mut recv, 1 << 16).await.unwrap().unwrap();
                assert_eq!(
                    wtd_wire::decode::<wtd_wire::RelayReply>(&reply).unwrap(),
                    wtd_wire::RelayReply::Connected
                );
                let _ = send.write_all(&vec![0x16; 64 * 1024]).await;
                let mut sink = vec![0u8; 1024];
                let ended = tokio::time::timeout(Duration::from_secs(20), async {
                    while let Ok(Some(_)) = recv.read(&mut sink).await {}
                })
                .await;
                assert!(ended.is_ok(), "the agent ends a relayed stream of garbage");
                format!("closed: \"{oversized}\"; \"{garbage}\"; the relayed stream ended")
            })
        },
    );

    phase("valid frames in the wrong order", &mut || {
        rt.block_on(async {
            // A heartbeat as a stream's first frame (it is not an Open).
            let c = client_on("127.0.0.71");
            let conn = c.connect(addr, id).await.unwrap();
            let (mut send, _r) = conn.open_bi().await.unwrap();
            write_frame(&mut send, &encode(&FromAgent::Leaving))
                .await
                .unwrap();
            let first = closed(&conn).await;
            // A request stream that goes on sending after its request: the proxy answers
            // the request and reads no more; then a second agent control stream on one
            // connection (the first one still open) is refused.
            let conn = c.connect(addr, id).await.unwrap();
            let (mut send, mut recv) = conn.open_bi().await.unwrap();
            write_frame(&mut send, &encode(&Open::Request(Request::Roster)))
                .await
                .unwrap();
            write_frame(&mut send, &encode(&Open::Request(Request::Roster)))
                .await
                .unwrap();
            let answer = read_frame(&mut recv, 1 << 20).await.unwrap();
            assert!(answer.is_some(), "the first request is answered");

            let hello = Open::Agent(wtd_wire::AgentHello {
                version: wtd_wire::PROTOCOL_VERSION,
                advert: wtd_wire::Advert {
                    name: "intruder".into(),
                    owners: vec![Key::from(SecretKey::generate().public())],
                    missions: vec![],
                    tags: vec![],
                    model: None,
                    software: "evil".into(),
                    warnings: vec![],
                    enrollment: None,
                },
                heads: vec![],
            });
            let (mut first_send, mut first_recv) = conn.open_bi().await.unwrap();
            write_frame(&mut first_send, &encode(&hello)).await.unwrap();
            let welcome = read_frame(&mut first_recv, 1 << 20).await.unwrap();
            assert!(welcome.is_some(), "the first hello is answered");
            let (mut send, _r) = conn.open_bi().await.unwrap();
            write_frame(&mut send, &encode(&hello)).await.unwrap();
            let second = closed(&conn).await;
            assert!(second.contains("a second agent control stream"), "{second}");
            format!("heartbeat first: \"{first}\"; \"{second}\"")
        })
    });

    drop(honest);
    println!("\nHostile peers against one proxy and one agent, honest `wtd call demo/echo` in a loop:\n");
    for line in &table {
        println!("{line}");
    }
    let names = alice.agent_names();
    assert!(
        names.contains(&"pi".to_string()),
        "the agent is still online: {names:?}"
    );
}
