//! The roster: every connected agent, what it offers, its load, when it was last heard.
//!
//! Pure bookkeeping (time is passed in). Every change also marks its agent *dirty*, so the
//! caller cannot forget to tell watchers: [`Roster::take_changes`] turns what changed since
//! its last call into events, the latest change per agent only (coalesced), and the proxy
//! sends them to every watcher as one batch per interval. A heartbeat costs one map insert,
//! however many watchers there are.
//!
//! Each registration has a *generation*. When an agent reconnects before its old
//! connection timed out, the new registration replaces the old, and the old connection's
//! late cleanup (with the old generation) is ignored instead of removing the new one.

use std::collections::HashMap;

use wtd_wire::{Advert, AgentInfo, Key, LeaveReason, Load, RosterEvent};

#[derive(Debug)]
struct Entry {
    info: AgentInfo,
    generation: u64,
    /// The protocol version its session speaks (what it can be sent: jobs from 5, jobs
    /// with a selector from 6). 0 until [`Roster::set_version`].
    version: u16,
}

/// What changed about one agent since the last [`Roster::take_changes`].
#[derive(Debug, Default, Clone, Copy)]
struct Dirty {
    /// It left (kept even if it joined again since, so watchers see both).
    left: Option<LeaveReason>,
    /// It joined, or its advert changed.
    upsert: bool,
    /// It sent a heartbeat.
    load: bool,
}

#[derive(Debug, Default)]
pub struct Roster {
    agents: HashMap<Key, Entry>,
    next_generation: u64,
    /// At most one per agent present, plus one per agent gone since the last take.
    dirty: HashMap<Key, Dirty>,
}

/// What [`Roster::join`] did.
#[derive(Debug)]
pub struct Joined {
    pub generation: u64,
    /// The generation this one replaced, whose connection should now be closed.
    pub replaced: Option<u64>,
    pub event: RosterEvent,
}

impl Roster {
    pub fn len(&self) -> usize {
        self.agents.len()
    }

    pub fn is_empty(&self) -> bool {
        self.agents.is_empty()
    }

    pub fn contains(&self, id: &Key) -> bool {
        self.agents.contains_key(id)
    }

    /// The current registration of `id`, to find its connection.
    pub fn generation_of(&self, id: &Key) -> Option<u64> {
        self.agents.get(id).map(|e| e.generation)
    }

    /// Notes the protocol version the registration `generation` of `id` speaks.
    pub fn set_version(&mut self, id: &Key, generation: u64, version: u16) {
        if let Some(e) = self.agents.get_mut(id).filter(|e| e.generation == generation) {
            e.version = version;
        }
    }

    /// Every agent present, with the protocol version it speaks, unordered and uncopied
    /// (the job queue picks among them under this lock).
    pub fn agents(&self) -> impl Iterator<Item = (&AgentInfo, u16)> {
        self.agents.values().map(|e| (&e.info, e.version))
    }

    /// Everything the roster holds about `id` now (a copy), if it is in the roster.
    pub fn info_of(&self, id: &Key) -> Option<AgentInfo> {
        self.agents.get(id).map(|e| e.info.clone())
    }

    /// What `id` advertises now, if it is in the roster.
    pub fn advert_of(&self, id: &Key) -> Option<&Advert> {
        self.agents.get(id).map(|e| &e.info.advert)
    }

    /// What changed since the last call, as events to send to watchers: for each agent
    /// only its latest state. An agent that left shows as `Left` (then `Upsert` if it came
    /// back); one that joined shows as `Upsert` with its newest load; one that only
    /// heartbeat shows as `Load`. A join followed by a leave shows as `Left` only.
    pub fn take_changes(&mut self) -> Vec<RosterEvent> {
        let mut out = Vec::with_capacity(self.dirty.len());
        for (id, d) in self.dirty.drain() {
            if let Some(reason) = d.left {
                out.push(RosterEvent::Left { id, reason });
            }
            let Some(e) = self.agents.get(&id) else { continue };
            if d.upsert {
                out.push(RosterEvent::Upsert(e.info.clone()));
            } else if d.load {
                out.push(RosterEvent::Load {
                    id,
                    load: e.info.load.clone(),
                    last_seen_ms: e.info.last_seen_ms,
                });
            }
        }
        out
    }

