//! What the dashboard shows, as pure bookkeeping (time is passed in): a card per agent,
//! kept a while after it goes offline, and a bounded ring of recent happenings (agents
//! joining and leaving, relayed sessions, calls the agents reported, grants, revocations,
//! adoptions), each with a sequence number.
//!
//! A page catches up from here whatever it missed: [`Feed::update_since`] gives the cards
//! changed since the version it has and the happenings after the sequence number it saw
//! last (the SSE `Last-Event-ID`), or everything when it is too far behind. Nothing here
//! grows with time or with the number of pages watching.
//!
//! Call reports are the agents' word, so they are checked before they are shown: the
//! report must come from an agent in the roster, for a mission it offers, naming a caller
//! whose session the proxy really relayed to that agent ([`Feed::check_report`]). An agent
//! can therefore report only calls made to itself, by someone who did connect to it.

use std::collections::{HashMap, VecDeque};

use serde_json::{json, Value};
use wtd_wire::{AgentInfo, CallReport, Key, LeaveReason, RosterEvent};

use crate::defaults::{
    DASHBOARD_EVENTS, DASHBOARD_OFFLINE_CARDS, DASHBOARD_OFFLINE_KEPT, DASHBOARD_RELAY_PAIRS,
    DASHBOARD_REPORT_GRACE,
};

/// Why a call report was not shown.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReportRefused {
    /// The agent is not (or no longer) in the roster.
    #[error("the reporting agent is not in the roster")]
    NotInRoster,
    /// The agent does not offer the mission it reports a call of.
    #[error("the agent reports a call of mission {0}, which it does not offer")]
    MissionNotOffered(String),
    /// No session from that caller was relayed to this agent (recently): the report is
    /// about someone else's call, or made up.
    #[error("no session from {0} was relayed to this agent; an agent reports only its own calls")]
    NoSuchSession(String),
}

#[derive(Debug)]
struct Card {
    info: AgentInfo,
    online: bool,
    /// An owner it names adopted it, by that owner's log as the proxy stores it.
    adopted: bool,
    /// When and why it went offline.
    left: Option<(u64, LeaveReason)>,
    /// The feed's card version at its last change.
    version: u64,
}

/// Sessions relayed from one caller to one agent: how many are open, and when the last was
/// seen (opened or closed).
#[derive(Debug, Clone, Copy, Default)]
struct Pair {
    open: u32,
    last_ms: u64,
}

/// What a page needs to catch up; see [`Feed::update_since`].
#[derive(Debug, Clone, PartialEq)]
pub struct Update {
    /// The cards are all the cards (replace what you have), not only those that changed.
    pub full: bool,
    pub cards: Vec<Value>,
    /// Ids of cards forgotten since (after being offline too long).
    pub removed: Vec<String>,
    /// The happenings are all the ring holds (clear what you have): the page missed some.
    pub reset: bool,
    pub events: Vec<Value>,
    /// The card version and last sequence number this update brings the page to.
    pub version: u64,
    pub seq: u64,
}

impl Update {
    pub fn is_empty(&self) -> bool {
        !self.full
            && !self.reset
            && self.cards.is_empty()
            && self.removed.is_empty()
            && self.events.is_empty()
    }

    pub fn to_json(&self, now_ms: u64) -> Value {
        json!({
            "now_ms": now_ms,
            "full": self.full,
            "cards": self.cards,
            "removed": self.removed,
            "reset": self.reset,
            "events": self.events,
            "seq": self.seq,
        })
    }
}

#[derive(Debug, Default)]
pub struct Feed {
    cards: HashMap<Key, Card>,
    /// Bumped at every card change.
    version: u64,
    /// Cards forgotten, with the version at which they were: a page older than the oldest
    /// here gets every card again instead.
    removed: VecDeque<(u64, Key)>,
    events: VecDeque<(u64, Value)>,
    /// The sequence number of the newest happening (0: none yet).
    seq: u64,
    /// By (agent, caller).
    relays: HashMap<(Key, Key), Pair>,
}

/// An id in its text form (`wtd1...`), and its short form for people.
pub fn id_text(k: &Key) -> String {
    k.parse()
        .map_or_else(|_| "invalid-key".to_string(), |k| k.to_string())
}

