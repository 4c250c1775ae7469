//! Every number the proxy uses, with its reason.

use std::time::Duration;

/// An agent not heard from for this long is dropped from the roster. Agents heartbeat
/// every second by default, so this is two missed heartbeats; with the reaper's tick
/// below, a killed agent is gone within 2.25 s, inside the 3 s promise.
pub const REAP_AFTER: Duration = Duration::from_millis(2_000);

/// How often the reaper looks for silent agents.
pub const REAP_TICK: Duration = Duration::from_millis(250);

/// A new stream must say what it is for within this time, or the connection is closed.
/// Generous for a Pi on a slow Wi-Fi, short enough that idle connections cannot pile up.
pub const OPEN_TIMEOUT: Duration = Duration::from_secs(5);

/// Most agents in the roster: a classroom of 30 Pis, several times over.
pub const MAX_AGENTS: usize = 512;

/// Most owner logs the proxy stores. Each costs an open file and its entries in memory;
/// anyone can make a key, so this must be bounded.
pub const MAX_OWNER_LOGS: usize = 256;

/// Most entries one owner log may hold on the proxy (about 5 MB of grants).
pub const MAX_LOG_ENTRIES: u64 = 10_000;

/// Owner-log updates buffered for agent sessions; a session that falls further behind
/// checks every log it follows instead.
pub const EVENT_BUFFER: usize = 256;

/// How often roster changes go to watchers, as one batch holding only the latest change
/// per agent. A heartbeat then costs the proxy one map insert, not one message per
/// watcher: with 10,000 agents and 50 watchers that is 4 batches a second per watcher
/// instead of 10,000 events. 250 ms keeps `wtd ls --watch` live to the eye, and a killed
/// agent still leaves watchers' rosters within 2.5 s (the reaper's 2.25 s plus this),
/// inside the 3 s promise.
pub const WATCH_BATCH_INTERVAL: Duration = Duration::from_millis(250);

/// Batches kept for watchers (2 s of them). Batches are shared, encoded once for all
/// watchers, so this bounds memory for all of them together; a watcher further behind
/// gets a fresh snapshot instead, so a slow projector never holds memory hostage.
pub const WATCH_BATCHES_BUFFERED: usize = 8;

/// Bytes of kernel buffer asked for the proxy's UDP socket, where datagrams from every
/// agent, watcher and caller wait until the proxy reads them.
///
/// The kernel's default (208 KiB on Linux) holds only about 200 datagrams, since each costs
/// ~1 KiB of buffer however small it is (a heartbeat is ~60 bytes). 10,000 agents send about
/// 40,000 datagrams a second (heartbeats, acknowledgements, keep-alives), so a 5 ms pause of
/// the proxy (another process on its core) overflowed it: measured, one datagram in six was
/// dropped, QUIC retransmitted them late, and whole batches of agents looked silent. 4 MiB
/// holds ~100 ms of that traffic; it is kernel memory used only while datagrams queue, so a
/// Pi pays it only under load. The kernel caps it at `net.core.rmem_max` (the proxy warns).
pub const UDP_RECEIVE_BUFFER: usize = 4 * 1024 * 1024;

/// The UDP port the proxy listens on by default.
pub const PORT: u16 = 4433;

/// Most agents kept in the list of those waiting for adoption (`Request::Waiting`). Anyone
/// can make keys and knock, so it is bounded; the oldest knock is forgotten first.
pub const MAX_WAITING: usize = 256;

/// A waiting agent not heard from for this long is forgotten. Refused agents retry every
/// 2 s at most (the agent's backoff cap), so 30 s means it gave up or was switched off.
pub const WAITING_FORGET_AFTER: Duration = Duration::from_secs(30);

/// Mission events published per agent per second, past a burst of
/// [`MISSION_EVENTS_BURST`]. Twice what an agent lets through by default
/// (wtd-agent's own budget), so a well-behaved agent is never cut, and a modified one that
/// floods costs the broker this much at most.
pub const MISSION_EVENTS_PER_S: u32 = 20;

/// See [`MISSION_EVENTS_PER_S`].
pub const MISSION_EVENTS_BURST: u32 = 100;

/// Connection limits for a proxy hosted on a Raspberry Pi (`--deployment pi`, the default).
///
/// The budget is a Pi Zero 2 W with 512 MB: each connection may make the proxy buffer up
/// to its receive window plus its send window (256 KiB + 256 KiB, see `wtd_transport`'s
/// defaults), so 128 connections cost at most 64 MiB, an eighth of its RAM, if every peer
/// floods at once. 128 holds a classroom of ~30 Pis and ~30 students twice over.
pub const PI_MAX_CONNECTIONS: usize = 128;