    pub fn snapshot(&self) -> Vec<AgentInfo> {
        let mut all: Vec<AgentInfo> = self.agents.values().map(|e| e.info.clone()).collect();
        all.sort_by(|a, b| a.advert.name.cmp(&b.advert.name).then(a.id.0.cmp(&b.id.0)));
        all
    }

    /// Registers an agent (or re-registers it after a reconnect).
    pub fn join(&mut self, id: Key, advert: Advert, now_ms: u64) -> Joined {
        self.next_generation += 1;
        let generation = self.next_generation;
        let info = AgentInfo {
            id,
            advert,
            load: Load::default(),
            last_seen_ms: now_ms,
        };
        let replaced = self
            .agents
            .insert(
                id,
                Entry {
                    info: info.clone(),
                    generation,
                    version: 0,
                },
            )
            .map(|old| old.generation);
        self.dirty.entry(id).or_default().upsert = true;
        Joined {
            generation,
            replaced,
            event: RosterEvent::Upsert(info),
        }
    }

    /// A heartbeat from the registration `generation`.
    pub fn heartbeat(&mut self, id: &Key, generation: u64, load: Load, now_ms: u64) -> Option<RosterEvent> {
        let e = self.agents.get_mut(id).filter(|e| e.generation == generation)?;
        e.info.load = load.clone();
        e.info.last_seen_ms = now_ms;
        self.dirty.entry(*id).or_default().load = true;
        Some(RosterEvent::Load {
            id: *id,
            load,
            last_seen_ms: now_ms,
        })
    }

    /// A new advert (the agent's missions changed).
    pub fn readvertise(
        &mut self,
        id: &Key,
        generation: u64,
        advert: Advert,
        now_ms: u64,
    ) -> Option<RosterEvent> {
        let e = self.agents.get_mut(id).filter(|e| e.generation == generation)?;
        e.info.advert = advert;
        e.info.last_seen_ms = now_ms;
        self.dirty.entry(*id).or_default().upsert = true;
        Some(RosterEvent::Upsert(e.info.clone()))
    }

    /// Removes the registration `generation`, if it is still the current one.
    pub fn leave(&mut self, id: &Key, generation: u64, reason: LeaveReason) -> Option<RosterEvent> {
        if self.agents.get(id)?.generation != generation {
            return None;
        }
        self.agents.remove(id);
        self.dirty.insert(
            *id,
            Dirty {
                left: Some(reason),
                upsert: false,
                load: false,
            },
        );
        Some(RosterEvent::Left { id: *id, reason })
    }

