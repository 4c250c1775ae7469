//! Answering calls: the agent's side of an end-to-end session.
//!
//! The proxy opens a stream on our connection for each caller session and tells us who
//! asked (a hint). Inside it, the caller and we run TLS with our keys
//! (`wtd_transport::session`), so the proxy only ever carries ciphertext, and the handshake
//! proves the caller's key: that key, and nothing the proxy says, is who calls. The session
//! then carries many calls at once (`wtd_wire::call` explains why a live call needs no
//! signature of its own). For each call, in this order and before anything runs:
//!
//! 1. the call number is new in this session, and the session has a free slot;
//! 2. the function exists here;
//! 3. if the caller asked for a receipt: its signed call, by the key the session proved,
//!    for this agent, this session and exactly this function and arguments, fresh, never
//!    seen before (`wtd_keys::call::check_receipt_call`);
//! 4. the caller is an owner who adopted this agent (her own call, no grant needed), or
//!    holds a grant: owner-signed by an owner whose log adopts this agent, for this caller,
//!    mission and agent, unexpired (by [`crate::clock`], never earlier than the time
//!    floor), unrevoked, within its rate and concurrency
//!    (`wtd_keys::authz::authorize`);
//!
//! and only then the function runs. Built-in functions answer at once, inside the read
//! loop; exec functions run as tasks of the session (owned by it: when the session ends,
//! they are stopped). Their progress lines stream back as events. One writer sends every
//! answer, many to a write when busy. If the owner revokes the grant while a call runs,
//! disowns this agent, or the caller cancels it, the call is stopped (its box is killed)
//! and the caller told which.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{join, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use wtd_keys::authz::{authorize, Decision, Deny, Permit, Policy, RateLimits, Request};
use wtd_keys::call::{check_receipt_call, CallResult, CallStatus, ReplayGuard, SignedCall};
use wtd_keys::event::{Dep, LogId};
use wtd_keys::job::SignedJob;
use wtd_keys::time::human_duration;
use wtd_keys::{
    AgentId, FunctionName, Grant, GrantId, MissionName, OwnerKey, Revocation, SecretKey, TimeFloor,
    Timestamp, UserKey,
};
use wtd_transport::session;
use wtd_transport::{read_frame, Connection, RecvStream, SendStream};
use wtd_wire::call::{AgentMsg, CallNumber, CallerMsg, Refused, Status};
use wtd_wire::codec::decode_with_limit;
use wtd_wire::defaults::MAX_FRAME;
use wtd_wire::{decode, encode_frame_into, Key, LogPosition, Relayed};

use crate::clock::Clock;
use crate::defaults;
use crate::events::MissionEvents;
use crate::exec::{self, ExecEvent, ExecOutcome, ExecRequest, RunAs};
use crate::metrics::{AgentMetrics, FunctionLabels};
use crate::missions::{Builtin, Catalogue, Run};
use crate::owner_logs::{LogsHandle, VerifiedLogs};
use crate::reports::CallReports;

/// A job that passed authorization: it holds its rate-limit slot until it has run.
#[derive(Debug)]
pub(crate) struct JobPermit {
    authority: Authority,
}

/// A call that is running, so a revocation (or its owner disowning this agent) can stop it.
#[derive(Debug)]
struct InFlight {
    /// The owner whose authority it runs under: the grant's issuer, or the calling owner.
    issuer: OwnerKey,
    /// The grant, or `None` for an owner's own call.
    grant: Option<GrantId>,
    cancel: CancellationToken,
}

/// What lets a call run: a grant (with its permit to give back), or the caller being an
/// owner who adopted this agent.
#[derive(Debug)]
enum Authority {
    Grant(Permit),
    Owner(OwnerKey),
}

impl Authority {
    fn issuer(&self) -> OwnerKey {
        match self {
            Authority::Grant(p) => p.issuer,
            Authority::Owner(o) => *o,
        }
    }

    fn grant(&self) -> Option<GrantId> {
        match self {
            Authority::Grant(p) => Some(p.grant),
            Authority::Owner(_) => None,
        }
    }
}

