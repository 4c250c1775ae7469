//! Limits of the wire protocol, each with its reason. Anything over a limit is refused
//! before it is used, so a peer cannot make us hold more than these.

/// Largest frame, in bytes. A roster snapshot of 100 agents with a dozen missions each is
/// about 200 KiB; log entries are sent in batches below this.
pub const MAX_FRAME: usize = 1024 * 1024;

/// Most bytes of agents in one roster message (`Response::Roster`, a watch's `Snapshot`).
/// A bigger roster (10,000 agents is about 1.2 MB) is sent in several: the proxy splits it
/// with [`crate::roster::chunk_agents`]. Half a frame leaves room for the message around
/// the agents, and keeps one frame quick to write on a Pi.
pub const ROSTER_CHUNK_BYTES: usize = MAX_FRAME / 2;

/// Largest batch of owner-log entries in one `Log`/`PublishLog` message, in bytes.
pub const MAX_LOG_BATCH_BYTES: usize = 512 * 1024;

/// Most owners one agent may obey.
pub const MAX_OWNERS: usize = 8;
/// Most missions one agent may offer.
pub const MAX_MISSIONS: usize = 64;
/// Most functions in one mission.
pub const MAX_FUNCTIONS: usize = 64;
/// Most tags on one agent, and the longest tag.
pub const MAX_TAGS: usize = 16;
/// Longest free text (descriptions, names shown to people, versions, models).
pub const MAX_TEXT: usize = 256;
/// Most warnings an agent reports (invalid mission files and the like).
pub const MAX_WARNINGS: usize = 16;
/// Most log heads an agent reports in its hello (one per owner).
pub const MAX_HEADS: usize = MAX_OWNERS;

/// Longest mission event line, in bytes: an event is a fact ("door open"), not a file.
pub const MAX_EVENT_LINE: usize = 1024;
