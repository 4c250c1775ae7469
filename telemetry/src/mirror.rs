//! What the broker should hold, from what happens to the roster: pure, with the clock
//! passed in, so every rule below is a unit test.
//!
//! - an agent joins (or its advert changes): its discovery configs, `online`, its state;
//! - a heartbeat: its state, at most once per `state_interval` (the latest load wins);
//! - it leaves (killed, unplugged, stopped): `offline`, and a last state with
//!   `"online": false`; Home Assistant greys it out;
//! - offline for `forget_after`: removed, every retained topic of it cleared.
//!
//! What the broker holds outlives us: a proxy restarted (or crashed) would otherwise forget
//! the agents it published, and an agent that never comes back would stay in Home
//! Assistant for ever, reading `online`. So the mirror can be [`Mirror::saved`] (the proxy
//! writes it to its state directory whenever the set of agents changes) and
//! [`Mirror::restore`]d on start: every agent it held is marked offline (it is not
//! connected to this new proxy, yet), keeps its offline-since time, and is cleared once
//! `forget_after` has passed, like one the proxy saw leave.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::json;
use wtd_wire::{AgentInfo, Key, RosterEvent};

use crate::discovery::{self, Entity};
use crate::outbox::Publication;
use crate::topics::{agent_id_text, Topics};

/// Who publishes: the proxy for the whole cluster, or one agent for itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Proxy,
    Agent,
}

#[derive(Debug)]
struct Known {
    info: AgentInfo,
    online: bool,
    /// When it went offline (proxy clock), to forget it after `forget_after`.
    offline_since_ms: u64,
    last_state_ms: u64,
    /// A heartbeat arrived inside the interval; send it when the interval is up.
    state_due: bool,
    /// The entities whose configs we published.
    entities: Vec<Entity>,
}

/// See the module docs.
#[derive(Debug)]
pub struct Mirror {
    topics: Topics,
    mode: Mode,
    state_interval_ms: u64,
    forget_after_ms: u64,
    agents: HashMap<Key, Known>,
    /// Bumped whenever an agent is added, goes on- or offline, or is forgotten: when to
    /// save (heartbeats do not bump it).
    version: u64,
}

/// What a mirror saves across restarts: for each agent published, what it was and since
/// when it has been offline (`None`: it was online). Serialized as JSON by the proxy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Saved {
    /// `wtd/<cluster>` and the discovery prefix the agents were published under: a file
    /// saved under other topics is not restored (the operator renamed the cluster).
    pub root: String,
    pub discovery_prefix: String,
    pub agents: Vec<SavedAgent>,
}

/// One agent of [`Saved`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SavedAgent {
    pub info: AgentInfo,
    pub offline_since_ms: Option<u64>,
}

impl Mirror {
    pub fn new(topics: Topics, mode: Mode, state_interval: Duration, forget_after: Duration) -> Self {
        Mirror {
            topics,
            mode,
            state_interval_ms: state_interval.as_millis() as u64,
            forget_after_ms: forget_after.as_millis() as u64,
            agents: HashMap::new(),
            version: 0,
        }
    }

    /// Changes when the set of agents (or their online state) changes; see [`Mirror::saved`].
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Everything needed to clear these agents after a restart.
    pub fn saved(&self) -> Saved {
        let mut agents: Vec<SavedAgent> = self
            .agents
            .values()
            .map(|k| {
                let mut info = k.info.clone();
                // JSON has no NaN: a number we cannot write is not worth keeping.
                let l = &mut info.load;
                for x in [&mut l.load1, &mut l.cpu_percent] {
                    if !x.is_finite() {
                        *x = 0.0;
                    }
                }
                l.temperature_c = l.temperature_c.filter(|t| t.is_finite());
                SavedAgent {
                    info,
                    offline_since_ms: (!k.online).then_some(k.offline_since_ms),
                }
            })
            .collect();
        agents.sort_by_key(|a| a.info.id.0);
        Saved {
            root: self.topics.root().to_string(),
            discovery_prefix: self.topics.discovery_prefix().to_string(),
            agents,
        }
    }

