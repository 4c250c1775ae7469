//! The roster: every connected agent, what it offers, its load, when it was last heard.
//!
//! Pure bookkeeping (time is passed in). Every change returns the [`RosterEvent`] to send
//! to watchers, so the caller cannot forget to tell them.
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
}

#[derive(Debug, Default)]
pub struct Roster {
    agents: HashMap<Key, Entry>,
    next_generation: u64,
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

    /// What `id` advertises now, if it is in the roster.
    pub fn advert_of(&self, id: &Key) -> Option<&Advert> {
        self.agents.get(id).map(|e| &e.info.advert)
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
                },
            )
            .map(|old| old.generation);
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
        Some(RosterEvent::Upsert(e.info.clone()))
    }

    /// Removes the registration `generation`, if it is still the current one.
    pub fn leave(&mut self, id: &Key, generation: u64, reason: LeaveReason) -> Option<RosterEvent> {
        if self.agents.get(id)?.generation != generation {
            return None;
        }
        self.agents.remove(id);
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
}
