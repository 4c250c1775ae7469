//! The caller's limits, each with its reason. The agent enforces its own; these keep a
//! caller from asking for what an agent would refuse, and bound what a caller holds.

/// Largest JSON argument sent, in bytes. Agents refuse more (their message limit is a
/// little larger, to fit a signed call next to the arguments).
pub const MAX_ARGS: usize = 64 * 1024;

/// Largest message read from an agent (a result with its output): agents cap outputs at
/// 1 MiB, and a receipt and framing come on top.
pub const MAX_ANSWER: usize = 2 * 1024 * 1024;

/// Calls one session keeps in flight at once. Agents refuse more than their own limit
/// (`MAX_SESSION_CALLS` in the agent, the same number), so a caller queues the rest
/// rather than having them refused.
pub const MAX_CALLS_IN_FLIGHT: usize = 64;

/// Messages queued for one session's writer. A full queue makes a new call wait, so a
/// fast caller cannot grow memory without bound.
pub const OUT_QUEUE: usize = 256;

/// Messages (progress lines and the answer) queued for one call until its caller reads
/// them. The agent caps progress lines per call, and a slow reader only slows its session.
pub const EVENTS_PER_CALL: usize = 32;

/// Messages the writer puts in one write (and one flush): enough to fill a few TLS records
/// when many calls are in flight, few enough that the first waits little.
pub const WRITE_BATCH: usize = 64;

/// Bytes the reader asks TLS for at once: several small answers per read when busy.
pub const READ_BUFFER: usize = 16 * 1024;

/// Largest answer accepted from the proxy to a relay request: a `RelayReply` is a tag and
/// at most a short reason; anything longer is a misbehaving proxy.
pub const MAX_RELAY_REPLY: usize = 4 * 1024;
