//! Signed event streams, end to end, with real processes over real QUIC:
//!
//! - `a_stopped_subscriber_catches_up_in_order_with_no_duplicate`: a durable `wtd subscribe
//!   --name` that was stopped gets every event it missed, in order, none twice; the proxy's
//!   event store survives kill -9; a subscriber without a grant is refused.
//! - `a_proxy_that_alters_reorders_or_drops_an_event_is_caught`: the test plays the proxy
//!   and serves a subscriber doctored streams; each doctoring stops it with exit code 8.
//! - `the_mailer_never_sends_the_photo_to_the_parents`: the Promiscuous example. One agent
//!   publishes "ann unfriends her parents"; another, handling that event, publishes "ann
//!   posts a photo" (which therefore depends on it); a mailer agent subscribed to both gets
//!   them through a relay the test owns that delays the first and passes the second at
//!   once, and still handles the unfriending first.
//! - `a_call_made_because_of_an_event_carries_it_as_its_cause`: the same across a call. A
//!   handler of "ann unfriends" *calls* another agent's function, which publishes "photo
//!   posted": through `WTD_CAUSE` and the call, that event depends on the unfriending, and
//!   a subscriber behind a reordering relay handles it second; a plain call (the variable
//!   unset) makes an independent event, which is not held back. A malformed `WTD_CAUSE` is
//!   refused by `wtd call`.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{wait_for, Agent, TestCluster, User};
use wtd_keys::event::{EventLog, LogId, SignedEvent};
use wtd_keys::{AgentId, MissionName, ProxyId, ProxyInfo, SecretKey, Ticket, Timestamp, TopicName};
use wtd_transport::{read_frame, write_frame, Client, Limits, Server};
use wtd_wire::{decode, encode, Delivery, Open, Request, Response, StartAt, Subscribe, ToAgent};

const LIMIT: Duration = Duration::from_secs(60);

/// The `social` mission: `unfriend` emits its arguments as an `unfriend` event.
const SOCIAL: &str = r#"
name = "social"
version = "1.0"

[[functions]]
name = "unfriend"
exec = ["/bin/sh", "-c", "read -r a; echo \"wtd-emit: unfriend $a\" >&2; echo '{\"ok\":true}'"]
timeout = "10s"
"#;

