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
//!   |-- CallReport{caller, function, ..} (v5)->|-- to the dashboard (owner's opt-in) |
//!   |== Request::PublishEvents (v5, own stream)>|<-- Request::Subscribe (v5) --------|
//!   |<== EventsStored{mission, seq} ============|-- Delivery::Event (signed) ... --->|
//!   |<-- Log{owner, entries} (pushed live) ----|<-- Request::PublishLog{entries} ----|
//!   |<-- Job{job, args} (v5) -----------------|<-- Request::Push{job, args} --------|
//!   |-- JobUpdate{id, outcome} (v5) ---------->|-- Response::JobResult (wtd result)->|
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
//! - [`report`]: call reports, an agent's opt-in account of its calls for the dashboard.
//! - [`jobs`]: queued calls (`wtd push`), their states and outcomes.
//! - [`codec`]: frames and postcard, with size caps and validation.
#![forbid(unsafe_code)]

pub mod call;
pub mod codec;
pub mod defaults;
pub mod events;
pub mod jobs;
pub mod messages;
pub mod report;
pub mod roster;

/// Bumped on any incompatible change to the messages. Version 2: calls inside a session
/// are authenticated by the session, many at once (see [`call`]). Version 3: adverts carry
/// an enrollment proof, an agent waiting for adoption is told so, and owner logs carry
/// adoptions (an older agent would refuse them, so it must not connect). Version 4: an
/// agent may send [`FromAgent::MissionEvent`] (a line a handler emitted, for MQTT).
/// Version 5 (three additions made together, none released apart, so they are one
/// version): an agent may send [`FromAgent::CallReport`] (a call it answered, for the
/// proxy's dashboard); jobs ([`jobs`]): the proxy may send [`ToAgent::Job`], the agent
/// answers with [`FromAgent::JobUpdate`], and the CLI may send the job requests; and
/// signed event streams ([`events`]): `Request::PublishEvents` and `Request::Subscribe`.
/// Version 6: a call may carry its cause ([`call::CallerMsg::CallCaused`]), the events it
/// was made because of, inside an end-to-end session. The proxy never reads a session, so
/// the two ends agree on it themselves: a version-6 caller and agent offer the session ALPN
/// `wtd/1 v6` as well as `wtd/1` (`wtd_transport::session::SESSION_ALPN_V6`), and a caller
/// sends `CallCaused` only when the agent chose it. A version-6 agent also decodes and
/// checks jobs with a selector (`wtd push --tag`, `--coolest`: format version 2 of
/// `wtd_keys::job`); the proxy knows which agents can check a job's tag by their version.
pub const PROTOCOL_VERSION: u16 = 6;

/// The oldest version still spoken. Version 3 differs from 4 only in that a version-3 peer
/// knows no `MissionEvent`, 4 from 5 in that it knows no `CallReport`, no jobs and no
/// signed events, and 5 from 6 in that it reads no call's cause and cannot decode a job
/// with a selector: a proxy admits older agents (they never send what they do not know,
/// and a proxy never delivers a job to one it cannot check), an agent refused by an older
/// proxy says hello again in that proxy's version and sends only what it knows (it
/// receives no jobs and publishes no signed events there), and a caller sends an older
/// agent plain `Call`s (see [`CALL_CAUSES_VERSION`]).
pub const MIN_PROTOCOL_VERSION: u16 = 3;

/// The first version with jobs: never send a [`ToAgent::Job`] to an older agent.
pub const JOBS_VERSION: u16 = 5;

/// The first version whose agents decode and check jobs with a selector (a tag, an order
/// other than least loaded; `wtd_keys::job::SELECTOR_VERSION`): the proxy delivers such a
/// job to no older agent (a version-5 agent would refuse it as malformed, never run it on
/// the wrong machine). A job with the default selector goes to any job agent.
pub const JOB_SELECTORS_VERSION: u16 = 6;

/// The first version with [`FromAgent::MissionEvent`]: never send one to an older peer.
pub const MISSION_EVENTS_VERSION: u16 = 4;

/// The first version with [`FromAgent::CallReport`]: never send one to an older peer.
pub const CALL_REPORTS_VERSION: u16 = 5;
/// The first version with a call's cause ([`call::CallerMsg::CallCaused`]). A session
/// does not say its version in a message: the agent's choice of the session ALPN
/// `wtd/1 v6` says it reads version 6 (see [`PROTOCOL_VERSION`]).
pub const CALL_CAUSES_VERSION: u16 = 6;
/// The first version with signed event streams: an agent publishes only to a proxy that
/// speaks it (an older one would close the connection on an unknown request).
pub const EVENT_STREAMS_VERSION: u16 = 5;

pub use codec::{decode, encode, encode_frame_into, WireError};
pub use events::{Delivery, LogPosition, StartAt, Subscribe, SubscriberMsg};
pub use messages::*;
pub use report::CallReport;
pub use roster::*;
