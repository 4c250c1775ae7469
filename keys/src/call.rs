//! Receipts: signed calls and signed results, for when a call must be provable to a third
//! party, or travels without a live session.
//!
//! A live call needs none of this: inside its end-to-end TLS session the caller's key is
//! proven by the handshake and every record is sealed by the session (see `wtd_wire::call`
//! for the argument, case by case). A caller who wants *evidence* asks for a receipt
//! (`wtd call --receipt`), and then:
//!
//! 1. Bob's caller builds a [`Call`]: which agent, which function, the hash of the argument
//!    bytes, a fresh [`RequestId`], the session binding of its session with that agent, and
//!    the time. It signs it; the call record and the argument bytes travel side by side.
//! 2. The agent runs [`check_receipt_call`] (who signed it, for whom, on which session, for
//!    which function, with which arguments, when, and whether it was seen before), then
//!    authorizes the call as it does every call. Only then does the function run.
//! 3. The agent signs a [`CallResult`] made with [`CallResult::for_call`]: the status, the
//!    hash of the output bytes, and the hash of the exact call it answers. The output
//!    travels next to the record, so a big output is not limited by the record size.
//! 4. Bob's caller runs [`verify_result`] before believing a single byte of the output, and
//!    keeps both records. Later anyone holding the two public ids can run
//!    [`verify_receipt`] on them, with no key and no network.
//!
//! A receipt shows that Bob's key asked this agent for this function with these arguments
//! at this time, and that the agent's key answered this status and this output. Even a
//! proxy that could break the session could not:
//! - forge or alter a call (the caller signs it) or a result (the agent signs it);
//! - send Bob's call to another agent (the call names its agent: [`CallError::WrongAgent`]);
//! - replay it on another session (the call names its session: [`CallError::WrongSession`]);
//! - swap the arguments or the output (both are hashed into a signed record);
//! - run it twice (request id + freshness window: [`CallError::Replayed`], [`CallError::Stale`]);
//! - pass one call's result off as another's (a result names its call's hash).
//!
//! ```text
//! call   = kind(5) version(1)
//!          1 caller       user key (32)
//!          2 agent        agent key (32)
//!          3 mission      canonical name
//!          4 function     canonical name
//!          5 args_hash    SHA-256("wtd call args" || 0 || argument bytes)   (32)
//!          6 request_id   16 random bytes
//!          7 session      the session binding (32), see below
//!          8 issued_at    u64 ms since epoch
//!        255 signature    by caller, domain "wtd call v1"
//! call_hash(call) = SHA-256("wtd call hash v1" || 0 || call bytes)
//!
//! result = kind(6) version(1)
//!          1 agent        agent key (32)
//!          2 request_id   16 bytes, copied from the call
//!          3 call_hash    32 bytes
//!          4 status       u8: 0 ok | 1 function failed | 2 timed out | 3 cancelled (revoked)
//!                             | 4 output too large
//!          5 output_hash  SHA-256("wtd result output" || 0 || output bytes)   (32)
//!          6 finished_at  u64 ms since epoch
//!        255 signature    by agent, domain "wtd result v1"
//! ```
//!
//! # The session binding
//! Caller and agent talk over one end-to-end TLS session, relayed by the proxy. Both ends
//! derive 32 bytes from it with the TLS exporter (label [`SESSION_EXPORTER_LABEL`], no
//! context). Only the two ends of that session get those bytes, and every session gets
//! different ones, so a signed call copied onto any other connection is refused. This is
//! also why the [`ReplayGuard`] may live in memory: when the agent restarts, every session
//! (and so every binding) is new, and nothing recorded before the restart can be replayed.
//!
//! # Why the replay guard can forget
//! A call is accepted only within [`CALL_FRESHNESS_MS`] of its `issued_at` (each way), and
//! staleness is checked before the guard is consulted. So once a call is older than the
//! window, the guard can forget it: a copy would be refused as stale anyway. What the guard
//! never does on its own is forget a call that is still fresh; when it is full it refuses
//! new calls instead ([`CallError::ReplayCacheFull`]). Only the agent may make it forget one,
//! and only a call that did not run ([`ReplayGuard::forget`]).

