//! Answering calls: the agent's side of an end-to-end session.
//!
//! The proxy opens a stream on our connection for each caller session and tells us who
//! asked (a hint). Inside it, the caller and we run TLS with our keys
//! (`wtd_transport::session`), so the proxy only ever carries ciphertext. Then, for each
//! call, in this order and before anything runs:
//!
//! 1. the call's signature, by the key that proved itself in TLS, for *this* agent and
//!    *this* session, fresh, never seen before (`wtd_keys::call::check_call`);
//! 2. the function exists here;
//! 3. the grant: owner-signed, for this caller, mission and agent, unexpired, unrevoked,
//!    within its rate and concurrency (`wtd_keys::authz::authorize`);
//!
//! and only then the function runs. Its progress lines stream back as events; its result
//! is signed by us. If the owner revokes the grant while the call runs, the call is
//! cancelled (its whole process group is killed).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::join;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use wtd_keys::authz::{authorize, Decision, Deny, Permit, Policy, RateLimits, Request};
use wtd_keys::call::{check_call, CallResult, CallStatus, ReplayGuard};
use wtd_keys::time::human_duration;
use wtd_keys::{AgentId, Grant, GrantId, OwnerKey, Revocation, SecretKey, TimeFloor, Timestamp, UserKey};
use wtd_transport::session::{self, read_msg, write_msg};
use wtd_transport::{read_frame, Connection, RecvStream, SendStream};
use wtd_wire::call::{AgentMsg, CallerMsg, Refused};
use wtd_wire::defaults::MAX_FRAME;
use wtd_wire::{decode, encode, Relayed};

use crate::defaults;
use crate::exec::{self, ExecEvent, ExecOutcome, ExecRequest, RunAs};
use crate::missions::{Builtin, Catalogue, Run};
use crate::owner_logs::LogsHandle;

/// A call that is running, so a revocation can stop it.
#[derive(Debug)]
struct InFlight {
    issuer: OwnerKey,
    grant: GrantId,
    cancel: CancellationToken,
}

/// What one caller's session knows: who (proven by TLS), its channel binding, and the
/// request ids it has used.
struct SessionState {
    caller: UserKey,
    binding: [u8; 32],
    replay: ReplayGuard,
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
}

fn now() -> Timestamp {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    Timestamp(ms)
}

