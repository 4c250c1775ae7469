//! One stream from a client: what it is for, and, for an agent, its whole session.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;
use wtd_keys::{AgentId, OwnerKey, PublicId};
use wtd_transport::{read_frame, write_frame, Connection, RecvStream, SendStream};
use wtd_wire::defaults::MAX_FRAME;
use wtd_wire::{
    decode, encode, AgentHello, AgentInfo, FromAgent, Key, LeaveReason, Load, Open, Refusal, Request,
    ToAgent, JOBS_VERSION, MIN_PROTOCOL_VERSION, PROTOCOL_VERSION,
};

use crate::defaults::OPEN_TIMEOUT;
use crate::logs::LogStore;
use crate::shared::{now_ms, Shared};
use crate::{close_offender, relay, requests, subscriptions, Admission};

/// What a stream task needs.
pub(crate) struct StreamCtx {
    pub shared: Arc<Shared>,
    pub conn: Connection,
    pub peer: PublicId,
    /// Set once this connection registered as an agent: one control stream per connection.
    pub is_agent: Arc<AtomicBool>,
    pub shutdown: CancellationToken,
}

/// Reads the stream's first frame and hands it to the agent session or a request.
pub(crate) async fn stream(ctx: StreamCtx, send: SendStream, mut recv: RecvStream) {
    let first = tokio::time::timeout(OPEN_TIMEOUT, read_frame(&mut recv, MAX_FRAME)).await;
    let open = match first {
        Ok(Ok(Some(bytes))) => decode::<Open>(&bytes),
        Ok(Ok(None)) => return,
        Ok(Err(e)) => return close_offender(&ctx.conn, &format!("bad frame: {e}")),
        Err(_) => return close_offender(&ctx.conn, "said nothing on a new stream"),
    };
    match open {
        Ok(Open::Agent(hello)) => {
            if ctx.is_agent.swap(true, Ordering::SeqCst) {
                return close_offender(&ctx.conn, "a second agent control stream");
            }
            agent(ctx, send, recv, hello).await
        }
        Ok(Open::Request(Request::Subscribe(req))) => subscriptions::subscribe(ctx, send, recv, req).await,
        Ok(Open::Request(req)) => requests::serve(ctx, send, req).await,
        Ok(Open::Relay { to }) => relay::relay(ctx, send, recv, to).await,
        Err(e) => close_offender(&ctx.conn, &e.as_malformed()),
    }
}

async fn send_msg(send: &mut SendStream, msg: &ToAgent) -> bool {
    write_frame(send, &encode(msg)).await.is_ok()
}

/// Why an agent is turned away, if it is.
fn admit(ctx: &StreamCtx, hello: &AgentHello) -> Result<(), Refusal> {
    if !(MIN_PROTOCOL_VERSION..=PROTOCOL_VERSION).contains(&hello.version) {
        return Err(Refusal::VersionMismatch {
            proxy: PROTOCOL_VERSION,
        });
    }
    hello.advert.validate().map_err(Refusal::BadAdvert)?;
    adopted_by_allowed(ctx, &hello.advert.owners)
}

/// With `--allow`: the agent must name an allowed owner (its claim) *and* that owner's log,
/// as stored here, must adopt it (her word). The claim alone is what anyone can write.
fn adopted_by_allowed(ctx: &StreamCtx, claimed: &[Key]) -> Result<(), Refusal> {
    let logs = ctx.shared.logs();
    admission(&ctx.shared.config.admission, claimed, &AgentId(ctx.peer), &logs)
}

/// The admission rule, on its own: `claimed` is what the agent's advert names, `agent` its
/// id as TLS proved it, `logs` the owner logs this proxy verified and stores.
pub(crate) fn admission(
    admission: &Admission,
    claimed: &[Key],
    agent: &AgentId,
    logs: &LogStore,
) -> Result<(), Refusal> {
    let Admission::Allow(allowed) = admission else {
        return Ok(());
    };
    let claimed: Vec<OwnerKey> = claimed
        .iter()
        .filter_map(|k| k.parse().ok())
        .map(OwnerKey)
        .filter(|o| allowed.contains(o))
        .collect();
    if claimed.is_empty() {
        return Err(Refusal::OwnerNotAllowed);
    }
    if claimed.iter().any(|o| logs.adopts(o, agent)) {
        return Ok(());
    }
    Err(Refusal::WaitingForAdoption {
        owners: claimed.iter().map(|o| Key::from(*o.key())).collect(),
    })
}