use std::collections::{BTreeSet, HashMap};
use std::fmt;

use sha2::{Digest, Sha256};

use crate::authz::Request;
use crate::defaults::{CALL_FRESHNESS_MS, MAX_RECORD_LEN, MAX_REPLAY_ENTRIES};
use crate::encoding::{fixed, DecodeError, Reader, Writer};
use crate::identity::{AgentId, Domain, SecretKey, UserKey};
use crate::names::{FunctionName, MissionName};
use crate::record::{self, RecordError, SIGNATURE_TAG};
use crate::time::{human_duration, Timestamp};

pub const KIND: u8 = 5;
pub const VERSION: u8 = 1;
pub const DOMAIN: Domain = Domain("wtd call v1");
const KNOWN: &[u8] = &[1, 2, 3, 4, 5, 6, 7, 8, SIGNATURE_TAG];

pub const RESULT_KIND: u8 = 6;
pub const RESULT_VERSION: u8 = 1;
pub const RESULT_DOMAIN: Domain = Domain("wtd result v1");
const RESULT_KNOWN: &[u8] = &[1, 2, 3, 4, 5, 6, SIGNATURE_TAG];

/// The TLS exporter label both ends use to derive a call's `session` (32 bytes, no
/// context). In rustls: `conn.export_keying_material([0u8; 32], SESSION_EXPORTER_LABEL, None)`.
pub const SESSION_EXPORTER_LABEL: &[u8] = b"EXPORTER-wtd call session v1";

// Each hash has its own prefix, so the hash of some arguments can never be passed off as
// the hash of an output or of a call with the same bytes.
const ARGS_HASH_DOMAIN: &[u8] = b"wtd call args\0";
const OUTPUT_HASH_DOMAIN: &[u8] = b"wtd result output\0";
const CALL_HASH_DOMAIN: &[u8] = b"wtd call hash v1\0";

fn sha256(prefix: &[u8], bytes: &[u8]) -> [u8; 32] {
    Sha256::new_with_prefix(prefix)
        .chain_update(bytes)
        .finalize()
        .into()
}

/// The hash a call carries for its argument bytes: exactly the bytes the function receives.
pub fn args_hash(args: &[u8]) -> [u8; 32] {
    sha256(ARGS_HASH_DOMAIN, args)
}

/// The hash a result carries for its output bytes.
pub fn output_hash(output: &[u8]) -> [u8; 32] {
    sha256(OUTPUT_HASH_DOMAIN, output)
}

/// The first bytes of a hash, for `Debug`: enough to tell two apart in a failure message.
struct Short<'a>(&'a [u8]);

impl fmt::Debug for Short<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}..", data_encoding::HEXLOWER.encode(&self.0[..6]))
    }
}

// ---------------------------------------------------------------------------------------
// Request ids
// ---------------------------------------------------------------------------------------

/// A call's random 128-bit id, chosen by the caller. Text form: `req-` + 26 base32
/// characters. A result names it, so the caller can match results to calls; the agent
/// refuses a second call with the same id from the same caller within the freshness window.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub [u8; 16]);

impl RequestId {
    pub fn random() -> Self {
        let mut b = [0u8; 16];
        getrandom::getrandom(&mut b).expect("the operating system has no random source");
        RequestId(b)
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "req-{}",
            data_encoding::BASE32_NOPAD.encode(&self.0).to_ascii_lowercase()
        )
    }
}

impl fmt::Debug for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RequestId({self})")
    }
}

impl std::str::FromStr for RequestId {
    type Err = DecodeError;
    fn from_str(s: &str) -> Result<Self, DecodeError> {
        let bad = DecodeError::BadValue {
            field: "request id",
            reason: "expected `req-` followed by 26 letters and digits, as printed by wtd",
        };
        let body = s.trim().strip_prefix("req-").ok_or(bad.clone())?;
        // Canonical text is lowercase; accept only that, so one id has one spelling.
        if body.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(bad);
        }
        let raw = data_encoding::BASE32_NOPAD
            .decode(body.to_ascii_uppercase().as_bytes())
            .map_err(|_| bad.clone())?;
        Ok(RequestId(raw.try_into().map_err(|_| bad)?))
    }
}

