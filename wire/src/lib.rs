//! The wire protocol between agents, the proxy and the `wtd` CLI. Pure: messages and their
//! encoding, no sockets.
//!
//! # Protocol flow
//!
//! Everyone connects *out* to the proxy over QUIC (see `wtd-transport`); TLS has already
//! proved each side's ed25519 key before any of this is read. Every message is one frame:
//! a u32 big-endian length, then the message in postcard encoding.
//!
//! ```text
//! agent                                   proxy                                  CLI
//!   |-- open control stream ------------------>|                                     |
//!   |-- AgentHello{version, advert, heads} --->|  admission: open, or adopted by an   |
//!   |                                          |  allowed owner (else kept waiting)  |
//!   |<-- Welcome | Refused{reason} ------------|<-- Request::Waiting (adopt it) -----|
//!   |<-- Log{owner, entries} (catch-up) -------|                                     |
//!   |-- Heartbeat{load} every ~1 s ----------->|-- roster deltas to watchers ------->|
//!   |-- MissionEvent{mission, line} (v4) ----->|-- to MQTT, if it has a bridge       |
//!   |== Request::PublishEvents (v5, own stream)>|<-- Request::Subscribe (v5) --------|
//!   |<== EventsStored{mission, seq} ============|-- Delivery::Event (signed) ... --->|
//!   |<-- Log{owner, entries} (pushed live) ----|<-- Request::PublishLog{entries} ----|
//!   |-- Leaving (on SIGTERM) ----------------->|   (removed from the roster at once) |
//!                                              |<-- Request::Roster / Watch ---------|
//!                                              |-- Response::Roster / Event... ----->|
//! ```
//!
//! The proxy is trusted for nothing but delivery: owner-log entries travel as the owner's
//! signed bytes and every agent verifies them (`wtd_keys::log`), so a proxy that alters,
//! reorders, drops or rolls back entries is caught. Roster data (names, load) is
//! self-reported by agents and only informs the choice of agent; it authorizes nothing.
//!
//! # Layout
//! - [`defaults`]: frame and list limits, with reasons.
//! - [`roster`]: what the proxy knows of each agent: advert, missions, load.
//! - [`events`]: signed event streams: publishing, subscribing, positions.
//! - [`messages`]: the messages of each stream.
//! - [`call`]: the messages inside an end-to-end call session.
//! - [`codec`]: frames and postcard, with size caps and validation.
#![forbid(unsafe_code)]

pub mod call;
pub mod codec;
pub mod defaults;
pub mod events;
pub mod messages;
pub mod roster;

/// Bumped on any incompatible change to the messages. Version 2: calls inside a session
/// are authenticated by the session, many at once (see [`call`]). Version 3: adverts carry
/// an enrollment proof, an agent waiting for adoption is told so, and owner logs carry
/// adoptions (an older agent would refuse them, so it must not connect). Version 4: an
/// agent may send [`FromAgent::MissionEvent`] (a line a handler emitted, for MQTT).
/// Version 5: signed event streams ([`events`]): `Request::PublishEvents` and
/// `Request::Subscribe`. Older agents still connect; they publish no events.
pub const PROTOCOL_VERSION: u16 = 5;

/// The oldest version still spoken. Version 3 differs from 4 only in that a version-3 peer
/// knows no `MissionEvent`: a proxy admits version-3 agents (they never send one), and an
/// agent refused by a version-3 proxy says hello again as version 3 and sends none.
pub const MIN_PROTOCOL_VERSION: u16 = 3;

/// The first version with [`FromAgent::MissionEvent`]: never send one to an older peer.
pub const MISSION_EVENTS_VERSION: u16 = 4;

/// The first version with signed event streams: an agent publishes only to a proxy that
/// speaks it (an older one would close the connection on an unknown request).
pub const EVENT_STREAMS_VERSION: u16 = 5;

pub use codec::{decode, encode, encode_frame_into, WireError};
pub use events::{Delivery, LogPosition, StartAt, Subscribe, SubscriberMsg};
pub use messages::*;
pub use roster::*;