/// An agent's control stream: register, relay its owners' logs, take heartbeats.
async fn agent(ctx: StreamCtx, mut send: SendStream, mut recv: RecvStream, hello: AgentHello) {
    let id = Key::from(ctx.peer);
    let name = hello.advert.name.clone();
    if let Err(refusal) = admit(&ctx, &hello) {
        log::info!("refused agent {name} ({}): {refusal}", ctx.peer.short());
        if matches!(refusal, Refusal::WaitingForAdoption { .. }) {
            ctx.shared.knocked(AgentInfo {
                id,
                advert: hello.advert.clone(),
                load: Load::default(),
                last_seen_ms: now_ms(),
            });
        }
        send_msg(&mut send, &ToAgent::Refused(refusal)).await;
        let _ = send.finish();
        // Give the refusal time to arrive before the connection goes.
        let _ = tokio::time::timeout(OPEN_TIMEOUT, send.stopped()).await;
        ctx.conn.close(3u32.into(), b"refused");
        return;
    }
    let owners: Vec<OwnerKey> = hello.advert.claimed_owners().collect();

    ctx.shared.admitted(&id);
    // Register, replacing an older connection of the same agent.
    let full = {
        let state = ctx.shared.roster();
        !state.roster.contains(&id) && state.roster.len() >= ctx.shared.config.max_agents
    };
    if full {
        send_msg(&mut send, &ToAgent::Refused(Refusal::Full)).await;
        let _ = send.finish();
        return;
    }
    let generation = {
        let mut state = ctx.shared.roster();
        let joined = state.roster.join(id, hello.advert.clone(), now_ms());
        state.roster.set_version(&id, joined.generation, hello.version);
        if let Some(old) = joined.replaced.and_then(|g| state.conns.remove(&g)) {
            old.close(4u32.into(), b"replaced by a newer connection");
        }
        state.conns.insert(joined.generation, ctx.conn.clone());
        joined.generation
    };
    log::info!(
        "agent {name} ({}) joined from {}",
        ctx.peer.short(),
        ctx.conn.remote_address()
    );

    // Subscribe before the catch-up, so an entry published in between is not missed.
    let updates = ctx.shared.log_updates.subscribe();
    let sent: HashMap<OwnerKey, u64> = owners
        .iter()
        .map(|o| {
            let head = hello
                .heads
                .iter()
                .find(|h| h.owner == Key::from(*o.key()))
                .map_or(0, |h| h.seq);
            (*o, head)
        })
        .collect();

    let done = CancellationToken::new();
    let reader = read_agent(&ctx, &mut recv, generation, &done);
    let jobs = (hello.version >= JOBS_VERSION).then(|| ctx.shared.job_changes.subscribe());
    let writer = write_agent(
        &ctx,
        &mut send,
        &hello.advert.owners,
        owners,
        sent,
        updates,
        jobs,
        &done,
    );
    let (reason, ()) = tokio::join!(reader, writer);
    // Whatever was out to it waits for it to come back (and only for it).
    ctx.shared.jobs().agent_left(&id);
    ctx.shared.jobs_changed();

    let mut state = ctx.shared.roster();
    if state.roster.leave(&id, generation, reason).is_some() {
        state.conns.remove(&generation);
        log::info!("agent {name} ({}) left: {reason:?}", ctx.peer.short());
    }
    drop(state);
    if reason == LeaveReason::Graceful {
        // It said goodbye: close now, so its shutdown does not wait for our silence.
        ctx.conn.close(0u32.into(), b"goodbye");
    }
}

