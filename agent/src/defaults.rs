//! Every number and path the agent uses, each with its reason.
//!
//! The budget is the smallest Pi wtd runs on, a Pi Zero 2 W (512 MB, four slow cores), where
//! the agent should idle below 8 MB of memory and 0.2% of one core.

use std::time::Duration;

/// Where `wtd agent` looks for its configuration when `--config` is not given. The SD-card
/// image writes it on first boot; the systemd unit names it explicitly too.
pub const CONFIG_PATH: &str = "/etc/wtd/agent.toml";

/// Where the agent keeps what it must not lose: its identity and its owners' logs.
/// `/var/lib/wtd` is what systemd's `StateDirectory=wtd` creates and keeps writable.
pub const STATE_DIR: &str = "/var/lib/wtd";

/// Where mission files live. Under `/etc` because they are configuration an owner edits,
/// and `ProtectSystem=strict` keeps the agent itself from changing them.
pub const MISSIONS_DIR: &str = "/etc/wtd/missions";

/// How often the agent reports its load. One second keeps the dashboard lively and the
/// least-loaded choice fresh, and a heartbeat costs ~100 bytes and ~50 µs of CPU.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);

/// The longest heartbeat interval a config may ask for. The proxy drops an agent it has not
/// heard from in about 3 s (see `wtd_transport::defaults::IDLE_TIMEOUT`), so a heartbeat must
/// leave room for one to be lost on Wi-Fi without the agent vanishing from `wtd ls`.
pub const MAX_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(2);

/// The shortest heartbeat interval a config may ask for. Faster reports would show nothing
/// new (the load average moves slowly) and would cost a Pi Zero CPU it needs for missions.
pub const MIN_HEARTBEAT_INTERVAL: Duration = Duration::from_millis(100);

/// How often the Pi's sensors (temperature, throttling) are read. They change over
/// seconds, and on a Pi without the sysfs file a reading runs `vcgencmd`, a process spawn
/// that would cost more CPU than the whole agent if done every heartbeat.
pub const SENSOR_INTERVAL: Duration = Duration::from_secs(10);

/// First delay before reconnecting to the proxy. Short, so a blip (a proxy restart, a
/// Wi-Fi roam) costs a tenth of a second.
pub const BACKOFF_BASE: Duration = Duration::from_millis(100);

/// The longest delay between two connection attempts.
///
/// wtd promises that after a proxy restart every agent is back within 5 s. Worst case, an
/// agent notices the old proxy is gone when its idle timeout fires (2.5 s) or at once (the
/// new proxy answers with a stateless reset), and an attempt that started while the proxy
/// was down can take up to the 2.5 s handshake timeout. A 2 s cap keeps "last attempt
/// failed just before the proxy came back, then wait the longest delay, then connect" under
/// 5 s. With full jitter, 30 agents spread their attempts over the cap instead of
/// arriving in one burst; a bigger cap would spare the proxy little and break the promise.
pub const BACKOFF_CAP: Duration = Duration::from_secs(2);

/// How often an agent with no route to its proxy yet (at boot, before DHCP or Wi-Fi) checks
/// again: one `connect` of a UDP socket, nothing sent, so checking often costs nothing, and
/// the agent is connecting within this of the network coming up (`link::wait_for_route`).
pub const ROUTE_POLL: Duration = Duration::from_millis(200);

/// How long the proxy has to answer the hello with `Welcome` or `Refused`. A proxy on a LAN
/// answers in milliseconds; one that accepts the connection but never answers is broken,
/// and retrying (with backoff) is better than waiting on it forever.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

/// On shutdown, how long we wait for the proxy to close the connection after our `Leaving`
/// (it does so once it has read it). Together with [`WAIT_IDLE_GRACE`] this keeps
/// `systemctl stop` under half a second even when the proxy does not answer.
pub const CLOSE_GRACE: Duration = Duration::from_millis(300);

/// On shutdown, how long we let our own close packet go out (`Endpoint::wait_idle`).
/// Without it the proxy would only notice we left after its idle timeout.
pub const WAIT_IDLE_GRACE: Duration = Duration::from_millis(200);

/// The same identical refusal from the proxy is logged at error level at most this often;
/// in between, repeats are logged at debug level. An agent retries every 2 s, and a refusal
/// that needs a human (an owner not on the proxy's allowlist) would otherwise fill the
/// journal.
pub const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(60);

