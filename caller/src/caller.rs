//! A caller: one connection to the proxy, a warm session per agent, and the rules for
//! moving on to the next agent when one fails.
//!
//! The rule that matters is when a call may be tried elsewhere:
//! - it was never sent (no session could be opened): always;
//! - the agent refused it: never (it did not run, but the next agent would most likely say
//!   the same, and the refusal says what to do);
//! - it was sent and the session broke before the answer: only if the function is
//!   idempotent; any other function may or may not have run, and the caller is told so.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use wtd_keys::{AgentId, FunctionName, MissionName, OwnerKey, SecretKey};
use wtd_transport::{read_frame, write_frame, CertifiedKey, Connection};
use wtd_wire::defaults::MAX_FRAME;
use wtd_wire::{decode, encode, AgentInfo, Open, Request, Response};

use crate::defaults::MAX_ARGS;
use crate::dispatch::Candidate;
use crate::session::{Answer, CallError, Session};

/// What to call, and how.
#[derive(Debug, Clone)]
pub struct CallRequest {
    pub mission: MissionName,
    pub function: FunctionName,
    /// The arguments, as JSON bytes.
    pub args: Vec<u8>,
    /// Ask for a receipt: the call is signed and the agent signs its result.
    pub receipt: bool,
    /// The events this call is made because of (`wtd_keys::cause`; `wtd call` reads them
    /// from `WTD_CAUSE`): the events the function emits depend on them. Empty for most.
    pub cause: Vec<wtd_keys::event::Dep>,
}

/// A call request that cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// The mission or function name is not a valid name.
    #[error("{0}")]
    Name(#[from] wtd_keys::names::NameError),
    /// The arguments are larger than agents accept.
    #[error("the arguments are {0} bytes; the limit is {MAX_ARGS}")]
    ArgsTooLarge(usize),
}

impl CallRequest {
    /// A request for `mission/function` with `args`, without a receipt.
    pub fn new(mission: &str, function: &str, args: Vec<u8>) -> Result<CallRequest, RequestError> {
        if args.len() > MAX_ARGS {
            return Err(RequestError::ArgsTooLarge(args.len()));
        }
        Ok(CallRequest {
            mission: MissionName::new(mission)?,
            function: FunctionName::new(function)?,
            args,
            receipt: false,
            cause: Vec::new(),
        })
    }
}

/// What happened on the way, for the caller to show.
#[derive(Debug)]
pub enum Notice<'a> {
    /// A progress line from `agent`.
    Event { agent: &'a Candidate, line: &'a str },
    /// `agent` failed in a way that makes trying the next one safe; `next` is tried now.
    Retrying {
        agent: &'a Candidate,
        error: &'a CallError,
        next: &'a Candidate,
    },
}

/// Why a call went to no agent.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// An agent refused the call; it did not run.
    #[error("{} refused the call: {}", .agent.name, .error)]
    Refused { agent: Candidate, error: CallError },
    /// The call was sent to `agent`, then the session broke, and the function is not
    /// idempotent: it may or may not have run there, so it was not retried elsewhere.
    #[error("{} went away before answering ({error}); the function may or may not have run there", .agent.name)]
    MayHaveRun { agent: Candidate, error: CallError },
    /// No agent could be reached (or every idempotent attempt was lost).
    #[error("no agent could run it: {}", .last.as_ref().map_or_else(|| "there were no candidates".to_string(), |(a, e)| format!("{}: {e}", a.name)))]
    NoneAnswered { last: Option<(Candidate, CallError)> },
}

/// Reading the roster failed.
#[derive(Debug, thiserror::Error)]
pub enum RosterError {
    #[error("could not ask the proxy for the roster: {0}")]
    Proxy(String),
    #[error("the proxy said: {0}")]
    Refused(String),
    #[error("the proxy answered something other than a roster")]
    Unexpected,
}

/// A caller: our key and our connection to the proxy, with a warm session per agent.
#[derive(Debug)]
pub struct Caller {
    me: Arc<SecretKey>,
    conn: Connection,
    /// Open sessions by agent. A std mutex: held only to look up or insert, never across
    /// an await (two calls racing to open a session to one agent both open one; the
    /// second replaces the first, which ends when its calls are done).
    sessions: Mutex<HashMap<AgentId, Arc<Session>>>,
    /// Our certificate for end-to-end handshakes, made at the first session.
    identity: OnceLock<Arc<CertifiedKey>>,
}

impl Caller {
    pub fn new(me: Arc<SecretKey>, conn: Connection) -> Caller {
        Caller {
            me,
            conn,
            sessions: Mutex::new(HashMap::new()),
            identity: OnceLock::new(),
        }
    }