/// Connections from one IP address on a Pi-hosted proxy. Stops one misbehaving machine from
/// taking every slot, yet lets a classroom of 30 share one NAT address.
pub const PI_MAX_CONNECTIONS_PER_IP: usize = 32;

/// Connection limits for a proxy on a teacher's laptop (`--deployment laptop`).
///
/// The budget is a 4 GB laptop that also runs a browser and a projector: 1,024 connections
/// cost at most 512 MiB of buffers in the same worst case, an eighth of its RAM. That is
/// several classrooms (or one large workshop) at once.
pub const LAPTOP_MAX_CONNECTIONS: usize = 1_024;

/// Connections from one IP address on a laptop-hosted proxy: a room of 30 Pis and 30
/// students behind one NAT address still fits, with room to spare; one machine that opens
/// connections in a loop still cannot take more than a sixteenth of the slots.
pub const LAPTOP_MAX_CONNECTIONS_PER_IP: usize = 64;

/// Happenings (calls, sessions, grants, agents coming and going) the dashboard keeps for
/// pages that connect or reconnect. A projector shows the last few dozen; 300 is a few
/// minutes of a busy class, and about 100 KB.
pub const DASHBOARD_EVENTS: usize = 300;

/// How long the dashboard shows an agent after it went offline (with "last seen"), so a
/// teacher sees which Pi dropped out, not just one card fewer.
pub const DASHBOARD_OFFLINE_KEPT: Duration = Duration::from_secs(10 * 60);

/// Most offline agents the dashboard remembers at once (the oldest are forgotten first):
/// agents that come and go with new keys must not grow it without bound.
pub const DASHBOARD_OFFLINE_CARDS: usize = 256;

/// (caller, agent) pairs of relayed sessions remembered to check call reports against:
/// a classroom's 30 students times 30 Pis is 900.
pub const DASHBOARD_RELAY_PAIRS: usize = 4_096;

/// A call report is accepted this long after its caller's last session to the agent
/// closed: the report travels on the agent's control stream and may arrive after the
/// caller hung up.
pub const DASHBOARD_REPORT_GRACE: Duration = Duration::from_secs(30);

/// Call reports the proxy takes per agent per second, past a burst of
/// [`CALL_REPORTS_BURST`]; twice what an agent sends by default, so only a modified agent
/// is cut. The rest are dropped and counted.
pub const CALL_REPORTS_PER_S: u32 = 40;

/// See [`CALL_REPORTS_PER_S`].
pub const CALL_REPORTS_BURST: u32 = 120;

/// Dashboard connections at once (pages, their assets, curl). Each open page holds one
/// for its event stream; a projector and a few laptops need a handful. More are answered
/// "503, too many viewers" at once rather than queued.
pub const DASHBOARD_CONNECTIONS: usize = 32;

/// Most bytes of a request's head the dashboard reads; a browser sends well under 2 KiB.
pub const DASHBOARD_MAX_REQUEST: usize = 8 * 1024;

/// Time a client has to send its request, and to take each write, before the dashboard
/// closes its connection (so a stalled one cannot hold a slot).
pub const DASHBOARD_IO_TIMEOUT: Duration = Duration::from_secs(10);

/// Updates go to a page at most this often, each holding everything that changed since
/// the last. The roster's own batches come every 250 ms, and a killed agent still turns
/// offline on the page within 3 s (2.25 s reaper, 250 ms batch, this).
pub const DASHBOARD_PUSH_INTERVAL: Duration = Duration::from_millis(250);

/// A comment line goes down an idle event stream this often, so proxies and browsers keep
/// it open, and a page that vanished is noticed and its slot freed.
pub const DASHBOARD_KEEPALIVE: Duration = Duration::from_secs(15);
/// Jobs one caller key may have waiting (queued, delivered or running) at once. Anyone
/// with a key can push, and each job holds disk and memory on the proxy for up to a week;
/// 100 is plenty for a student's script, and 100 keys' worth still fits a Pi.
pub const MAX_JOBS_PER_CALLER: usize = 100;

/// Jobs waiting under one owner's authority at once, from all callers together: a class
/// of 30 students each pushing 30 jobs to their teacher's Pis. Bounds what a crowd of
/// keys (each within its own bound) can pile onto one owner's agents.
pub const MAX_JOBS_PER_OWNER: usize = 1_000;

/// Bytes held under one owner's authority (waiting jobs with their arguments, and kept
/// results): a quarter of [`MAX_QUEUE_BYTES`], so one owner's crowd of callers cannot take
/// the whole queue from the others; still 64 full-size results, or thousands of small jobs.
pub const MAX_JOB_BYTES_PER_OWNER: usize = MAX_QUEUE_BYTES / 4;

