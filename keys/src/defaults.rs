//! Every number in the security core that has a reason, with the reason.

/// Largest encoded record (grant, revocation, log entry) we will decode, in bytes.
/// A grant naming 256 agents is about 9 KiB; anything bigger is an attack or a bug,
/// and refusing it before parsing keeps memory bounded.
pub const MAX_RECORD_LEN: usize = 16 * 1024;

/// Largest ticket we will decode, in bytes (before the text encoding).
/// A ticket carries a few grants plus the proxy's address; 64 KiB is generous.
pub const MAX_TICKET_LEN: usize = 64 * 1024;

/// How far two clocks may disagree and still agree a grant is valid, in milliseconds.
/// Pis without a real-time clock get their time from NTP, or from a teacher's laptop;
/// a minute covers a sloppy sync without letting an expired grant live much longer.
pub const CLOCK_SKEW_MS: u64 = 60 * 1000;

/// A grant without `--expires` lives this long. Expiry is always finite so that a
/// revocation the proxy withholds cannot keep a grant alive forever.
pub const DEFAULT_GRANT_TTL_MS: u64 = 30 * 24 * 3600 * 1000;

/// The longest a grant may live. A year is long enough for a lab kit, short enough that
/// a lost laptop's grants die on their own.
pub const MAX_GRANT_TTL_MS: u64 = 366 * 24 * 3600 * 1000;

/// Rate used when `--rate` is not given: 60 calls a minute.
pub const DEFAULT_RATE: (u32, u64) = (60, 60 * 1000);

/// Calls a grantee may run at once on one agent when `--concurrency` is not given.
pub const DEFAULT_CONCURRENCY: u32 = 4;

/// Most agents a grant's audience may name; use `all` beyond that.
pub const MAX_AUDIENCE: usize = 256;

/// Longest mission or function name, in bytes.
pub const MAX_NAME_LEN: usize = 64;

/// Most grants one ticket may carry.
pub const MAX_TICKET_GRANTS: usize = 64;

/// Most proxy addresses one ticket may carry.
pub const MAX_TICKET_ADDRS: usize = 8;

/// Largest owner-log entry: one record plus the entry's own fields and signature.
pub const MAX_LOG_ENTRY_LEN: usize = MAX_RECORD_LEN + 256;

/// How old (or how far in the future) a signed call may be when it reaches the agent, in
/// milliseconds. It covers a caller's and an agent's clocks disagreeing by about a minute
/// (as [`CLOCK_SKEW_MS`] does for grants) plus the trip through the proxy. It is also how
/// long the agent must remember each call's request id to refuse a replay, so a shorter
/// window means less memory; a longer one lets badly-synced clocks work.
pub const CALL_FRESHNESS_MS: u64 = 60 * 1000;

/// Most calls the agent's replay guard remembers at once. A call is remembered until it is
/// too old to be accepted anyway: at most twice [`CALL_FRESHNESS_MS`] (a call may be dated
/// that far in the future, then stays valid that long). 100 000 is about 800 calls a second
/// for two minutes, far more than a Pi runs, and costs at most about 16 MB (two index
/// entries of ~80 bytes per call). Beyond it new calls are refused rather than old entries
/// forgotten: forgetting one early would let its replay through.
pub const MAX_REPLAY_ENTRIES: usize = 100_000;

/// An enrollment token without `--expires` adopts nothing after this long. A week covers
/// flashing a stack of cards on Sunday and booting them in class on Friday; a card lost
/// in a drawer for longer should get a fresh token.
pub const DEFAULT_ENROLL_TTL_MS: u64 = 7 * 24 * 3600 * 1000;

/// The longest an enrollment token may live: a term. A token is a secret on a card that
/// can be copied; the shorter it lives, the less a copy is worth.
pub const MAX_ENROLL_TTL_MS: u64 = 120 * 24 * 3600 * 1000;

/// Public keys remembered as having passed every check (`identity::PublicId::from_bytes`).
/// The same few keys come back again and again (an owner's key is in every entry of her
/// log, every grant and every advert naming her), and each check costs a point
/// decompression, about 8 µs on a laptop. 64 keys is a classroom's owners and agents;
/// 64 x 32 bytes is the whole cost, and a scan of it is far cheaper than one check.
pub const KEY_MEMO: usize = 64;

/// Grants one set revocation may end (`wtd revoke --class`): a lesson's, one per student.
/// 512 ids are 8 KiB, half of [`MAX_RECORD_LEN`], leaving room for the rest of the record
/// and the log entry around it; a class is 30, a school's whole year fits.
pub const MAX_REVOKED_SET: usize = 512;

/// Longest lesson label (`wtd grant --class ... --label`), in bytes: a name people read
/// in `wtd grants`, like `roster-2026-12-03` or `year 9, lesson 3`.
pub const MAX_LABEL_LEN: usize = 64;
/// The longest a job (`wtd push`, `wtd call --async`) may wait for an agent, in
/// milliseconds: a week, so a job pushed on Friday to a classroom Pi that is off over the
/// weekend still runs on Monday. It is also how long an agent must remember each job's
/// request id to refuse a second delivery (`wtd_keys::job`), so it bounds that memory.
pub const MAX_JOB_LIFETIME_MS: u64 = 7 * 24 * 3_600_000;

/// How long a job waits for an agent when its caller does not say (`wtd push --expires`):
/// an hour, a lesson's length. Past it, a job nobody ran is marked expired and never runs.
pub const DEFAULT_JOB_EXPIRY_MS: u64 = 3_600_000;
/// Longest body of a signed event, in bytes. An event says what happened (`{"user":
/// "ann", "friend": "parents"}`); bulk data belongs in a call's result. Small enough that
/// a proxy storing a day of a classroom's events fits in memory on a laptop.
pub const MAX_EVENT_BODY: usize = 4 * 1024;

/// Most logs one event may depend on. An event emitted while handling another depends on
/// that one and on what it depended on; a few dozen covers any real chain of services.
pub const MAX_EVENT_DEPS: usize = 32;

/// Most events a call's *cause* names (`WTD_CAUSE`, and the cause a call carries on the
/// wire). They become dependencies of the events the called function emits, one per log,
/// so the bound is the same as an event's: a longer cause could never be signed.
pub const MAX_CAUSE: usize = MAX_EVENT_DEPS;

/// Longest cause text (`WTD_CAUSE`), in bytes: [`MAX_CAUSE`] entries of
/// `<publisher>:<mission>:<seq>` (60 + 64 + 20 characters, and separators) fit in it.
/// Checked before the text is split, so a huge variable costs nothing to refuse.
pub const MAX_CAUSE_TEXT: usize = MAX_CAUSE * 150;

/// Longest encoded event: its body, its dependencies (up to 105 bytes each) and headers.
pub const MAX_EVENT_LEN: usize = MAX_EVENT_BODY + MAX_EVENT_DEPS * 105 + 512;

/// Most events a subscriber holds back waiting for the events they depend on. Past this
/// the proxy is withholding something (or a publisher is gone), and the subscriber says so
/// rather than growing without bound.
pub const MAX_HELD_EVENTS: usize = 10_000;