fn mission_dir(lab: &TestCluster, agent: &str) -> std::path::PathBuf {
    let dir = lab.dir().join("agents").join(agent).join("missions");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn lines(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .collect()
}

fn seqs(events: &[serde_json::Value]) -> Vec<u64> {
    events.iter().map(|e| e["seq"].as_u64().unwrap()).collect()
}

fn unfriend(bob: &User, n: u32) {
    let args = format!(r#"{{"user":"ann","friend":"f{n}"}}"#);
    bob.ok(["call", "social/unfriend", &args]);
}

#[test]
fn a_stopped_subscriber_catches_up_in_order_with_no_duplicate() {
    let lab = TestCluster::new();
    let proxy = lab.start_proxy();
    let port = proxy.addr.port();
    let alice = lab.user("alice");
    let alice_id = alice.init();
    alice.ok(["join", &proxy.ticket]);
    let bob = lab.user("bob");
    let bob_id = bob.init();
    bob.ok(["join", &proxy.ticket]);
    alice.ok(["keys", "add", "bob", &bob_id]);
    std::fs::write(mission_dir(&lab, "pi-social").join("social.toml"), SOCIAL).unwrap();
    let pi = lab.add_agent(&proxy.ticket, "pi-social", &[&alice_id], "");
    alice.adopt(&pi);
    let out: serde_json::Value =
        serde_json::from_str(&alice.ok(["grant", "bob", "--mission", "social", "--json"])).unwrap();
    bob.ok(["grants", "import", out["ticket"].as_str().unwrap()]);
    wait_for("the agent online", LIMIT, || bob.agent_names() == ["pi-social"]);

    // Without a grant, Carol is refused, and told what to do.
    let carol = lab.user("carol");
    carol.init();
    carol.ok(["join", &proxy.ticket]);
    unfriend(&bob, 1);
    wait_for("the first event stored", LIMIT, || {
        let out = bob.cli([
            "subscribe",
            "social",
            "--from",
            "start",
            "--count",
            "1",
            "--idle",
            "5s",
        ]);
        !lines(&String::from_utf8_lossy(&out.stdout)).is_empty()
    });
    let refused = carol.cli(["subscribe", "social", "--from", "start", "--idle", "5s"]);
    assert_eq!(
        refused.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("wtd grant"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );

    // Bob's durable subscription reads the first two events, then stops.
    let first = lines(&bob.ok([
        "subscribe",
        "social",
        "--name",
        "inbox",
        "--from",
        "start",
        "--count",
        "1",
    ]));
    assert_eq!(seqs(&first), [1]);
    assert_eq!(first[0]["topic"], "unfriend");
    assert_eq!(first[0]["body"]["friend"], "f1");
    assert_eq!(first[0]["publisher"], pi.id());
    unfriend(&bob, 2);
    let second = lines(&bob.ok([
        "subscribe",
        "social",
        "--name",
        "inbox",
        "--count",
        "1",
        "--idle",
        "30s",
    ]));
    assert_eq!(seqs(&second), [2], "goes on where it left off");

    // While it is stopped, three more events; then the proxy is killed -9 and restarted.
    for n in 3..=5 {
        unfriend(&bob, n);
    }
    wait_for("five events stored", LIMIT, || {
        let out = bob.cli([
            "subscribe",
            "social",
            "--from",
            "start",
            "--count",
            "5",
            "--idle",
            "5s",
        ]);
        lines(&String::from_utf8_lossy(&out.stdout)).len() == 5
    });
    let mut proxy = proxy;
    proxy.daemon.kill();
    let _proxy = lab.start_proxy_on(port, &[]);
    // Catching up: exactly the three it missed, in order, and nothing after them.
    let caught_up = lines(&bob.ok([
        "subscribe",
        "social",
        "--name",
        "inbox",
        "--count",
        "3",
        "--idle",
        "30s",
    ]));
    assert_eq!(seqs(&caught_up), [3, 4, 5]);
    let friends: Vec<&str> = caught_up
        .iter()
        .map(|e| e["body"]["friend"].as_str().unwrap())
        .collect();
    assert_eq!(friends, ["f3", "f4", "f5"]);
    let again = lines(&bob.ok(["subscribe", "social", "--name", "inbox", "--idle", "3s"]));
    assert!(again.is_empty(), "nothing delivered twice: {again:?}");

    // The store came back whole from the kill: every event, from the start.
    let all = lines(&bob.ok([
        "subscribe",
        "social",
        "--from",
        "start",
        "--count",
        "5",
        "--idle",
        "30s",
    ]));
    assert_eq!(seqs(&all), [1, 2, 3, 4, 5]);
    // And a position printed with an event resumes after it.
    let pos = all[2]["position"].as_str().unwrap().to_string();
    let after = lines(&bob.ok([
        "subscribe",
        "social",
        "--from",
        &pos,
        "--count",
        "2",
        "--idle",
        "30s",
    ]));
    assert_eq!(seqs(&after), [4, 5]);
    // The agent reconnected and still publishes.
    unfriend(&bob, 6);
    let sixth = lines(&bob.ok([
        "subscribe",
        "social",
        "--name",
        "inbox",
        "--count",
        "1",
        "--idle",
        "30s",
    ]));
    assert_eq!(seqs(&sixth), [6]);

    // Revoking Bob's grant ends his open subscription (or refuses it, if it starts late),
    // saying why.
    let sub = std::process::Command::new(common::wtd_bin())
        .args(["subscribe", "social", "--idle", "60s"])
        .env("WTD_HOME", &bob.home)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(1));
    alice.ok(["revoke", "bob", "--mission", "social"]);
    let out = sub.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("revoked"), "{stderr}");
}

/// Serves one subscriber: `Accepted`, then `frames`, then waits for it to hang up. Other
/// streams (`wtd join` looking at the roster) get nothing.
fn evil_proxy(
    key: SecretKey,
    socket: std::net::UdpSocket,
    frames: Vec<Delivery>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let server = Server::from_socket(&key, socket, &Limits::default()).unwrap();
            loop {
                let Some(pending) = server.accept().await else {
                    return;
                };
                let Ok(accepted) = pending.handshake().await else {
                    continue;
                };
                let conn = accepted.connection().clone();
                while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                    let Ok(Some(first)) = read_frame(&mut recv, 1 << 20).await else {
                        continue;
                    };
                    if !matches!(decode::<Open>(&first), Ok(Open::Request(Request::Subscribe(_)))) {
                        let _ = send.finish();
                        continue;
                    }
                    let accepted_msg = Delivery::Accepted { logs: Vec::new() };
                    for d in std::iter::once(accepted_msg).chain(frames) {
                        write_frame(&mut send, &encode(&Response::Delivery(d)))
                            .await
                            .unwrap();
                    }
                    let _ = tokio::time::timeout(Duration::from_secs(30), async {
                        while let Ok(Some(_)) = read_frame(&mut recv, 1 << 20).await {}
                    })
                    .await;
                    return;
                }
            }
        });
    })
}

