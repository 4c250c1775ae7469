//! Signed event streams on the wire (version 5 on): an agent publishes its events to the
//! proxy, a subscriber reads them back. The events themselves travel as the publisher's
//! signed bytes (`wtd_keys::event`), which every subscriber verifies and chains; these
//! messages only carry them and say where a stream starts.
//!
//! ```text
//! agent                          proxy                                   subscriber
//!   |-- Request::PublishEvents -->|  checks: the sender is the publisher,   |
//!   |   {mission, entries}        |  an agent offering that mission; events |
//!   |<-- Response::EventsStored --|  verify and chain onto its copy         |
//!   |    {mission, seq}           |                                         |
//!   |   (a gap: the agent resends |<-- Request::Subscribe{missions, start} -|
//!   |    from seq + 1)            |   checks a grant (owner log it holds)   |
//!   |                             |-- Delivery::Accepted{logs} ------------>|
//!   |                             |-- Delivery::Trimmed{..} (retention) --->|
//!   |                             |-- Delivery::Event(bytes) ... live ----->|
//!   |                             |<-- SubscriberMsg::Ack{position} --------|
//! ```

use serde::{Deserialize, Serialize};

use crate::roster::Key;

/// One log's position: events of `mission` by `publisher` up to `seq`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogPosition {
    pub publisher: Key,
    pub mission: String,
    pub seq: u64,
}

/// Where a subscription starts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StartAt {
    /// Every event the proxy still holds.
    Start,
    /// Only events published from now on.
    Now,
    /// After these positions (logs not named start at their beginning).
    After(Vec<LogPosition>),
    /// Where this subscriber's named subscription last acknowledged (from the start if
    /// the proxy has no position for it).
    Kept,
}

/// What a subscriber asks for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscribe {
    /// Every event of these missions, by every publisher the subscriber's grants cover.
    /// Topics are filtered by the subscriber, so that a gap stays visible.
    pub missions: Vec<String>,
    pub start: StartAt,
    /// A durable subscription's name: the proxy keeps its acknowledged position, per
    /// subscriber key and name. `None`: nothing is kept.
    pub name: Option<String>,
}

/// Proxy to subscriber, on a subscription stream (inside [`crate::Response::Delivery`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Delivery {
    /// The subscription is served: each log it covers now, and the position it starts
    /// after (so a subscriber can tell "nothing new" from "held back").
    Accepted { logs: Vec<LogPosition> },
    /// One signed event.
    Event(Vec<u8>),
    /// The proxy no longer holds the events of this log before `first` (its retention
    /// dropped them, for `reason`).
    Trimmed {
        publisher: Key,
        mission: String,
        first: u64,
        reason: String,
    },
    /// The subscription is refused (no grant, a bad name): the reason says what to do.
    Refused(String),
}

/// Subscriber to proxy, on a subscription stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SubscriberMsg {
    /// Handled everything of this log up to the position (kept for a named subscription).
    Ack(LogPosition),
}