pub fn short(k: &Key) -> String {
    k.parse()
        .map_or_else(|_| "invalid-key".to_string(), |k| k.short())
}

impl Feed {
    pub fn version(&self) -> u64 {
        self.version
    }

    pub fn seq(&self) -> u64 {
        self.seq
    }

    pub fn cards_len(&self) -> usize {
        self.cards.len()
    }

    pub fn events_len(&self) -> usize {
        self.events.len()
    }

    /// The agent's name, if it has a card.
    pub fn name_of(&self, id: &Key) -> Option<&str> {
        self.cards.get(id).map(|c| c.info.advert.name.as_str())
    }

    /// Every card's id and claimed owners, to work out adoptions (outside the feed's lock).
    pub fn claims(&self) -> Vec<(Key, Vec<Key>)> {
        self.cards
            .iter()
            .map(|(id, c)| (*id, c.info.advert.owners.clone()))
            .collect()
    }

    fn touch(&mut self, id: &Key) {
        self.version += 1;
        if let Some(c) = self.cards.get_mut(id) {
            c.version = self.version;
        }
    }

    /// Adds a happening to the ring (dropping the oldest past [`DASHBOARD_EVENTS`]);
    /// returns its sequence number.
    pub fn push(&mut self, mut event: Value) -> u64 {
        self.seq += 1;
        if let Some(o) = event.as_object_mut() {
            o.insert("seq".into(), self.seq.into());
        }
        self.events.push_back((self.seq, event));
        while self.events.len() > DASHBOARD_EVENTS {
            self.events.pop_front();
        }
        self.seq
    }

    /// Applies a roster change. `adopted` says whether an agent's claimed owners adopted
    /// it (looked up by the caller in the stored owner logs).
    pub fn apply(&mut self, event: &RosterEvent, now_ms: u64, adopted: &dyn Fn(&AgentInfo) -> bool) {
        match event {
            RosterEvent::Snapshot(all) => {
                // Whoever is not in it left while we were not looking.
                let present: std::collections::HashSet<Key> = all.iter().map(|a| a.id).collect();
                let gone: Vec<Key> = self
                    .cards
                    .iter()
                    .filter(|(id, c)| c.online && !present.contains(id))
                    .map(|(id, _)| *id)
                    .collect();
                for id in gone {
                    self.went_offline(&id, LeaveReason::Silent, now_ms);
                }
                for a in all {
                    self.upsert(a, adopted(a), now_ms);
                }
            }
            RosterEvent::Upsert(a) => self.upsert(a, adopted(a), now_ms),
            RosterEvent::Load {
                id,
                load,
                last_seen_ms,
            } => {
                if let Some(c) = self.cards.get_mut(id) {
                    c.info.load = load.clone();
                    c.info.last_seen_ms = *last_seen_ms;
                    self.touch(id);
                }
            }
            RosterEvent::Left { id, reason } => self.went_offline(id, *reason, now_ms),
        }
        self.prune(now_ms);
    }

    fn upsert(&mut self, a: &AgentInfo, adopted: bool, now_ms: u64) {
        let came = self.cards.get(&a.id).is_none_or(|c| !c.online);
        self.cards.insert(
            a.id,
            Card {
                info: a.clone(),
                online: true,
                adopted,
                left: None,
                version: 0,
            },
        );
        self.touch(&a.id);
        if came {
            self.push(json!({
                "type": "joined",
                "at_ms": now_ms,
                "agent": id_text(&a.id),
                "agent_name": a.advert.name,
            }));
        }
    }

    fn went_offline(&mut self, id: &Key, reason: LeaveReason, now_ms: u64) {
        let Some(c) = self.cards.get_mut(id).filter(|c| c.online) else {
            return;
        };
        c.online = false;
        c.left = Some((now_ms, reason));
        let name = c.info.advert.name.clone();
        self.touch(id);
        // A replaced registration is the same agent reconnecting: it comes right back.
        if reason != LeaveReason::Replaced {
            self.push(json!({
                "type": "left",
                "at_ms": now_ms,
                "agent": id_text(id),
                "agent_name": name,
                "reason": leave_word(reason),
            }));
        }
    }

    /// Sets whether `id` is adopted (after an owner published an adoption or disowning).
    pub fn set_adopted(&mut self, id: &Key, adopted: bool) {
        if self.cards.get(id).is_some_and(|c| c.adopted != adopted) {
            if let Some(c) = self.cards.get_mut(id) {
                c.adopted = adopted;
            }
            self.touch(id);
        }
    }