/// Three chained events of `social`, signed by `publisher`.
fn three_events(publisher: &SecretKey) -> Vec<SignedEvent> {
    let mut log = EventLog::new(LogId {
        publisher: AgentId(publisher.public()),
        mission: MissionName::new("social").unwrap(),
    });
    (1..=3)
        .map(|n| {
            let e = log
                .next(
                    publisher,
                    Timestamp(1_900_000_000_000 + n),
                    TopicName::new("unfriend").unwrap(),
                    format!(r#"{{"friend":"f{n}"}}"#),
                    Vec::new(),
                )
                .unwrap();
            log.appended(&e);
            e
        })
        .collect()
}

/// Runs `wtd subscribe social --from start` against a proxy serving `frames`.
fn subscribe_through(frames: Vec<Delivery>) -> std::process::Output {
    let lab = TestCluster::new();
    let key = SecretKey::generate();
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let ticket = Ticket {
        proxy: Some(ProxyInfo {
            id: ProxyId(key.public()),
            addrs: vec![socket.local_addr().unwrap()],
        }),
        grants: vec![],
    }
    .to_text();
    let proxy = evil_proxy(key, socket, frames);
    let bob = lab.user("bob");
    bob.init();
    bob.ok(["join", &ticket]);
    let out = bob.cli([
        "subscribe",
        "social",
        "--from",
        "start",
        "--count",
        "3",
        "--idle",
        "10s",
    ]);
    proxy.join().unwrap();
    out
}

fn event(e: &SignedEvent) -> Delivery {
    Delivery::Event(e.bytes().to_vec())
}

#[test]
fn a_proxy_that_alters_reorders_or_drops_an_event_is_caught() {
    let publisher = SecretKey::from_seed(&[9; 32]);
    let e = three_events(&publisher);

    // Honest: three events, in order, exit 0.
    let out = subscribe_through(vec![event(&e[0]), event(&e[1]), event(&e[2])]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(seqs(&lines(&String::from_utf8_lossy(&out.stdout))), [1, 2, 3]);

    let caught = |frames: Vec<Delivery>, what: &str, printed: usize| {
        let out = subscribe_through(frames);
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert_eq!(out.status.code(), Some(8), "{what}: {stderr}");
        assert!(stderr.contains(what), "{what}: {stderr}");
        assert_eq!(
            lines(&String::from_utf8_lossy(&out.stdout)).len(),
            printed,
            "only the events before the tampering are printed"
        );
    };
    // Altered: one byte of the second event's body changed.
    let mut altered = e[1].bytes().to_vec();
    let at = altered.windows(2).position(|w| w == b"f2").unwrap();
    altered[at + 1] = b'9';
    caught(
        vec![event(&e[0]), Delivery::Event(altered), event(&e[2])],
        "altered or forged",
        1,
    );
    // Reordered: the third before the second.
    caught(vec![event(&e[0]), event(&e[2]), event(&e[1])], "gap", 1);
    // Dropped: the second never comes, the third does.
    caught(vec![event(&e[0]), event(&e[2])], "gap", 1);
    // Dropped from the start.
    caught(vec![event(&e[1]), event(&e[2])], "gap", 0);
    // A replay of an event already seen is skipped, not printed twice.
    let out = subscribe_through(vec![event(&e[0]), event(&e[0]), event(&e[1]), event(&e[2])]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(seqs(&lines(&String::from_utf8_lossy(&out.stdout))), [1, 2, 3]);
}

/// How the relay holds `social` events back.
#[derive(Clone, Copy)]
enum Hold {
    /// For this long each.
    For(Duration),
    /// Until the next event of another mission has been passed on (or nothing came from the
    /// proxy for [`LIMIT`]): the reordering no longer depends on how fast anything runs.
    UntilNextOther,
}

/// The relay in front of the mailer: it plays the proxy for the mailer agent (welcomes it,
/// serves its subscription) with events it reads from the real proxy as `reader`, except
/// that it holds every `social` event back (see [`Hold`]) and passes others at once.
/// Returns what it delivered, in order.
fn delaying_relay(
    key: SecretKey,
    socket: std::net::UdpSocket,
    upstream: ProxyInfo,
    reader: SecretKey,
    delay: impl Into<Hold>,
) -> Arc<Mutex<Vec<String>>> {
    let delay = delay.into();
    let delivered = Arc::new(Mutex::new(Vec::new()));
    let log = delivered.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let server = Server::from_socket(&key, socket, &Limits::default()).unwrap();
            let client = Arc::new(Client::bind(&reader, "127.0.0.1:0".parse().unwrap()).unwrap());
            while let Some(pending) = server.accept().await {
                let Ok(accepted) = pending.handshake().await else {
                    continue;
                };
                let conn = accepted.connection().clone();
                let (client, upstream, log) = (client.clone(), upstream.clone(), log.clone());
                tokio::spawn(async move {
                    let _accepted = accepted;
                    while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                        let (client, upstream, log) = (client.clone(), upstream.clone(), log.clone());
                        tokio::spawn(async move {
                            let Ok(Some(first)) = read_frame(&mut recv, 1 << 20).await else {
                                return;
                            };
                            match decode::<Open>(&first) {
                                Ok(Open::Agent(_)) => {
                                    let welcome = ToAgent::Welcome {
                                        proxy_software: "relay".into(),
                                    };
                                    let _ = write_frame(&mut send, &encode(&welcome)).await;
                                    while let Ok(Some(_)) = read_frame(&mut recv, 1 << 20).await {}
                                }
                                Ok(Open::Request(Request::Subscribe(sub))) => {
                                    relay_subscription(client, upstream, sub, send, recv, log, delay).await
                                }
                                _ => {}
                            }
                        });
                    }
                });
            }
        });
    });
    delivered
}