/// Heartbeats and adverts from the agent, until it leaves, goes silent or breaks the
/// protocol. Cancels `done` when it ends, so the writer stops too.
async fn read_agent(
    ctx: &StreamCtx,
    recv: &mut RecvStream,
    generation: u64,
    done: &CancellationToken,
) -> LeaveReason {
    let _stop_writer = done.clone().drop_guard();
    let id = Key::from(ctx.peer);
    // Our own count of this agent's mission events: it trusts no agent to count.
    let mut budget = wtd_telemetry::budget::Budget::new(
        crate::defaults::MISSION_EVENTS_PER_S,
        crate::defaults::MISSION_EVENTS_BURST,
        now_ms(),
    );
    // And of its call reports.
    let mut reports = wtd_telemetry::budget::Budget::new(
        crate::defaults::CALL_REPORTS_PER_S,
        crate::defaults::CALL_REPORTS_BURST,
        now_ms(),
    );
    loop {
        let frame = tokio::select! {
            _ = ctx.shutdown.cancelled() => return LeaveReason::Silent,
            f = read_frame(recv, MAX_FRAME) => f,
        };
        let msg = match frame {
            Ok(Some(bytes)) => decode::<FromAgent>(&bytes),
            // Finished or lost without saying goodbye.
            Ok(None) | Err(wtd_transport::FrameError::Read(_)) => return LeaveReason::Silent,
            Err(e) => {
                close_offender(&ctx.conn, &format!("bad frame: {e}"));
                return LeaveReason::Silent;
            }
        };
        let mut state = ctx.shared.roster();
        let event = match msg {
            Ok(FromAgent::Heartbeat(load)) => state.roster.heartbeat(&id, generation, load, now_ms()),
            Ok(FromAgent::Advert(advert)) => match advert.validate() {
                Ok(()) => state.roster.readvertise(&id, generation, advert, now_ms()),
                Err(why) => {
                    drop(state);
                    close_offender(&ctx.conn, &format!("invalid advert: {why}"));
                    return LeaveReason::Silent;
                }
            },
            Ok(FromAgent::Leaving) => return LeaveReason::Graceful,
            Ok(FromAgent::JobUpdate(update)) => {
                drop(state);
                if ctx.shared.jobs().update(&id, update, now_ms()) {
                    ctx.shared.jobs_changed();
                } else {
                    log::debug!(
                        "ignored an update from agent {} about a job it was not given",
                        ctx.peer.short()
                    );
                }
                continue;
            }
            Ok(FromAgent::MissionEvent(event)) => {
                if let Err(why) = event.validate() {
                    drop(state);
                    close_offender(&ctx.conn, &format!("invalid mission event: {why}"));
                    return LeaveReason::Silent;
                }
                // The agent's name, if it offers that mission (its own missions only).
                let name = state
                    .roster
                    .advert_of(&id)
                    .filter(|a| a.missions.iter().any(|m| m.name == event.mission))
                    .map(|a| a.name.clone());
                drop(state);
                publish_mission_event(ctx, &mut budget, name, event);
                continue;
            }
            Ok(FromAgent::CallReport(report)) => {
                drop(state);
                if let Err(why) = report.validate() {
                    close_offender(&ctx.conn, &format!("invalid call report: {why}"));
                    return LeaveReason::Silent;
                }
                dashboard_report(ctx, &mut reports, &id, &report);
                continue;
            }
            Err(e) => {
                drop(state);
                close_offender(&ctx.conn, &e.as_malformed());
                return LeaveReason::Silent;
            }
        };
        // Watchers hear of it in the next batch (the roster marked it changed).
        if event.is_none() {
            // Replaced by a newer connection, or reaped: this session is over.
            return LeaveReason::Replaced;
        }
    }
}