// ---------------------------------------------------------------------------------------
// Calls
// ---------------------------------------------------------------------------------------

/// The content of a call. Sign it with [`Call::sign`]; receive one with
/// [`SignedCall::decode`] (or, on an agent, [`check_call`]).
#[derive(Clone, PartialEq, Eq)]
pub struct Call {
    /// Who calls, and signs. An agent accepts the call only from the key that proved
    /// itself on the connection it arrived on.
    pub caller: UserKey,
    /// The one agent this call is for. Any other agent refuses it.
    pub agent: AgentId,
    pub mission: MissionName,
    pub function: FunctionName,
    /// [`args_hash`] of the argument bytes, which travel next to the record.
    pub args_hash: [u8; 32],
    pub request_id: RequestId,
    /// The binding of the caller's TLS session with the agent (see the module docs).
    pub session: [u8; 32],
    /// When the caller signed it, by the caller's clock.
    pub issued_at: Timestamp,
}

impl fmt::Debug for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Call")
            .field("caller", &self.caller)
            .field("agent", &self.agent)
            .field("mission", &self.mission)
            .field("function", &self.function)
            .field("args_hash", &Short(&self.args_hash))
            .field("request_id", &self.request_id)
            .field("session", &Short(&self.session))
            .field("issued_at", &self.issued_at)
            .finish()
    }
}

impl Call {
    /// A new call of `mission/function` on `agent` with `args`, over the session whose
    /// binding is `session`, with a fresh random request id.
    pub fn new(
        caller: UserKey,
        agent: AgentId,
        mission: MissionName,
        function: FunctionName,
        args: &[u8],
        session: [u8; 32],
        now: Timestamp,
    ) -> Call {
        Call {
            caller,
            agent,
            mission,
            function,
            args_hash: args_hash(args),
            request_id: RequestId::random(),
            session,
            issued_at: now,
        }
    }

    /// Signs the call. Panics if `caller` is not the signer's key: that is a programming
    /// error in the caller.
    pub fn sign(self, caller: &SecretKey) -> SignedCall {
        assert_eq!(
            caller.public(),
            *self.caller.key(),
            "a call is signed by its caller"
        );
        let mut w = Writer::new(KIND, VERSION);
        w.key(1, self.caller.key())
            .key(2, self.agent.key())
            .str(3, self.mission.as_str())
            .str(4, self.function.as_str())
            .bytes(5, &self.args_hash)
            .bytes(6, &self.request_id.0)
            .bytes(7, &self.session)
            .u64(8, self.issued_at.0);
        let bytes = record::seal(w, DOMAIN, caller);
        SignedCall { call: self, bytes }
    }
}

/// A call whose signature by its caller has been verified (and nothing else: on an agent,
/// use [`check_call`]). It keeps its exact bytes, which its result's `call_hash` covers.
#[derive(Clone, PartialEq, Eq)]
pub struct SignedCall {
    call: Call,
    bytes: Vec<u8>,
}

impl fmt::Debug for SignedCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("SignedCall").field(&self.call).finish()
    }
}

impl SignedCall {
    pub fn call(&self) -> &Call {
        &self.call
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The hash a result names to say which call it answers.
    pub fn hash(&self) -> [u8; 32] {
        sha256(CALL_HASH_DOMAIN, &self.bytes)
    }

    /// The question for [`authorize`](crate::authz::authorize): may this caller run this
    /// function here, `now`?
    pub fn request(&self, now: Timestamp) -> Request<'_> {
        Request {
            caller: &self.call.caller,
            agent: &self.call.agent,
            mission: &self.call.mission,
            function: &self.call.function,
            now,
        }
    }