async fn relay_subscription(
    client: Arc<Client>,
    upstream: ProxyInfo,
    sub: Subscribe,
    send: wtd_transport::SendStream,
    mut recv: wtd_transport::RecvStream,
    log: Arc<Mutex<Vec<String>>>,
    delay: Hold,
) {
    let Ok(conn) = client.connect(upstream.addrs[0], *upstream.id.key()).await else {
        return;
    };
    let Ok((mut up_send, mut up_recv)) = conn.open_bi().await else {
        return;
    };
    let request = Open::Request(Request::Subscribe(Subscribe {
        missions: sub.missions,
        start: StartAt::Start,
        name: None,
    }));
    if write_frame(&mut up_send, &encode(&request)).await.is_err() {
        return;
    }
    // One writer owns the stream to the mailer; delayed events reach it through the channel.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(1024);
    let writer = tokio::spawn(async move {
        let mut send = send;
        while let Some(frame) = rx.recv().await {
            if write_frame(&mut send, &frame).await.is_err() {
                return;
            }
        }
    });
    // The mailer's acknowledgements are read and dropped.
    tokio::spawn(async move { while let Ok(Some(_)) = read_frame(&mut recv, 1 << 20).await {} });
    let delay = match delay {
        Hold::For(delay) => delay,
        Hold::UntilNextOther => {
            hold_until_next_other(&mut up_recv, &tx, &log).await;
            drop(tx);
            let _ = writer.await;
            return;
        }
    };
    while let Ok(Some(frame)) = read_frame(&mut up_recv, 1 << 20).await {
        let Ok(Response::Delivery(d)) = decode::<Response>(&frame) else {
            break;
        };
        let (label, held) = match &d {
            Delivery::Event(bytes) => {
                let e = SignedEvent::decode(bytes).unwrap();
                let label = format!("{}/{}", e.event().log.mission, e.event().topic);
                let held = e.event().log.mission.as_str() == "social";
                (Some(label), held)
            }
            _ => (None, false),
        };
        let (tx, log) = (tx.clone(), log.clone());
        tokio::spawn(async move {
            if held {
                tokio::time::sleep(delay).await;
            }
            if let Some(label) = label {
                log.lock().unwrap().push(label);
            }
            let _ = tx.send(frame).await;
        });
    }
    drop(tx);
    let _ = writer.await;
}

impl From<Duration> for Hold {
    fn from(d: Duration) -> Hold {
        Hold::For(d)
    }
}

/// [`Hold::UntilNextOther`]: passes every event on at once but `social` ones, which wait
/// until the next event of another mission has gone (or nothing came for [`LIMIT`]).
async fn hold_until_next_other(
    up_recv: &mut wtd_transport::RecvStream,
    tx: &tokio::sync::mpsc::Sender<Vec<u8>>,
    log: &Mutex<Vec<String>>,
) {
    let mut held: Vec<(String, Vec<u8>)> = Vec::new();
    loop {
        let frame = match tokio::time::timeout(LIMIT, read_frame(up_recv, 1 << 20)).await {
            Ok(Ok(Some(frame))) => frame,
            Ok(_) => break,
            Err(_) => {
                // Every wait is bounded: nothing else came, so let them go.
                for (label, frame) in held.drain(..) {
                    log.lock().unwrap().push(label);
                    let _ = tx.send(frame).await;
                }
                continue;
            }
        };
        let Ok(Response::Delivery(d)) = decode::<Response>(&frame) else {
            break;
        };
        let Delivery::Event(bytes) = &d else {
            let _ = tx.send(frame).await;
            continue;
        };
        let e = SignedEvent::decode(bytes).unwrap();
        let label = format!("{}/{}", e.event().log.mission, e.event().topic);
        if e.event().log.mission.as_str() == "social" {
            held.push((label, frame));
            continue;
        }
        log.lock().unwrap().push(label);
        let _ = tx.send(frame).await;
        for (label, frame) in held.drain(..) {
            log.lock().unwrap().push(label);
            let _ = tx.send(frame).await;
        }
    }
}