/// Why a running call should stop now, if it should: its grant was revoked, or the owner it
/// runs under no longer adopts this agent (or is no longer an owner).
fn stop_reason(
    logs: &VerifiedLogs,
    agent: &AgentId,
    issuer: &OwnerKey,
    grant: Option<GrantId>,
) -> Option<Stop> {
    if !logs.adoptions().adopts(issuer, agent) || logs.log(issuer).is_none() {
        return Some(Stop::Disowned);
    }
    match grant {
        Some(g) if revoked(logs, issuer, &g) => Some(Stop::Revoked),
        _ => None,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Revoked,
    Disowned,
}

/// What one caller's session knows: who (proven by TLS), its channel binding, and what
/// runs on it.
struct SessionState {
    caller: UserKey,
    binding: [u8; 32],
    /// Request ids of receipt calls, to refuse a repeated one (see `check_receipt_call`).
    replay: ReplayGuard,
    /// The highest call number seen: a new call must be above it, so no number is reused
    /// and nothing more has to be remembered.
    last_call: CallNumber,
    /// The exec calls running on this session, so the caller can cancel one.
    running: HashMap<CallNumber, CancellationToken>,
    /// Their tasks, owned by the session: dropped (and so stopped) when it ends.
    tasks: JoinSet<CallNumber>,
}

/// A call as the caller sent it, before any check.
struct Incoming {
    id: CallNumber,
    mission: String,
    function: String,
    args: Vec<u8>,
    signed: Option<Vec<u8>>,
    /// The events the call was made because of, checked (`cause_from_wire`).
    cause: Vec<Dep>,
}

/// An exec call that passed every check, on its way to run.
struct Running {
    id: CallNumber,
    mission: MissionName,
    function: FunctionName,
    args: Vec<u8>,
    receipt: Option<SignedCall>,
    /// What every event the function emits depends on (the call's cause).
    cause: Vec<Dep>,
    cancel: CancellationToken,
    /// Its entry in `State::in_flight`.
    key: u64,
    authority: Authority,
    /// When the call arrived, for its report's latency.
    arrived: std::time::Instant,
}

/// Mutable state shared by every session. A std mutex: held for bookkeeping only, never
/// across an await.
#[derive(Debug, Default)]
struct State {
    limits: RateLimits,
    floor: TimeFloor,
    /// The floor as last written to disk.
    floor_saved: Timestamp,
    in_flight: HashMap<u64, InFlight>,
}

/// Everything needed to answer calls; shared by all sessions.
#[derive(Debug)]
pub struct CallService {
    secret: SecretKey,
    /// Our certificate for end-to-end sessions, made at the first one and shared.
    identity: std::sync::OnceLock<Arc<wtd_transport::CertifiedKey>>,
    id: AgentId,
    name: String,
    catalogue: Arc<Catalogue>,
    logs: LogsHandle,
    state: Mutex<State>,
    floor_path: PathBuf,
    /// Who exec functions run as; an error (root, with no unprivileged user to drop to)
    /// makes every exec call fail with that reason rather than run as root.
    run_as: Result<RunAs, String>,
    next_call: AtomicU64,
    /// Where handlers' mission events go (bounded, never waits).
    mission_events: Arc<MissionEvents>,
    /// Calls by outcome and function durations (served only if `metrics` is set).
    metrics: Arc<AgentMetrics>,
    /// Call reports for the proxy's dashboard (a no-op unless the owner opted in).
    reports: Arc<CallReports>,
    /// The signed event logs handlers' `wtd-emit:` lines are appended to.
    streams: Arc<crate::streams::EventStreams>,
    /// The wall clock every grant, job window and time floor is checked by (see `clock`).
    clock: Clock,
}

impl CallService {
    // Each sink a call writes to is its own (mission events, dashboard reports, signed
    // streams), built and owned by `Agent::run`; a struct of them would only rename these.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        secret: SecretKey,
        name: String,
        catalogue: Arc<Catalogue>,
        logs: LogsHandle,
        floor_path: PathBuf,
        mission_events: Arc<MissionEvents>,
        reports: Arc<CallReports>,
        streams: Arc<crate::streams::EventStreams>,
        clock: Clock,
    ) -> Self {
        let floor = match wtd_store::floor::read(&floor_path) {
            Ok(floor) => floor.unwrap_or_default(),
            Err(e) => {
                log::warn!("{e}; starting from the clock as it is (a new floor is saved with the next call)");
                Default::default()
            }
        };
        CallService {
            id: AgentId(secret.public()),
            secret,
            identity: std::sync::OnceLock::new(),
            name,
            catalogue,
            logs,
            state: Mutex::new(State {
                floor,
                floor_saved: floor.0,
                ..State::default()
            }),
            floor_path,
            run_as: RunAs::for_agent().map_err(|e| {
                log::error!("exec functions cannot run: {e}");
                e.to_string()
            }),
            next_call: AtomicU64::new(0),
            mission_events,
            reports,
            streams,
            metrics: {
                let m = Arc::new(AgentMetrics::default());
                // When it started, by the real clock: metrics decide nothing.
                m.up_since.set(Clock::system().now().0 as f64 / 1000.0);
                m
            },
            clock,
        }
    }

    /// Now, by the agent's clock: what grants, job windows and the time floor are checked
    /// against, and the time signed into results.
    pub(crate) fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// The call counters and durations, for the metrics endpoint.
    pub fn metrics(&self) -> &Arc<AgentMetrics> {
        &self.metrics
    }

    /// Where handlers' mission events go.
    pub fn mission_events(&self) -> &Arc<MissionEvents> {
        &self.mission_events
    }

    /// Exec calls running now.
    pub fn running(&self) -> usize {
        self.state().in_flight.len()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Accepts the streams the proxy opens for callers, until the connection ends or
    /// `shutdown`. The sessions live in a `JoinSet` owned by this future: when it returns,
    /// or is dropped because the link ended, every session is aborted with it.
    pub async fn serve(self: Arc<Self>, connection: Connection, shutdown: CancellationToken) {
        let mut sessions = JoinSet::new();
        loop {
            // Forget finished sessions, so the set stays as small as what is running.
            while sessions.try_join_next().is_some() {}
            let (send, recv) = tokio::select! {
                _ = shutdown.cancelled() => break,
                s = connection.accept_bi() => match s {
                    Ok(s) => s,
                    Err(_) => break,
                },
            };
            sessions.spawn(self.clone().session(send, recv, shutdown.clone()));
        }
        sessions.shutdown().await;
    }

    /// Cancels running calls whose grant has been revoked, or whose owner disowned this
    /// agent, as soon as the record arrives. Runs until `shutdown`.
    ///
    /// Why cancel on disowning rather than let the call finish: disowning says "this
    /// machine is no longer mine", the same withdrawal of authority as revoking every grant
    /// of that owner here, and a revocation stops running calls too. A caller waiting on
    /// such a call is told it was cancelled and why.
    pub async fn enforce_revocations(self: Arc<Self>, shutdown: CancellationToken) {
        let mut logs = self.logs.clone();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                changed = logs.changed() => if changed.is_err() { return },
            }
            let snapshot = logs.borrow_and_update().clone();
            let state = self.state();
            for call in state.in_flight.values() {
                if call.cancel.is_cancelled() {
                    continue;
                }
                match stop_reason(&snapshot, &self.id, &call.issuer, call.grant) {
                    Some(Stop::Revoked) => {
                        log::info!(agent:% = self.id; "cancelling a running call: its grant was revoked");
                    }
                    Some(Stop::Disowned) => {
                        log::info!(agent:% = self.id, owner:% = call.issuer; "cancelling a running call: its owner disowned this agent");
                    }
                    None => continue,
                }
                call.cancel.cancel();
            }
        }
    }

    async fn session(self: Arc<Self>, send: SendStream, mut recv: RecvStream, stop: CancellationToken) {
        let hello = tokio::time::timeout(
            defaults::SESSION_HANDSHAKE_TIMEOUT,
            read_frame(&mut recv, MAX_FRAME),
        )
        .await;
        let Ok(Ok(Some(hello))) = hello else { return };
        let Ok(Relayed { from }) = decode::<Relayed>(&hello) else {
            return;
        };
        let identity = match self.identity.get() {
            Some(id) => id.clone(),
            None => match wtd_transport::certified_key(&self.secret) {
                Ok(id) => self.identity.get_or_init(|| id).clone(),
                Err(e) => {
                    log::error!(agent:% = self.id; "cannot make the certificate for sessions: {e}");
                    return;
                }
            },
        };
        let io = join(recv, send);
        let handshake = tokio::time::timeout(
            defaults::SESSION_HANDSHAKE_TIMEOUT,
            session::accept_as(identity, io),
        );
        let (tls, peer, binding) = match handshake.await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                log::info!(agent:% = self.id; "a caller's session failed: {e}");
                return;
            }
            Err(_) => return,
        };
        log::debug!(agent:% = self.id, caller:% = peer.short(); "session opened");
        self.metrics.sessions.inc();
        self.metrics.sessions_open.inc();
        let metrics = self.metrics.clone();
        let _open = OnDrop(move || {
            metrics.sessions_open.dec();
        });
        if from.parse().ok() != Some(peer) {
            // The proxy's hint was wrong; the handshake is what counts.
            log::debug!(agent:% = self.id; "the proxy named another caller than the one who proved itself");
        }
        let mut state = SessionState {
            caller: UserKey(peer),
            binding,
            replay: ReplayGuard::with_limit(defaults::SESSION_REPLAY_MEMORY),
            last_call: 0,
            running: HashMap::new(),
            tasks: JoinSet::new(),
        };
        // The session's own token: when the session ends, its running calls stop.
        let stop = stop.child_token();
        let _stop_on_exit = stop.clone().drop_guard();
        let (rd, wr) = tokio::io::split(tls);
        let (out, out_rx) = mpsc::channel(defaults::SESSION_OUT_QUEUE);
        let writer = write_loop(wr, out_rx);
        tokio::pin!(writer);
        let clean_end = tokio::select! {
            // The writer ends only when the caller cannot be written to: it is gone.
            _ = &mut writer => return,
            clean = self.read_loop(rd, &out, &mut state, &stop) => clean,
        };
        if !clean_end {
            // A broken rule or a message that is none: the session ends and its calls stop,
            // but the writer first delivers what is queued, the refusal that says why
            // (bounded: a caller that stopped reading cannot hold the session open).
            stop.cancel();
            drop(out);
            let _ = tokio::time::timeout(defaults::SESSION_FAREWELL, async {
                while state.tasks.join_next().await.is_some() {}
                (&mut writer).await;
            })
            .await;
            return;
        }
        // The caller said it sends no more calls: answer the ones still running, then end.
        drop(out);
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = async {
                while state.tasks.join_next().await.is_some() {}
                (&mut writer).await;
            } => {}
        }
    }

    /// Reads the caller's messages and starts each call, until the session ends. True if
    /// the caller ended it cleanly (no more calls), false on an error or a broken rule.
    async fn read_loop<R: AsyncRead + Unpin>(
        self: &Arc<Self>,
        rd: R,
        out: &mpsc::Sender<AgentMsg>,
        st: &mut SessionState,
        stop: &CancellationToken,
    ) -> bool {
        let mut rd = BufReader::with_capacity(defaults::SESSION_READ_BUFFER, rd);
        let mut buf = Vec::new();
        loop {
            // Forget calls that have finished, so `running` holds only live ones.
            while let Some(done) = st.tasks.try_join_next() {
                if let Ok(id) = done {
                    st.running.remove(&id);
                }
            }
            let frame = tokio::select! {
                _ = stop.cancelled() => return false,
                f = session::read_msg_into(&mut rd, &mut buf, defaults::MAX_CALL_MESSAGE) => f,
            };
            match frame {
                Ok(true) => {}
                Ok(false) => return true,
                Err(e) => {
                    if e.kind() == std::io::ErrorKind::InvalidData {
                        let _ = out.send(refused(0, "bad_call", e.to_string(), None)).await;
                    }
                    return false;
                }
            }
            let msg = match decode_with_limit::<CallerMsg>(&buf, defaults::MAX_CALL_MESSAGE) {
                Ok(m) => m,
                Err(e) => {
                    let _ = out.send(refused(0, "bad_call", e.as_malformed(), None)).await;
                    return false;
                }
            };
            let (id, mission, function, args, signed, cause) = match msg {
                CallerMsg::Cancel { id } => {
                    if let Some(cancel) = st.running.get(&id) {
                        cancel.cancel();
                    }
                    continue;
                }
                CallerMsg::Call {
                    id,
                    mission,
                    function,
                    args,
                    signed,
                } => (id, mission, function, args, signed, Ok(Vec::new())),
                CallerMsg::CallCaused {
                    id,
                    mission,
                    function,
                    args,
                    signed,
                    cause,
                } => (id, mission, function, args, signed, cause_from_wire(&cause)),
            };
            if id <= st.last_call {
                let why = format!(
                    "call number {id} is not above the last one ({}); a session's call numbers only go up",
                    st.last_call
                );
                let _ = out.send(refused(id, "bad_call", why, None)).await;
                return false;
            }
            st.last_call = id;
            let cause = match cause {
                Ok(cause) => cause,
                Err(why) => {
                    // Only this call is refused: the session itself is sound.
                    if out.send(refused(id, "bad_call", why, None)).await.is_err() {
                        return false;
                    }
                    continue;
                }
            };
            // Metric labels only for functions we offer: a stranger's made-up
            // names must not grow the metrics without bound.
            let offered = MissionName::new(&mission)
                .ok()
                .zip(FunctionName::new(&function).ok())
                .is_some_and(|(m, f)| self.catalogue.function(&m, &f).is_some());
            let labels = if offered {
                (mission.clone(), function.clone())
            } else {
                (String::new(), String::new())
            };
            let arrived = std::time::Instant::now();
            let call = Incoming {
                id,
                mission,
                function,
                args,
                signed,
                cause,
            };
            if let Some(answer) = self.start_call(st, out, stop, call, arrived) {
                self.metrics.answered(&labels.0, &labels.1, &answer);
                self.reports.answered(
                    Key::from(*st.caller.key()),
                    &labels.0,
                    &labels.1,
                    &answer,
                    arrived.elapsed(),
                );
                if out.send(answer).await.is_err() {
                    return false;
                }
            }
        }
    }

    /// Checks one call and starts it. Returns the answer to send now: a refusal, or the
    /// result of a built-in; `None` when an exec function was started (it answers itself).
    fn start_call(
        self: &Arc<Self>,
        st: &mut SessionState,
        out: &mpsc::Sender<AgentMsg>,
        stop: &CancellationToken,
        call: Incoming,
        arrived: std::time::Instant,
    ) -> Option<AgentMsg> {
        let Incoming {
            id,
            mission,
            function,
            args,
            signed,
            cause,
        } = call;
        let names = MissionName::new(&mission)
            .ok()
            .zip(FunctionName::new(&function).ok());
        let Some((mission, function)) = names.filter(|(m, f)| self.catalogue.function(m, f).is_some()) else {
            let msg = format!(
                "{} has no function {mission}/{function}; `wtd ls` shows what each agent offers",
                self.name
            );
            return Some(refused(id, "unknown_function", msg, None));
        };
        let now = self.now();
        // A receipt call: the caller's signature over exactly this call, on this session.
        let receipt = match signed {
            None => None,
            Some(bytes) => {
                // Per session (see `defaults::SESSION_REPLAY_MEMORY`): a session that fills
                // its memory starts a fresh one rather than locking anybody out. Replays
                // from elsewhere are already impossible: the call names this session.
                if st.replay.len() >= st.replay.limit() {
                    st.replay = ReplayGuard::with_limit(defaults::SESSION_REPLAY_MEMORY);
                }
                let checked = check_receipt_call(
                    &bytes,
                    &st.caller,
                    &self.id,
                    &st.binding,
                    &mission,
                    &function,
                    &args,
                    now,
                    &mut st.replay,
                );
                match checked {
                    Ok(c) => Some(c),
                    Err(e) => return Some(refused(id, "bad_call", e.to_string(), None)),
                }
            }
        };
        let authority = match self.authorize(&st.caller, &mission, &function, now) {
            Ok(allowed) => allowed,
            Err(deny) => {
                // Not run: the same request may be retried once the reason is gone.
                if let Some(c) = &receipt {
                    st.replay.forget(c);
                }
                log::info!(agent:% = self.id, caller:% = st.caller.key().short(), mission = mission.as_str(); "denied: {deny:?}");
                return Some(deny_message(id, &deny, &mission, &st.caller, &self.name));
            }
        };
        let f = self
            .catalogue
            .function(&mission, &function)
            .expect("looked up above");
        if let Run::Builtin(b) = &f.run {
            let output = self.builtin(*b, &args);
            self.release_authority(authority);
            log::debug!(agent:% = self.id, caller:% = st.caller.key().short(); "answered {mission}/{function}");
            return Some(self.done(id, CallStatus::Ok, output, String::new(), receipt.as_ref()));
        }
        if st.running.len() >= defaults::MAX_SESSION_CALLS {
            self.release_authority(authority);
            if let Some(c) = &receipt {
                st.replay.forget(c);
            }
            let msg = format!(
                "{} calls are already running on this session, as many as it takes; wait for one to end",
                defaults::MAX_SESSION_CALLS
            );
            return Some(refused(id, "busy", msg, None));
        }
        let cancel = stop.child_token();
        let key = self.next_call.fetch_add(1, Ordering::Relaxed);
        // The permit names the grant's issuer: looking it up by id alone could find another
        // owner's grant with the same id, and the real issuer's revocation would then miss.
        self.state().in_flight.insert(
            key,
            InFlight {
                issuer: authority.issuer(),
                grant: authority.grant(),
                cancel: cancel.clone(),
            },
        );
        log::info!(agent:% = self.id, caller:% = st.caller.key().short(), mission = mission.as_str(); "running {mission}/{function}");
        st.running.insert(id, cancel.clone());
        let run = Running {
            id,
            mission,
            function,
            args,
            receipt,
            cause,
            cancel,
            key,
            authority,
            arrived,
        };
        let caller = Key::from(*st.caller.key());
        st.tasks.spawn(self.clone().run_exec(run, caller, out.clone()));
        None
    }

    /// Authorizes `caller` to run `mission/function` now, with the latest verified logs.
    /// On success: what it runs under (a grant's permit to give back when the call ends,
    /// or the calling owner's own authority).
    fn authorize(
        &self,
        caller: &UserKey,
        mission: &MissionName,
        function: &FunctionName,
        now: Timestamp,
    ) -> Result<Authority, Deny> {
        let snapshot = self.logs.borrow().clone();
        let owners: Vec<OwnerKey> = snapshot.owners().copied().collect();
        let grants: Vec<&Grant> = snapshot.grants().collect();
        let revocations: Vec<&Revocation> = snapshot.revocations().collect();
        let policy = Policy {
            owners: &owners,
            grants: &grants,
            revocations: &revocations,
            adoptions: snapshot.adoptions(),
        };
        let request = Request {
            caller,
            agent: &self.id,
            mission,
            function,
            now,
        };
        let mut state = self.state();
        state.floor.observe(now);
        let floor = state.floor;
        let decision = authorize(&request, &policy, &mut state.limits, floor);
        // Persisting on every call would mean an fsync per call; the floor only needs to
        // be roughly right to stop a clock set back by hours or days.
        if state.floor_saved.until(floor.0) >= defaults::FLOOR_PERSIST_EVERY_MS {
            if let Err(e) = wtd_store::floor::save(&self.floor_path, floor) {
                log::warn!(agent:% = self.id; "could not save the time floor: {e}");
            }
            state.floor_saved = floor.0;
        }
        drop(state);
        match decision {
            Decision::Allow(p) => Ok(Authority::Grant(p)),
            Decision::AllowOwner(o) => Ok(Authority::Owner(o)),
            Decision::Deny(d) => Err(d),
        }
    }

    /// Runs one exec call to its end and sends its answer. A task of its session.
    async fn run_exec(self: Arc<Self>, run: Running, caller: Key, out: mpsc::Sender<AgentMsg>) -> CallNumber {
        let f = self
            .catalogue
            .function(&run.mission, &run.function)
            .expect("checked before the call started");
        let started = std::time::Instant::now();
        let (status, output, mut detail) = self
            .run_function(run.id, f, &run.mission, &run.args, &run.cancel, &out, &run.cause)
            .await;
        self.metrics
            .durations
            .get_or_create(&FunctionLabels {
                mission: run.mission.to_string(),
                function: run.function.to_string(),
            })
            .observe(started.elapsed().as_secs_f64());
        let (issuer, grant) = (run.authority.issuer(), run.authority.grant());
        self.release(run.key, run.authority);
        if status == CallStatus::Cancelled {
            detail = match stop_reason(&self.logs.borrow(), &self.id, &issuer, grant) {
                Some(Stop::Revoked) => {
                    "the call was cancelled: its grant was revoked while it ran".to_string()
                }
                Some(Stop::Disowned) => format!(
                    "the call was cancelled: its owner {} disowned {} while it ran",
                    issuer.key().short(),
                    self.name
                ),
                None => "the call was cancelled: the caller stopped waiting for it".to_string(),
            };
        }
        let answer = self.done(run.id, status, output, detail, run.receipt.as_ref());
        self.metrics
            .answered(run.mission.as_str(), run.function.as_str(), &answer);
        self.reports.answered(
            caller,
            run.mission.as_str(),
            run.function.as_str(),
            &answer,
            run.arrived.elapsed(),
        );
        let _ = out.send(answer).await;
        run.id
    }

    /// The answer of a call that ran; signed when the call asked for a receipt.
    fn done(
        &self,
        id: CallNumber,
        status: CallStatus,
        output: Vec<u8>,
        detail: String,
        receipt: Option<&SignedCall>,
    ) -> AgentMsg {
        let signed = receipt.map(|call| {
            CallResult::for_call(call, status, &output, self.now())
                .sign(&self.secret)
                .bytes()
                .to_vec()
        });
        AgentMsg::Done {
            id,
            status: wire_status(status),
            output,
            detail,
            signed,
        }
    }

    fn release(&self, key: u64, authority: Authority) {
        let mut state = self.state();
        state.in_flight.remove(&key);
        if let Authority::Grant(permit) = authority {
            state.limits.release(permit);
        }
    }

    /// Gives back what a call that never ran took.
    fn release_authority(&self, authority: Authority) {
        if let Authority::Grant(permit) = authority {
            self.state().limits.release(permit);
        }
    }

    /// Runs an exec function, streaming its progress as events of call `id`; returns
    /// (status, output, detail). If the caller cannot be written to, the function is
    /// stopped.
    // One call's whole context; a struct for it would only be unpacked again here.
    #[allow(clippy::too_many_arguments)]
    async fn run_function(
        &self,
        id: CallNumber,
        f: &crate::missions::Function,
        mission: &MissionName,
        args: &[u8],
        cancel: &CancellationToken,
        out: &mpsc::Sender<AgentMsg>,
        cause: &[wtd_keys::event::Dep],
    ) -> (CallStatus, Vec<u8>, String) {
        let fname = &f.name;
        let run_as = match &self.run_as {
            Ok(r) => *r,
            Err(why) => {
                return (
                    CallStatus::Failed,
                    Vec::new(),
                    format!("{} cannot run functions: {why}", self.name),
                )
            }
        };
        let Some(mut req) = ExecRequest::new(mission, f, args, run_as) else {
            return (CallStatus::Failed, Vec::new(), "not an exec function".into());
        };
        // Whatever the mission file says, a result must fit the caller's answer limit.
        req.output_cap = req.output_cap.min(defaults::MAX_OUTPUT);
        // So a call the handler makes carries the cause on (causality is transitive).
        req.cause = wtd_keys::cause::format(cause);
        let (tx, mut rx) = tokio::sync::mpsc::channel(defaults::EVENT_QUEUE);
        let run = exec::run(req, tx, cancel.clone());
        tokio::pin!(run);
        let mut alive = true;
        let outcome = loop {
            tokio::select! {
                outcome = &mut run => break outcome,
                Some(event) = rx.recv(), if alive => match event {
                    ExecEvent::Progress(line) => {
                        if out.send(AgentMsg::Event { id, line }).await.is_err() {
                            // The caller is gone: stop the function too.
                            alive = false;
                            cancel.cancel();
                        }
                    }
                    // Never waits: over the budget or the queue, it is dropped.
                    ExecEvent::Mission(line) => {
                        self.mission_events.emit(mission.as_str(), fname.as_str(), &line);
                    }
                    ExecEvent::Emit(line) => self.emit(mission, fname, &line, cause),
                },
            }
        };
        // Events that arrived just before the end.
        while let Ok(event) = rx.try_recv() {
            match event {
                ExecEvent::Progress(line) => {
                    if alive && out.send(AgentMsg::Event { id, line }).await.is_err() {
                        alive = false;
                    }
                }
                ExecEvent::Mission(line) => {
                    self.mission_events.emit(mission.as_str(), fname.as_str(), &line);
                }
                ExecEvent::Emit(line) => self.emit(mission, fname, &line, cause),
            }
        }
        let (status, output, detail) = match outcome {
            ExecOutcome::Ok { output } => (CallStatus::Ok, output, String::new()),
            ExecOutcome::Failed {
                code,
                signal,
                stderr_tail,
                output,
            } => {
                let how = match (code, signal) {
                    (_, Some(s)) => format!("was killed by signal {s}"),
                    (Some(c), _) => format!("exited with status {c}"),
                    _ => "failed".to_string(),
                };
                (
                    CallStatus::Failed,
                    output,
                    format!("{mission}/{fname} {how}: {stderr_tail}"),
                )
            }
            ExecOutcome::TimedOut { after } => (
                CallStatus::TimedOut,
                Vec::new(),
                format!(
                    "{mission}/{fname} ran past its {} timeout and was stopped",
                    human_duration(after.as_millis() as u64)
                ),
            ),
            ExecOutcome::Cancelled => (
                CallStatus::Cancelled,
                Vec::new(),
                "the call was cancelled: its grant was revoked while it ran".to_string(),
            ),
            ExecOutcome::OutputTooLarge { cap } => (
                CallStatus::OutputTooLarge,
                Vec::new(),
                format!("{mission}/{fname} printed more than its {cap}-byte output limit and was stopped"),
            ),
            ExecOutcome::LimitExceeded { limit } => (
                CallStatus::Failed,
                Vec::new(),
                format!(
                    "{mission}/{fname} {limit} and was stopped (its limit on {})",
                    self.name
                ),
            ),
            ExecOutcome::CouldNotStart { reason } => (
                CallStatus::Failed,
                Vec::new(),
                format!("{mission}/{fname} could not start on {}: {reason}", self.name),
            ),
        };
        (status, output, detail)
    }

    /// The checks a delivered job must pass before it runs, after `wtd_keys::job::check_job`
    /// and the seen-set: the function exists here, and the caller may run it *now* (grant,
    /// revocation, adoption, rate, as for a live call), under exactly the owner the job
    /// names. On success the permit holds the rate-limit slot until the job is run.
    pub(crate) fn authorize_job(&self, job: &SignedJob) -> Result<JobPermit, Refused> {
        let j = job.job();
        if self.catalogue.function(&j.mission, &j.function).is_none() {
            return Err(Refused {
                kind: "unknown_function".into(),
                message: format!(
                    "{} has no function {}/{}; `wtd ls` shows what each agent offers",
                    self.name, j.mission, j.function
                ),
                retry_after_ms: None,
            });
        }
        let authority = match self.authorize(&j.caller, &j.mission, &j.function, self.now()) {
            Ok(a) => a,
            Err(deny) => {
                log::info!(agent:% = self.id, caller:% = j.caller.key().short(), mission = j.mission.as_str(); "job denied: {deny:?}");
                return Err(match deny_message(0, &deny, &j.mission, &j.caller, &self.name) {
                    AgentMsg::Refused { refused, .. } => refused,
                    _ => unreachable!("deny_message refuses"),
                });
            }
        };
        if authority.issuer() != j.owner {
            let here = authority.issuer();
            self.release_authority(authority);
            return Err(Refused {
                kind: "issuer_not_owner".into(),
                message: format!(
                    "this job asks to run under the authority of {}, but on {} it would run under {}'s; \
                     push it with --agent naming one of {}'s agents",
                    j.owner.key().short(),
                    self.name,
                    here.key().short(),
                    j.owner.key().short()
                ),
                retry_after_ms: None,
            });
        }
        Ok(JobPermit { authority })
    }

    /// Runs an authorized job to its end (or until `stop`, or a revocation cancels it, as for
    /// a live call). Progress lines are not kept: nobody is listening live.
    pub(crate) async fn run_job(
        &self,
        job: &SignedJob,
        args: &[u8],
        permit: JobPermit,
        stop: &CancellationToken,
    ) -> (CallStatus, Vec<u8>, String) {
        let j = job.job();
        let f = self
            .catalogue
            .function(&j.mission, &j.function)
            .expect("checked by authorize_job");
        let authority = permit.authority;
        if let Run::Builtin(b) = &f.run {
            let output = self.builtin(*b, args);
            self.release_authority(authority);
            return (CallStatus::Ok, output, String::new());
        }
        let cancel = stop.child_token();
        let key = self.next_call.fetch_add(1, Ordering::Relaxed);
        self.state().in_flight.insert(
            key,
            InFlight {
                issuer: authority.issuer(),
                grant: authority.grant(),
                cancel: cancel.clone(),
            },
        );
        log::info!(agent:% = self.id, caller:% = j.caller.key().short(), mission = j.mission.as_str(); "running job {}/{}", j.mission, j.function);
        // Progress lines go nowhere; the receiver is drained so the run never sees a gone
        // caller (which would cancel it).
        let (out, mut sink) = mpsc::channel(defaults::EVENT_QUEUE);
        let drain = async { while sink.recv().await.is_some() {} };
        let run = async {
            let r = self
                .run_function(0, f, &j.mission, args, &cancel, &out, &[])
                .await;
            drop(out);
            r
        };
        let ((status, output, mut detail), ()) = tokio::join!(run, drain);
        let (issuer, grant) = (authority.issuer(), authority.grant());
        self.release(key, authority);
        if status == CallStatus::Cancelled {
            detail = match stop_reason(&self.logs.borrow(), &self.id, &issuer, grant) {
                Some(Stop::Revoked) => {
                    "the job was cancelled: its grant was revoked while it ran".to_string()
                }
                Some(Stop::Disowned) => format!(
                    "the job was cancelled: its owner {} disowned {} while it ran",
                    issuer.key().short(),
                    self.name
                ),
                None => "the job was cancelled: the agent was stopping".to_string(),
            };
        }
        (status, output, detail)
    }

    /// Gives back the rate-limit slot of a job that will not run after all.
    pub(crate) fn release_job(&self, permit: JobPermit) {
        self.release_authority(permit.authority);
    }

    /// This agent's signed result for a job it ran.
    pub(crate) fn sign_job_result(&self, job: &SignedJob, status: CallStatus, output: &[u8]) -> Vec<u8> {
        wtd_keys::job::result_for(job, self.id, status, output, self.now())
            .sign(&self.secret)
            .bytes()
            .to_vec()
    }

    pub(crate) fn agent_id(&self) -> AgentId {
        self.id
    }

    /// Appends a handler's signed event (an fsync; a handler emits few), logging a refusal.
    fn emit(
        &self,
        mission: &MissionName,
        function: &FunctionName,
        line: &str,
        cause: &[wtd_keys::event::Dep],
    ) {
        match self.streams.emit(mission, line, cause) {
            Ok(e) => log::debug!(
                "{mission}/{function} emitted event {} ({})",
                e.event().seq,
                e.event().topic
            ),
            Err(e) => log::warn!("{mission}/{function} emitted an event that was dropped: {e}"),
        }
    }

    /// Runs `f` as the handler of a signed event (see `subscriber`): `args` is the event as
    /// JSON, and events it emits depend on `cause`. Progress lines go nowhere.
    pub(crate) async fn run_handler(
        &self,
        f: &crate::missions::Function,
        mission: &MissionName,
        args: &[u8],
        cancel: &CancellationToken,
        cause: &[wtd_keys::event::Dep],
    ) -> (CallStatus, Vec<u8>, String) {
        let (tx, mut rx) = mpsc::channel(defaults::EVENT_QUEUE);
        let run = async {
            let r = self.run_function(0, f, mission, args, cancel, &tx, cause).await;
            drop(tx);
            r
        };
        let drain = async { while rx.recv().await.is_some() {} };
        let (r, ()) = tokio::join!(run, drain);
        r
    }

    fn builtin(&self, b: Builtin, _args: &[u8]) -> Vec<u8> {
        let v = match b {
            Builtin::Ping => serde_json::json!({ "pong": true, "agent": self.name }),
            Builtin::Info => serde_json::json!({
                "agent": self.name,
                "id": self.id.to_string(),
                "software": crate::advert::software(),
                "arch": std::env::consts::ARCH,
                "os": std::env::consts::OS,
                "missions": self.catalogue.infos().iter().map(|m| m.name.clone()).collect::<Vec<_>>(),
            }),
        };
        v.to_string().into_bytes()
    }
}

