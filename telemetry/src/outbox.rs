//! The bounded queue between whoever publishes (the roster, a call's relay, a mission
//! event) and the broker connection.
//!
//! Two kinds of message, two rules, so memory is bounded whatever the broker does:
//! - **retained** topics (state, availability, discovery) keep only their latest value:
//!   a state from a minute ago is worth nothing once a newer one exists. The table holds
//!   one entry per topic, and the bridge re-sends all of it on every (re)connect, so the
//!   broker always ends up with the current picture.
//! - **events** (calls, grants, mission events) wait in a FIFO of fixed size; when it is
//!   full the *oldest* is dropped (and counted), never the caller.
//!
//! Pushing takes a short std lock and never waits for the network.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// One MQTT message to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Publication {
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
}

impl Publication {
    pub fn retained(topic: String, payload: impl Into<Vec<u8>>) -> Self {
        Publication {
            topic,
            payload: payload.into(),
            retain: true,
        }
    }

    pub fn event(topic: String, payload: impl Into<Vec<u8>>) -> Self {
        Publication {
            topic,
            payload: payload.into(),
            retain: false,
        }
    }

    /// An empty retained message: the broker forgets the topic.
    pub fn clear(topic: String) -> Self {
        Publication::retained(topic, Vec::new())
    }
}

/// See the module docs.
#[derive(Debug)]
pub struct Outbox {
    /// The latest value of every retained topic we own (cleared topics are absent).
    retained: BTreeMap<String, Vec<u8>>,
    /// Retained topics changed since last sent (including cleared ones, to send the clear).
    dirty: BTreeSet<String>,
    events: VecDeque<Publication>,
    capacity: usize,
    dropped: u64,
}

impl Outbox {
    pub fn new(capacity: usize) -> Self {
        Outbox {
            retained: BTreeMap::new(),
            dirty: BTreeSet::new(),
            events: VecDeque::new(),
            capacity: capacity.max(1),
            dropped: 0,
        }
    }

    pub fn push(&mut self, p: Publication) {
        if p.retain {
            let changed = if p.payload.is_empty() {
                self.retained.remove(&p.topic).is_some()
            } else {
                self.retained.get(&p.topic) != Some(&p.payload)
            };
            if changed || p.payload.is_empty() {
                if !p.payload.is_empty() {
                    self.retained.insert(p.topic.clone(), p.payload);
                }
                self.dirty.insert(p.topic);
            }
        } else {
            if self.events.len() >= self.capacity {
                self.events.pop_front();
                self.dropped += 1;
            }
            self.events.push_back(p);
        }
    }

    /// The next message to hand to the broker: retained changes first (they are few and
    /// are the picture), then events oldest first.
    pub fn pop(&mut self) -> Option<Publication> {
        if let Some(topic) = self.dirty.pop_first() {
            let payload = self.retained.get(&topic).cloned().unwrap_or_default();
            return Some(Publication::retained(topic, payload));
        }
        self.events.pop_front()
    }

    /// After a (re)connect: every retained topic must be sent again, since the broker may
    /// have lost them (a restart without persistence) or be a different broker.
    pub fn resend_retained(&mut self) {
        self.dirty.extend(self.retained.keys().cloned());
    }

    /// Re-send the retained topics under `prefix` (Home Assistant came online).
    pub fn resend_under(&mut self, prefix: &str) {
        let topics: Vec<String> = self
            .retained
            .keys()
            .filter(|t| t.starts_with(prefix))
            .cloned()
            .collect();
        self.dirty.extend(topics);
    }

    /// Events waiting.
    pub fn queued(&self) -> usize {
        self.events.len() + self.dirty.len()
    }

    /// Events dropped because the queue was full, since start.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Retained topics we currently own.
    pub fn retained_topics(&self) -> usize {
        self.retained.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(n: u32) -> Publication {
        Publication::event("e".into(), n.to_string())
    }

    #[test]
    fn a_full_queue_drops_the_oldest_events() {
        let mut o = Outbox::new(3);
        for n in 0..5 {
            o.push(ev(n));
        }
        assert_eq!(o.dropped(), 2);
        let got: Vec<_> = std::iter::from_fn(|| o.pop()).map(|p| p.payload).collect();
        assert_eq!(got, vec![b"2".to_vec(), b"3".to_vec(), b"4".to_vec()]);
    }

    #[test]
    fn retained_topics_keep_only_their_latest_value_and_come_first() {
        let mut o = Outbox::new(10);
        o.push(ev(1));
        for n in 0..100 {
            o.push(Publication::retained("s".into(), n.to_string()));
        }
        assert_eq!(o.queued(), 2, "one state, one event: bounded however many states");
        assert_eq!(o.pop().unwrap(), Publication::retained("s".into(), "99"));
        assert_eq!(o.pop().unwrap(), ev(1));
        assert!(o.pop().is_none());
        o.push(Publication::retained("s".into(), "99"));
        assert!(o.pop().is_none(), "an unchanged value is not sent again");
    }

    #[test]
    fn reconnects_resend_everything_retained_and_clears_are_sent_once() {
        let mut o = Outbox::new(10);
        o.push(Publication::retained(
            "homeassistant/sensor/a/config".into(),
            "{}",
        ));
        o.push(Publication::retained("wtd/x/state".into(), "{}"));
        while o.pop().is_some() {}
        o.resend_under("homeassistant/");
        assert_eq!(o.pop().unwrap().topic, "homeassistant/sensor/a/config");
        assert!(o.pop().is_none());
        o.resend_retained();
        assert_eq!(std::iter::from_fn(|| o.pop()).count(), 2);
        o.push(Publication::clear("wtd/x/state".into()));
        assert_eq!(o.pop().unwrap(), Publication::clear("wtd/x/state".into()));
        o.resend_retained();
        assert_eq!(
            std::iter::from_fn(|| o.pop()).count(),
            1,
            "a cleared topic is not revived"
        );
        assert_eq!(o.retained_topics(), 1);
    }
}