/// A directory every handler user can write (handlers may run as an unprivileged user).
fn shared_dir() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("wtd-mailer")
        .tempdir_in("/tmp")
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    dir
}

fn write_world(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666)).unwrap();
}

#[test]
fn the_mailer_never_sends_the_photo_to_the_parents() {
    let lab = TestCluster::new();
    let proxy = lab.start_proxy();
    let alice = lab.user("alice");
    let alice_id = alice.init();
    alice.ok(["join", &proxy.ticket]);
    let ann = lab.user("ann");
    let ann_id = ann.init();
    ann.ok(["join", &proxy.ticket]);
    alice.ok(["keys", "add", "ann", &ann_id]);

    // Agent 1: the social network. Ann unfriends her parents there.
    std::fs::write(mission_dir(&lab, "pi-social").join("social.toml"), SOCIAL).unwrap();
    let social = lab.add_agent(&proxy.ticket, "pi-social", &[&alice_id], "");
    alice.adopt(&social);
    // Agent 2: photos. Handling the unfriending, it publishes the photo Ann had queued, so
    // the photo event depends on the unfriend event: the agent records that by itself.
    let photos_toml = r#"
name = "photos"
version = "1.0"

[[functions]]
name = "publish_queued"
subscribe = ["social/unfriend"]
exec = ["/bin/sh", "-c", "cat >/dev/null; echo 'wtd-emit: posted {\"user\":\"ann\",\"photo\":\"beach.jpg\"}' >&2; echo '{}'"]
timeout = "10s"
"#;
    std::fs::write(mission_dir(&lab, "pi-photos").join("photos.toml"), photos_toml).unwrap();
    let photos = lab.add_agent(&proxy.ticket, "pi-photos", &[&alice_id], "");
    alice.adopt(&photos);
    alice.ok(["grant", &photos.id(), "--mission", "social"]);

    // Agent 3: the mailer, behind the relay. It mails each posted photo to Ann's friends,
    // as it knows them from the unfriend events it handled so far.
    let shared = shared_dir();
    let friends = shared.path().join("friends");
    let outbox = shared.path().join("outbox");
    write_world(&friends, "parents\nbob\n");
    write_world(&outbox, "");
    let script = shared.path().join("mailer.sh");
    let d = shared.path().display();
    write_world(
        &script,
        &format!(
            r#"a=$(cat)
case "$a" in
  *'"topic":"unfriend"'*)
    f=$(echo "$a" | sed 's/.*"friend":"\([a-z0-9]*\)".*/\1/')
    grep -v "^$f\$" {d}/friends > {d}/friends.new; cat {d}/friends.new > {d}/friends
    echo "unfriended $f" >> {d}/outbox ;;
  *'"topic":"posted"'*)
    echo "sent beach.jpg to $(tr '\n' ' ' < {d}/friends)" >> {d}/outbox ;;
esac
echo '{{}}'
"#
        ),
    );
    let mailer_toml = format!(
        r#"
name = "mailer"
version = "1.0"

[[functions]]
name = "send"
subscribe = ["social/unfriend", "photos/posted"]
exec = ["/bin/sh", "{}"]
timeout = "10s"
"#,
        script.display()
    );
    std::fs::write(mission_dir(&lab, "pi-mailer").join("mailer.toml"), mailer_toml).unwrap();
    let relay_key = SecretKey::generate();
    let reader = SecretKey::generate();
    alice.ok(["grant", &reader.public().to_string(), "--mission", "social"]);
    alice.ok(["grant", &reader.public().to_string(), "--mission", "photos"]);
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let relay_info = ProxyInfo {
        id: ProxyId(relay_key.public()),
        addrs: vec![socket.local_addr().unwrap()],
    };
    let upstream = Ticket::from_text(&proxy.ticket).unwrap().proxy.unwrap();
    let delivered = delaying_relay(relay_key, socket, upstream, reader, Duration::from_secs(4));
    let relay_ticket = Ticket {
        proxy: Some(relay_info),
        grants: vec![],
    }
    .to_text();
    let mailer: Agent = lab.add_agent(&relay_ticket, "pi-mailer", &[&alice_id], "");
    wait_for("social and photos online", LIMIT, || {
        ann.agent_names() == ["pi-photos", "pi-social"]
    });
    let out: serde_json::Value =
        serde_json::from_str(&alice.ok(["grant", "ann", "--mission", "social", "--json"])).unwrap();
    ann.ok(["grants", "import", out["ticket"].as_str().unwrap()]);

    ann.ok(["call", "social/unfriend", r#"{"user":"ann","friend":"parents"}"#]);

    wait_for("the mailer to mail the photo", LIMIT, || {
        std::fs::read_to_string(&outbox)
            .unwrap_or_default()
            .contains("sent")
    });
    let mail = std::fs::read_to_string(&outbox).unwrap();
    let delivered = delivered.lock().unwrap().clone();
    println!("relay delivered: {delivered:?}\nmailer outbox:\n{mail}");
    // The relay really did hand the photo over first...
    let posted_at = delivered.iter().position(|l| l == "photos/posted");
    let unfriend_at = delivered.iter().position(|l| l == "social/unfriend");
    assert!(
        matches!((posted_at, unfriend_at), (Some(p), Some(u)) if p < u),
        "the relay delivers the photo before the unfriending: {delivered:?}"
    );
    // ...and the mailer still handled the unfriending first.
    assert_eq!(
        mail.lines().collect::<Vec<_>>(),
        ["unfriended parents", "sent beach.jpg to bob "]
    );
    assert!(!mail.contains("sent beach.jpg to parents"));
    // The photo event names its dependency (Alice reads her own agents' events).
    let posted = lines(&alice.ok([
        "subscribe",
        "photos",
        "--from",
        "start",
        "--count",
        "1",
        "--idle",
        "10s",
    ]));
    let unfriend_pos = format!("{}:social:1", social.id());
    assert_eq!(posted[0]["deps"], serde_json::json!([unfriend_pos]));
    let log = mailer.daemon.output();
    assert!(
        !log.contains("stopped:"),
        "the mailer's subscription ran without errors:\n{log}"
    );
}

/// Copies `home` into `to`, readable by every user: a handler (another user) copies it
/// again into its own directory before using it (the key must be its own, mode 0600).
fn world_readable_copy(home: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o755)).unwrap();
    for entry in std::fs::read_dir(home).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            world_readable_copy(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
            std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
    }
}