/// Sends the session's answers: as many as are waiting in one write and one flush, so a
/// busy session fills TLS records and QUIC packets instead of sending one per answer.
/// Ends when every sender is gone (the session is over) or the caller cannot be written to.
async fn write_loop<W: AsyncWrite + Unpin>(mut wr: W, mut out: mpsc::Receiver<AgentMsg>) {
    let mut batch = Vec::with_capacity(defaults::SESSION_WRITE_BATCH);
    let mut buf = Vec::with_capacity(4096);
    while out.recv_many(&mut batch, defaults::SESSION_WRITE_BATCH).await > 0 {
        buf.clear();
        for msg in batch.drain(..) {
            encode_frame_into(&msg, &mut buf);
        }
        if wr.write_all(&buf).await.is_err() || wr.flush().await.is_err() {
            return;
        }
        // A big answer should not keep its buffer for the rest of the session.
        if buf.capacity() > 64 * 1024 {
            buf = Vec::with_capacity(4096);
        }
    }
}

/// Is `issuer`'s grant `grant` revoked in `logs`? (By the issuer's id and the grant's:
/// another owner's grant with the same id is another grant.)
fn revoked(logs: &VerifiedLogs, issuer: &OwnerKey, grant: &GrantId) -> bool {
    logs.grants()
        .filter(|g| g.id == *grant && g.issuer == *issuer)
        .any(|g| logs.revocations().any(|r| r.revokes(g)))
}