/// A function may run this long when its mission file does not say (`timeout`).
pub const FUNCTION_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest `timeout` a mission file may give a function. A call is a request and a
/// reply, not a batch job; anything longer should report progress and be split.
pub const MAX_FUNCTION_TIMEOUT: Duration = Duration::from_secs(600);

/// Bytes of output a function may return when its mission file does not say (`output_cap`).
/// Holds any reasonable JSON answer while bounding what one call makes the agent hold.
pub const OUTPUT_CAP: usize = 64 * 1024;

/// The largest `output_cap` a mission file may ask for. Half a wire frame
/// (`wtd_wire::defaults::MAX_FRAME`), so a result always fits in one frame with its envelope.
pub const MAX_OUTPUT_CAP: usize = wtd_wire::defaults::MAX_FRAME / 2;

/// Largest mission file we read, in bytes. A mission with 64 functions and long
/// descriptions is ~20 KiB; anything bigger is a mistake, and refusing it bounds memory.
pub const MAX_MISSION_FILE_BYTES: u64 = 64 * 1024;

/// Largest agent config file we read, in bytes (it is a dozen lines).
pub const MAX_CONFIG_FILE_BYTES: u64 = 64 * 1024;

/// How long a built-in `sys` function may take. They answer from memory.
pub const SYS_TIMEOUT: Duration = Duration::from_secs(2);

/// Output cap of the built-in `sys` functions: a description of the agent fits easily.
pub const SYS_OUTPUT_CAP: usize = 16 * 1024;

/// A caller's session must finish its end-to-end handshake within this time, or the
/// stream is dropped: a stalled relay must not pin a session slot.
pub const SESSION_HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Largest message inside a call session: the signed call plus its JSON arguments
/// (the arguments are capped at 64 KiB; results travel the other way).
pub const MAX_CALL_MESSAGE: usize = 80 * 1024;

/// Largest output a function may return, whatever its mission file says: the result
/// message must fit one session message on the caller's side.
pub const MAX_OUTPUT: usize = 1024 * 1024;

/// How far the persisted time floor may lag behind the clock, in ms. It exists to stop a
/// clock set back by hours or days from reviving expired grants; a minute of lag is
/// harmless, and saves an fsync per call.
pub const FLOOR_PERSIST_EVERY_MS: u64 = 60_000;

/// Progress events buffered between a running function and the session.
pub const EVENT_QUEUE: usize = 64;

/// Calls one session remembers to refuse a repeated request id (about 160 bytes each).
/// Replay protection proper comes from the session binding and TLS (see `calls`); this is
/// a cheap second check, kept small so 32 sessions cost under 6 MB at worst.
pub const SESSION_REPLAY_MEMORY: usize = 1024;

/// Memory one call may use when its mission file does not say (`memory`). A Pi Zero 2 W
/// has 512 MB for the system, the agent and every call running at once; 64 MiB runs a
/// shell script or a small Python program, and four such calls still leave the Pi usable.
pub const FUNCTION_MEMORY: u64 = 64 * 1024 * 1024;

/// The least `memory` a mission file may give: below this not even a shell starts reliably
/// (the address-space limit also covers the program's libraries).
pub const MIN_FUNCTION_MEMORY: u64 = 4 * 1024 * 1024;

/// The most `memory` a mission file may give. Bigger Pis have 1 to 8 GB; a call that needs
/// more than a GiB is a batch job, not a call.
pub const MAX_FUNCTION_MEMORY: u64 = 1024 * 1024 * 1024;

/// Address space allowed on top of `memory` for each process (`RLIMIT_AS`): mapped but
/// mostly untouched memory (shared libraries, thread stacks, malloc arenas). The address
/// space limit is a hard per-process backstop; the memory limit proper is what the call's
/// processes really use together (the cgroup, or the box's watchdog).
pub const ADDRESS_SPACE_HEADROOM: u64 = 64 * 1024 * 1024;

/// Processes (and threads) one call may run at once when its mission file does not say
/// (`pids`): a script with a pipeline of a few commands uses under ten; 32 leaves room and
/// still stops a fork bomb long before the Pi's process table fills.
pub const FUNCTION_PIDS: u32 = 32;