#[test]
fn a_call_made_because_of_an_event_carries_it_as_its_cause() {
    let lab = TestCluster::new();
    let proxy = lab.start_proxy();
    let alice = lab.user("alice");
    let alice_id = alice.init();
    alice.ok(["join", &proxy.ticket]);
    let ann = lab.user("ann");
    let ann_id = ann.init();
    ann.ok(["join", &proxy.ticket]);
    alice.ok(["keys", "add", "ann", &ann_id]);
    let shared = shared_dir();
    let d = shared.path().display();

    // Agent 1, mission A: the social network, where Ann unfriends.
    std::fs::write(mission_dir(&lab, "pi-social").join("social.toml"), SOCIAL).unwrap();
    let social = lab.add_agent(&proxy.ticket, "pi-social", &[&alice_id], "");
    alice.adopt(&social);
    // Agent 2, mission B: photos. `post` publishes a photo; it notes the WTD_CAUSE it got.
    let photos_toml = format!(
        r#"
name = "photos"
version = "1.0"

[[functions]]
name = "post"
exec = ["/bin/sh", "-c", "read -r a; echo \"$WTD_CAUSE\" >> {d}/post-causes; echo \"wtd-emit: posted $a\" >&2; echo '{{}}'"]
timeout = "10s"
"#
    );
    std::fs::write(mission_dir(&lab, "pi-photos").join("photos.toml"), photos_toml).unwrap();
    let photos = lab.add_agent(&proxy.ticket, "pi-photos", &[&alice_id], "");
    alice.adopt(&photos);
    // Agent 3: the publisher's helper. Handling each unfriending, it *calls* photos/post
    // with `wtd call`, as its own user "helper" with a grant for photos. Asked for a plain
    // call, it unsets WTD_CAUSE first.
    let helper = lab.user("helper");
    let helper_id = helper.init();
    helper.ok(["join", &proxy.ticket]);
    let out: serde_json::Value =
        serde_json::from_str(&alice.ok(["grant", &helper_id, "--mission", "photos", "--json"])).unwrap();
    helper.ok(["grants", "import", out["ticket"].as_str().unwrap()]);
    world_readable_copy(&helper.home, &shared.path().join("helper-home"));
    let script = shared.path().join("helper.sh");
    write_world(
        &script,
        &format!(
            r#"a=$(cat)
case "$a" in *'"plain":true'*) unset WTD_CAUSE ;; esac
echo "$WTD_CAUSE" >> {d}/helper-causes
h="$TMPDIR/home"; cp -r {d}/helper-home "$h"; chmod 700 "$h"; chmod 600 "$h/identity.key"
WTD_HOME="$h" {wtd} call photos/post '{{"photo":"beach.jpg"}}' >/dev/null 2>>{d}/helper.err || exit 1
echo '{{}}'
"#,
            wtd = common::wtd_bin().display()
        ),
    );
    let helper_toml = format!(
        r#"
name = "helper"
version = "1.0"
memory = "512MiB"
pids = 128

[[functions]]
name = "on_unfriend"
subscribe = ["social/unfriend"]
exec = ["/bin/sh", "{}"]
timeout = "30s"
"#,
        script.display()
    );
    std::fs::write(mission_dir(&lab, "pi-helper").join("helper.toml"), helper_toml).unwrap();
    let helper_pi = lab.add_agent(&proxy.ticket, "pi-helper", &[&alice_id], "");
    alice.adopt(&helper_pi);
    alice.ok(["grant", &helper_pi.id(), "--mission", "social"]);

    // Agent 4: the feed, subscribed to both A and B, behind a relay that holds every
    // social event back until the next photos event has gone through.
    let outbox = shared.path().join("outbox");
    write_world(&outbox, "");
    let feed_script = shared.path().join("feed.sh");
    write_world(
        &feed_script,
        &format!(
            r#"a=$(cat)
m=$(echo "$a" | sed 's/.*"mission":"\([a-z]*\)".*/\1/')
t=$(echo "$a" | sed 's/.*"topic":"\([a-z]*\)".*/\1/')
n=$(echo "$a" | sed 's/.*"seq":\([0-9]*\).*/\1/')
echo "$m/$t $n" >> {d}/outbox
echo '{{}}'
"#
        ),
    );
    let feed_toml = format!(
        r#"
name = "feed"
version = "1.0"

[[functions]]
name = "log"
subscribe = ["social/unfriend", "photos/posted"]
exec = ["/bin/sh", "{}"]
timeout = "10s"
"#,
        feed_script.display()
    );
    std::fs::write(mission_dir(&lab, "pi-feed").join("feed.toml"), feed_toml).unwrap();
    let relay_key = SecretKey::generate();
    let reader = SecretKey::generate();
    alice.ok(["grant", &reader.public().to_string(), "--mission", "social"]);
    alice.ok(["grant", &reader.public().to_string(), "--mission", "photos"]);
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let relay_info = ProxyInfo {
        id: ProxyId(relay_key.public()),
        addrs: vec![socket.local_addr().unwrap()],
    };
    let upstream = Ticket::from_text(&proxy.ticket).unwrap().proxy.unwrap();
    let delivered = delaying_relay(relay_key, socket, upstream, reader, Hold::UntilNextOther);
    let relay_ticket = Ticket {
        proxy: Some(relay_info),
        grants: vec![],
    }
    .to_text();
    let feed: Agent = lab.add_agent(&relay_ticket, "pi-feed", &[&alice_id], "");
    wait_for("social, photos and the helper online", LIMIT, || {
        alice.agent_names() == ["pi-helper", "pi-photos", "pi-social"]
    });
    let out: serde_json::Value =
        serde_json::from_str(&alice.ok(["grant", "ann", "--mission", "social", "--json"])).unwrap();
    ann.ok(["grants", "import", out["ticket"].as_str().unwrap()]);
    let outbox_lines = || {
        std::fs::read_to_string(&outbox)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let explain = || {
        format!(
            "relay delivered {:?}\nhelper stderr: {}\nhelper agent:\n{}\nfeed agent:\n{}",
            delivered.lock().unwrap(),
            std::fs::read_to_string(shared.path().join("helper.err")).unwrap_or_default(),
            helper_pi.daemon.output(),
            feed.daemon.output()
        )
    };

    // E1: Ann unfriends her parents. The helper handles it and calls photos/post: E2.
    ann.ok(["call", "social/unfriend", r#"{"user":"ann","friend":"parents"}"#]);
    wait_for("the feed to handle E1 and E2", LIMIT, || {
        outbox_lines().len() >= 2
    });
    // The relay passed E2 first; the feed still handled E1 first, because E2 depends on it.
    assert_eq!(
        delivered.lock().unwrap()[..2],
        ["photos/posted", "social/unfriend"],
        "{}",
        explain()
    );
    assert_eq!(
        outbox_lines(),
        ["social/unfriend 1", "photos/posted 1"],
        "{}",
        explain()
    );

    // E3, and a plain call: the helper unsets WTD_CAUSE, so E4 depends on nothing and the
    // feed handles it at once, before E3 (which the relay still holds).
    ann.ok([
        "call",
        "social/unfriend",
        r#"{"user":"ann","friend":"bob","plain":true}"#,
    ]);
    wait_for("the feed to handle E3 and E4", LIMIT, || {
        outbox_lines().len() >= 4
    });
    assert_eq!(
        outbox_lines(),
        [
            "social/unfriend 1",
            "photos/posted 1",
            "photos/posted 2",
            "social/unfriend 2"
        ],
        "{}",
        explain()
    );

    // What each handler was given, and what the photo events record.
    let e1 = format!("{}:social:1", social.id());
    let causes = |name: &str| {
        std::fs::read_to_string(shared.path().join(name))
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    assert_eq!(causes("helper-causes"), [e1.clone(), String::new()]);
    // The called function has the cause too, to pass on to any call it makes.
    assert_eq!(causes("post-causes"), [e1.clone(), String::new()]);
    let posted = lines(&alice.ok([
        "subscribe",
        "photos",
        "--from",
        "start",
        "--count",
        "2",
        "--idle",
        "10s",
    ]));
    assert_eq!(posted[0]["deps"], serde_json::json!([e1]));
    assert_eq!(posted[1]["deps"], serde_json::json!([]));
    assert!(
        !feed.daemon.output().contains("stopped:"),
        "the feed's subscription ran without errors:\n{}",
        feed.daemon.output()
    );

    // A malformed WTD_CAUSE is refused by `wtd call`, saying what to do; nothing is sent.
    let bad = std::process::Command::new(common::wtd_bin())
        .args(["call", "social/unfriend", r#"{"user":"ann","friend":"x"}"#])
        .env("WTD_HOME", &ann.home)
        .env("WTD_CAUSE", "social:1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(bad.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("WTD_CAUSE is set but unusable"), "{stderr}");
    assert!(stderr.contains("env -u WTD_CAUSE"), "{stderr}");
    // A queued call cannot carry a cause yet, and says so rather than drop it silently.
    let pushed = std::process::Command::new(common::wtd_bin())
        .args(["push", "social/unfriend", r#"{"user":"ann","friend":"y"}"#])
        .env("WTD_HOME", &ann.home)
        .env("WTD_CAUSE", &e1)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&pushed.stderr);
    assert!(pushed.status.success(), "{stderr}");
    assert!(stderr.contains("does not carry WTD_CAUSE"), "{stderr}");
}

/// Publishing is refused, saying what was dropped and why, to a connection that is not an
/// agent, and to an agent for a mission it does not offer.
#[test]
fn the_proxy_stores_events_only_from_the_agent_for_its_own_missions() {
    let lab = TestCluster::new();
    let proxy = lab.start_proxy();
    let info = Ticket::from_text(&proxy.ticket).unwrap().proxy.unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let key = SecretKey::generate();
    let owner = SecretKey::generate();
    let social = three_events(&key);
    let publish = |conn: &wtd_transport::Connection, mission: &str| {
        let (conn, mission, entries) = (
            conn.clone(),
            mission.to_string(),
            vec![social[0].bytes().to_vec()],
        );
        async move {
            let (mut send, mut recv) = conn.open_bi().await.unwrap();
            let req = Open::Request(Request::PublishEvents { mission, entries });
            write_frame(&mut send, &encode(&req)).await.unwrap();
            let _ = send.finish();
            decode::<Response>(&read_frame(&mut recv, 1 << 20).await.unwrap().unwrap()).unwrap()
        }
    };
    rt.block_on(async {
        let client = Client::bind(&key, "127.0.0.1:0".parse().unwrap()).unwrap();
        let conn = client.connect(info.addrs[0], *info.id.key()).await.unwrap();
        // Not an agent (no control stream on this connection): dropped.
        match publish(&conn, "social").await {
            Response::Error(why) => assert!(why.contains("only a connected agent"), "{why}"),
            other => panic!("{other:?}"),
        }
        // An agent offering `photos` only: its `social` events are dropped.
        let (mut send, mut recv) = conn.open_bi().await.unwrap();
        let advert = wtd_wire::Advert {
            name: "pi-x".into(),
            owners: vec![wtd_wire::Key::from(owner.public())],
            missions: vec![wtd_wire::MissionInfo {
                name: "photos".into(),
                version: "1".into(),
                description: String::new(),
                functions: vec![wtd_wire::FunctionInfo {
                    name: "run".into(),
                    description: String::new(),
                    idempotent: true,
                }],
            }],
            tags: vec![],
            model: None,
            software: "test".into(),
            warnings: vec![],
            enrollment: None,
        };
        let hello = Open::Agent(wtd_wire::AgentHello {
            version: wtd_wire::PROTOCOL_VERSION,
            advert,
            heads: vec![],
        });
        write_frame(&mut send, &encode(&hello)).await.unwrap();
        let reply = read_frame(&mut recv, 1 << 20).await.unwrap().unwrap();
        assert!(matches!(
            decode::<ToAgent>(&reply).unwrap(),
            ToAgent::Welcome { .. }
        ));
        match publish(&conn, "social").await {
            Response::Error(why) => assert!(why.contains("does not offer mission social"), "{why}"),
            other => panic!("{other:?}"),
        }
    });
}