/// The wire's word for a status.
pub(crate) fn wire_status(s: CallStatus) -> Status {
    match s {
        CallStatus::Ok => Status::Ok,
        CallStatus::Failed => Status::Failed,
        CallStatus::TimedOut => Status::TimedOut,
        CallStatus::Cancelled => Status::Cancelled,
        CallStatus::OutputTooLarge => Status::OutputTooLarge,
    }
}

/// A call's cause as it came on the wire, checked: at most `MAX_CAUSE` events, each of a
/// valid publisher key and mission name, numbered from 1. A cause is only the caller's
/// claim, and this agent cannot check it against logs it does not have; it can only make
/// subscribers wait, never hide or forge an event (see `wtd_keys::cause`).
fn cause_from_wire(cause: &[LogPosition]) -> Result<Vec<Dep>, String> {
    let fix = "the calling wtd sent a malformed WTD_CAUSE; call again without it, or with the positions `wtd subscribe` prints";
    if cause.len() > wtd_keys::defaults::MAX_CAUSE {
        return Err(format!(
            "the call's cause names {} events, more than {}; {fix}",
            cause.len(),
            wtd_keys::defaults::MAX_CAUSE
        ));
    }
    let mut deps = Vec::with_capacity(cause.len());
    for p in cause {
        let publisher = p.publisher.parse().map_err(|e| {
            format!("the call's cause names an event of an invalid publisher key ({e}); {fix}")
        })?;
        let mission = MissionName::new(&p.mission).map_err(|e| {
            format!(
                "the call's cause names an event of mission `{}` ({e}); {fix}",
                p.mission
            )
        })?;
        if p.seq == 0 {
            return Err(format!(
                "the call's cause names event 0 of {mission}, and events are numbered from 1; {fix}"
            ));
        }
        deps.push(Dep {
            log: LogId {
                publisher: AgentId(publisher),
                mission,
            },
            seq: p.seq,
        });
    }
    wtd_keys::cause::check(deps).map_err(|e| format!("{e}; {fix}"))
}

