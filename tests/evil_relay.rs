//! The proxy cannot read, forge, replay or redirect a call. Here the test plays a
//! malicious proxy in front of the real one: Bob's `wtd call` connects to it (Bob trusts a
//! proxy for delivery only), and it forwards to the real `wtd proxy`, except that it
//! flips a byte, redirects the call to another agent, or records a call to replay it.
//! Each attack must make the call fail, and nothing may run twice.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{wait_for, TestCluster};
use wtd_keys::{ProxyId, ProxyInfo, PublicId, SecretKey, Ticket};
use wtd_transport::{read_frame, write_frame, Client, Limits, RecvStream, SendStream, Server};
use wtd_wire::{decode, encode, Key, Open, RelayReply};

#[derive(Clone)]
enum Attack {
    /// Forward faithfully, recording what the caller sends inside a relay.
    Record,
    /// Flip one bit of the caller's bytes, `at` bytes into the relayed stream.
    Flip { at: usize },
    /// Relay to this agent instead of the one asked for.
    Redirect([u8; 32]),
    /// Forward whole TLS records; after the caller's first `after` records (its handshake),
    /// wait until `ready()` (the agent has finished its side of the handshake), insert
    /// `records` (taken from another session) once, then go on forwarding.
    Splice {
        after: usize,
        records: Arc<Vec<u8>>,
        ready: Arc<dyn Fn() -> bool + Send + Sync>,
    },
}

/// The TLS records in `bytes` (a caller's side of a session), as (content type, whole record).
fn tls_records(bytes: &[u8]) -> Vec<(u8, &[u8])> {
    let mut out = Vec::new();
    let mut i = 0;
    while i + 5 <= bytes.len() {
        let len = u16::from_be_bytes([bytes[i + 3], bytes[i + 4]]) as usize;
        let end = (i + 5 + len).min(bytes.len());
        out.push((bytes[i], &bytes[i..end]));
        i = end;
    }
    out
}

#[derive(Clone)]
struct Evil {
    attack: Arc<Mutex<Attack>>,
    recorded: Arc<Mutex<Vec<u8>>>,
}

/// Copies `from` to `to`, applying the attack to the bytes (caller -> agent direction).
async fn pump(mut from: RecvStream, mut to: SendStream, evil: Option<Evil>) {
    let mut seen = 0usize;
    let mut buf = vec![0u8; 16 * 1024];
    // For `Splice`: bytes of an incomplete record, and whole records forwarded so far.
    let mut held = Vec::new();
    let mut forwarded = 0usize;
    loop {
        let n = match from.read(&mut buf).await {
            Ok(Some(n)) if n > 0 => n,
            _ => break,
        };
        let chunk = &mut buf[..n];
        let splice = evil.as_ref().and_then(|e| match &*e.attack.lock().unwrap() {
            Attack::Splice {
                after,
                records,
                ready,
            } => Some((*after, records.clone(), ready.clone())),
            _ => None,
        });
        if let Some((after, records, ready)) = splice {
            // Whole records only, so the insertion falls between two of them.
            held.extend_from_slice(chunk);
            while let Some(&(_, record)) = tls_records(&held).first() {
                if record.len() < 5 || record.len() != 5 + u16::from_be_bytes([record[3], record[4]]) as usize
                {
                    break; // not all of it has arrived yet
                }
                let len = record.len();
                if to.write_all(&held[..len]).await.is_err() {
                    return;
                }
                held.drain(..len);
                forwarded += 1;
                if forwarded == after {
                    let start = std::time::Instant::now();
                    while !ready() && start.elapsed() < Duration::from_secs(10) {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    if to.write_all(&records).await.is_err() {
                        return;
                    }
                }
            }
            continue;
        }
        if let Some(evil) = &evil {
            match *evil.attack.lock().unwrap() {
                Attack::Record => evil.recorded.lock().unwrap().extend_from_slice(chunk),
                Attack::Flip { at } if at >= seen && at < seen + n => chunk[at - seen] ^= 0x01,
                _ => {}
            }
        }
        seen += n;
        if to.write_all(chunk).await.is_err() {
            break;
        }
    }
    let _ = to.finish();
}

/// Runs the malicious proxy on `socket`, forwarding to the real proxy at `upstream`.
fn start_evil(key: SecretKey, socket: std::net::UdpSocket, upstream: ProxyInfo, evil: Evil) {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let server = Server::from_socket(&key, socket, &Limits::default()).unwrap();
            let client = Arc::new(Client::bind(&key, "127.0.0.1:0".parse().unwrap()).unwrap());
            while let Some(pending) = server.accept().await {
                let (client, upstream, evil) = (client.clone(), upstream.clone(), evil.clone());
                tokio::spawn(async move {
                    let Ok(accepted) = pending.handshake().await else {
                        return;
                    };
                    let Ok(up) = client.connect(upstream.addrs[0], *upstream.id.key()).await else {
                        return;
                    };
                    while let Ok((c_send, mut c_recv)) = accepted.connection().accept_bi().await {
                        let Ok((mut u_send, u_recv)) = up.open_bi().await else {
                            return;
                        };
                        let evil = evil.clone();
                        tokio::spawn(async move {
                            let Ok(Some(first)) = read_frame(&mut c_recv, 1 << 20).await else {
                                return;
                            };
                            let mut relayed = false;
                            let first = match decode::<Open>(&first) {
                                Ok(Open::Relay { to }) => {
                                    relayed = true;
                                    let to = match *evil.attack.lock().unwrap() {
                                        Attack::Redirect(other) => Key(other),
                                        _ => to,
                                    };
                                    encode(&Open::Relay { to })
                                }
                                _ => first,
                            };
                            if write_frame(&mut u_send, &first).await.is_err() {
                                return;
                            }
                            // The relay reply, then the bytes: agent -> caller untouched,
                            // caller -> agent attacked (only inside relays).
                            tokio::join!(
                                pump(u_recv, c_send, None),
                                pump(c_recv, u_send, relayed.then_some(evil)),
                            );
                        });
                    }
                });
            }
        });
    });
}

