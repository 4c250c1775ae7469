//! `cargo bench --bench events`: signed events per second from one publisher to 1, 10 and
//! 100 subscribers, next to plain `sys/ping` calls per second, in one run, through one real
//! proxy over QUIC on 127.0.0.1.
//!
//! - **publisher**: the bench plays an agent (hello, advert offering `bench`). Each event is
//!   signed and appended to a crash-safe event file with its fsync, as the agent does, then
//!   sent in `PublishEvents` batches of 64 (the agent's batch), each answered with where
//!   the proxy's copy ends (the proxy fsyncs its copy, once per batch).
//! - **subscribers**: `wtd subscribe` minus printing: each subscription decodes every event,
//!   verifies its signature and chains it (`Chain::accept`). Subscriptions share
//!   connections, ten to one, so 100 fit the proxy's per-address limit.
//! - **rate**: events / (time from the first publish until every subscriber has every
//!   event). Everything (proxy, publisher, subscribers) shares this machine's cores: with
//!   100 subscribers the verification of 100 copies of every event is most of the work.
//! - **baseline**: a real in-process agent; warm `sys/ping` calls one after another on one
//!   session (what `benches/calls.rs` calls "live calls").
//!
//! `EVENTS=2000 cargo bench --bench events` changes the number of events per row.

use std::net::UdpSocket;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use tokio_util::sync::CancellationToken;
use wtd_agent::{Agent, AgentConfig};
use wtd_keys::event::{Chain, LogId, SignedEvent};
use wtd_keys::log::Record;
use wtd_keys::{
    Action, Adoption, AgentId, Audience, FunctionName, Grant, GrantId, MissionName, OwnerKey, OwnerLog,
    ProxyInfo, Rate, SecretKey, Timestamp, TopicName, UserKey,
};
use wtd_proxy::{Proxy, ProxyConfig};
use wtd_store::eventfile::EventFile;
use wtd_transport::{read_frame, write_frame, Client, Connection};
use wtd_wire::{
    decode, encode, Advert, AgentHello, Delivery, FunctionInfo, Key, MissionInfo, Open, Request, Response,
    StartAt, Subscribe, ToAgent,
};

const SUBSCRIBERS: [usize; 3] = [1, 10, 100];
const PER_CONNECTION: usize = 10;
const LIMIT: Duration = Duration::from_secs(120);

fn now() -> Timestamp {
    Timestamp(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
    )
}