/// Sends the agent its owners' logs: what it missed, then every new entry as it comes; and,
/// to an agent that speaks version 5 (`jobs` is then `Some`), the queued jobs it can run.
#[allow(clippy::too_many_arguments)]
async fn write_agent(
    ctx: &StreamCtx,
    send: &mut SendStream,
    claimed: &[Key],
    owners: Vec<OwnerKey>,
    mut sent: HashMap<OwnerKey, u64>,
    mut updates: tokio::sync::broadcast::Receiver<OwnerKey>,
    mut jobs: Option<tokio::sync::watch::Receiver<u64>>,
    done: &CancellationToken,
) {
    if !send_msg(
        send,
        &ToAgent::Welcome {
            proxy_software: format!("wtd {}", env!("CARGO_PKG_VERSION")),
        },
    )
    .await
    {
        return;
    }
    let mut pending: Vec<OwnerKey> = owners.clone();
    loop {
        for owner in pending.drain(..) {
            let from = sent.get(&owner).copied().unwrap_or(0);
            let batches = ctx.shared.logs().batches_after(&owner, from);
            for entries in batches {
                let n = entries.len() as u64;
                let msg = ToAgent::Log {
                    owner: Key::from(*owner.key()),
                    entries,
                };
                if !send_msg(send, &msg).await {
                    return;
                }
                *sent.entry(owner).or_default() += n;
            }
        }
        // With `--allow`, an agent its owner disowned no longer belongs here. It has just
        // been sent the disowning (so it stops its calls); now it is let go, and its
        // reconnects wait for adoption like any newcomer's.
        if let Err(refusal) = adopted_by_allowed(ctx, claimed) {
            log::info!("letting agent {} go: {refusal}", ctx.peer.short());
            send_msg(send, &ToAgent::Refused(refusal)).await;
            let _ = send.finish();
            let _ = tokio::time::timeout(OPEN_TIMEOUT, send.stopped()).await;
            ctx.conn.close(3u32.into(), b"refused");
            return;
        }
        if jobs.is_some() {
            for delivery in claim_jobs(ctx) {
                if !send_msg(send, &ToAgent::Job(delivery)).await {
                    // Marked delivered: it waits for this agent's next session.
                    return;
                }
            }
        }
        let job_change = async {
            match jobs.as_mut() {
                Some(rx) => rx.changed().await.is_ok(),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = done.cancelled() => return,
            _ = ctx.shutdown.cancelled() => return,
            alive = job_change => if !alive { return },
            u = updates.recv() => match u {
                Ok(owner) if owners.contains(&owner) => pending.push(owner),
                Ok(_) => {}
                // Missed some notices: check every owner.
                Err(RecvError::Lagged(_)) => pending = owners.clone(),
                Err(RecvError::Closed) => return,
            },
        }
    }
}

/// Shows a call report on the dashboard, if this proxy has one, the agent is within its
/// budget, and the report passes the feed's checks (its own call, of a mission it offers);
/// otherwise it is dropped and counted, never an error for the agent.
fn dashboard_report(
    ctx: &StreamCtx,
    budget: &mut wtd_telemetry::budget::Budget,
    agent: &Key,
    report: &wtd_wire::CallReport,
) {
    let Some(dashboard) = &ctx.shared.dashboard else {
        return;
    };
    let refused = |why: &str| {
        ctx.shared.metrics.call_reports_dropped.inc();
        log::debug!("call report from {} not shown: {why}", ctx.peer.short());
    };
    if !budget.take(now_ms()) {
        return refused("over its budget");
    }
    let mut shown = dashboard.change(|f| f.report(agent, report, now_ms()));
    if shown == Err(crate::dashboard::ReportRefused::NotInRoster) {
        // The feed learns of agents from the roster's batches (every 250 ms), and a call
        // made the moment an agent joined is reported before that: its card is made from
        // the roster now, so the first calls of a lesson are not missing from the page.
        if crate::dashboard::card_from_roster(&ctx.shared, dashboard, agent) {
            shown = dashboard.change(|f| f.report(agent, report, now_ms()));
        }
    }
    match shown {
        Ok(_) => {
            ctx.shared.metrics.call_reports.inc();
        }
        Err(why) => refused(&why.to_string()),
    }
}

/// The queued jobs this agent can take now: those it suits (offers the function, names the
/// owner, has the signed tag) and is the best online agent for, up to its free slots. Each
/// is marked delivered (on disk) before it is returned. The roster lock is held while the
/// queue picks (lock order: roster, then jobs), so no advert or load is copied; it is let
/// go before the deliveries' fsyncs, so heartbeats do not wait for the disk.
fn claim_jobs(ctx: &StreamCtx) -> Vec<wtd_wire::jobs::JobDelivery> {
    let id = Key::from(ctx.peer);
    let (claimed, left_over) = {
        let state = ctx.shared.roster();
        let peers: Vec<crate::jobs::Peer<'_>> = state
            .roster
            .agents()
            .filter(|(_, version)| *version >= wtd_wire::JOBS_VERSION)
            .map(|(a, version)| crate::jobs::Peer {
                id: a.id,
                advert: &a.advert,
                load: &a.load,
                version,
            })
            .collect();
        let mut jobs = ctx.shared.jobs();
        let room = crate::defaults::MAX_JOBS_IN_FLIGHT_PER_AGENT.saturating_sub(jobs.in_flight(&id));
        if room == 0 {
            return Vec::new();
        }
        let picked = jobs.pick(&id, &peers, room, now_ms());
        drop(peers);
        drop(state);
        jobs.deliver(&id, picked)
    };
    if left_over {
        // This agent is full now: the others may take what it was best for.
        ctx.shared.jobs_changed();
    }
    if !claimed.is_empty() {
        log::info!("delivering {} jobs to agent {}", claimed.len(), ctx.peer.short());
    }
    claimed
}

/// Publishes a mission event on `wtd/<cluster>/missions/<mission>/events`, if this proxy
/// has a bridge, the agent offers that mission, and the agent is within its budget.
/// Otherwise the event is dropped (counted in the metrics); never an error for the agent.
fn publish_mission_event(
    ctx: &StreamCtx,
    budget: &mut wtd_telemetry::budget::Budget,
    agent_name: Option<String>,
    event: wtd_wire::MissionEvent,
) {
    let (Some(bridge), Some(mqtt)) = (&ctx.shared.bridge, &ctx.shared.config.mqtt) else {
        return;
    };
    let Some(agent_name) = agent_name.filter(|_| budget.take(now_ms())) else {
        ctx.shared.metrics.mission_events_dropped.inc();
        return;
    };
    ctx.shared.metrics.mission_events.inc();
    let topics = wtd_telemetry::Topics::new(&mqtt.cluster, &mqtt.discovery_prefix);
    let payload = wtd_telemetry::events::mission(
        &wtd_telemetry::topics::agent_id_text(&Key::from(ctx.peer)),
        &agent_name,
        &event.mission,
        &event.function,
        &event.line,
        now_ms(),
    );
    bridge.publish(wtd_telemetry::Publication::event(
        topics.mission_events(&event.mission),
        payload.to_string(),
    ));
}

#[cfg(test)]
mod tests {
    use super::*;
    use wtd_keys::log::Record;
    use wtd_keys::{Action, Adoption, OwnerLog, SecretKey, Timestamp};

    fn key(n: u8) -> SecretKey {
        SecretKey::from_seed(&[n; 32])
    }

    /// A store holding Alice's (key 1) log, which adopts agent 10 and then, if `disown`,
    /// disowns it.
    fn store(dir: &std::path::Path, disown: bool) -> LogStore {
        let alice = key(1);
        let mut log = OwnerLog::new(OwnerKey(alice.public()));
        let mut actions = vec![Action::Adopt];
        if disown {
            actions.push(Action::Disown);
        }
        let mut entries = Vec::new();
        for (i, action) in actions.into_iter().enumerate() {
            let a = Adoption {
                issuer: OwnerKey(alice.public()),
                agent: AgentId(key(10).public()),
                action,
                token: None,
                issued_at: Timestamp(i as u64 + 1),
            }
            .sign(&alice);
            let e = log.next_entry(&alice, Record::Adoption(a)).unwrap();
            log.append(e.clone()).unwrap();
            entries.push(e.bytes().to_vec());
        }
        let mut store = LogStore::open(dir).unwrap();
        store.publish(&entries).unwrap();
        store
    }

    #[test]
    fn allow_admits_only_what_an_allowed_owner_adopted() {
        let dir = tempfile::tempdir().unwrap();
        let logs = store(dir.path(), false);
        let (alice, mallory) = (OwnerKey(key(1).public()), OwnerKey(key(4).public()));
        let allow = Admission::Allow(vec![alice]);
        let claims_alice = [Key::from(*alice.key())];
        let (adopted, stranger) = (AgentId(key(10).public()), AgentId(key(11).public()));
        assert_eq!(admission(&Admission::Open, &[], &stranger, &logs), Ok(()));
        assert_eq!(admission(&allow, &claims_alice, &adopted, &logs), Ok(()));
        // Claims Alice, not adopted: waits, and is told by whom.
        assert_eq!(
            admission(&allow, &claims_alice, &stranger, &logs),
            Err(Refusal::WaitingForAdoption {
                owners: claims_alice.to_vec()
            })
        );
        // Adopted, but its advert no longer names Alice: not hers either.
        assert_eq!(
            admission(&allow, &[Key::from(*mallory.key())], &adopted, &logs),
            Err(Refusal::OwnerNotAllowed)
        );
        // Disowned: waits again.
        let dir = tempfile::tempdir().unwrap();
        let logs = store(dir.path(), true);
        assert!(matches!(
            admission(&allow, &claims_alice, &adopted, &logs),
            Err(Refusal::WaitingForAdoption { .. })
        ));
    }
}