    /// Takes back what a previous run saved: each agent offline (since it went, or since
    /// `now_ms` if it was online when that run ended) until it reconnects, and forgotten
    /// `forget_after` later. Returns the publications that say so (the broker may still
    /// hold `online` from a run that crashed). A file for other topics is ignored (`false`).
    pub fn restore(&mut self, saved: Saved, now_ms: u64) -> (bool, Vec<Publication>) {
        if saved.root != self.topics.root() || saved.discovery_prefix != self.topics.discovery_prefix() {
            return (false, Vec::new());
        }
        let mut out = Vec::new();
        for a in saved.agents {
            let id = agent_id_text(&a.info.id);
            out.push(Publication::retained(
                self.topics.agent_availability(&id),
                "offline",
            ));
            out.push(state_publication(&self.topics, &a.info, false));
            let entities = Entity::ALL
                .into_iter()
                .filter(|e| e.applies_to(&a.info))
                .collect();
            self.agents.insert(
                a.info.id,
                Known {
                    info: a.info,
                    online: false,
                    offline_since_ms: a.offline_since_ms.unwrap_or(now_ms).min(now_ms),
                    last_state_ms: 0,
                    state_due: false,
                    entities,
                },
            );
        }
        self.version += 1;
        (true, out)
    }

    pub fn topics(&self) -> &Topics {
        &self.topics
    }

    /// Agents online now.
    pub fn online(&self) -> usize {
        self.agents.values().filter(|k| k.online).count()
    }

    /// Agents known (online, or offline and not yet forgotten).
    pub fn known(&self) -> usize {
        self.agents.len()
    }

    /// What to publish after `event`.
    pub fn apply(&mut self, event: &RosterEvent, now_ms: u64) -> Vec<Publication> {
        let mut out = Vec::new();
        match event {
            RosterEvent::Snapshot(all) => {
                for info in all {
                    self.upsert(info, now_ms, &mut out);
                }
                let gone: Vec<Key> = self
                    .agents
                    .iter()
                    .filter(|(k, a)| a.online && !all.iter().any(|i| &i.id == *k))
                    .map(|(k, _)| *k)
                    .collect();
                for id in gone {
                    self.offline(&id, now_ms, &mut out);
                }
            }
            RosterEvent::Upsert(info) => self.upsert(info, now_ms, &mut out),
            RosterEvent::Load {
                id,
                load,
                last_seen_ms,
            } => {
                if let Some(known) = self.agents.get_mut(id) {
                    known.info.load = load.clone();
                    known.info.last_seen_ms = *last_seen_ms;
                    // Temperature or throttling reported for the first time: add the entity.
                    let new: Vec<Entity> = Entity::ALL
                        .into_iter()
                        .filter(|e| e.applies_to(&known.info) && !known.entities.contains(e))
                        .collect();
                    for e in new {
                        known.entities.push(e);
                        out.push(config_publication(&self.topics, self.mode, &known.info, e));
                    }
                    if now_ms.saturating_sub(known.last_state_ms) >= self.state_interval_ms {
                        known.last_state_ms = now_ms;
                        known.state_due = false;
                        out.push(state_publication(&self.topics, &known.info, true));
                    } else {
                        known.state_due = true;
                    }
                }
            }
            RosterEvent::Left { id, .. } => self.offline(id, now_ms, &mut out),
        }
        out
    }