    /// Uses `identity` (our certificate, e.g. `Client::identity` of the connection's
    /// client) for the end-to-end handshakes instead of making one at the first session.
    /// It must be `me`'s: a certificate for another key fails every handshake.
    pub fn with_identity(self, identity: Arc<CertifiedKey>) -> Caller {
        let _ = self.identity.set(identity);
        self
    }

    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// The agents online now, as the proxy reports them (self-reported: it only informs
    /// the choice of agent; the agent authorizes).
    pub async fn roster(&self) -> Result<Vec<AgentInfo>, RosterError> {
        let e = |e: &dyn std::fmt::Display| RosterError::Proxy(e.to_string());
        let (mut send, mut recv) = self.conn.open_bi().await.map_err(|x| e(&x))?;
        write_frame(&mut send, &encode(&Open::Request(Request::Roster)))
            .await
            .map_err(|x| e(&x))?;
        let _ = send.finish();
        // A big roster comes in several messages, to the end of the stream (an older proxy
        // sends one).
        let mut all: Option<Vec<AgentInfo>> = None;
        while let Some(bytes) = read_frame(&mut recv, MAX_FRAME).await.map_err(|x| e(&x))? {
            match decode::<Response>(&bytes).map_err(|x| e(&x))? {
                Response::Roster(r) => all.get_or_insert_with(Vec::new).extend(r),
                Response::Error(why) => return Err(RosterError::Refused(why)),
                _ => return Err(RosterError::Unexpected),
            }
        }
        all.ok_or(RosterError::Unexpected)
    }

    /// `owner`'s log entries after `after_seq`, as the proxy holds them: the owner's signed
    /// bytes, unverified. Check them (`wtd_keys::OwnerLog::sync`) before believing any.
    pub async fn fetch_log(&self, owner: &OwnerKey, after_seq: u64) -> Result<Vec<Vec<u8>>, RosterError> {
        let e = |e: &dyn std::fmt::Display| RosterError::Proxy(e.to_string());
        let (mut send, mut recv) = self.conn.open_bi().await.map_err(|x| e(&x))?;
        let req = Request::FetchLog {
            owner: (*owner.key()).into(),
            after_seq,
        };
        write_frame(&mut send, &encode(&Open::Request(req)))
            .await
            .map_err(|x| e(&x))?;
        let _ = send.finish();
        let mut entries = Vec::new();
        while let Some(bytes) = read_frame(&mut recv, MAX_FRAME).await.map_err(|x| e(&x))? {
            match decode::<Response>(&bytes).map_err(|x| e(&x))? {
                Response::Log { entries: batch } => entries.extend(batch),
                Response::Error(why) => return Err(RosterError::Refused(why)),
                _ => return Err(RosterError::Unexpected),
            }
        }
        Ok(entries)
    }

    /// The warm session to `agent`, opened if there is none (or the last one ended).
    pub async fn session(&self, agent: AgentId) -> Result<Arc<Session>, CallError> {
        if let Some(s) = self.lock().get(&agent) {
            if !s.is_closed() {
                return Ok(s.clone());
            }
        }
        let identity = match self.identity.get() {
            Some(id) => id.clone(),
            None => {
                let id =
                    wtd_transport::certified_key(&self.me).map_err(|e| CallError::NotSent(e.to_string()))?;
                self.identity.get_or_init(|| id).clone()
            }
        };
        let session = Session::open_as(self.me.clone(), identity, &self.conn, agent)
            .await
            .map_err(|e| CallError::NotSent(e.to_string()))?;
        let session = Arc::new(session);
        self.lock().insert(agent, session.clone());
        Ok(session)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<AgentId, Arc<Session>>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One call on one agent, on its warm session.
    pub async fn call(
        &self,
        agent: &Candidate,
        req: &CallRequest,
        on_event: &mut (dyn FnMut(&str) + Send),
    ) -> Result<Answer, CallError> {
        let session = self.session(agent.id).await?;
        let pending = session
            .call(&req.mission, &req.function, &req.args, req.receipt, &req.cause)
            .await?;
        pending.finish(on_event).await
    }

    /// Tries `cands` in order until one answers, moving on only when that is safe (see the
    /// module docs). Returns the agent that answered, and its answer.
    pub async fn call_first(
        &self,
        cands: &[Candidate],
        req: &CallRequest,
        notice: &mut (dyn FnMut(Notice<'_>) + Send),
    ) -> Result<(Candidate, Answer), Failure> {
        let mut last = None;
        for (i, cand) in cands.iter().enumerate() {
            let result = {
                let mut on_event = |line: &str| notice(Notice::Event { agent: cand, line });
                self.call(cand, req, &mut on_event).await
            };
            let error = match result {
                Ok(answer) => return Ok((cand.clone(), answer)),
                Err(error @ CallError::Refused(_)) => {
                    return Err(Failure::Refused {
                        agent: cand.clone(),
                        error,
                    })
                }
                Err(error) if error.may_have_run() && !cand.idempotent => {
                    return Err(Failure::MayHaveRun {
                        agent: cand.clone(),
                        error,
                    })
                }
                Err(error) => error,
            };
            if let Some(next) = cands.get(i + 1) {
                notice(Notice::Retrying {
                    agent: cand,
                    error: &error,
                    next,
                });
            }
            last = Some((cand.clone(), error));
        }
        Err(Failure::NoneAnswered { last })
    }

    /// Calls every one of `cands` at once (one session each, all concurrent) and gathers
    /// what each answered, in the order of `cands`.
    pub async fn call_all(
        &self,
        cands: &[Candidate],
        req: &CallRequest,
        on_event: &(dyn Fn(&Candidate, &str) + Sync),
    ) -> Vec<(Candidate, Result<Answer, CallError>)> {
        let calls = cands.iter().map(|cand| async move {
            let mut on = |line: &str| on_event(cand, line);
            (cand.clone(), self.call(cand, req, &mut on).await)
        });
        futures_util::future::join_all(calls).await
    }

    /// Closes the connection to the proxy (and with it every session), politely.
    pub async fn close(&self) {
        self.lock().clear();
        wtd_transport::close_and_flush(&self.conn, b"bye").await;
    }
}
