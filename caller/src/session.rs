//! One end-to-end session to one agent, with many calls in flight on it.
//!
//! Opening a session asks the proxy for a relayed stream to the agent and runs TLS 1.3
//! inside it, pinned to the agent's key (`wtd_transport::session`): from then on the proxy
//! carries ciphertext it cannot read or alter. The session's I/O runs in one task owned by
//! the [`Session`] (dropping the session aborts it):
//!
//! ```text
//!  call() ──► out queue ──► writer: many frames, one write, one flush ──► TLS ──► agent
//!  PendingCall ◄── per-call queue ◄── reader: routes each answer by call number ◄── TLS
//! ```
//!
//! Each call takes the next call number; the agent answers in any order, and the reader
//! hands each message to the call it names. When the session ends (the agent went away,
//! the proxy dropped it), every call still waiting learns it at once, as
//! [`CallError::Lost`]: it may have run.
//!
//! A call may carry its *cause* (`wtd_keys::cause`: the events it was made because of).
//! Only an agent of wire protocol version 6 reads one, and the handshake says whether this
//! agent does (`e2e::speaks_v6`); an older agent gets the plain call, and the answer says
//! the cause was left out ([`Answer::cause_dropped`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use wtd_keys::call::{verify_result, Call, CallStatus, RequestId, ResultError, SignedCall};
use wtd_keys::event::Dep;
use wtd_keys::{AgentId, FunctionName, MissionName, SecretKey, Timestamp, UserKey};
use wtd_transport::session::{self as e2e, ChannelBinding, SessionError};
use wtd_transport::{write_frame, CertifiedKey, Connection};
use wtd_wire::call::{AgentMsg, CallNumber, CallerMsg, Refused, Status};
use wtd_wire::{encode, encode_frame_into, Key, LogPosition, Open, RelayReply};

use crate::defaults::{
    EVENTS_PER_CALL, MAX_ANSWER, MAX_CALLS_IN_FLIGHT, OUT_QUEUE, READ_BUFFER, WRITE_BATCH,
};
use crate::receipt::Receipt;
use crate::relay::AfterReply;

/// Why a session could not be opened. Nothing was sent to the agent, so trying another
/// agent is always safe.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The connection to the proxy broke, or refused a new stream.
    #[error("the connection to the proxy failed: {0}")]
    Proxy(String),
    /// The proxy no longer has this agent: it went offline since the roster was read.
    #[error("it is no longer connected to the proxy")]
    NoSuchAgent,
    /// The proxy has the agent but could not open a stream to it.
    #[error("the proxy could not reach it: {0}")]
    Unreachable(String),
    /// The end-to-end handshake failed: the other end is not the agent asked for (the
    /// proxy may be redirecting), or the relay broke the handshake.
    #[error(transparent)]
    Handshake(#[from] SessionError),
}

/// Why a call did not produce an answer.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The call was never sent (no session, or the session had already ended): safe to try
    /// elsewhere.
    #[error("{0}")]
    NotSent(String),
    /// The call was sent, then the session ended before the answer: the function may or
    /// may not have run.
    #[error("the session ended before the answer ({0})")]
    Lost(String),
    /// The agent refused it; it did not run.
    #[error("{}", .0.message)]
    Refused(Refused),
    /// The agent answered a receipt call with a result that does not verify: it may have
    /// run, and the answer cannot be believed.
    #[error("the agent's signed result does not match the call: {0}")]
    BadReceipt(#[from] ResultError),
}

impl CallError {
    /// True when the function may have run (so it may be retried elsewhere only if it is
    /// idempotent).
    pub fn may_have_run(&self) -> bool {
        matches!(self, CallError::Lost(_) | CallError::BadReceipt(_))
    }
}

/// One answered call.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: CallStatus,
    pub output: Vec<u8>,
    /// Why it did not succeed, from the agent; empty on success.
    pub detail: String,
    /// The progress lines, in order.
    pub events: Vec<String>,
    /// The verified receipt, when the call asked for one.
    pub receipt: Option<Receipt>,
    /// The request id that receipt is for (checked with it; a name to show or file it
    /// under without checking it again).
    pub receipt_id: Option<RequestId>,
    /// The call had a cause, and the agent is too old to read one (before version 6), so
    /// it was sent without: events the function emitted do not depend on it.
    pub cause_dropped: bool,
}

