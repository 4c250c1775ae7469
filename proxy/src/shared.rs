//! The state every connection task shares.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use wtd_keys::OwnerKey;
use wtd_transport::Connection;
use wtd_wire::{encode_frame_into, AgentInfo, Key, Response, RosterEvent};

use crate::defaults::{
    EVENT_BUFFER, MAX_WAITING, REAP_TICK, WAITING_FORGET_AFTER, WATCH_BATCHES_BUFFERED, WATCH_BATCH_INTERVAL,
};
use crate::jobs::JobQueue;
use crate::logs::LogStore;
use crate::roster::Roster;
use crate::ProxyConfig;

/// The roster, and the connection behind each registration (so the reaper, or a newer
/// registration of the same agent, can close it).
#[derive(Debug, Default)]
pub(crate) struct RosterState {
    pub roster: Roster,
    pub conns: HashMap<u64, Connection>,
}

#[derive(Debug)]
pub(crate) struct Shared {
    pub config: ProxyConfig,
    /// A std mutex: held only for in-memory bookkeeping, never across an await. Batches
    /// are taken and sent while it is held, so a watcher that subscribes and snapshots
    /// under the same lock sees every change after its snapshot, in order.
    roster: Mutex<RosterState>,
    /// The roster's changes, one batch per [`WATCH_BATCH_INTERVAL`] (see [`batcher`]).
    batches: broadcast::Sender<Arc<Batch>>,
    /// Owner logs. Held across a publish's fsyncs (rare, owner-initiated), never across
    /// an await.
    pub logs: Mutex<LogStore>,
    /// Signed event logs and subscription positions. A std mutex like `logs`: held across
    /// an append's fsync (one per published batch), never across an await.
    pub events: Mutex<crate::streams::EventStore>,
    /// "This owner's log grew": each agent session listening checks if it cares.
    pub log_updates: broadcast::Sender<OwnerKey>,
    /// Agents turned away because no allowed owner adopted them yet, by id, so an owner
    /// can find and adopt them (`wtd adopt`, `wtd adopt --pending`). A std mutex, held for
    /// bookkeeping only.
    waiting: Mutex<HashMap<Key, AgentInfo>>,
    /// Counters and gauges for `/metrics` (atomics: no lock).
    pub metrics: crate::metrics::ProxyMetrics,
    /// The MQTT bridge, when configured: publishing never waits for the broker.
    pub bridge: Option<wtd_telemetry::BridgeHandle>,
    /// The dashboard's feed, when `--dashboard` is set.
    pub dashboard: Option<Arc<crate::dashboard::Dashboard>>,
    /// Queued jobs. A std mutex, held across a change's fsync (a push, a delivery, an
    /// outcome: one small append each), never across an await.
    pub jobs: Mutex<JobQueue>,
    /// Bumped whenever a job is pushed or changes state: agent sessions look for work,
    /// `wtd result --wait` looks for its outcome. A watch, so a burst is one wake-up.
    pub job_changes: tokio::sync::watch::Sender<u64>,
}

impl Shared {
    pub fn new(
        config: ProxyConfig,
        logs: LogStore,
        jobs: JobQueue,
        events: crate::streams::EventStore,
        bridge: Option<wtd_telemetry::BridgeHandle>,
    ) -> Self {
        Shared {
            config,
            roster: Mutex::default(),
            batches: broadcast::channel(WATCH_BATCHES_BUFFERED).0,
            logs: Mutex::new(logs),
            events: Mutex::new(events),
            log_updates: broadcast::channel(EVENT_BUFFER).0,
            waiting: Mutex::default(),
            metrics: crate::metrics::ProxyMetrics::default(),
            bridge,
            dashboard: None,
            jobs: Mutex::new(jobs),
            job_changes: tokio::sync::watch::channel(0).0,
        }
    }

    fn waiting_list(&self) -> MutexGuard<'_, HashMap<Key, AgentInfo>> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Notes an agent that knocked and was told to wait for adoption.
    pub fn knocked(&self, info: AgentInfo) {
        let mut waiting = self.waiting_list();
        forget_old(&mut waiting, info.last_seen_ms);
        if !waiting.contains_key(&info.id) && waiting.len() >= MAX_WAITING {
            if let Some(oldest) = waiting.values().min_by_key(|a| a.last_seen_ms).map(|a| a.id) {
                waiting.remove(&oldest);
            }
        }
        waiting.insert(info.id, info);
    }