    /// Forgets cards offline for longer than [`DASHBOARD_OFFLINE_KEPT`], and the oldest
    /// offline ones past [`DASHBOARD_OFFLINE_CARDS`]; and relay pairs long closed.
    pub fn prune(&mut self, now_ms: u64) {
        let kept = DASHBOARD_OFFLINE_KEPT.as_millis() as u64;
        let mut offline: Vec<(u64, Key)> = self
            .cards
            .iter()
            .filter_map(|(id, c)| c.left.filter(|_| !c.online).map(|(at, _)| (at, *id)))
            .collect();
        offline.sort_by_key(|(at, id)| (*at, id.0));
        let excess = offline.len().saturating_sub(DASHBOARD_OFFLINE_CARDS);
        let forget: Vec<Key> = offline
            .iter()
            .enumerate()
            .filter(|(i, (at, _))| *i < excess || now_ms.saturating_sub(*at) > kept)
            .map(|(_, (_, id))| *id)
            .collect();
        for id in forget {
            self.cards.remove(&id);
            self.version += 1;
            self.removed.push_back((self.version, id));
            while self.removed.len() > DASHBOARD_OFFLINE_CARDS {
                self.removed.pop_front();
            }
        }
        if self.relays.len() > DASHBOARD_RELAY_PAIRS {
            let grace = DASHBOARD_REPORT_GRACE.as_millis() as u64;
            self.relays
                .retain(|_, p| p.open > 0 || now_ms.saturating_sub(p.last_ms) <= grace);
        }
    }

    /// The proxy relayed a session from `caller` to `agent` (the one thing about calls it
    /// sees for itself). `name` is the agent's in the proxy's roster, used when this feed
    /// has no card for it yet.
    pub fn relay_opened(&mut self, agent: &Key, caller: &Key, name: Option<&str>, now_ms: u64) {
        if self.relays.len() >= DASHBOARD_RELAY_PAIRS {
            self.prune(now_ms);
        }
        // Still full of open sessions: not remembered, so reports for it are not shown.
        if self.relays.len() < DASHBOARD_RELAY_PAIRS || self.relays.contains_key(&(*agent, *caller)) {
            let p = self.relays.entry((*agent, *caller)).or_default();
            p.open += 1;
            p.last_ms = now_ms;
        }
        let name = self.name_of(agent).or(name).unwrap_or_default().to_string();
        self.push(json!({
            "type": "session",
            "at_ms": now_ms,
            "caller": short(caller),
            "agent": id_text(agent),
            "agent_name": name,
        }));
    }

    pub fn relay_closed(&mut self, agent: &Key, caller: &Key, now_ms: u64) {
        if let Some(p) = self.relays.get_mut(&(*agent, *caller)) {
            p.open = p.open.saturating_sub(1);
            p.last_ms = now_ms;
        }
    }

    /// Whether a report from `agent` may be shown (see the module docs).
    pub fn check_report(&self, agent: &Key, report: &CallReport, now_ms: u64) -> Result<(), ReportRefused> {
        let card = self
            .cards
            .get(agent)
            .filter(|c| c.online)
            .ok_or(ReportRefused::NotInRoster)?;
        if !card.info.advert.missions.iter().any(|m| m.name == report.mission) {
            return Err(ReportRefused::MissionNotOffered(report.mission.clone()));
        }
        let grace = DASHBOARD_REPORT_GRACE.as_millis() as u64;
        let relayed = self
            .relays
            .get(&(*agent, report.caller))
            .is_some_and(|p| p.open > 0 || now_ms.saturating_sub(p.last_ms) <= grace);
        if !relayed {
            return Err(ReportRefused::NoSuchSession(short(&report.caller)));
        }
        Ok(())
    }

    /// Checks a report from `agent` and, if it passes, adds it to the ring.
    pub fn report(&mut self, agent: &Key, report: &CallReport, now_ms: u64) -> Result<u64, ReportRefused> {
        self.check_report(agent, report, now_ms)?;
        let name = self.name_of(agent).unwrap_or_default().to_string();
        Ok(self.push(json!({
            "type": "call",
            "at_ms": now_ms,
            "caller": short(&report.caller),
            "agent": id_text(agent),
            "agent_name": name,
            "mission": report.mission,
            "function": report.function,
            "latency_ms": report.latency_ms,
            "allowed": report.allowed,
            "outcome": report.outcome,
            "reason": report.reason,
        })))
    }