    /// Decodes a call and verifies its signature by the `caller` it names. Fails on any
    /// malformed input or a bad signature. It checks nothing else: see [`check_call`].
    pub fn decode(bytes: &[u8]) -> Result<SignedCall, RecordError> {
        let mut r = Reader::new(bytes, MAX_RECORD_LEN, "call", KIND, VERSION, KNOWN)?;
        let caller = UserKey(r.key(1, "caller")?);
        let call = Call {
            caller,
            agent: AgentId(r.key(2, "agent")?),
            mission: r.name(3, "mission")?,
            function: r.name(4, "function")?,
            args_hash: fixed(r.field(5, "args_hash")?, "args_hash")?,
            request_id: RequestId(fixed(r.field(6, "request_id")?, "request_id")?),
            session: fixed(r.field(7, "session")?, "session")?,
            issued_at: Timestamp(r.u64(8, "issued_at")?),
        };
        record::open(r, DOMAIN, caller.key())?;
        Ok(SignedCall {
            call,
            bytes: bytes.to_vec(),
        })
    }
}

// ---------------------------------------------------------------------------------------
// The agent's check
// ---------------------------------------------------------------------------------------

/// Why an agent refused a call before authorization. Each says the likely cause; none is
/// about grants (that is [`Deny`](crate::authz::Deny)).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The bytes are not a well-formed call, or its signature does not verify with the
    /// caller key it names: it was damaged or altered on the way, or forged.
    #[error("refused a call: {0}")]
    Record(#[from] RecordError),
    /// Signed by a valid key, but not by the one that opened this connection: someone is
    /// passing on a call another person signed.
    #[error(
        "this call was signed by {}, but the connection was opened by {}: someone is passing on \
         another person's call",
        .signer.key().short(), .peer.key().short()
    )]
    NotFromPeer { signer: UserKey, peer: UserKey },
    /// Signed for another agent: something (most likely the proxy) redirected it here.
    #[error(
        "this call was signed for agent {}, not this one ({}): the proxy may be redirecting calls",
        .intended.key().short(), .me.key().short()
    )]
    WrongAgent { intended: AgentId, me: AgentId },
    /// Signed for another TLS session: copied from another connection, or the two ends
    /// derived the binding differently (a bug in one of them).
    #[error(
        "this call was signed for another connection: it was copied from another session, or \
         the caller and this agent disagree on the session binding (a bug: update both)"
    )]
    WrongSession,
    /// The argument bytes are not the ones the caller signed: altered on the way.
    #[error("the arguments are not the ones the caller signed: they were altered on the way")]
    ArgsMismatch,
    /// The signed call names another function than the one the message asks to run: the
    /// caller's software is broken (a receipt must cover exactly what runs).
    #[error(
        "the signed call is for {signed}, but the message asks to run {asked}: a receipt must cover \
         exactly the call that runs; this is a bug in the caller's software"
    )]
    WrongFunction { signed: String, asked: String },
    /// Signed longer ago than the freshness window: the caller's clock is behind, or the
    /// call was held back (or is being replayed).
    #[error(
        "this call was signed {} ago, and a call is valid for {}: the caller's clock is behind, \
         or the call was held back on the way; check both clocks and call again",
        human_duration(*.age_ms), human_duration(CALL_FRESHNESS_MS)
    )]
    Stale { age_ms: u64 },
    /// Dated further in the future than the window allows: the caller's clock is ahead.
    #[error(
        "this call is dated {} in the future: the caller's clock is ahead (or this agent's is \
         behind); fix the time sync and call again",
        human_duration(*.ahead_ms)
    )]
    FromTheFuture { ahead_ms: u64 },
    /// A call with this request id from this caller was already received: a replay, or a
    /// caller that reuses request ids.
    #[error("call {request} was already received: this copy is a replay, or the caller reused a request id")]
    Replayed { request: RequestId },
    /// The replay guard is full of recent calls and cannot remember one more.
    #[error(
        "this agent is remembering {limit} recent calls, as many as it can; it refuses new calls \
         rather than risk running a replay; try again in a minute"
    )]
    ReplayCacheFull { limit: usize },
}