#[test]
fn flipped_redirected_replayed_or_spliced_calls_fail_and_nothing_runs_twice() {
    let lab = TestCluster::new();
    let proxy = lab.start_proxy();
    let alice = lab.user("alice");
    let alice_id = alice.init();
    alice.ok(["join", &proxy.ticket]);
    let bob = lab.user("bob");
    let bob_id = bob.init();

    // A side effect anyone can write (functions run unprivileged when the agent is root).
    let dir = tempfile::Builder::new().prefix("wtd-evil").tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let mark = dir.path().join("ran");
    let mission = format!(
        "name = \"side\"\nversion = \"1\"\ndescription = \"\"\n[[functions]]\nname = \"mark\"\ndescription = \"\"\n\
         exec = [\"/bin/sh\", \"-c\", \"echo ran >> {}; echo done\"]\n",
        mark.display()
    );
    for name in ["pi-a", "pi-b"] {
        let missions = lab.dir().join("agents").join(name).join("missions");
        std::fs::create_dir_all(&missions).unwrap();
        std::fs::write(missions.join("side.toml"), &mission).unwrap();
    }
    let pi_a = lab.add_agent(&proxy.ticket, "pi-a", &[&alice_id], "");
    let pi_b = lab.add_agent(&proxy.ticket, "pi-b", &[&alice_id], "");
    alice.adopt(&pi_a);
    alice.adopt(&pi_b);
    let (a_id, b_id): (PublicId, PublicId) = (pi_a.id().parse().unwrap(), pi_b.id().parse().unwrap());
    wait_for("both agents", Duration::from_secs(20), || {
        alice.agent_names().len() == 2
    });
    let out: serde_json::Value =
        serde_json::from_str(&alice.ok(["grant", &bob_id, "--mission", "side", "--json"])).unwrap();
    bob.ok(["grants", "import", out["ticket"].as_str().unwrap()]);

    // Bob joins the malicious proxy.
    let evil = Evil {
        attack: Arc::new(Mutex::new(Attack::Record)),
        recorded: Arc::default(),
    };
    let evil_key = SecretKey::generate();
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let evil_ticket = Ticket {
        proxy: Some(ProxyInfo {
            id: ProxyId(evil_key.public()),
            addrs: vec![socket.local_addr().unwrap()],
        }),
        grants: vec![],
    }
    .to_text();
    let upstream = Ticket::from_text(&proxy.ticket).unwrap().proxy.unwrap();
    start_evil(evil_key, socket, upstream.clone(), evil.clone());
    bob.ok(["join", &evil_ticket]);
    let lines = || std::fs::read_to_string(&mark).unwrap_or_default().lines().count();

    // Faithful relay: the call works (and is recorded by the proxy, as ciphertext).
    let ok = bob.cli(["call", "side/mark", "--agent", "pi-a"]);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    assert_eq!(lines(), 1);
    let recorded = evil.recorded.lock().unwrap().clone();
    assert!(!recorded.is_empty());
    assert!(
        !String::from_utf8_lossy(&recorded).contains("side"),
        "the proxy sees no plaintext"
    );

    // 1. One flipped bit in any TLS record's content (the ClientHello, the client's
    //    certificate and finished message, the call itself): the call fails, nothing runs.
    //    (The 5-byte record headers are left alone: TLS 1.3 fixes the outer type byte to
    //    23 and rustls rebuilds it rather than trusting the wire, so it carries nothing.)
    let mut flips = Vec::new();
    let mut i = 0;
    while i + 5 <= recorded.len() {
        let len = u16::from_be_bytes([recorded[i + 3], recorded[i + 4]]) as usize;
        flips.push(i + 5 + len / 2);
        i += 5 + len;
    }
    assert!(flips.len() >= 4, "handshake and call records: {flips:?}");
    for at in flips {
        *evil.attack.lock().unwrap() = Attack::Flip { at };
        let out = bob.cli(["call", "side/mark", "--agent", "pi-a"]);
        assert!(!out.status.success(), "flip at {at} went unnoticed");
    }
    assert_eq!(lines(), 1, "no flipped call ran");

    // 2. Redirected to pi-b: Bob's handshake pins pi-a's key, so it fails.
    *evil.attack.lock().unwrap() = Attack::Redirect(*b_id.as_bytes());
    let out = bob.cli(["call", "side/mark", "--agent", "pi-a"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not the agent we asked for") || err.contains("could not reach"),
        "{err}"
    );
    assert_eq!(lines(), 1, "nothing ran on pi-b");

    // 3. Replay: the recorded session bytes, sent again to pi-a through the real proxy.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let replayer = Client::bind(&SecretKey::generate(), "127.0.0.1:0".parse().unwrap()).unwrap();
        let conn = replayer
            .connect(upstream.addrs[0], *upstream.id.key())
            .await
            .unwrap();
        let (mut send, mut recv) = conn.open_bi().await.unwrap();
        write_frame(
            &mut send,
            &encode(&Open::Relay {
                to: Key(*a_id.as_bytes()),
            }),
        )
        .await
        .unwrap();
        let reply = read_frame(&mut recv, 1 << 20).await.unwrap().unwrap();
        assert_eq!(decode::<RelayReply>(&reply).unwrap(), RelayReply::Connected);
        let _ = send.write_all(&recorded).await;
        let _ = send.finish();
        let _ = tokio::time::timeout(Duration::from_secs(5), recv.read_to_end(1 << 20)).await;
    });
    assert_eq!(lines(), 1, "the replayed call did not run again");

    // 4. Splice: Bob opens a new, genuine session, and the relay inserts the first session's
    //    application records (its call) right after Bob's handshake, where the agent expects
    //    Bob's first call. They were sealed with the first session's keys, so the agent's
    //    TLS refuses the first of them (bad record MAC) and ends the session: nothing runs.
    let records = tls_records(&recorded);
    let types: Vec<u8> = records.iter().map(|r| r.0).collect();
    // rustls as the caller: ClientHello (22), a compatibility ChangeCipherSpec (20), then its
    // encrypted Certificate, CertificateVerify and Finished in one record (23), then the
    // call (23).
    const HANDSHAKE_RECORDS: usize = 3;
    assert_eq!(&types[..HANDSHAKE_RECORDS], &[22, 20, 23], "{types:?}");
    assert!(types.len() > HANDSHAKE_RECORDS, "the call's records: {types:?}");
    let calls: Vec<u8> = records[HANDSHAKE_RECORDS..]
        .iter()
        .flat_map(|r| r.1.to_vec())
        .collect();
    let agent_log = pi_a.daemon.log.clone();
    let count = move |what: &str| {
        std::fs::read_to_string(&agent_log)
            .unwrap_or_default()
            .matches(what)
            .count()
    };
    let opened = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    // Ready once the agent logged one more finished handshake ("session opened") than before.
    let ready: Arc<dyn Fn() -> bool + Send + Sync> = {
        let (count, opened) = (count.clone(), opened.clone());
        Arc::new(move || count("session opened") > opened.load(std::sync::atomic::Ordering::SeqCst))
    };
    let splice = |records: Vec<u8>| {
        opened.store(count("session opened"), std::sync::atomic::Ordering::SeqCst);
        Attack::Splice {
            after: HANDSHAKE_RECORDS,
            records: Arc::new(records),
            ready: ready.clone(),
        }
    };
    // Control: the record-by-record relay, inserting nothing, is faithful.
    *evil.attack.lock().unwrap() = splice(Vec::new());
    let ok = bob.cli(["call", "side/mark", "--agent", "pi-a"]);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    assert_eq!(lines(), 2);
    let failures_before = count("a caller's session failed");
    *evil.attack.lock().unwrap() = splice(calls);
    let out = bob.cli(["call", "side/mark", "--agent", "pi-a"]);
    assert!(!out.status.success(), "the spliced records were accepted");
    assert_eq!(lines(), 2, "neither the spliced call nor Bob's ran");
    // The insertion landed after the handshake (which succeeded), not inside it.
    assert_eq!(
        count("a caller's session failed"),
        failures_before,
        "{}",
        pi_a.daemon.output()
    );

    // And an honest call still works afterwards.
    *evil.attack.lock().unwrap() = Attack::Record;
    assert!(bob.cli(["call", "side/mark", "--agent", "pi-a"]).status.success());
    assert_eq!(lines(), 3);
}