impl CallService {
    pub fn new(
        secret: SecretKey,
        name: String,
        catalogue: Arc<Catalogue>,
        logs: LogsHandle,
        floor_path: PathBuf,
    ) -> Self {
        let floor = wtd_store::floor::load(&floor_path);
        CallService {
            id: AgentId(secret.public()),
            secret,
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
        }
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

    /// Cancels running calls whose grant has been revoked, as soon as the revocation
    /// arrives. Runs until `shutdown`.
    pub async fn enforce_revocations(self: Arc<Self>, shutdown: CancellationToken) {
        let mut logs = self.logs.clone();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                changed = logs.changed() => if changed.is_err() { return },
            }
            let snapshot = logs.borrow_and_update().clone();
            let revocations: Vec<&Revocation> = snapshot.revocations().collect();
            let grants: Vec<&Grant> = snapshot.grants().collect();
            let state = self.state();
            for call in state.in_flight.values() {
                let revoked = grants
                    .iter()
                    .filter(|g| g.id == call.grant && g.issuer == call.issuer)
                    .any(|g| revocations.iter().any(|r| r.revokes(g)));
                if revoked && !call.cancel.is_cancelled() {
                    log::info!(agent:% = self.id; "cancelling a running call: its grant {} was revoked", call.grant);
                    call.cancel.cancel();
                }
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
        let io = join(recv, send);
        let handshake = tokio::time::timeout(
            defaults::SESSION_HANDSHAKE_TIMEOUT,
            session::accept(&self.secret, io),
        );
        let (mut tls, peer, binding) = match handshake.await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                log::info!(agent:% = self.id; "a caller's session failed: {e}");
                return;
            }
            Err(_) => return,
        };
        if from.parse().ok() != Some(peer) {
            // The proxy's hint was wrong; the handshake is what counts.
            log::debug!(agent:% = self.id; "the proxy named another caller than the one who proved itself");
        }
        let mut state = SessionState {
            caller: UserKey(peer),
            binding,
            replay: ReplayGuard::with_limit(defaults::SESSION_REPLAY_MEMORY),
        };
        loop {
            let msg = tokio::select! {
                _ = stop.cancelled() => return,
                m = read_msg(&mut tls, defaults::MAX_CALL_MESSAGE) => m,
            };
            let Ok(Some(bytes)) = msg else { return };
            let Ok(CallerMsg::Invoke { call, args }) = decode::<CallerMsg>(&bytes) else {
                let _ = send_msg(&mut tls, &refused("bad_call", "malformed message".into(), None)).await;
                return;
            };
            if !self.invoke(&mut tls, &mut state, &call, &args, &stop).await {
                return;
            }
        }
    }

    /// Handles one call; false if the session is broken.
    async fn invoke<S>(
        &self,
        tls: &mut S,
        session: &mut SessionState,
        call_bytes: &[u8],
        args: &[u8],
        stop: &CancellationToken,
    ) -> bool
    where
        S: tokio::io::AsyncWrite + Unpin,
    {
        let now = now();
        let SessionState {
            caller,
            binding,
            replay,
        } = session;
        let caller = &*caller;
        // The replay memory is per session. That is enough: a call is signed over this
        // session's channel binding, so a copy is worthless on any other session, and
        // inside this one TLS refuses any record the proxy injects or replays. Only the
        // caller itself could repeat a call here, which is no more than calling again
        // (and is still refused while the id is remembered). A session that fills its
        // memory starts a fresh one rather than locking anybody out.
        if replay.len() >= replay.limit() {
            *replay = ReplayGuard::with_limit(defaults::SESSION_REPLAY_MEMORY);
        }
        let checked = check_call(call_bytes, caller, &self.id, binding, args, now, replay);
        let call = match checked {
            Ok(c) => c,
            Err(e) => return send_msg(tls, &refused("bad_call", e.to_string(), None)).await,
        };
        let (mission, function) = (call.call().mission.clone(), call.call().function.clone());
        let Some(f) = self.catalogue.function(&mission, &function) else {
            // It did not run: do not let refused calls fill the replay memory.
            replay.forget(&call);
            let msg = format!(
                "{} has no function {mission}/{function}; `wtd ls` shows what each agent offers",
                self.name
            );
            return send_msg(tls, &refused("unknown_function", msg, None)).await;
        };

        // Authorization, with the latest verified logs.
        let snapshot = self.logs.borrow().clone();
        let owners: Vec<OwnerKey> = snapshot.owners().copied().collect();
        let grants: Vec<&Grant> = snapshot.grants().collect();
        let revocations: Vec<&Revocation> = snapshot.revocations().collect();
        let policy = Policy {
            owners: &owners,
            grants: &grants,
            revocations: &revocations,
        };
        let request = Request {
            caller,
            agent: &self.id,
            mission: &mission,
            function: &function,
            now,
        };
        let decision = {
            let mut state = self.state();
            state.floor.observe(now);
            let floor = state.floor;
            let d = authorize(&request, &policy, &mut state.limits, floor);
            // Persisting on every call would mean an fsync per call; the floor only needs
            // to be roughly right to stop a clock set back by hours or days.
            if state.floor_saved.until(floor.0) >= defaults::FLOOR_PERSIST_EVERY_MS {
                if let Err(e) = wtd_store::floor::save(&self.floor_path, floor) {
                    log::warn!(agent:% = self.id; "could not save the time floor: {e}");
                }
                state.floor_saved = floor.0;
            }
            d
        };
        let permit = match decision {
            Decision::Allow(p) => p,
            Decision::Deny(d) => {
                // Not run: the same request may be retried once the reason is gone.
                replay.forget(&call);
                log::info!(agent:% = self.id, caller:% = caller.key().short(), mission = mission.as_str(); "denied: {d:?}");
                return send_msg(tls, &deny_message(&d, &mission, caller)).await;
            }
        };
        let cancel = stop.child_token();
        let key = self.next_call.fetch_add(1, Ordering::Relaxed);
        // The permit names the grant's issuer: looking it up by id alone could find another
        // owner's grant with the same id, and the real issuer's revocation would then miss.
        self.state().in_flight.insert(
            key,
            InFlight {
                issuer: permit.issuer,
                grant: permit.grant,
                cancel: cancel.clone(),
            },
        );
        log::info!(agent:% = self.id, caller:% = caller.key().short(), mission = mission.as_str(); "running {mission}/{function}");

        let (status, output, detail, alive) = self
            .run_function(tls, f, &mission, &function, args, &cancel)
            .await;
        self.release(key, permit);
        if !alive {
            return false;
        }
        let result = CallResult::for_call(&call, status, &output, self::now()).sign(&self.secret);
        send_msg(
            tls,
            &AgentMsg::Done {
                result: result.bytes().to_vec(),
                output,
                detail,
            },
        )
        .await
    }

    fn release(&self, key: u64, permit: Permit) {
        let mut state = self.state();
        state.in_flight.remove(&key);
        state.limits.release(permit);
    }

    /// Runs the function, streaming its progress; returns (status, output, detail, session alive).
    async fn run_function<S>(
        &self,
        tls: &mut S,
        f: &crate::missions::Function,
        mission: &wtd_keys::MissionName,
        _function: &wtd_keys::FunctionName,
        args: &[u8],
        cancel: &CancellationToken,
    ) -> (CallStatus, Vec<u8>, String, bool)
    where
        S: tokio::io::AsyncWrite + Unpin,
    {
        let fname = &f.name;
        if let Run::Builtin(b) = &f.run {
            return (CallStatus::Ok, self.builtin(*b, args), String::new(), true);
        }
        let run_as = match &self.run_as {
            Ok(r) => *r,
            Err(why) => {
                return (
                    CallStatus::Failed,
                    Vec::new(),
                    format!("{} cannot run functions: {why}", self.name),
                    true,
                )
            }
        };
        let Some(mut req) = ExecRequest::new(mission, f, args, run_as) else {
            return (
                CallStatus::Failed,
                Vec::new(),
                "not an exec function".into(),
                true,
            );
        };
        // Whatever the mission file says, a result must fit the caller's answer limit.
        req.output_cap = req.output_cap.min(defaults::MAX_OUTPUT);
        let (tx, mut rx) = tokio::sync::mpsc::channel(defaults::EVENT_QUEUE);
        let run = exec::run(req, tx, cancel.clone());
        tokio::pin!(run);
        let mut alive = true;
        let outcome = loop {
            tokio::select! {
                outcome = &mut run => break outcome,
                Some(ExecEvent::Progress(line)) = rx.recv(), if alive => {
                    if !send_msg(tls, &AgentMsg::Event { line }).await {
                        // The caller is gone: stop the function too.
                        alive = false;
                        cancel.cancel();
                    }
                }
            }
        };
        // Events that arrived just before the end.
        while let Ok(ExecEvent::Progress(line)) = rx.try_recv() {
            if alive && !send_msg(tls, &AgentMsg::Event { line }).await {
                alive = false;
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
        (status, output, detail, alive)
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

async fn send_msg<S: tokio::io::AsyncWrite + Unpin>(tls: &mut S, msg: &AgentMsg) -> bool {
    write_msg(tls, &encode(msg)).await.is_ok()
}

fn refused(kind: &str, message: String, retry_after_ms: Option<u64>) -> AgentMsg {
    AgentMsg::Refused(Refused {
        kind: kind.to_string(),
        message,
        retry_after_ms,
    })
}

/// A refusal in words the caller can act on.
fn deny_message(d: &Deny, mission: &wtd_keys::MissionName, caller: &UserKey) -> AgentMsg {
    let ask = format!("ask the owner to run: wtd grant {caller} --mission {mission}");
    match d {
        Deny::NoGrant => refused("no_grant", format!("you have no grant for mission `{mission}` here; {ask}"), None),
        Deny::IssuerNotOwner { grant } => refused(
            "issuer_not_owner",
            format!("your grant {grant} was made by someone this agent does not obey; {ask}"),
            None,
        ),
        Deny::NotForThisAgent { grant } => refused(
            "not_for_this_agent",
            format!("your grant {grant} covers other agents, not this one; pick another with --agent, or {ask}"),
            None,
        ),
        Deny::NotYetValid { grant, in_ms } => refused(
            "not_yet_valid",
            format!("your grant {grant} starts in {}", human_duration(*in_ms)),
            None,
        ),
        Deny::Expired { grant, ago_ms } => refused(
            "expired",
            format!("your grant {grant} for `{mission}` expired {} ago; ask the owner to renew it", human_duration(*ago_ms)),
            None,
        ),
        Deny::Revoked { grant, by } => refused(
            "revoked",
            format!("your grant {grant} for `{mission}` was revoked by its owner ({by})"),
            None,
        ),
        Deny::RateLimited { grant, retry_after_ms } => refused(
            "rate_limited",
            format!(
                "your grant {grant} allows no more calls right now; try again in {}",
                human_duration(*retry_after_ms)
            ),
            Some(*retry_after_ms),
        ),
        Deny::AtConcurrencyLimit { grant, limit } => refused(
            "concurrency",
            format!("your grant {grant} allows {limit} call(s) at once here, and that many are running; try again when one ends"),
            None,
        ),
    }
}