/// The smallest `max_bytes` proxy.toml may give an owner's jobs: one job with the largest
/// arguments, and a little more, so a push can ever fit.
pub const MIN_JOB_BYTES_PER_OWNER: usize = MAX_JOB_ARGS + 16 * 1024;

/// The shortest `keep_finished` proxy.toml may set: long enough for `wtd result --wait`,
/// which asks again every [`MAX_RESULT_WAIT`], to see a result before it goes.
pub const MIN_JOB_KEEP_FINISHED: Duration = Duration::from_secs(5 * 60);

/// The longest `keep_finished` proxy.toml may set: results are disk on a Pi's SD card.
pub const MAX_JOB_KEEP_FINISHED: Duration = Duration::from_secs(30 * 24 * 3600);

/// Jobs waiting on the proxy in all.
pub const MAX_JOBS: usize = 10_000;

/// Largest argument bytes of a queued call: the same as a live call's (`wtd_caller`).
pub const MAX_JOB_ARGS: usize = 64 * 1024;

/// Largest output the proxy keeps for `wtd result`. A bigger one is dropped (its state
/// and signed result are kept, and `wtd result` says so): a queue of results is disk on a
/// Pi's SD card, not an object store.
pub const MAX_JOB_OUTPUT: usize = 256 * 1024;

/// Bytes of jobs, arguments and kept outputs the proxy holds in all (its memory and its
/// `jobs.log`). 64 MiB is an eighth of a Pi Zero 2 W's RAM; past it pushes are refused.
pub const MAX_QUEUE_BYTES: usize = 64 * 1024 * 1024;

/// How long a finished (or expired, or refused) job is listed and its result kept: long
/// enough to collect a result the next morning.
pub const JOB_RETENTION: Duration = Duration::from_secs(24 * 3600);

/// Jobs out to one agent at once. The agent runs them in turn; more would only queue on
/// the agent, where they cannot be handed to another.
pub const MAX_JOBS_IN_FLIGHT_PER_AGENT: usize = 4;

/// Longest a `Request::JobResult` waits for a job to finish before answering with its
/// current state; `wtd result --wait` asks again. Bounds how long a stream is held.
pub const MAX_RESULT_WAIT: Duration = Duration::from_secs(60);

/// How often waiting jobs are checked for expiry.
pub const JOB_SWEEP_TICK: Duration = Duration::from_secs(1);

/// After an agent refuses a job for a reason of its own (it is not adopted yet, lacks the
/// function, is busy), the job waits this long before it is delivered again (to any agent):
/// long enough for an owner's `wtd adopt` to reach the agent, short enough to feel prompt.
pub const JOB_RETRY_AFTER: Duration = Duration::from_secs(2);

/// Refusals of that kind a job takes before it is refused for good (with the last reason):
/// about 20 s of retries, so a job for a mission no agent will ever run does not linger.
pub const MAX_JOB_REFUSALS: u32 = 10;
/// Bytes of signed events kept per owner (over all its agents' logs) unless proxy.toml
/// says otherwise: a day of a busy classroom (30 Pis, an event a second, ~300 bytes each
/// is ~750 MB a day; a quieter one a few MB). Held in memory too, so modest by default.
pub const EVENTS_MAX_BYTES: u64 = 16 * 1024 * 1024;

/// How long events are kept by default: a week covers a Pi switched off over a weekend
/// whose subscriber catches up on Monday.
pub const EVENTS_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);

/// When a size bound is hit, trim to this share of it, so a full store rewrites a file
/// once per tenth of its budget rather than on every event.
pub const EVENTS_TRIM_TO_PERCENT: u64 = 90;

/// Event logs the proxy holds at most (one per agent and mission that published).
pub const MAX_EVENT_LOGS: usize = 4096;

/// Event logs per agent: one per mission it offers; more is a misbehaving agent.
pub const MAX_EVENT_LOGS_PER_AGENT: usize = 64;

/// Named subscriptions whose positions the proxy keeps.
pub const MAX_SUBSCRIPTION_POSITIONS: usize = 4096;

/// Events sent to a subscriber per look at the store, so one catching up on a long log
/// cannot starve the others of the store's lock.
pub const SUBSCRIBE_BATCH: usize = 256;

/// Missions one subscription may name.
pub const MAX_SUBSCRIBED_MISSIONS: usize = 16;

/// How often a subscription checks its grant again (a revoked or expired grant stops the
/// stream within this).
pub const SUBSCRIPTION_RECHECK: std::time::Duration = std::time::Duration::from_secs(2);