/// The most `pids` a mission file may give.
pub const MAX_FUNCTION_PIDS: u32 = 1024;

/// Open files per process when the mission file does not say (`open_files`): what a small
/// program needs with room to spare, and far below the agent's own limit, so no call can
/// use up the file table.
pub const FUNCTION_OPEN_FILES: u32 = 256;

/// The least `open_files`: stdin, stdout, stderr, the program, its libraries, a few files.
pub const MIN_FUNCTION_OPEN_FILES: u32 = 16;

/// The most `open_files` a mission file may give.
pub const MAX_FUNCTION_OPEN_FILES: u32 = 4096;

/// How often the box's watchdog adds up what a call's processes use, where no cgroup
/// counts it for us. Each look reads a few `/proc` files per process (well under a
/// millisecond for a handful); four times a second catches a runaway within a few MiB of
/// its limit at the speed a Pi fills memory, for a cost nobody notices.
pub const WATCHDOG_INTERVAL: Duration = Duration::from_millis(250);

/// Where each call's private working directory is made (and `TMPDIR` points). Under the
/// systemd unit, `PrivateTmp=yes` makes this the agent's own `/tmp`, invisible to the
/// rest of the system.
pub const CALL_DIR_PARENT: &str = "/tmp";

/// How long `useradd` may take to create a mission's user. It writes a few files in /etc;
/// one that hangs (a locked passwd file) must not hold the call.
pub const USERADD_TIMEOUT: Duration = Duration::from_secs(10);

/// Rounds of "find what is left, SIGKILL it" when emptying a box. A killed process cannot
/// fork again, so each round only finds children forked since the last; a call limited to
/// `pids` processes is empty after a few. The bound keeps a misbehaving kernel from
/// holding the agent.
pub const KILL_ROUNDS: usize = 64;

/// Exec calls one session may have running at once; more are refused as `busy`. The
/// caller library keeps at most this many in flight per session, so it waits instead.
/// (Built-in functions answer at once and do not count.)
pub const MAX_SESSION_CALLS: usize = 64;

/// How long a session that broke a rule (a reused call number, a malformed message) may
/// take to deliver the refusal that says why, before it is closed regardless. The refusal
/// is one small frame; a second covers a slow link, and a caller that stopped reading
/// cannot keep the session (or its calls, already stopped) around for longer.
pub const SESSION_FAREWELL: std::time::Duration = std::time::Duration::from_secs(1);

/// Answers queued for one session's writer. Full, it makes the session stop reading new
/// calls until the caller has taken some answers: backpressure, not a growing buffer.
pub const SESSION_OUT_QUEUE: usize = 256;

/// Answers the writer puts in one write and one flush when many are waiting.
pub const SESSION_WRITE_BATCH: usize = 64;

/// Bytes read from a session at once: several small calls per read when busy.
pub const SESSION_READ_BUFFER: usize = 16 * 1024;

/// Mission events an agent lets out per second, past a burst of [`MISSION_EVENTS_BURST`].
/// A mission event is a fact for a dashboard ("door open"), not a log: ten a second is more
/// than Home Assistant or a person can use, and a handler printing events in a loop costs
/// the control stream and the broker this much at most.
pub const MISSION_EVENTS_PER_S: u32 = 10;

/// See [`MISSION_EVENTS_PER_S`]: what a quiet handler may send at once.
pub const MISSION_EVENTS_BURST: u32 = 50;

/// Mission events waiting for the proxy or the broker (while either is away, the newest
/// are dropped once it is full). 64 of at most 1 KiB each.
pub const MISSION_EVENT_QUEUE: usize = 64;

/// How often an agent looking for its proxy on the LAN (and finding none it may join) says
/// so in its log. Often enough that someone watching `journalctl -f` sees it within a
/// lesson's minute; rarely enough not to fill a small SD card's journal.
pub const LAN_STILL_LOOKING_EVERY: Duration = Duration::from_secs(30);

/// Call reports an agent sends the proxy's dashboard per second (`report_calls`), past a
/// burst of [`CALL_REPORTS_BURST`]. A projector shows a handful of calls a second at most;
/// a script calling in a loop (thousands a second) must not turn into as many messages on
/// the control stream, so the rest are dropped (and counted), never queued.
pub const CALL_REPORTS_PER_S: u32 = 20;

