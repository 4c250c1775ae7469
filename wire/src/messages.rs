//! The messages, by stream. See the protocol flow in the crate docs.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::events::{Delivery, Subscribe};
use crate::jobs::{JobAnswer, JobDelivery, JobId, JobInfo, JobUpdate};
use crate::roster::{Advert, AgentInfo, Key, Load, RosterEvent};

/// The first frame on every stream a client opens: what the stream is for.
#[allow(clippy::large_enum_variant)] // one per stream, short-lived
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Open {
    /// An agent's control stream (one per connection).
    Agent(AgentHello),
    /// One request from the CLI; the reply comes on the same stream.
    Request(Request),
    /// Connect this stream to agent `to`: the proxy answers with a [`RelayReply`], then
    /// splices raw bytes both ways and never looks at them again.
    Relay { to: Key },
}

/// The proxy's answer to [`Open::Relay`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RelayReply {
    /// From now on, bytes go straight to the agent.
    Connected,
    /// No agent with that id is connected.
    NoSuchAgent,
    /// The agent is in the roster but did not take the stream.
    Unreachable(String),
}

/// The first frame on a stream the proxy opens to an agent: who asked for it. Only a
/// hint: the end-to-end handshake that follows proves who the caller is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Relayed {
    pub from: Key,
}

/// Where an agent's copy of an owner's log ends, so the proxy sends only what is new.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogHead {
    pub owner: Key,
    pub seq: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AgentHello {
    pub version: u16,
    pub advert: Advert,
    pub heads: Vec<LogHead>,
}

/// Proxy to agent, on the control stream.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ToAgent {
    Welcome {
        proxy_software: String,
    },
    Refused(Refusal),
    /// Owner-log entries, in order, as the owner's signed bytes. The agent verifies each.
    Log {
        owner: Key,
        entries: Vec<Vec<u8>>,
    },
    /// Run this queued job (version 5 on; see [`crate::jobs`]). Never sent to an older agent.
    Job(JobDelivery),
}

/// Agent to proxy, on the control stream after the hello.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum FromAgent {
    Heartbeat(Load),
    /// The missions changed.
    Advert(Advert),
    /// Shutting down: drop me from the roster now.
    Leaving,
    /// A line one of this agent's handlers emitted, for the proxy's MQTT bridge (version 4
    /// on; see [`MissionEvent`]). Appended last, so the older variants encode as before.
    MissionEvent(MissionEvent),
    /// A call this agent answered, for the proxy's dashboard (version 5 on; sent only when
    /// its owner set `report_calls`; see [`crate::report`]). Appended last, like the rest.
    CallReport(crate::report::CallReport),
    /// What became of a job the proxy delivered (version 5 on; see [`crate::jobs`]).
    JobUpdate(JobUpdate),
}

/// A mission event: `line` as the handler of `mission/function` printed it (after
/// `wtd-event:`). The agent sends only events of missions its owner's config lets publish,
/// at a bounded rate; the proxy checks the names and the size, and keeps its own budget.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MissionEvent {
    pub mission: String,
    pub function: String,
    pub line: String,
}

impl MissionEvent {
    /// Whether the names are real mission and function names (so they are safe as topic
    /// levels) and the line fits [`crate::defaults::MAX_EVENT_LINE`].
    pub fn validate(&self) -> Result<(), String> {
        wtd_keys::MissionName::new(&self.mission).map_err(|e| format!("mission: {e}"))?;
        wtd_keys::FunctionName::new(&self.function).map_err(|e| format!("function: {e}"))?;
        if self.line.len() > crate::defaults::MAX_EVENT_LINE {
            return Err(format!(
                "an event line is at most {} bytes",
                crate::defaults::MAX_EVENT_LINE
            ));
        }
        Ok(())
    }
}

