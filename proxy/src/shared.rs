//! The state every connection task shares.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use wtd_keys::OwnerKey;
use wtd_transport::Connection;
use wtd_wire::{AgentInfo, Key, RosterEvent};

use crate::defaults::{EVENT_BUFFER, MAX_WAITING, REAP_TICK, WAITING_FORGET_AFTER};
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
    /// A std mutex: held only for in-memory bookkeeping, never across an await. Events are
    /// sent while it is held, so a watcher that subscribes and snapshots under the same
    /// lock sees every change exactly once, in order.
    roster: Mutex<RosterState>,
    events: broadcast::Sender<RosterEvent>,
    /// Owner logs. Held across a publish's fsyncs (rare, owner-initiated), never across
    /// an await.
    pub logs: Mutex<LogStore>,
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
}

impl Shared {
    pub fn new(config: ProxyConfig, logs: LogStore, bridge: Option<wtd_telemetry::BridgeHandle>) -> Self {
        Shared {
            config,
            roster: Mutex::default(),
            events: broadcast::channel(EVENT_BUFFER).0,
            logs: Mutex::new(logs),
            log_updates: broadcast::channel(EVENT_BUFFER).0,
            waiting: Mutex::default(),
            metrics: crate::metrics::ProxyMetrics::default(),
            bridge,
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

    /// Sends an event to watchers. Call with the roster lock held.
    pub fn emit(&self, _held: &RosterState, event: RosterEvent) {
        // No watchers is fine.
        let _ = self.events.send(event);
    }

    /// Subscribes to events. Call with the roster lock held, then snapshot.
    pub fn subscribe(&self, _held: &RosterState) -> broadcast::Receiver<RosterEvent> {
        self.events.subscribe()
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
        for (generation, event) in state.roster.reap(now_ms(), after) {
            if let Some(conn) = state.conns.remove(&generation) {
                log::info!("dropping silent agent at {}", conn.remote_address());
                conn.close(2u32.into(), b"silent for too long");
            }
            shared.emit(&state, event);
        }
    }
}