/// What a waiting call hears next.
#[derive(Debug)]
pub enum Progress {
    /// A progress line from the running function.
    Event(String),
    /// The answer; the call is over.
    Done(Answer),
}

type Routes = Arc<Mutex<HashMap<CallNumber, mpsc::Sender<AgentMsg>>>>;

/// A warm end-to-end session to one agent. Cheap to share (`Arc`); dropping the last
/// handle ends the session and every call on it.
#[derive(Debug)]
pub struct Session {
    agent: AgentId,
    me: Arc<SecretKey>,
    binding: ChannelBinding,
    /// The agent chose the session ALPN of version 6: it reads a call's cause.
    takes_cause: bool,
    out: mpsc::Sender<CallerMsg>,
    routes: Routes,
    next: AtomicU64,
    /// Fired by the I/O task when the session has ended.
    ended: CancellationToken,
    slots: Arc<Semaphore>,
    io: JoinHandle<()>,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.io.abort();
    }
}

impl Session {
    /// Opens a session to `agent` through the proxy connection `conn`: the relay request
    /// and, right behind it, the pinned end-to-end handshake (`crate::relay`: the proxy's
    /// answer is read before the agent's first handshake bytes, without a round trip of its
    /// own).
    pub async fn open(me: Arc<SecretKey>, conn: &Connection, agent: AgentId) -> Result<Session, OpenError> {
        let identity =
            wtd_transport::certified_key(&me).map_err(|e| OpenError::Handshake(SessionError::Setup(e)))?;
        Self::open_as(me, identity, conn, agent).await
    }

    /// [`Session::open`] with our certificate already made (`wtd_transport::certified_key`
    /// of `me`), as a caller opening many sessions keeps it.
    pub async fn open_as(
        me: Arc<SecretKey>,
        identity: Arc<CertifiedKey>,
        conn: &Connection,
        agent: AgentId,
    ) -> Result<Session, OpenError> {
        let proxy = |e: &dyn std::fmt::Display| OpenError::Proxy(e.to_string());
        let (mut send, recv) = conn.open_bi().await.map_err(|e| proxy(&e))?;
        write_frame(
            &mut send,
            &encode(&Open::Relay {
                to: Key::from(*agent.key()),
            }),
        )
        .await
        .map_err(|e| proxy(&e))?;
        let (recv, answer) = AfterReply::new(recv);
        let handshake = e2e::connect_as(identity, *agent.key(), tokio::io::join(recv, send)).await;
        // What the proxy answered comes first: a refused relay also fails the handshake.
        let answer = answer.lock().expect("not poisoned").take();
        match answer {
            Some(Ok(RelayReply::Connected)) => {}
            Some(Ok(RelayReply::NoSuchAgent)) => return Err(OpenError::NoSuchAgent),
            Some(Ok(RelayReply::Unreachable(why))) => return Err(OpenError::Unreachable(why)),
            Some(Err(why)) => return Err(OpenError::Proxy(why)),
            None => {
                // The handshake ended before the proxy answered: the stream or the
                // connection broke.
                return Err(match handshake {
                    Err(e) => OpenError::Proxy(e.to_string()),
                    Ok(_) => OpenError::Proxy("the proxy never answered the relay request".into()),
                });
            }
        }
        let (tls, binding) = handshake?;
        Ok(Session::over_handshake(me, agent, tls, binding))
    }

