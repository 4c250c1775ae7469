//! The classroom dashboard: a read-only web page the proxy serves (`wtd proxy --dashboard
//! 127.0.0.1:8080`), for the projector. Every agent as a card, calls flowing as a feed and
//! as a sequence diagram, grants and revocations as they happen, pushed to the page as
//! server-sent events.
//!
//! ```text
//!  roster batches ─┐
//!  relayed sessions┼─► Feed (pure, bounded) ──changed──► each page's event stream
//!  call reports ───┤     cards + a ring of            (snapshot on connect, then what
//!  owner logs ─────┘     happenings with seq ids       changed, paced; Last-Event-ID
//!                                                      catches a reconnecting page up)
//! ```
//!
//! What the proxy sees for itself is who relays to whom. The rest of a call (its function,
//! latency, allowed or denied and why) comes from agents whose owners opted in
//! (`report_calls`), checked in [`feed::Feed::check_report`]; the page says so.
//!
//! # Layout
//! - [`feed`]: the cards and the ring, pure (time passed in).
//! - [`http`]: the small HTTP server: the page's three assets, its event stream, a JSON
//!   snapshot; bounded connections, GET and HEAD only.
//! - `assets/`: the page, hand-written HTML, CSS and JS, embedded in the binary.

pub mod feed;
pub mod http;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::broadcast::error::RecvError;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use wtd_keys::{AgentId, OwnerKey};
use wtd_wire::{AgentInfo, Key, RosterEvent};

use crate::logs::LogStore;
use crate::shared::{now_ms, Shared};

pub use feed::{Feed, ReportRefused, Update};

/// The dashboard's state, shared by the proxy's tasks (which feed it) and the pages'
/// connections (which read it).
#[derive(Debug)]
pub struct Dashboard {
    /// A std mutex: held for bookkeeping and for building one update, never across an
    /// await.
    feed: Mutex<Feed>,
    /// Bumped after every change, so waiting pages wake; the value is a counter, pages
    /// read the feed itself.
    changed: watch::Sender<u64>,
    /// Connections served at once (see `defaults::DASHBOARD_CONNECTIONS`).
    pub(crate) max_connections: usize,
    /// Pages connected now (their event streams), for the metrics.
    pub(crate) pages: prometheus_client::metrics::gauge::Gauge,
}

impl Dashboard {
    pub fn new(max_connections: usize) -> Self {
        Dashboard {
            feed: Mutex::default(),
            changed: watch::channel(0).0,
            max_connections,
            pages: Default::default(),
        }
    }