/// See [`CALL_REPORTS_PER_S`]: a class all pressing enter at once still shows whole.
pub const CALL_REPORTS_BURST: u32 = 60;

/// Call reports waiting for the control stream (the newest are dropped once it is full, as
/// while the proxy is away). A report is about 150 bytes.
pub const CALL_REPORT_QUEUE: usize = 64;
/// Jobs (queued calls) this agent remembers having run, so a second delivery never runs one
/// again (`jobs`). An entry is kept until its job expires (at most a week); 4,096 is far
/// more than a Pi runs in that time at the proxy's pace (4 jobs out at once), and the file
/// holding them stays under 300 KB, rewritten atomically on each job.
pub const MAX_SEEN_JOBS: usize = 4_096;
/// Of those, how many one caller key may hold: a quarter, so one caller's flood of
/// week-long jobs (each remembered until it expires) cannot lock every other caller out
/// of this agent for a week. Over either bound a job is refused ("busy", saying when room
/// comes back), never run while another is forgotten.
pub const MAX_SEEN_JOBS_PER_CALLER: usize = MAX_SEEN_JOBS / 4;

/// Bytes of a job's output the agent keeps to answer a repeat delivery (the output is sent
/// once in any case). With [`MAX_SEEN_JOBS`] outcomes kept, 16 KiB each bounds the record
/// at about 64 MiB of an SD card, where full 256 KiB outputs would take 1 GiB. A repeat of
/// a job with a bigger output is answered with its signed result and no output.
pub const MAX_STORED_JOB_OUTPUT: usize = 16 * 1024;

/// Largest output a queued call sends back: what the proxy keeps for `wtd result`
/// (`wtd_proxy::defaults::MAX_JOB_OUTPUT`), so one update fits in a frame.
pub const MAX_JOB_OUTPUT: usize = 256 * 1024;

/// Deliveries waiting for the job runner. The proxy sends at most 4 at once per agent; a
/// delivery that finds this full is dropped here and delivered again on the next session.
pub const JOB_QUEUE: usize = 16;

/// Job updates waiting to go to the proxy (kept across reconnections).
pub const JOB_UPDATES: usize = 64;
/// How a handler emits a signed event: `echo 'wtd-emit: unfriend {"user":"ann"}' >&2` (a
/// topic, a space, a JSON body). Unlike `wtd-event:` (MQTT, best effort, opt-in), each one
/// is appended to the agent's signed event log of the mission, durably, before the call
/// goes on; see `streams`.
pub const EMIT_PREFIX: &str = "wtd-emit:";

/// Signed events one mission may emit per second, and at once: an event log is kept on
/// the SD card and at the proxy, so a handler printing events in a loop must not fill them.
/// What is over is dropped, and the handler's call says so in the agent's log.
pub const SIGNED_EVENTS_PER_S: u32 = 200;
pub const SIGNED_EVENTS_BURST: u32 = 1_000;

/// Events of each mission kept on the agent (on disk and in memory) for the proxy to fetch
/// again if it lost them; past twice this the file is trimmed back to it. 4,096 events of
/// up to 4 KiB is at most 16 MiB per mission, a few hundred KB for usual event sizes.
pub const AGENT_EVENTS_KEPT: usize = 4_096;

/// Events sent to the proxy per publish (one QUIC stream each): 64 of at most ~8 KiB stay
/// under half a frame.
pub const PUBLISH_BATCH: usize = 64;

/// Entries of one function's `subscribe` list.
pub const MAX_SUBSCRIPTIONS: usize = 16;

/// How long a subscription waits before trying again after it failed (no proxy, no grant,
/// a gap the proxy would not fill).
pub const SUBSCRIBE_RETRY: std::time::Duration = std::time::Duration::from_secs(2);

/// Times a handler is tried on one event before the event is skipped (logged), so that one
/// event a handler cannot take does not stop every later one.
pub const HANDLER_ATTEMPTS: u32 = 3;

/// The QUIC send priority of the control stream (heartbeats, events, reports), above the
/// callers' sessions on the same connection (quinn's default, 0): under congestion a
/// heartbeat goes out before queued answers. Heartbeats are about 100 bytes a second, so
/// this costs the sessions nothing.
pub const CONTROL_STREAM_PRIORITY: i32 = 1;