fn refused(id: CallNumber, kind: &str, message: String, retry_after_ms: Option<u64>) -> AgentMsg {
    AgentMsg::Refused {
        id,
        refused: Refused {
            kind: kind.to_string(),
            message,
            retry_after_ms,
        },
    }
}

/// A refusal in words the caller can act on.
fn deny_message(id: CallNumber, d: &Deny, mission: &MissionName, caller: &UserKey, agent: &str) -> AgentMsg {
    let ask = format!("ask the owner to run: wtd grant {caller} --mission {mission}");
    match d {
        Deny::NotAdopted {
            grant,
            issuer,
            disowned: Some(_),
        } => refused(
            id,
            "disowned",
            format!(
                "{agent} was disowned by {}, who issued your grant {grant}: her grants no longer reach it",
                issuer.key().short()
            ),
            None,
        ),
        Deny::NotAdopted {
            grant,
            issuer,
            disowned: None,
        } => refused(
            id,
            "not_adopted",
            format!(
                "{agent} names {} as its owner, but its owner's log has not adopted it, so your grant {grant} \
                 does not reach it; the owner can run `wtd adopt {agent}`",
                issuer.key().short()
            ),
            None,
        ),
        Deny::OwnerNotAdopted { disowned: Some(_) } => refused(
            id,
            "disowned",
            format!("you disowned {agent}, so you may no longer call it as its owner; `wtd adopt {agent}` to take it back"),
            None,
        ),
        Deny::OwnerNotAdopted { disowned: None } => refused(
            id,
            "not_adopted",
            format!("{agent} names you as its owner, but you have not adopted it; run `wtd adopt {agent}` first"),
            None,
        ),
        Deny::NoGrant => refused(id, "no_grant", format!("you have no grant for mission `{mission}` here; {ask}"), None),
        Deny::IssuerNotOwner { grant } => refused(
            id,
            "issuer_not_owner",
            format!("your grant {grant} was made by someone this agent does not obey; {ask}"),
            None,
        ),
        Deny::NotForThisAgent { grant } => refused(
            id,
            "not_for_this_agent",
            format!("your grant {grant} covers other agents, not this one; pick another with --agent, or {ask}"),
            None,
        ),
        Deny::NotYetValid { grant, in_ms } => refused(
            id,
            "not_yet_valid",
            format!("your grant {grant} starts in {}", human_duration(*in_ms)),
            None,
        ),
        Deny::Expired { grant, ago_ms } => refused(
            id,
            "expired",
            format!("your grant {grant} for `{mission}` expired {} ago; ask the owner to renew it", human_duration(*ago_ms)),
            None,
        ),
        Deny::Revoked { grant, by } => refused(
            id,
            "revoked",
            format!("your grant {grant} for `{mission}` was revoked by its owner ({by})"),
            None,
        ),
        Deny::RateLimited { grant, retry_after_ms } => refused(
            id,
            "rate_limited",
            format!(
                "your grant {grant} allows no more calls right now; try again in {}",
                human_duration(*retry_after_ms)
            ),
            Some(*retry_after_ms),
        ),
        Deny::AtConcurrencyLimit { grant, limit } => refused(
            id,
            "concurrency",
            format!("your grant {grant} allows {limit} call(s) at once here, and that many are running; try again when one ends"),
            None,
        ),
    }
}

/// Runs a closure when dropped (a session's open-sessions gauge, however it ends).
struct OnDrop<F: FnMut()>(F);

impl<F: FnMut()> Drop for OnDrop<F> {
    fn drop(&mut self) {
        (self.0)()
    }
}