    /// Removes agents silent for longer than `after_ms`; returns their events and
    /// generations (so their connections can be closed).
    pub fn reap(&mut self, now_ms: u64, after_ms: u64) -> Vec<(u64, RosterEvent)> {
        let silent: Vec<(Key, u64)> = self
            .agents
            .iter()
            .filter(|(_, e)| now_ms.saturating_sub(e.info.last_seen_ms) > after_ms)
            .map(|(k, e)| (*k, e.generation))
            .collect();
        silent
            .into_iter()
            .filter_map(|(id, g)| Some((g, self.leave(&id, g, LeaveReason::Silent)?)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn advert(name: &str) -> Advert {
        Advert {
            name: name.into(),
            owners: vec![],
            missions: vec![],
            tags: vec![],
            model: None,
            software: String::new(),
            warnings: vec![],
            enrollment: None,
        }
    }

    #[test]
    fn join_heartbeat_leave() {
        let mut r = Roster::default();
        let id = Key([1; 32]);
        let j = r.join(id, advert("a"), 1000);
        assert!(j.replaced.is_none());
        assert!(r.heartbeat(&id, j.generation, Load::default(), 1500).is_some());
        assert_eq!(r.snapshot()[0].last_seen_ms, 1500);
        assert!(r.leave(&id, j.generation, LeaveReason::Graceful).is_some());
        assert!(r.is_empty());
    }

    #[test]
    fn a_reconnect_replaces_and_the_old_cleanup_is_ignored() {
        let mut r = Roster::default();
        let id = Key([1; 32]);
        let old = r.join(id, advert("a"), 1000);
        let new = r.join(id, advert("a"), 1100);
        assert_eq!(new.replaced, Some(old.generation));
        assert!(r.heartbeat(&id, old.generation, Load::default(), 1200).is_none());
        assert!(r.leave(&id, old.generation, LeaveReason::Silent).is_none());
        assert!(r.contains(&id));
    }

    #[test]
    fn the_reaper_drops_only_silent_agents() {
        let mut r = Roster::default();
        let (a, b) = (Key([1; 32]), Key([2; 32]));
        let ja = r.join(a, advert("a"), 1000);
        let jb = r.join(b, advert("b"), 1000);
        r.heartbeat(&b, jb.generation, Load::default(), 2900);
        assert!(
            r.reap(3000, 2000).is_empty(),
            "exactly at the limit is not yet silent"
        );
        let gone = r.reap(3001, 2000);
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].0, ja.generation);
        assert!(r.contains(&b) && !r.contains(&a));
    }

    fn sorted(mut events: Vec<RosterEvent>) -> Vec<String> {
        let mut out: Vec<String> = events
            .drain(..)
            .map(|e| match e {
                RosterEvent::Snapshot(_) => "snapshot".to_string(),
                RosterEvent::Upsert(a) => format!("upsert {} {}", a.id.0[0], a.last_seen_ms),
                RosterEvent::Load { id, last_seen_ms, .. } => format!("load {} {last_seen_ms}", id.0[0]),
                RosterEvent::Left { id, reason } => format!("left {} {reason:?}", id.0[0]),
            })
            .collect();
        out.sort();
        out
    }

    #[test]
    fn changes_are_coalesced_to_the_latest_per_agent() {
        let mut r = Roster::default();
        let (a, b, c) = (Key([1; 32]), Key([2; 32]), Key([3; 32]));
        let ja = r.join(a, advert("a"), 1000);
        let jb = r.join(b, advert("b"), 1000);
        for t in [1100, 1200, 1300] {
            r.heartbeat(&a, ja.generation, Load::default(), t);
        }
        // Joined then heartbeat: one upsert, carrying the newest state.
        assert_eq!(sorted(r.take_changes()), ["upsert 1 1300", "upsert 2 1000"]);
        assert!(r.take_changes().is_empty(), "taken changes are not sent twice");

        // Many heartbeats in one interval: one load, the latest.
        for t in [2000, 2100, 2200] {
            r.heartbeat(&a, ja.generation, Load::default(), t);
            r.heartbeat(&b, jb.generation, Load::default(), t + 1);
        }
        assert_eq!(sorted(r.take_changes()), ["load 1 2200", "load 2 2201"]);

        // A heartbeat then a leave: the leave. A join then a leave: the leave only.
        r.heartbeat(&a, ja.generation, Load::default(), 3000);
        r.leave(&a, ja.generation, LeaveReason::Graceful);
        let jc = r.join(c, advert("c"), 3000);
        r.leave(&c, jc.generation, LeaveReason::Silent);
        assert_eq!(sorted(r.take_changes()), ["left 1 Graceful", "left 3 Silent"]);

        // A leave then a rejoin in one interval: both, so no leave is lost.
        r.leave(&b, jb.generation, LeaveReason::Graceful);
        let jb2 = r.join(b, advert("b"), 4000);
        r.heartbeat(&b, jb2.generation, Load::default(), 4100);
        assert_eq!(sorted(r.take_changes()), ["left 2 Graceful", "upsert 2 4100"]);

        // The reaper's leaves are changes too.
        r.reap(9000, 2000);
        assert_eq!(sorted(r.take_changes()), ["left 2 Silent"]);
        assert!(r.is_empty() && r.dirty.is_empty());
    }

    #[test]
    fn pending_changes_stay_bounded_by_the_agents() {
        let mut r = Roster::default();
        let gens: Vec<(Key, u64)> = (0..100u8)
            .map(|i| (Key([i; 32]), r.join(Key([i; 32]), advert("a"), 0).generation))
            .collect();
        for t in 0..1000 {
            for (id, g) in &gens {
                r.heartbeat(id, *g, Load::default(), t);
            }
        }
        assert_eq!(r.dirty.len(), 100);
        assert_eq!(r.take_changes().len(), 100);
    }
}