    /// The agent was admitted: it waits no more.
    pub fn admitted(&self, id: &Key) {
        self.waiting_list().remove(id);
    }

    /// The agents waiting for adoption now, by name.
    pub fn waiting(&self) -> Vec<AgentInfo> {
        let mut waiting = self.waiting_list();
        forget_old(&mut waiting, now_ms());
        let mut all: Vec<AgentInfo> = waiting.values().cloned().collect();
        all.sort_by(|a, b| a.advert.name.cmp(&b.advert.name).then(a.id.0.cmp(&b.id.0)));
        all
    }

    pub fn roster(&self) -> MutexGuard<'_, RosterState> {
        // A panic while holding the lock leaves plain data; keep serving.
        self.roster.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn logs(&self) -> MutexGuard<'_, LogStore> {
        self.logs.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn jobs(&self) -> MutexGuard<'_, JobQueue> {
        self.jobs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Tells whoever waits on jobs that something changed.
    pub fn jobs_changed(&self) {
        self.job_changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    pub fn events(&self) -> MutexGuard<'_, crate::streams::EventStore> {
        self.events.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Subscribes to batches of changes. Call with the roster lock held, then snapshot.
    pub fn subscribe(&self, _held: &RosterState) -> broadcast::Receiver<Arc<Batch>> {
        self.batches.subscribe()
    }
}

/// The roster's changes over one interval, the latest per agent, shared by every watcher.
#[derive(Debug)]
pub(crate) struct Batch {
    pub events: Vec<RosterEvent>,
    frames: OnceLock<Vec<u8>>,
}

impl Batch {
    pub fn new(events: Vec<RosterEvent>) -> Self {
        Batch {
            events,
            frames: OnceLock::new(),
        }
    }

    /// The batch as a watch stream carries it: one `Response::Event` frame per change,
    /// back to back (what every version of `wtd ls --watch` reads), encoded once, by the
    /// first watcher that needs it, for all of them.
    pub fn frames(&self) -> &[u8] {
        self.frames.get_or_init(|| {
            let mut buf = Vec::new();
            for e in &self.events {
                encode_frame_into(&Response::Event(e.clone()), &mut buf);
            }
            buf
        })
    }
}

/// Every [`WATCH_BATCH_INTERVAL`], sends what changed in the roster to watchers as one
/// batch. Its cost is the agents that changed, once, whatever the number of watchers.
pub(crate) async fn batcher(shared: Arc<Shared>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(WATCH_BATCH_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let mut state = shared.roster();
        let events = state.roster.take_changes();
        if !events.is_empty() {
            // No watchers is fine.
            let _ = shared.batches.send(Arc::new(Batch::new(events)));
        }
    }
}

fn forget_old(waiting: &mut HashMap<Key, AgentInfo>, now_ms: u64) {
    let after = WAITING_FORGET_AFTER.as_millis() as u64;
    waiting.retain(|_, a| now_ms.saturating_sub(a.last_seen_ms) <= after);
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Drops agents that went silent, and closes their connections.
pub(crate) async fn reaper(shared: Arc<Shared>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(REAP_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let after = shared.config.reap_after.as_millis() as u64;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let mut state = shared.roster();
        for (generation, _) in state.roster.reap(now_ms(), after) {
            if let Some(conn) = state.conns.remove(&generation) {
                log::info!("dropping silent agent at {}", conn.remote_address());
                conn.close(2u32.into(), b"silent for too long");
            }
        }
    }
}

/// Every [`crate::defaults::JOB_SWEEP_TICK`], marks jobs past their expiry as expired (and
/// forgets old finished ones), and wakes whoever waits on them.
pub(crate) async fn job_sweeper(shared: Arc<Shared>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(crate::defaults::JOB_SWEEP_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let changed = {
            let mut jobs = shared.jobs();
            let before = jobs.waiting();
            jobs.sweep(now_ms());
            jobs.waiting() != before || jobs.retry_due(now_ms())
        };
        if changed {
            shared.jobs_changed();
        }
    }
}