    /// A session over the end-to-end stream our handshake with `agent` just made: whether
    /// the agent reads a call's cause comes from the handshake (`e2e::speaks_v6`).
    pub fn over_handshake<IO>(
        me: Arc<SecretKey>,
        agent: AgentId,
        tls: e2e::CallerStream<IO>,
        binding: ChannelBinding,
    ) -> Session
    where
        IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let takes_cause = e2e::speaks_v6(tls.get_ref().1);
        let mut session = Session::over(me, agent, tls, binding);
        session.takes_cause = takes_cause;
        session
    }

    /// A session over an established end-to-end stream `tls` whose binding is `binding`:
    /// starts its I/O task. It sends no cause: an agent is known to read one only from the
    /// handshake ([`Session::open`]).
    pub fn over<S>(me: Arc<SecretKey>, agent: AgentId, tls: S, binding: ChannelBinding) -> Session
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (out, out_rx) = mpsc::channel(OUT_QUEUE);
        let routes: Routes = Arc::default();
        let ended = CancellationToken::new();
        let (rd, wr) = tokio::io::split(tls);
        let io = tokio::spawn(run_io(rd, wr, out_rx, routes.clone(), ended.clone()));
        Session {
            agent,
            me,
            binding,
            takes_cause: false,
            out,
            routes,
            next: AtomicU64::new(0),
            ended,
            slots: Arc::new(Semaphore::new(MAX_CALLS_IN_FLIGHT)),
            io,
        }
    }

    pub fn agent(&self) -> AgentId {
        self.agent
    }

    /// Whether the agent reads a call's cause (it speaks version 6).
    pub fn takes_cause(&self) -> bool {
        self.takes_cause
    }

    /// True once the session has ended; a new call then needs a new session.
    pub fn is_closed(&self) -> bool {
        self.ended.is_cancelled()
    }

    /// Sends a call of `mission/function` with `args` and returns at once; the answer comes
    /// from the returned [`PendingCall`]. Waits only when [`MAX_CALLS_IN_FLIGHT`] calls are
    /// already in flight on this session. With `receipt`, the call is signed (bound to this
    /// session) and the agent's signed result is verified before the answer is given.
    /// `cause`: the events this call is made because of (checked by the caller, see
    /// `wtd_keys::cause::check`); empty for most calls.
    pub async fn call(
        self: &Arc<Self>,
        mission: &MissionName,
        function: &FunctionName,
        args: &[u8],
        receipt: bool,
        cause: &[Dep],
    ) -> Result<PendingCall, CallError> {
        let not_sent = || CallError::NotSent("the session to this agent has ended".into());
        if self.is_closed() {
            return Err(not_sent());
        }
        let slot = self.slots.clone().acquire_owned().await.map_err(|_| not_sent())?;
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let (tx, rx) = mpsc::channel(EVENTS_PER_CALL);
        self.routes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, tx);
        let signed = receipt.then(|| {
            Call {
                caller: UserKey(self.me.public()),
                agent: self.agent,
                mission: mission.clone(),
                function: function.clone(),
                args_hash: wtd_keys::call::args_hash(args),
                request_id: RequestId::random(),
                session: self.binding,
                issued_at: now(),
            }
            .sign(&self.me)
        });
        let mut pending = PendingCall {
            id,
            rx,
            session: self.clone(),
            receipt: signed.as_ref().map(|s| (s.clone(), args.to_vec())),
            events: Vec::new(),
            finished: false,
            cause_dropped: !cause.is_empty() && !self.takes_cause,
            _slot: slot,
        };
        let (mission, function) = (mission.as_str().to_string(), function.as_str().to_string());
        let (args, signed) = (args.to_vec(), signed.map(|s| s.bytes().to_vec()));
        let msg = if cause.is_empty() || !self.takes_cause {
            CallerMsg::Call {
                id,
                mission,
                function,
                args,
                signed,
            }
        } else {
            CallerMsg::CallCaused {
                id,
                mission,
                function,
                args,
                signed,
                cause: cause
                    .iter()
                    .map(|d| LogPosition {
                        publisher: Key::from(*d.log.publisher.key()),
                        mission: d.log.mission.to_string(),
                        seq: d.seq,
                    })
                    .collect(),
            }
        };
        if self.out.send(msg).await.is_err() {
            pending.finished = true;
            self.forget(id);
            return Err(not_sent());
        }
        Ok(pending)
    }

    fn forget(&self, id: CallNumber) {
        self.routes.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
    }
}

/// A call that was sent and is waiting for its answer. Dropping it before the answer
/// tells the agent to stop the call (best effort: the session may already be gone).
#[derive(Debug)]
pub struct PendingCall {
    id: CallNumber,
    rx: mpsc::Receiver<AgentMsg>,
    session: Arc<Session>,
    /// The signed call and its arguments, when a receipt was asked for.
    receipt: Option<(SignedCall, Vec<u8>)>,
    events: Vec<String>,
    finished: bool,
    /// See [`Answer::cause_dropped`].
    cause_dropped: bool,
    _slot: OwnedSemaphorePermit,
}