/// The agent's check of an incoming call, before authorization. In this order:
/// 1. it decodes and its signature verifies with the caller key it names;
/// 2. that caller is `tls_peer`, the key that proved itself on this connection;
/// 3. it names this agent, `me`;
/// 4. it names this connection's `session` binding;
/// 5. `args` are the argument bytes it was signed with;
/// 6. it was issued within [`CALL_FRESHNESS_MS`] of `now` (either way);
/// 7. its request id was not seen from this caller before; it is then remembered.
///
/// `now` is the agent's clock (raised to its `TimeFloor`); the guard also never lets it go
/// back. On success, ask [`authorize`](crate::authz::authorize) with
/// [`SignedCall::request`]. If the call is then not run for any reason (authorization
/// refuses it, the function does not exist), hand it to [`ReplayGuard::forget`] (see there
/// why).
pub fn check_call(
    bytes: &[u8],
    tls_peer: &UserKey,
    me: &AgentId,
    session: &[u8; 32],
    args: &[u8],
    now: Timestamp,
    replay: &mut ReplayGuard,
) -> Result<SignedCall, CallError> {
    let signed = SignedCall::decode(bytes)?;
    let call = &signed.call;
    if call.caller != *tls_peer {
        return Err(CallError::NotFromPeer {
            signer: call.caller,
            peer: *tls_peer,
        });
    }
    if call.agent != *me {
        return Err(CallError::WrongAgent {
            intended: call.agent,
            me: *me,
        });
    }
    if call.session != *session {
        return Err(CallError::WrongSession);
    }
    if call.args_hash != args_hash(args) {
        return Err(CallError::ArgsMismatch);
    }
    let now = replay.advance(now);
    let age_ms = call.issued_at.until(now);
    if age_ms > CALL_FRESHNESS_MS {
        return Err(CallError::Stale { age_ms });
    }
    let ahead_ms = now.until(call.issued_at);
    if ahead_ms > CALL_FRESHNESS_MS {
        return Err(CallError::FromTheFuture { ahead_ms });
    }
    replay.insert(call.caller, call.request_id, call.issued_at)?;
    Ok(signed)
}

/// [`check_call`] for a call that asks for a receipt, plus: the signed call is for
/// exactly `mission/function`, the function the session message asks to run. A call that
/// fails this last check is forgotten again by the guard (it never runs).
#[allow(clippy::too_many_arguments)]
pub fn check_receipt_call(
    bytes: &[u8],
    tls_peer: &UserKey,
    me: &AgentId,
    session: &[u8; 32],
    mission: &MissionName,
    function: &FunctionName,
    args: &[u8],
    now: Timestamp,
    replay: &mut ReplayGuard,
) -> Result<SignedCall, CallError> {
    let signed = check_call(bytes, tls_peer, me, session, args, now, replay)?;
    let call = signed.call();
    if call.mission != *mission || call.function != *function {
        replay.forget(&signed);
        return Err(CallError::WrongFunction {
            signed: format!("{}/{}", call.mission, call.function),
            asked: format!("{mission}/{function}"),
        });
    }
    Ok(signed)
}

/// The agent's memory of recent calls, to refuse a replay. Pure and bounded: it holds only
/// calls still inside the freshness window, and at most a fixed number of them.
///
/// It is keyed by (caller, request id), so two callers choosing the same id do not collide,
/// and a caller cannot get a call run twice by re-signing it with a new timestamp.
#[derive(Clone)]
pub struct ReplayGuard {
    /// Every remembered call, with the last instant a copy of it could still be fresh.
    seen: HashMap<(UserKey, RequestId), Timestamp>,
    /// The same entries ordered by that instant, so forgetting looks only at the oldest.
    by_expiry: BTreeSet<(Timestamp, UserKey, RequestId)>,
    /// The latest `now` seen. Checks use it when the clock is behind it, so a clock stepped
    /// back cannot make a call fresh again after the guard forgot it.
    latest: Timestamp,
    limit: usize,
}

impl fmt::Debug for ReplayGuard {
    // Not the entries: there may be 100 000 of them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplayGuard")
            .field("len", &self.seen.len())
            .field("limit", &self.limit)
            .field("latest", &self.latest)
            .finish()
    }
}

impl Default for ReplayGuard {
    fn default() -> Self {
        ReplayGuard::new()
    }
}

impl ReplayGuard {
    /// A guard holding at most [`MAX_REPLAY_ENTRIES`] calls.
    pub fn new() -> Self {
        ReplayGuard::with_limit(MAX_REPLAY_ENTRIES)
    }