fn main() -> anyhow::Result<()> {
    let events: usize = std::env::var("EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let dir = tempfile::tempdir()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let stop = CancellationToken::new();
    let owner = SecretKey::generate();
    let reader = Arc::new(SecretKey::generate());
    let publisher = SecretKey::generate();
    let proxy = rt.block_on(async {
        let socket = UdpSocket::bind("127.0.0.1:0")?;
        let mut config = ProxyConfig::new(dir.path().join("proxy"));
        config.events.default.max_bytes = 1 << 30; // no trimming while measuring
        Proxy::bind(config, socket)
    })?;
    let info = ProxyInfo {
        id: proxy.id(),
        addrs: vec![proxy.local_addr()?],
    };
    let proxy_task = rt.spawn(proxy.run(stop.clone()));

    // The real agent for the baseline, owned by `owner`.
    let agent_config = AgentConfig {
        name: "bench-pi".into(),
        state_dir: dir.path().join("agent"),
        missions_dir: dir.path().join("missions"),
        ..AgentConfig::new(info.clone(), vec![OwnerKey(owner.public())])
    };
    std::fs::create_dir_all(&agent_config.missions_dir)?;
    let agent = rt.block_on(async { Agent::new(agent_config) })?;
    let agent_id = agent.id();
    let agent_task = rt.spawn(agent.run(stop.clone()));

    // The owner's log: adopt both agents, grant the reader `bench` (events) and `sys` (calls).
    let mut log = OwnerLog::new(OwnerKey(owner.public()));
    let publisher_id = AgentId(publisher.public());
    let mut records = Vec::new();
    for a in [publisher_id, agent_id] {
        records.push(Record::Adoption(
            Adoption {
                issuer: OwnerKey(owner.public()),
                agent: a,
                action: Action::Adopt,
                token: None,
                issued_at: now().minus_ms(1000),
            }
            .sign(&owner),
        ));
    }
    for (n, mission) in [(1u8, "bench"), (2, "sys")] {
        records.push(Record::Grant(
            Grant {
                id: GrantId([n; 16]),
                issuer: OwnerKey(owner.public()),
                subject: UserKey(reader.public()),
                audience: Audience::AllAgents,
                mission: MissionName::new(mission)?,
                rate: Rate {
                    calls: 1_000_000,
                    period_ms: 1000,
                },
                burst: 1_000_000,
                concurrency: 64,
                not_before: now().minus_ms(1000),
                expires: now().plus_ms(3_600_000),
                issued_at: now().minus_ms(1000),
            }
            .sign(&owner),
        ));
    }
    let mut entries = Vec::new();
    for r in records {
        let e = log.next_entry(&owner, r)?;
        log.append(e.clone())?;
        entries.push(e.bytes().to_vec());
    }

    let result = rt.block_on(async {
        let owner_conn = connect(&owner, &info).await?;
        let mut recv = request(&owner_conn.1, Request::PublishLog { entries }).await?;
        match next(&mut recv).await? {
            Some(Response::LogStored { .. }) => {}
            other => bail!("publishing the owner log: {other:?}"),
        }
        let (pub_client, pub_conn) = connect(&publisher, &info).await?;
        let (mut beat_send, _beat_recv) = join_as_agent(&pub_conn, Key::from(owner.public())).await?;
        // Heartbeats, so the proxy keeps the publisher in its roster; stopped with the run.
        let beats = stop.clone();
        let heartbeats = tokio::spawn(async move {
            let beat = encode(&wtd_wire::FromAgent::Heartbeat(wtd_wire::Load::default()));
            while !beats.is_cancelled() {
                if write_frame(&mut beat_send, &beat).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });

        let calls = baseline(&reader, &info, agent_id, events.min(2000)).await?;
        println!("signed events: one publisher, N subscribers, {events} events per row, through one proxy");
        println!("{:<36} {:>12} {:>14}", "row", "per second", "total");
        println!(
            "{:<36} {:>12.0} {:>14}",
            "baseline: warm sys/ping calls",
            calls.0,
            format!("{} in {:.2}s", calls.1, calls.2.as_secs_f64())
        );
        let mut log = EventFile::open(
            &dir.path().join("publisher.events"),
            LogId {
                publisher: publisher_id,
                mission: MissionName::new("bench")?,
            },
        )?
        .file;
        for n in SUBSCRIBERS {
            let (rate, took) = fan_out(&publisher, &mut log, &pub_conn, &reader, &info, n, events).await?;
            println!(
                "{:<36} {:>12.0} {:>14}",
                format!("events to {n} subscriber{}", if n == 1 { "" } else { "s" }),
                rate,
                format!("{:.2}s", took.as_secs_f64())
            );
        }
        pub_conn.close(0u32.into(), b"bye");
        drop(pub_client);
        heartbeats.abort();
        Ok(())
    });
    stop.cancel();
    let _ = rt.block_on(async {
        let _ = tokio::time::timeout(Duration::from_secs(5), agent_task).await;
        tokio::time::timeout(Duration::from_secs(5), proxy_task).await
    });
    result
}

async fn connect(me: &SecretKey, info: &ProxyInfo) -> anyhow::Result<(Client, Connection)> {
    let client = Client::bind(me, "127.0.0.1:0".parse()?)?;
    let conn = client.connect(info.addrs[0], *info.id.key()).await?;
    Ok((client, conn))
}

async fn request(conn: &Connection, req: Request) -> anyhow::Result<wtd_transport::RecvStream> {
    let (mut send, recv) = conn.open_bi().await?;
    write_frame(&mut send, &encode(&Open::Request(req))).await?;
    let _ = send.finish();
    Ok(recv)
}

async fn next(recv: &mut wtd_transport::RecvStream) -> anyhow::Result<Option<Response>> {
    Ok(match read_frame(recv, 1 << 20).await? {
        Some(b) => Some(decode(&b)?),
        None => None,
    })
}

/// Says hello as an agent offering `bench`; keeps the control stream open.
async fn join_as_agent(
    conn: &Connection,
    owner: Key,
) -> anyhow::Result<(wtd_transport::SendStream, wtd_transport::RecvStream)> {
    let (mut send, mut recv) = conn.open_bi().await?;
    let advert = Advert {
        name: "bench-publisher".into(),
        owners: vec![owner],
        missions: vec![MissionInfo {
            name: "bench".into(),
            version: "1".into(),
            description: String::new(),
            functions: vec![FunctionInfo {
                name: "run".into(),
                description: String::new(),
                idempotent: true,
            }],
        }],
        tags: vec![],
        model: None,
        software: "bench".into(),
        warnings: vec![],
        enrollment: None,
    };
    let hello = Open::Agent(AgentHello {
        version: wtd_wire::PROTOCOL_VERSION,
        advert,
        heads: vec![],
    });
    write_frame(&mut send, &encode(&hello)).await?;
    let reply = read_frame(&mut recv, 1 << 20)
        .await?
        .ok_or_else(|| anyhow!("no welcome"))?;
    match decode::<ToAgent>(&reply)? {
        ToAgent::Welcome { .. } => Ok((send, recv)),
        other => bail!("not welcomed: {other:?}"),
    }
}

/// Warm `sys/ping` calls, one after another: (per second, count, time).
async fn baseline(
    reader: &Arc<SecretKey>,
    info: &ProxyInfo,
    agent: AgentId,
    n: usize,
) -> anyhow::Result<(f64, usize, Duration)> {
    let (_client, conn) = connect(reader, info).await?;
    let start = Instant::now();
    let session = loop {
        match wtd_caller::Session::open(reader.clone(), &conn, agent).await {
            Ok(s) => break Arc::new(s),
            Err(_) if start.elapsed() < LIMIT => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(e) => return Err(e).context("a session to the agent"),
        }
    };
    let (m, f) = (MissionName::new("sys")?, FunctionName::new("ping")?);
    // Until the agent has the grant (it comes through the proxy), calls are refused.
    loop {
        let p = session.call(&m, &f, b"{}", false, &[]).await?;
        match p.finish(&mut |_| {}).await {
            Ok(_) => break,
            Err(_) if start.elapsed() < LIMIT => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(e) => return Err(e).context("the first call"),
        }
    }
    let start = Instant::now();
    for _ in 0..n {
        let p = session.call(&m, &f, b"{}", false, &[]).await?;
        p.finish(&mut |_| {}).await?;
    }
    let took = start.elapsed();
    Ok((n as f64 / took.as_secs_f64(), n, took))
}

/// Publishes `events` events (each appended with its fsync, then sent in batches) while
/// `n` subscriptions read and verify them; (events per second, time).
async fn fan_out(
    publisher: &SecretKey,
    log: &mut EventFile,
    conn: &Connection,
    reader: &Arc<SecretKey>,
    info: &ProxyInfo,
    n: usize,
    events: usize,
) -> anyhow::Result<(f64, Duration)> {
    let mut readers = tokio::task::JoinSet::new();
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(n);
    let first = log.log().head().0;
    for c in 0..n.div_ceil(PER_CONNECTION) {
        let (client, conn) = connect(reader, info).await?;
        let client = Arc::new(client);
        for _ in 0..PER_CONNECTION.min(n - c * PER_CONNECTION) {
            let (conn, ready, _client) = (conn.clone(), ready_tx.clone(), client.clone());
            readers.spawn(async move {
                let (mut send, mut recv) = conn.open_bi().await?;
                let sub = Open::Request(Request::Subscribe(Subscribe {
                    missions: vec!["bench".into()],
                    start: StartAt::Now,
                    name: None,
                }));
                write_frame(&mut send, &encode(&sub)).await?;
                let mut chain = Chain::new();
                let mut got = 0;
                while got < events {
                    let frame = read_frame(&mut recv, 1 << 20)
                        .await?
                        .ok_or_else(|| anyhow!("ended"))?;
                    match decode::<Response>(&frame)? {
                        Response::Delivery(Delivery::Accepted { logs }) => {
                            for p in logs {
                                let l = LogId {
                                    publisher: AgentId(p.publisher.parse()?),
                                    mission: MissionName::new(&p.mission)?,
                                };
                                chain.start_at(l, p.seq, None);
                            }
                            let _ = ready.send(()).await;
                        }
                        Response::Delivery(Delivery::Event(b)) => {
                            let e = SignedEvent::decode(&b)?;
                            chain.accept(&e)?;
                            got += 1;
                        }
                        other => bail!("subscriber got {other:?}"),
                    }
                }
                drop(_client);
                Ok::<_, anyhow::Error>(())
            });
        }
    }
    for _ in 0..n {
        ready_rx
            .recv()
            .await
            .ok_or_else(|| anyhow!("a subscriber never started"))?;
    }
    let start = Instant::now();
    let mut sent = 0;
    while sent < events {
        let batch = (events - sent).min(64);
        let mut entries = Vec::with_capacity(batch);
        for _ in 0..batch {
            let e = log.log().next(
                publisher,
                now(),
                TopicName::new("tick")?,
                format!("{{\"n\":{}}}", first as usize + sent + entries.len() + 1),
                Vec::new(),
            )?;
            log.append(&e)?;
            entries.push(e.bytes().to_vec());
        }
        let mut recv = request(
            conn,
            Request::PublishEvents {
                mission: "bench".into(),
                entries,
            },
        )
        .await?;
        match next(&mut recv).await? {
            Some(Response::EventsStored { .. }) => {}
            other => bail!("publishing: {other:?}"),
        }
        sent += batch;
    }
    while let Some(done) = tokio::time::timeout(LIMIT, readers.join_next())
        .await
        .map_err(|_| anyhow!("subscribers did not get every event within {LIMIT:?}"))?
    {
        done??;
    }
    let took = start.elapsed();
    Ok((events as f64 / took.as_secs_f64(), took))
}