impl Drop for PendingCall {
    fn drop(&mut self) {
        if !self.finished {
            self.session.forget(self.id);
            let _ = self.session.out.try_send(CallerMsg::Cancel { id: self.id });
        }
    }
}

impl PendingCall {
    /// The next progress line, or the answer.
    pub async fn next(&mut self) -> Result<Progress, CallError> {
        if self.finished {
            return Err(CallError::NotSent("this call has already ended".into()));
        }
        let Some(msg) = self.rx.recv().await else {
            self.finished = true;
            return Err(CallError::Lost("the agent or the proxy went away".into()));
        };
        match msg {
            AgentMsg::Event { line, .. } => {
                self.events.push(line.clone());
                Ok(Progress::Event(line))
            }
            AgentMsg::Refused { refused, .. } => {
                self.finished = true;
                Err(CallError::Refused(refused))
            }
            AgentMsg::Done {
                status,
                output,
                detail,
                signed,
                ..
            } => {
                self.finished = true;
                let receipt = match (self.receipt.take(), signed) {
                    (None, _) => None,
                    (Some(_), None) => {
                        return Err(CallError::Lost(
                            "the agent answered without the signed result this call asked for".into(),
                        ))
                    }
                    (Some((call, args)), Some(result)) => {
                        let verified = verify_result(&result, &output, &self.session.agent, &call)?;
                        if verified.status() != status_of(status) {
                            return Err(CallError::Lost(
                                "the agent's signed result gives another status than its answer".into(),
                            ));
                        }
                        Some((
                            Receipt {
                                call: call.bytes().to_vec(),
                                args,
                                result,
                                output: output.clone(),
                            },
                            call.call().request_id,
                        ))
                    }
                };
                let (receipt, receipt_id) = receipt.unzip();
                Ok(Progress::Done(Answer {
                    status: status_of(status),
                    output,
                    detail,
                    events: std::mem::take(&mut self.events),
                    receipt,
                    receipt_id,
                    cause_dropped: self.cause_dropped,
                }))
            }
        }
    }

    /// Waits for the answer, handing each progress line to `on_event` as it comes.
    pub async fn finish(mut self, on_event: &mut (dyn FnMut(&str) + Send)) -> Result<Answer, CallError> {
        loop {
            match self.next().await? {
                Progress::Event(line) => on_event(&line),
                Progress::Done(answer) => return Ok(answer),
            }
        }
    }
}

/// The keys crate's status for a wire status (the same five values).
pub fn status_of(s: Status) -> CallStatus {
    match s {
        Status::Ok => CallStatus::Ok,
        Status::Failed => CallStatus::Failed,
        Status::TimedOut => CallStatus::TimedOut,
        Status::Cancelled => CallStatus::Cancelled,
        Status::OutputTooLarge => CallStatus::OutputTooLarge,
    }
}

fn now() -> Timestamp {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    Timestamp(ms)
}

/// The session's I/O: the writer and the reader, until either ends. Then every waiting
/// call is told (its queue is dropped) and `ended` fires.
async fn run_io<R, W>(rd: R, wr: W, out: mpsc::Receiver<CallerMsg>, routes: Routes, ended: CancellationToken)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    tokio::select! {
        _ = write_loop(wr, out) => {}
        _ = read_loop(rd, &routes) => {}
    }
    ended.cancel();
    routes.lock().unwrap_or_else(|e| e.into_inner()).clear();
}

/// Sends queued messages, as many as are waiting in one write and one flush.
async fn write_loop<W: AsyncWrite + Unpin>(mut wr: W, mut out: mpsc::Receiver<CallerMsg>) {
    let mut batch = Vec::with_capacity(WRITE_BATCH);
    let mut buf = Vec::with_capacity(4096);
    while out.recv_many(&mut batch, WRITE_BATCH).await > 0 {
        buf.clear();
        for msg in batch.drain(..) {
            encode_frame_into(&msg, &mut buf);
        }
        if wr.write_all(&buf).await.is_err() || wr.flush().await.is_err() {
            return;
        }
    }
}