    pub fn feed(&self) -> MutexGuard<'_, Feed> {
        self.feed.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Changes the feed and wakes the pages.
    pub fn change<T>(&self, f: impl FnOnce(&mut Feed) -> T) -> T {
        let out = f(&mut self.feed());
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
        out
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

/// Whether one of the owners `a` names adopted it, by the logs the proxy stores.
fn adopted_in(logs: &LogStore, id: &Key, owners: &[Key]) -> bool {
    let Ok(agent) = id.parse() else { return false };
    owners
        .iter()
        .filter_map(|o| o.parse().ok())
        .any(|o| logs.adopts(&OwnerKey(o), &AgentId(agent)))
}

/// Applies one roster event, working out adoptions from the stored logs first (the logs'
/// lock and the feed's are never held together).
fn apply(shared: &Shared, dashboard: &Dashboard, event: &RosterEvent) {
    let agents: Vec<&AgentInfo> = match event {
        RosterEvent::Snapshot(all) => all.iter().collect(),
        RosterEvent::Upsert(a) => vec![a],
        _ => Vec::new(),
    };
    let adopted: std::collections::HashSet<Key> = if agents.is_empty() {
        Default::default()
    } else {
        let logs = shared.logs();
        agents
            .iter()
            .filter(|a| adopted_in(&logs, &a.id, &a.advert.owners))
            .map(|a| a.id)
            .collect()
    };
    dashboard.change(|f| f.apply(event, now_ms(), &|a| adopted.contains(&a.id)));
}

/// Makes (or refreshes) `id`'s card from the roster as it is now, if the agent is in it;
/// for a report that arrives before the roster's batch with the agent's join.
pub(crate) fn card_from_roster(shared: &Shared, dashboard: &Dashboard, id: &Key) -> bool {
    let Some(info) = shared.roster().roster.info_of(id) else {
        return false;
    };
    apply(shared, dashboard, &RosterEvent::Upsert(info));
    true
}

/// An owner published adoptions or disownings: every card's "adopted" again.
pub(crate) fn refresh_adoptions(shared: &Shared, dashboard: &Dashboard) {
    let claims = dashboard.feed().claims();
    let now: Vec<(Key, bool)> = {
        let logs = shared.logs();
        claims
            .iter()
            .map(|(id, owners)| (*id, adopted_in(&logs, id, owners)))
            .collect()
    };
    dashboard.change(|f| {
        for (id, adopted) in &now {
            f.set_adopted(id, *adopted);
        }
    });
}

/// Follows the roster into the feed until `shutdown` (like a watcher: subscribed with a
/// snapshot under the roster lock, so no change is missed), and forgets old offline cards.
pub(crate) async fn follow_roster(
    shared: Arc<Shared>,
    dashboard: Arc<Dashboard>,
    shutdown: CancellationToken,
) {
    let (mut batches, snapshot) = {
        let state = shared.roster();
        (shared.subscribe(&state), state.roster.snapshot())
    };
    apply(&shared, &dashboard, &RosterEvent::Snapshot(snapshot));
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let batch = tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {
                let before = dashboard.feed().version();
                let mut f = dashboard.feed();
                f.prune(now_ms());
                if f.version() != before {
                    drop(f);
                    dashboard.change(|_| ());
                }
                continue;
            }
            b = batches.recv() => b,
        };
        match batch {
            Ok(batch) => {
                for event in &batch.events {
                    apply(&shared, &dashboard, event);
                }
            }
            Err(RecvError::Lagged(_)) => {
                let snapshot = {
                    let state = shared.roster();
                    batches = shared.subscribe(&state);
                    state.roster.snapshot()
                };
                apply(&shared, &dashboard, &RosterEvent::Snapshot(snapshot));
            }
            Err(RecvError::Closed) => return,
        }
    }
}

/// A verified owner-log entry as a happening: a grant, a revocation, an adoption.
pub(crate) fn log_event(entry: &wtd_keys::log::SignedEntry, now_ms: u64) -> serde_json::Value {
    use serde_json::json;
    use wtd_keys::log::Record;
    let owner = entry.owner.key().short();
    match &entry.record {
        Record::Grant(g) => {
            let g = g.grant();
            json!({
                "type": "grant",
                "at_ms": now_ms,
                "owner": owner,
                "grantee": g.subject.key().short(),
                "mission": g.mission.as_str(),
                "expires_ms": g.expires.0,
            })
        }
        Record::Revocation(r) => {
            let (grantee, mission, what) = match &r.revocation().target {
                wtd_keys::revocation::Target::Grant(id) => (None, None, format!("grant {id}")),
                wtd_keys::revocation::Target::SubjectMission(u, m) => (
                    Some(u.key().short()),
                    Some(m.as_str().to_string()),
                    format!("{}'s grants for {}", u.key().short(), m.as_str()),
                ),
                wtd_keys::revocation::Target::SubjectAll(u) => (
                    Some(u.key().short()),
                    None,
                    format!("all of {}'s grants", u.key().short()),
                ),
                // A lesson's grants ended together (`wtd revoke --label`/`--class`): the
                // label is what the teacher typed, the count what a projector can show.
                wtd_keys::revocation::Target::Grants { label, grants } => {
                    (None, None, format!("{} grants of lesson {label}", grants.len()))
                }
            };
            json!({
                "type": "revocation",
                "at_ms": now_ms,
                "owner": owner,
                "grantee": grantee,
                "mission": mission,
                "revokes": what,
            })
        }
        Record::Adoption(a) => {
            let a = a.adoption();
            let adopt = a.action == wtd_keys::adoption::Action::Adopt;
            json!({
                "type": if adopt { "adoption" } else { "disown" },
                "at_ms": now_ms,
                "owner": owner,
                "agent": a.agent.key().to_string(),
            })
        }
    }
}