    /// A guard holding at most `limit` calls (a smaller device, or a test).
    pub fn with_limit(limit: usize) -> Self {
        ReplayGuard {
            seen: HashMap::new(),
            by_expiry: BTreeSet::new(),
            latest: Timestamp(0),
            limit,
        }
    }

    /// How many calls it remembers now.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Moves the guard's clock to `now` (never back) and forgets every call too old to be
    /// accepted again. Returns the time checks must use. [`check_call`] calls it; an idle
    /// agent may call it on a timer to give the memory back sooner.
    pub fn advance(&mut self, now: Timestamp) -> Timestamp {
        self.latest = self.latest.max(now);
        while let Some(&(expiry, caller, id)) = self.by_expiry.first() {
            if expiry >= self.latest {
                break;
            }
            self.by_expiry.pop_first();
            self.seen.remove(&(caller, id));
        }
        self.latest
    }

    /// Remembers a call that was just found fresh. Private: remembering a call that was not
    /// checked for freshness first could let it be forgotten, then replayed, while fresh.
    fn insert(&mut self, caller: UserKey, id: RequestId, issued_at: Timestamp) -> Result<(), CallError> {
        if self.seen.contains_key(&(caller, id)) {
            return Err(CallError::Replayed { request: id });
        }
        if self.seen.len() >= self.limit {
            return Err(CallError::ReplayCacheFull { limit: self.limit });
        }
        let expiry = issued_at.plus_ms(CALL_FRESHNESS_MS);
        self.seen.insert((caller, id), expiry);
        self.by_expiry.insert((expiry, caller, id));
        Ok(())
    }

    /// Forgets a call that [`check_call`] accepted but that did not run: authorization
    /// refused it, or the agent has no such function.
    ///
    /// Why: `check_call` remembers every call that passes it, including calls from keys that
    /// hold no grant at all; without this, anyone able to connect could fill the guard with
    /// signed junk and lock everyone out ([`CallError::ReplayCacheFull`]). Forgetting a call
    /// that never ran is safe: a copy can only arrive on the same session (the binding),
    /// that is from its own caller, and it is then judged again like a new call.
    ///
    /// Never forget a call that ran, or one that `check_call` refused as
    /// [`CallError::Replayed`] (that would forget the original).
    pub fn forget(&mut self, call: &SignedCall) {
        let key = (call.call.caller, call.call.request_id);
        if let Some(expiry) = self.seen.remove(&key) {
            self.by_expiry.remove(&(expiry, key.0, key.1));
        }
    }
}

// ---------------------------------------------------------------------------------------
// Results
// ---------------------------------------------------------------------------------------

/// How a call ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CallStatus {
    /// The function ran and succeeded; the output is its answer.
    Ok,
    /// The function ran and reported a failure; the output says why.
    Failed,
    /// The function ran out of time and was stopped.
    TimedOut,
    /// Stopped before it finished because the grant it ran under was revoked.
    Cancelled,
    /// The function's output was larger than the agent sends back; the output is empty.
    OutputTooLarge,
}

impl CallStatus {
    /// Every status, in wire order.
    pub const ALL: [CallStatus; 5] = [
        CallStatus::Ok,
        CallStatus::Failed,
        CallStatus::TimedOut,
        CallStatus::Cancelled,
        CallStatus::OutputTooLarge,
    ];

    pub fn as_u8(self) -> u8 {
        match self {
            CallStatus::Ok => 0,
            CallStatus::Failed => 1,
            CallStatus::TimedOut => 2,
            CallStatus::Cancelled => 3,
            CallStatus::OutputTooLarge => 4,
        }
    }

    pub fn from_u8(v: u8) -> Option<CallStatus> {
        CallStatus::ALL.get(usize::from(v)).copied()
    }
}

impl fmt::Display for CallStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CallStatus::Ok => "ok",
            CallStatus::Failed => "the function failed",
            CallStatus::TimedOut => "the function timed out",
            CallStatus::Cancelled => "cancelled: the grant was revoked while it ran",
            CallStatus::OutputTooLarge => "the output was too large to send back",
        })
    }
}