    /// Due states, and agents to forget; call every second or so.
    pub fn tick(&mut self, now_ms: u64) -> Vec<Publication> {
        let mut out = Vec::new();
        for known in self.agents.values_mut() {
            if known.online
                && known.state_due
                && now_ms.saturating_sub(known.last_state_ms) >= self.state_interval_ms
            {
                known.state_due = false;
                known.last_state_ms = now_ms;
                out.push(state_publication(&self.topics, &known.info, true));
            }
        }
        let forget: Vec<Key> = self
            .agents
            .iter()
            .filter(|(_, k)| !k.online && now_ms.saturating_sub(k.offline_since_ms) >= self.forget_after_ms)
            .map(|(id, _)| *id)
            .collect();
        for id in forget {
            let known = self.agents.remove(&id).expect("listed above");
            out.extend(clear_agent(&self.topics, &known.info));
            self.version += 1;
        }
        out
    }

    fn upsert(&mut self, info: &AgentInfo, now_ms: u64, out: &mut Vec<Publication>) {
        let entities: Vec<Entity> = Entity::ALL.into_iter().filter(|e| e.applies_to(info)).collect();
        for e in &entities {
            out.push(config_publication(&self.topics, self.mode, info, *e));
        }
        let id = agent_id_text(&info.id);
        out.push(Publication::retained(
            self.topics.agent_availability(&id),
            "online",
        ));
        out.push(state_publication(&self.topics, info, true));
        if self
            .agents
            .get(&info.id)
            .is_none_or(|k| !k.online || k.info.advert != info.advert)
        {
            self.version += 1;
        }
        // An entity the agent no longer has (a Pi's SD card moved to a laptop): remove it.
        if let Some(old) = self.agents.get(&info.id) {
            for e in old.entities.iter().filter(|e| !entities.contains(e)) {
                out.push(Publication::clear(discovery::topic(&self.topics, info, *e)));
            }
        }
        self.agents.insert(
            info.id,
            Known {
                info: info.clone(),
                online: true,
                offline_since_ms: 0,
                last_state_ms: now_ms,
                state_due: false,
                entities,
            },
        );
    }

    fn offline(&mut self, id: &Key, now_ms: u64, out: &mut Vec<Publication>) {
        let Some(known) = self.agents.get_mut(id) else {
            return;
        };
        if !known.online {
            return;
        }
        known.online = false;
        known.offline_since_ms = now_ms;
        self.version += 1;
        let text = agent_id_text(id);
        out.push(Publication::retained(
            self.topics.agent_availability(&text),
            "offline",
        ));
        out.push(state_publication(&self.topics, &known.info, false));
    }
}

fn config_publication(topics: &Topics, mode: Mode, info: &AgentInfo, e: Entity) -> Publication {
    Publication::retained(
        discovery::topic(topics, info, e),
        discovery::config(topics, mode, info, e).to_string(),
    )
}

/// Every retained topic of an agent, cleared.
pub fn clear_agent(topics: &Topics, info: &AgentInfo) -> Vec<Publication> {
    let id = agent_id_text(&info.id);
    let mut out: Vec<Publication> = if topics.discovery_enabled() {
        Entity::ALL
            .into_iter()
            .map(|e| Publication::clear(discovery::topic(topics, info, e)))
            .collect()
    } else {
        Vec::new()
    };
    out.push(Publication::clear(topics.agent_state(&id)));
    out.push(Publication::clear(topics.agent_availability(&id)));
    out
}

fn state_publication(topics: &Topics, info: &AgentInfo, online: bool) -> Publication {
    Publication::retained(
        topics.agent_state(&agent_id_text(&info.id)),
        state_json(info, online).to_string(),
    )
}