/// Reads the agent's messages and hands each to the call it names, until the session ends
/// or the agent breaks the protocol.
async fn read_loop<R: AsyncRead + Unpin>(rd: R, routes: &Routes) {
    let mut rd = BufReader::with_capacity(READ_BUFFER, rd);
    let mut bytes = Vec::new();
    loop {
        match e2e::read_msg_into(&mut rd, &mut bytes, MAX_ANSWER).await {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                if e.kind() == std::io::ErrorKind::InvalidData {
                    log::warn!("an agent broke the session protocol ({e}); ending the session");
                }
                return;
            }
        }
        let Ok(msg) = wtd_wire::codec::decode_with_limit::<AgentMsg>(&bytes, MAX_ANSWER) else {
            log::warn!("an agent sent a malformed message; ending the session");
            return;
        };
        let id = msg.id();
        let last = !matches!(msg, AgentMsg::Event { .. });
        let route = {
            let mut routes = routes.lock().unwrap_or_else(|e| e.into_inner());
            if last {
                routes.remove(&id)
            } else {
                routes.get(&id).cloned()
            }
        };
        // A message for a call nobody waits for (cancelled, dropped) is dropped too.
        if let Some(tx) = route {
            let _ = tx.send(msg).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wtd_keys::event::LogId;
    use wtd_transport::session::{accept_offering, connect_as, SESSION_PROTOCOLS};
    use wtd_transport::ALPN;

    /// One call with a cause to a fake agent choosing among `agent_offers`: what the agent
    /// received, and whether the answer says the cause was dropped.
    async fn call_with_cause(agent_offers: &'static [&'static [u8]]) -> (CallerMsg, bool) {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let agent_key = SecretKey::generate();
        let agent = AgentId(agent_key.public());
        let me = Arc::new(SecretKey::generate());
        let fake_agent = tokio::spawn(async move {
            let identity = wtd_transport::certified_key(&agent_key).unwrap();
            let (mut tls, _, _) = accept_offering(identity, b, agent_offers).await.unwrap();
            let bytes = e2e::read_msg(&mut tls, 1 << 20).await.unwrap().unwrap();
            let msg: CallerMsg = wtd_wire::decode(&bytes).unwrap();
            let done = AgentMsg::Done {
                id: 1,
                status: Status::Ok,
                output: b"{}".to_vec(),
                detail: String::new(),
                signed: None,
            };
            e2e::write_msg(&mut tls, &encode(&done)).await.unwrap();
            msg
        });
        let identity = wtd_transport::certified_key(&me).unwrap();
        let (tls, binding) = connect_as(identity, *agent.key(), a).await.unwrap();
        let session = Arc::new(Session::over_handshake(me, agent, tls, binding));
        let cause = [Dep {
            log: LogId {
                publisher: agent,
                mission: MissionName::new("social").unwrap(),
            },
            seq: 1,
        }];
        let (m, f) = (
            MissionName::new("photos").unwrap(),
            FunctionName::new("post").unwrap(),
        );
        let pending = session.call(&m, &f, b"{}", false, &cause).await.unwrap();
        let answer = pending.finish(&mut |_| {}).await.unwrap();
        (fake_agent.await.unwrap(), answer.cause_dropped)
    }

    #[tokio::test]
    async fn a_cause_goes_only_to_an_agent_that_reads_it() {
        match call_with_cause(SESSION_PROTOCOLS).await {
            (CallerMsg::CallCaused { cause, .. }, false) => {
                assert_eq!(cause.len(), 1);
                assert_eq!(cause[0].mission, "social");
                assert_eq!(cause[0].seq, 1);
            }
            other => panic!("a version-6 agent was not sent the cause: {other:?}"),
        }
        // An agent before version 6 would end the session on `CallCaused`: it gets the
        // plain call, and the answer says the cause was left out.
        match call_with_cause(&[ALPN]).await {
            (CallerMsg::Call { mission, .. }, true) => assert_eq!(mission, "photos"),
            other => panic!("an older agent was sent what it cannot read: {other:?}"),
        }
    }
}