/// The content of a result. Build it with [`CallResult::for_call`], sign it with
/// [`CallResult::sign`]; a caller checks one with [`verify_result`].
#[derive(Clone, PartialEq, Eq)]
pub struct CallResult {
    /// The agent that ran the call, and signs this.
    pub agent: AgentId,
    pub request_id: RequestId,
    /// [`SignedCall::hash`] of the call this answers.
    pub call_hash: [u8; 32],
    pub status: CallStatus,
    /// [`output_hash`] of the output bytes, which travel next to the record.
    pub output_hash: [u8; 32],
    /// When the call ended, by the agent's clock.
    pub finished_at: Timestamp,
}

impl fmt::Debug for CallResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallResult")
            .field("agent", &self.agent)
            .field("request_id", &self.request_id)
            .field("call_hash", &Short(&self.call_hash))
            .field("status", &self.status)
            .field("output_hash", &Short(&self.output_hash))
            .field("finished_at", &self.finished_at)
            .finish()
    }
}

impl CallResult {
    /// The result of `call`, which this agent ran: its agent, request id and hash are
    /// copied from the call, so they cannot be got wrong.
    pub fn for_call(call: &SignedCall, status: CallStatus, output: &[u8], finished_at: Timestamp) -> Self {
        CallResult {
            agent: call.call.agent,
            request_id: call.call.request_id,
            call_hash: call.hash(),
            status,
            output_hash: output_hash(output),
            finished_at,
        }
    }

    /// Signs the result. Panics if `agent` is not the signer's key: a programming error.
    pub fn sign(self, agent: &SecretKey) -> SignedResult {
        assert_eq!(
            agent.public(),
            *self.agent.key(),
            "a result is signed by its agent"
        );
        let mut w = Writer::new(RESULT_KIND, RESULT_VERSION);
        w.key(1, self.agent.key())
            .bytes(2, &self.request_id.0)
            .bytes(3, &self.call_hash)
            .u8(4, self.status.as_u8())
            .bytes(5, &self.output_hash)
            .u64(6, self.finished_at.0);
        let bytes = record::seal(w, RESULT_DOMAIN, agent);
        SignedResult { result: self, bytes }
    }
}

/// A result whose signature by the agent it names has been verified (and nothing else: a
/// caller uses [`verify_result`]).
#[derive(Clone, PartialEq, Eq)]
pub struct SignedResult {
    result: CallResult,
    bytes: Vec<u8>,
}

impl fmt::Debug for SignedResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("SignedResult").field(&self.result).finish()
    }
}

impl SignedResult {
    pub fn result(&self) -> &CallResult {
        &self.result
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Decodes a result and verifies its signature by the `agent` it names.
    pub fn decode(bytes: &[u8]) -> Result<SignedResult, RecordError> {
        let mut r = Reader::new(
            bytes,
            MAX_RECORD_LEN,
            "result",
            RESULT_KIND,
            RESULT_VERSION,
            RESULT_KNOWN,
        )?;
        let agent = AgentId(r.key(1, "agent")?);
        let request_id = RequestId(fixed(r.field(2, "request_id")?, "request_id")?);
        let call_hash = fixed(r.field(3, "call_hash")?, "call_hash")?;
        let status = CallStatus::from_u8(r.u8(4, "status")?).ok_or(DecodeError::BadValue {
            field: "status",
            reason: "unknown status (this wtd knows 0 to 4); upgrade wtd",
        })?;
        let result = CallResult {
            agent,
            request_id,
            call_hash,
            status,
            output_hash: fixed(r.field(5, "output_hash")?, "output_hash")?,
            finished_at: Timestamp(r.u64(6, "finished_at")?),
        };
        record::open(r, RESULT_DOMAIN, agent.key())?;
        Ok(SignedResult {
            result,
            bytes: bytes.to_vec(),
        })
    }
}

/// Why a caller refused a result. Each says the likely cause.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResultError {
    /// The bytes are not a well-formed result, or its signature does not verify with the
    /// agent key it names: damaged, altered or forged on the way.
    #[error("refused the result: {0}")]
    Record(#[from] RecordError),
    /// Signed by another agent than the one called.
    #[error(
        "this result is signed by agent {}, not by {} that was called: the proxy may be redirecting calls",
        .found.key().short(), .expected.key().short()
    )]
    WrongAgent { expected: AgentId, found: AgentId },
    /// Answers another request.
    #[error("this result answers {found}, not {expected}: results were mixed up or swapped on the way")]
    WrongRequest { expected: RequestId, found: RequestId },
    /// Names the right request id but another call: a result of an earlier call that
    /// reused the id, replayed or swapped in.
    #[error(
        "this result answers another call with the same request id: an old result was replayed or swapped in"
    )]
    WrongCall,
    /// The output bytes are not the ones the agent signed.
    #[error("the output is not the one the agent signed: it was altered on the way")]
    OutputMismatch,
}