/// The retained state of an agent: what `wtd ls` shows, as JSON.
pub fn state_json(info: &AgentInfo, online: bool) -> serde_json::Value {
    let l = &info.load;
    let seen = UNIX_EPOCH + Duration::from_millis(info.last_seen_ms);
    json!({
        "id": agent_id_text(&info.id),
        "name": info.advert.name,
        "online": online,
        "load1": round2(l.load1),
        "cpu_percent": round2(l.cpu_percent),
        "mem_used_kb": l.mem_used_kb,
        "mem_total_kb": l.mem_total_kb,
        "temperature_c": l.temperature_c.map(round2),
        "throttled": l.throttled,
        // Bits 0-3 of get_throttled: under-voltage, frequency capped, throttled, soft
        // temperature limit, each "now".
        "throttled_now": l.throttled.map(|t| t & 0xf != 0),
        "missions": info.advert.missions.iter().map(|m| json!({"name": m.name, "version": m.version})).collect::<Vec<_>>(),
        "tags": info.advert.tags,
        "model": info.advert.model,
        "software": info.advert.software,
        "last_seen_ms": info.last_seen_ms,
        "last_seen": humantime::format_rfc3339_millis(seen).to_string(),
    })
}

fn round2(x: f32) -> f64 {
    (f64::from(x) * 100.0).round() / 100.0
}