/// Why the proxy turned an agent away. The agent logs it and retries later.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Refusal {
    VersionMismatch {
        proxy: u16,
    },
    OwnerNotAllowed,
    BadAdvert(String),
    Full,
    /// The agent names an allowed owner, but no allowed owner's log adopts it yet. The
    /// agent keeps retrying; it is admitted once its owner runs `wtd adopt`.
    WaitingForAdoption {
        owners: Vec<Key>,
    },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::VersionMismatch { proxy } => write!(
                f,
                "the proxy speaks protocol version {proxy} and this agent {}; upgrade the older one",
                crate::PROTOCOL_VERSION
            ),
            Refusal::OwnerNotAllowed => write!(
                f,
                "the proxy only admits agents of allowed owners, and none of this agent's owners is on its \
                 list; ask the proxy's operator to allow your owner key (wtd proxy --allow <owner id>)"
            ),
            Refusal::BadAdvert(why) => write!(f, "the proxy refused this agent's advert: {why}"),
            Refusal::Full => write!(f, "the proxy has as many agents as it accepts; try again later"),
            Refusal::WaitingForAdoption { owners } => {
                let owners: Vec<String> = owners
                    .iter()
                    .map(|k| {
                        k.parse()
                            .map_or_else(|_| "an invalid key".into(), |k| k.to_string())
                    })
                    .collect();
                write!(
                    f,
                    "waiting for adoption by {}: the proxy admits only agents their owner adopted; on the \
                     owner's machine run `wtd adopt <this agent's name or id>` (or `wtd adopt --pending` \
                     if this card holds an enrollment token)",
                    owners.join(" or ")
                )
            }
        }
    }
}

/// A request from the CLI.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Request {
    /// The roster, once: one or more `Response::Roster` messages (a roster bigger than
    /// [`crate::defaults::ROSTER_CHUNK_BYTES`] comes in several), then the end of the
    /// stream. Read to the end and join them.
    Roster,
    /// A snapshot, then deltas until the stream is closed. A snapshot bigger than
    /// [`crate::defaults::ROSTER_CHUNK_BYTES`] is a `Snapshot` of its first part followed by
    /// an `Upsert` per remaining agent; deltas come in batches (the latest change per agent
    /// per interval), each a run of `Event` frames.
    Watch,
    /// Store these entries of the sender's own owner log and pass them to its agents.
    /// The proxy accepts only entries that chain onto what it has.
    PublishLog { entries: Vec<Vec<u8>> },
    /// An owner's log entries after `after_seq`.
    FetchLog { owner: Key, after_seq: u64 },
    /// How many entries of an owner's log the proxy holds (answered with `LogStored`).
    LogHead { owner: Key },
    /// The agents the proxy turned away recently because nobody adopted them yet
    /// (answered with `Waiting`), so their owner can adopt them.
    Waiting,
    /// Queue a job: the sender's signed job (`wtd_keys::job`) and its argument bytes
    /// (version 5 on). Answered with `JobQueued`, or `PushRefused` saying which bound.
    Push { job: Vec<u8>, args: Vec<u8> },
    /// The sender's jobs, newest first (answered with `Jobs`).
    Jobs,
    /// One of the sender's jobs and its outcome; waits up to `wait_ms` for it to become
    /// final (0: answer at once). Answered with `JobResult`.
    JobResult { id: JobId, wait_ms: u64 },
    /// Version 5: store these signed events of the sender's own log of `mission` and
    /// forward them to subscribers (answered with `EventsStored`, or `Error` saying what
    /// was dropped and why). Only an agent connection may send it. See [`crate::events`].
    PublishEvents { mission: String, entries: Vec<Vec<u8>> },
    /// Version 5: stream events (`Response::Delivery` frames); the subscriber sends
    /// [`crate::events::SubscriberMsg`] frames back on the same stream.
    Subscribe(Subscribe),
}

/// A reply to a [`Request`].
// Messages live one at a time, between decoding and handling; boxing the big variant
// would cost an allocation per heartbeat event and save nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Response {
    Roster(Vec<AgentInfo>),
    Event(RosterEvent),
    /// The proxy's copy of the owner's log now ends at `seq`.
    LogStored {
        seq: u64,
    },
    Log {
        entries: Vec<Vec<u8>>,
    },
    /// Agents waiting for adoption (see [`Request::Waiting`]); self-reported like the roster.
    Waiting(Vec<AgentInfo>),
    Error(String),
    /// The job is stored (fsynced) and will be delivered until `expires_at_ms`.
    JobQueued {
        id: JobId,
        expires_at_ms: u64,
    },
    /// The job was not queued: a bound was hit or it is malformed; the text says which.
    PushRefused(String),
    Jobs(Vec<JobInfo>),
    JobResult(JobAnswer),
    /// The proxy's copy of the sender's log of `mission` now ends at `seq` (after a
    /// `PublishEvents`; lower than what was sent: resend from `seq + 1`).
    EventsStored {
        mission: String,
        seq: u64,
    },
    /// One message of a subscription stream.
    Delivery(Delivery),
}