/// A result the caller can believe: from the agent called, for exactly this call, with
/// exactly this output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedResult {
    signed: SignedResult,
}

impl VerifiedResult {
    pub fn status(&self) -> CallStatus {
        self.signed.result.status
    }

    pub fn finished_at(&self) -> Timestamp {
        self.signed.result.finished_at
    }

    /// The signed record, to keep as a receipt.
    pub fn signed(&self) -> &SignedResult {
        &self.signed
    }
}

/// The caller's check of a result for `call`, whose output bytes are `output`. In this
/// order: it decodes and its signature verifies with the agent key it names; that agent is
/// `expected_agent` and the one `call` was signed for; it names the call's request id and
/// the call's hash; `output` is what the agent signed.
pub fn verify_result(
    result_bytes: &[u8],
    output: &[u8],
    expected_agent: &AgentId,
    call: &SignedCall,
) -> Result<VerifiedResult, ResultError> {
    let signed = SignedResult::decode(result_bytes)?;
    let r = &signed.result;
    // Both: a caller that asked one agent but signed the call for another is told too.
    for expected in [expected_agent, &call.call.agent] {
        if r.agent != *expected {
            return Err(ResultError::WrongAgent {
                expected: *expected,
                found: r.agent,
            });
        }
    }
    if r.request_id != call.call.request_id {
        return Err(ResultError::WrongRequest {
            expected: call.call.request_id,
            found: r.request_id,
        });
    }
    if r.call_hash != call.hash() {
        return Err(ResultError::WrongCall);
    }
    if r.output_hash != output_hash(output) {
        return Err(ResultError::OutputMismatch);
    }
    Ok(VerifiedResult { signed })
}

/// Why a kept receipt does not check out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceiptError {
    /// The call record is damaged, or its signature does not verify with the caller key it
    /// names: the receipt was altered.
    #[error("the receipt's call does not verify: {0}")]
    Call(#[source] RecordError),
    /// The arguments kept with the receipt are not the ones the caller signed.
    #[error("the receipt's arguments are not the ones the caller signed: the receipt was altered")]
    ArgsMismatch,
    /// The result does not verify, or does not answer this call with this output.
    #[error("the receipt's result does not check out: {0}")]
    Result(#[source] ResultError),
}

/// A receipt that checks out: this caller asked this agent for this call, and the agent
/// answered this result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedReceipt {
    pub call: SignedCall,
    pub result: VerifiedResult,
}

/// Checks a receipt offline: the caller's signed call (`call_bytes`) with the arguments it
/// covers, and the agent's signed result (`result_bytes`) with the output it covers. Needs
/// no key and no network: each record names the public key that signed it, and the result
/// must come from the agent the call names. Who those keys belong to is for the reader to
/// know (compare them with `wtd keys` or `wtd ls`).
pub fn verify_receipt(
    call_bytes: &[u8],
    args: &[u8],
    result_bytes: &[u8],
    output: &[u8],
) -> Result<VerifiedReceipt, ReceiptError> {
    let call = SignedCall::decode(call_bytes).map_err(ReceiptError::Call)?;
    if call.call.args_hash != args_hash(args) {
        return Err(ReceiptError::ArgsMismatch);
    }
    let agent = call.call.agent;
    let result = verify_result(result_bytes, output, &agent, &call).map_err(ReceiptError::Result)?;
    Ok(VerifiedReceipt { call, result })
}