/// Milliseconds since the epoch, for callers of [`Mirror::apply`] outside tests.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use wtd_wire::{Advert, LeaveReason, Load};

    fn agent(n: u8, temp: Option<f32>) -> AgentInfo {
        AgentInfo {
            id: Key([n; 32]),
            advert: Advert {
                name: format!("pi-{n}"),
                owners: vec![],
                missions: vec![],
                tags: vec!["lab".into()],
                model: Some("Raspberry Pi 4".into()),
                software: "wtd 0.1.0".into(),
                warnings: vec![],
                enrollment: None,
            },
            load: Load {
                temperature_c: temp,
                throttled: temp.map(|_| 0x50005),
                ..Load::default()
            },
            last_seen_ms: 1000,
        }
    }

    fn mirror() -> Mirror {
        Mirror::new(
            Topics::new("home", "homeassistant"),
            Mode::Proxy,
            Duration::from_secs(5),
            Duration::from_secs(60),
        )
    }

    fn topics(p: &[Publication]) -> Vec<&str> {
        p.iter().map(|p| p.topic.as_str()).collect()
    }

    #[test]
    fn a_pi_joins_with_five_entities_a_laptop_with_three() {
        let mut m = mirror();
        let out = m.apply(&RosterEvent::Upsert(agent(1, Some(50.0))), 0);
        assert_eq!(out.iter().filter(|p| p.topic.ends_with("/config")).count(), 5);
        let out = m.apply(&RosterEvent::Upsert(agent(2, None)), 0);
        assert_eq!(out.iter().filter(|p| p.topic.ends_with("/config")).count(), 3);
        assert!(out.iter().all(|p| p.retain));
        assert_eq!(m.online(), 2);
    }

    #[test]
    fn states_are_rate_limited_and_the_latest_is_sent_when_due() {
        let mut m = mirror();
        let a = agent(1, None);
        m.apply(&RosterEvent::Upsert(a.clone()), 0);
        let load = |cpu| RosterEvent::Load {
            id: a.id,
            load: Load {
                cpu_percent: cpu,
                ..Load::default()
            },
            last_seen_ms: 10,
        };
        assert!(m.apply(&load(10.0), 1000).is_empty(), "inside the interval");
        assert!(m.apply(&load(20.0), 2000).is_empty());
        assert!(m.tick(4999).is_empty());
        let due = m.tick(5000);
        assert_eq!(due.len(), 1);
        let v: serde_json::Value = serde_json::from_slice(&due[0].payload).unwrap();
        assert_eq!(v["cpu_percent"], 20.0);
        assert!(m.tick(6000).is_empty(), "sent once");
        assert_eq!(
            m.apply(&load(30.0), 10_000).len(),
            1,
            "past the interval: at once"
        );
    }

    #[test]
    fn a_leaving_agent_goes_offline_then_is_forgotten() {
        let mut m = mirror();
        let a = agent(1, Some(40.0));
        m.apply(&RosterEvent::Upsert(a.clone()), 0);
        let out = m.apply(
            &RosterEvent::Left {
                id: a.id,
                reason: LeaveReason::Silent,
            },
            1000,
        );
        let avail = out.iter().find(|p| p.topic.ends_with("/availability")).unwrap();
        assert_eq!(avail.payload, b"offline");
        assert_eq!(m.online(), 0);
        assert!(m.tick(60_999).is_empty());
        let cleared = m.tick(61_000);
        assert_eq!(cleared.len(), 7, "five configs, state, availability");
        assert!(cleared.iter().all(|p| p.retain && p.payload.is_empty()));
        assert_eq!(m.known(), 0);
    }

    #[test]
    fn a_snapshot_marks_the_missing_offline() {
        let mut m = mirror();
        m.apply(&RosterEvent::Upsert(agent(1, None)), 0);
        let out = m.apply(&RosterEvent::Snapshot(vec![agent(2, None)]), 10);
        assert!(topics(&out)
            .iter()
            .any(|t| t.contains(&agent_id_text(&Key([1; 32]))) && t.ends_with("availability")));
        assert_eq!(m.online(), 1);
    }

    #[test]
    fn a_restart_remembers_agents_marks_them_offline_and_forgets_them_in_time() {
        let mut m = mirror();
        let (a, b) = (agent(1, Some(40.0)), agent(2, None));
        m.apply(&RosterEvent::Upsert(a.clone()), 0);
        m.apply(&RosterEvent::Upsert(b.clone()), 0);
        m.apply(
            &RosterEvent::Left {
                id: a.id,
                reason: LeaveReason::Silent,
            },
            1000,
        );
        let v = m.version();
        m.apply(
            &RosterEvent::Load {
                id: b.id,
                load: Load::default(),
                last_seen_ms: 5,
            },
            2000,
        );
        assert_eq!(m.version(), v, "heartbeats need no save");
        let saved: Saved = serde_json::from_str(&serde_json::to_string(&m.saved()).unwrap()).unwrap();
        assert_eq!(saved, m.saved(), "it survives JSON");

        // A new run (the proxy restarted at 30 s), nobody connected yet.
        let mut m = mirror();
        let (restored, out) = m.restore(saved.clone(), 30_000);
        assert!(restored);
        let offline: Vec<&Publication> = out
            .iter()
            .filter(|p| p.topic.ends_with("/availability"))
            .collect();
        assert_eq!(offline.len(), 2);
        assert!(
            offline.iter().all(|p| p.payload == b"offline"),
            "both read offline, whatever the broker held"
        );
        assert_eq!((m.known(), m.online()), (2, 0));
        // b comes back; a never does, and is cleared 60 s after it left (at 1 s), b not.
        m.apply(&RosterEvent::Snapshot(vec![b.clone()]), 31_000);
        assert!(m.tick(60_999).is_empty());
        let cleared = m.tick(61_000);
        assert!(!cleared.is_empty() && cleared.iter().all(|p| p.payload.is_empty()));
        assert!(cleared.iter().all(|p| !p.topic.contains(&agent_id_text(&b.id))));
        assert_eq!((m.known(), m.online()), (1, 1));

        // Saved under another cluster name: not ours to clear.
        let mut other = Mirror::new(
            Topics::new("lab", "homeassistant"),
            Mode::Proxy,
            Duration::from_secs(5),
            Duration::from_secs(60),
        );
        assert_eq!(other.restore(saved, 0), (false, vec![]));
    }

    #[test]
    fn state_says_what_ls_says() {
        let v = state_json(&agent(1, Some(61.234)), true);
        assert_eq!(v["name"], "pi-1");
        assert_eq!(v["temperature_c"], 61.23);
        assert_eq!(v["throttled"], 0x50005);
        assert_eq!(v["throttled_now"], true);
        assert_eq!(v["online"], true);
        assert_eq!(v["tags"][0], "lab");
        assert_eq!(v["last_seen"], "1970-01-01T00:00:01.000Z");
    }
}