    /// What a page that has card version `version` (`None`: nothing yet) and saw the
    /// happenings up to `seq` needs to be current.
    pub fn update_since(&self, version: Option<u64>, seq: u64) -> Update {
        let oldest_removal = self.removed.front().map_or(u64::MAX, |(v, _)| *v);
        // A page too old to be told what was removed gets every card again.
        let full = match version {
            None => true,
            Some(v) => v + 1 < oldest_removal && self.removed.len() >= DASHBOARD_OFFLINE_CARDS,
        };
        let since = version.unwrap_or(0);
        let mut cards: Vec<&Card> = self
            .cards
            .values()
            .filter(|c| full || c.version > since)
            .collect();
        cards.sort_by(|a, b| {
            (a.info.advert.name.as_str(), a.info.id.0).cmp(&(b.info.advert.name.as_str(), b.info.id.0))
        });
        let removed = if full {
            Vec::new()
        } else {
            self.removed
                .iter()
                .filter(|(v, _)| *v > since)
                .map(|(_, id)| id_text(id))
                .collect()
        };
        let oldest = self.events.front().map_or(self.seq + 1, |(s, _)| *s);
        // Missed some (they fell off the ring), or a page from before a proxy restart.
        let reset = seq + 1 < oldest || seq > self.seq;
        let events = self
            .events
            .iter()
            .filter(|(s, _)| reset || *s > seq)
            .map(|(_, e)| e.clone())
            .collect();
        Update {
            full,
            cards: cards.into_iter().map(card_json).collect(),
            removed,
            reset,
            events,
            version: self.version,
            seq: self.seq,
        }
    }
}

fn leave_word(r: LeaveReason) -> &'static str {
    match r {
        LeaveReason::Graceful => "said goodbye",
        LeaveReason::Silent => "went silent",
        LeaveReason::Replaced => "reconnected",
    }
}

/// What the firmware's throttling bits mean, in words (`vcgencmd get_throttled`).
pub fn throttled_words(bits: u32) -> Vec<&'static str> {
    let mut out = Vec::new();
    for (bit, word) in [
        (0, "under-voltage now"),
        (1, "arm frequency capped now"),
        (2, "throttled now"),
        (3, "soft temperature limit now"),
        (16, "under-voltage since boot"),
        (17, "frequency capped since boot"),
        (18, "throttled since boot"),
        (19, "soft temperature limit since boot"),
    ] {
        if bits & (1 << bit) != 0 {
            out.push(word);
        }
    }
    out
}

fn card_json(c: &Card) -> Value {
    let a = &c.info;
    let l = &a.load;
    let missions: Vec<Value> = a
        .advert
        .missions
        .iter()
        .map(|m| {
            json!({
                "name": m.name,
                "version": m.version,
                "functions": m.functions.iter().map(|f| f.name.as_str()).collect::<Vec<_>>(),
            })
        })
        .collect();
    let owners: Vec<String> = a.advert.owners.iter().map(short).collect();
    json!({
        "id": id_text(&a.id),
        "short": short(&a.id),
        "name": a.advert.name,
        "owners": owners,
        "adopted": c.adopted,
        "online": c.online,
        "last_seen_ms": a.last_seen_ms,
        "left_ms": c.left.map(|(at, _)| at),
        "left_reason": c.left.map(|(_, r)| leave_word(r)),
        "load1": l.load1,
        "cpu_percent": l.cpu_percent,
        "mem_used_kb": l.mem_used_kb,
        "mem_total_kb": l.mem_total_kb,
        "temperature_c": l.temperature_c,
        "throttled": l.throttled.map(|b| b & 0xf != 0),
        "throttled_words": l.throttled.map(throttled_words).unwrap_or_default(),
        "missions": missions,
        "tags": a.advert.tags,
        "model": a.advert.model,
        "software": a.advert.software,
        "warnings": a.advert.warnings.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use wtd_wire::{Advert, FunctionInfo, Load, MissionInfo};

    fn key(n: u8) -> Key {
        Key(*wtd_keys::SecretKey::from_seed(&[n; 32]).public().as_bytes())
    }

    fn agent(n: u8, name: &str) -> AgentInfo {
        AgentInfo {
            id: key(n),
            advert: Advert {
                name: name.into(),
                owners: vec![key(100)],
                missions: vec![MissionInfo {
                    name: "demo".into(),
                    version: "1".into(),
                    description: String::new(),
                    functions: vec![FunctionInfo {
                        name: "echo".into(),
                        description: String::new(),
                        idempotent: true,
                    }],
                }],
                tags: vec!["odd".into()],
                model: None,
                software: "wtd 0.1.0".into(),
                warnings: vec![],
                enrollment: None,
            },
            load: Load::default(),
            last_seen_ms: 1000,
        }
    }

    fn report(caller: u8, mission: &str) -> CallReport {
        CallReport {
            caller: key(caller),
            mission: mission.into(),
            function: "echo".into(),
            latency_ms: 3,
            allowed: true,
            outcome: "ok".into(),
            reason: String::new(),
        }
    }

    const NO: &dyn Fn(&AgentInfo) -> bool = &|_| false;

    #[test]
    fn a_session_to_an_agent_the_feed_has_not_heard_of_yet_is_named_from_the_roster() {
        let mut f = Feed::default();
        // The roster's batch with pi-7 has not reached the feed; the relay names it.
        f.relay_opened(&key(7), &key(50), Some("pi-7"), 1000);
        // Once the feed has its card, the card's name is used.
        f.apply(&RosterEvent::Upsert(agent(8, "pi-8")), 1000, NO);
        f.relay_opened(&key(8), &key(50), None, 1001);
        let names: Vec<&Value> = f
            .events
            .iter()
            .filter(|(_, e)| e["type"] == "session")
            .map(|(_, e)| &e["agent_name"])
            .collect();
        assert_eq!(names, ["pi-7", "pi-8"]);
    }

    #[test]
    fn a_report_for_another_agents_call_is_refused() {
        let mut f = Feed::default();
        f.apply(&RosterEvent::Upsert(agent(1, "pi-1")), 1000, NO);
        f.apply(&RosterEvent::Upsert(agent(2, "pi-2")), 1000, NO);
        // Bob (key 50) has a session to pi-2 only.
        f.relay_opened(&key(2), &key(50), None, 1000);
        assert_eq!(f.report(&key(2), &report(50, "demo"), 1001).map(|_| ()), Ok(()));
        // pi-1 claims a call from Bob: no session of his ever reached pi-1.
        assert!(matches!(
            f.report(&key(1), &report(50, "demo"), 1001),
            Err(ReportRefused::NoSuchSession(_))
        ));
        // A mission it does not offer; an agent not in the roster.
        assert_eq!(
            f.report(&key(2), &report(50, "other"), 1001),
            Err(ReportRefused::MissionNotOffered("other".into()))
        );
        assert_eq!(
            f.report(&key(3), &report(50, "demo"), 1001),
            Err(ReportRefused::NotInRoster)
        );
        // After the session closed, reports are taken for a grace period, then not.
        f.relay_closed(&key(2), &key(50), 2000);
        assert!(f.report(&key(2), &report(50, "demo"), 2001).is_ok());
        let late = 2000 + DASHBOARD_REPORT_GRACE.as_millis() as u64 + 1;
        assert!(f.report(&key(2), &report(50, "demo"), late).is_err());
        // An agent gone offline reports nothing.
        f.relay_opened(&key(2), &key(50), None, 3000);
        f.apply(
            &RosterEvent::Left {
                id: key(2),
                reason: LeaveReason::Silent,
            },
            3000,
            NO,
        );
        assert_eq!(
            f.report(&key(2), &report(50, "demo"), 3001),
            Err(ReportRefused::NotInRoster)
        );
    }

    #[test]
    fn the_ring_is_bounded_and_a_page_too_far_behind_is_reset() {
        let mut f = Feed::default();
        f.apply(&RosterEvent::Upsert(agent(1, "pi-1")), 1000, NO);
        for i in 0..(DASHBOARD_EVENTS as u64 * 3) {
            f.relay_opened(&key(1), &key(50), None, 1000 + i);
        }
        assert_eq!(f.events_len(), DASHBOARD_EVENTS);
        let now = f.seq();
        // A page that saw everything but the last two gets those two.
        let u = f.update_since(Some(f.version()), now - 2);
        assert!(!u.reset && !u.full);
        assert_eq!(u.events.len(), 2);
        assert_eq!(u.events[1]["seq"], now);
        // One that missed more than the ring holds starts over from the ring.
        let u = f.update_since(Some(f.version()), 1);
        assert!(u.reset);
        assert_eq!(u.events.len(), DASHBOARD_EVENTS);
        // A page from before a restart (a number we never reached) too.
        assert!(f.update_since(None, now + 10).reset);
        // Up to date: nothing to send.
        assert!(f.update_since(Some(f.version()), now).is_empty());
        // The relay memory is bounded too.
        for i in 0..(DASHBOARD_RELAY_PAIRS as u32 + 100) {
            let mut caller = [0u8; 32];
            caller[..4].copy_from_slice(&i.to_be_bytes());
            f.relay_opened(&key(1), &Key(caller), None, 5000);
        }
        assert!(f.relays.len() <= DASHBOARD_RELAY_PAIRS);
    }

    #[test]
    fn offline_agents_stay_a_while_then_go() {
        let mut f = Feed::default();
        f.apply(
            &RosterEvent::Snapshot(vec![agent(1, "pi-1"), agent(2, "pi-2")]),
            1000,
            NO,
        );
        let v = f.version();
        f.apply(
            &RosterEvent::Left {
                id: key(1),
                reason: LeaveReason::Silent,
            },
            2000,
            NO,
        );
        let u = f.update_since(Some(v), f.seq());
        assert_eq!(u.cards.len(), 1);
        assert_eq!(
            (u.cards[0]["name"].as_str(), u.cards[0]["online"].as_bool()),
            (Some("pi-1"), Some(false))
        );
        assert_eq!(u.cards[0]["left_reason"], "went silent");
        assert_eq!(f.cards_len(), 2, "kept, shown offline");
        // A snapshot without pi-2 (we lagged) marks it offline too.
        f.apply(&RosterEvent::Snapshot(vec![]), 3000, NO);
        assert!(f.update_since(None, 0).cards.iter().all(|c| c["online"] == false));
        let v = f.version();
        let later = 3000 + DASHBOARD_OFFLINE_KEPT.as_millis() as u64 + 1;
        f.prune(later);
        assert_eq!(f.cards_len(), 0);
        let u = f.update_since(Some(v), f.seq());
        assert_eq!(u.removed.len(), 2);
        // Coming back: online again, and a "joined" happening.
        f.apply(&RosterEvent::Upsert(agent(1, "pi-1")), later, NO);
        let all = f.update_since(None, 0);
        assert_eq!(all.cards[0]["online"], true);
        assert!(all.events.iter().filter(|e| e["type"] == "joined").count() >= 3);
        // Many offline agents: only the newest are kept.
        for i in 0..(DASHBOARD_OFFLINE_CARDS as u32 + 50) {
            let mut id = [0u8; 32];
            id[..4].copy_from_slice(&i.to_be_bytes());
            let mut a = agent(1, "x");
            a.id = Key(id);
            f.apply(&RosterEvent::Upsert(a), later, NO);
            f.apply(
                &RosterEvent::Left {
                    id: Key(id),
                    reason: LeaveReason::Graceful,
                },
                later + i as u64,
                NO,
            );
        }
        assert!(f.cards_len() <= DASHBOARD_OFFLINE_CARDS + 1);
    }

    #[test]
    fn cards_say_adopted_and_throttling_in_words() {
        let mut f = Feed::default();
        let mut a = agent(1, "pi-1");
        a.load.throttled = Some(0x50005);
        a.load.temperature_c = Some(81.5);
        f.apply(&RosterEvent::Upsert(a), 1000, &|_| true);
        let c = &f.update_since(None, 0).cards[0];
        assert_eq!(c["adopted"], true);
        assert_eq!(c["throttled"], true);
        assert_eq!(c["throttled_words"][0], "under-voltage now");
        assert_eq!(c["temperature_c"], 81.5);
        let v = f.version();
        f.set_adopted(&key(1), false);
        let u = f.update_since(Some(v), f.seq());
        assert_eq!(u.cards[0]["adopted"], false);
    }
}
