//! Signed event streams, the publishing side: a handler prints
//! `wtd-emit: unfriend {"user":"ann","friend":"parents"}` on stderr, and the agent appends
//! the event to its own hash-chained, signed log of that mission (`wtd_keys::event`), on
//! disk and fsynced (`wtd_store::eventfile`), then sends it to the proxy, which stores and
//! forwards it to subscribers.
//!
//! - **Durable before anyone sees it.** The event is on the agent's disk before it is sent,
//!   so a proxy that was away, or restarted and lost its copy, gets it again: at each
//!   session the agent offers its last event, the proxy answers where its copy ends, and
//!   the agent resends from there ([`EventStreams::pending`]).
//! - **Causal context.** An event emitted while handling another (see `subscriber`)
//!   depends on it, and on what it depended on: the dependencies are filled in here from
//!   the call's cause, so no handler has to know about them.
//! - **Bounded.** A token bucket per mission ([`defaults::SIGNED_EVENTS_PER_S`]), bodies
//!   of at most `MAX_EVENT_BODY` bytes that must be JSON, and at most
//!   [`defaults::AGENT_EVENTS_KEPT`] events kept per mission; what is refused is logged
//!   with why.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use tokio::sync::Notify;
use wtd_keys::event::{Dep, LogId, SignedEvent};
use wtd_keys::{AgentId, MissionName, SecretKey, Timestamp, TopicName};
use wtd_store::eventfile::{EventFile, EventFileError};
use wtd_telemetry::budget::Budget;

use crate::defaults;

/// Why an event a handler emitted was not published.
#[derive(Debug, thiserror::Error)]
pub enum EmitError {
    #[error("not `<topic> <json>` (for example `wtd-emit: posted {{\"photo\": \"beach.jpg\"}}`)")]
    Shape,
    #[error("topic: {0}")]
    Topic(#[from] wtd_keys::names::NameError),
    #[error("the body is not JSON: {0}")]
    NotJson(String),
    #[error("the event is invalid: {0}")]
    Invalid(#[from] wtd_keys::encoding::DecodeError),
    #[error(
        "over the mission's budget of {} signed events a second; dropped",
        defaults::SIGNED_EVENTS_PER_S
    )]
    OverBudget,
    #[error("{0}")]
    Store(#[from] EventFileError),
}

#[derive(Debug)]
struct Stream {
    file: EventFile,
    /// The newest events, for the proxy to fetch again.
    recent: VecDeque<SignedEvent>,
    /// Where the proxy's copy ends, as it last said; `None` at the start of a session.
    stored: Option<u64>,
    budget: Budget,
}

/// The agent's signed event logs, one per mission (see the module docs).
#[derive(Debug)]
pub struct EventStreams {
    secret: SecretKey,
    id: AgentId,
    dir: PathBuf,
    streams: Mutex<HashMap<MissionName, Stream>>,
    /// Something new to publish (or a new session began).
    pub(crate) wake: Notify,
}

fn now_ms() -> u64 {
    wtd_telemetry::mirror::now_ms()
}

impl EventStreams {
    /// Opens the logs in `dir` (`<mission>.events`), creating it; a log that does not
    /// verify is refused with what to do (move it aside).
    pub fn open(dir: &Path, secret: SecretKey) -> Result<EventStreams, EventFileError> {
        wtd_store::atomic::ensure_dir(dir, 0o700)?;
        let id = AgentId(secret.public());
        let mut streams = HashMap::new();
        let entries = std::fs::read_dir(dir).map_err(|source| wtd_store::IoError::Io {
            action: "read",
            path: dir.to_path_buf(),
            source,
        })?;
        for entry in entries.flatten() {
            let path = entry.path();
            let Some(mission) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".events"))
                .and_then(|n| MissionName::new(n).ok())
            else {
                continue;
            };
            let log = LogId {
                publisher: id,
                mission: mission.clone(),
            };
            let opened = EventFile::open(&path, log)?;
            if opened.torn_tail_bytes > 0 {
                log::warn!(
                    "{}: cut off a torn last event ({} bytes); it was never sent",
                    path.display(),
                    opened.torn_tail_bytes
                );
            }
            let mut recent: VecDeque<SignedEvent> = opened.events.into();
            while recent.len() > defaults::AGENT_EVENTS_KEPT {
                recent.pop_front();
            }
            streams.insert(
                mission,
                Stream {
                    file: opened.file,
                    recent,
                    stored: None,
                    budget: Budget::new(
                        defaults::SIGNED_EVENTS_PER_S,
                        defaults::SIGNED_EVENTS_BURST,
                        now_ms(),
                    ),
                },
            );
        }
        Ok(EventStreams {
            secret,
            id,
            dir: dir.to_path_buf(),
            streams: Mutex::new(streams),
            wake: Notify::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<MissionName, Stream>> {
        self.streams.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends the event a handler of `mission` emitted (`line` is `<topic> <json>`), with
    /// `cause` as its dependencies, and wakes the publisher. Durable when it returns Ok.
    pub fn emit(&self, mission: &MissionName, line: &str, cause: &[Dep]) -> Result<SignedEvent, EmitError> {
        let (topic, body) = line
            .trim()
            .split_once(char::is_whitespace)
            .ok_or(EmitError::Shape)?;
        let topic = TopicName::new(topic)?;
        let body = body.trim();
        serde_json::from_str::<serde_json::Value>(body).map_err(|e| EmitError::NotJson(e.to_string()))?;
        let mut streams = self.lock();
        if !streams.contains_key(mission) {
            let log = LogId {
                publisher: self.id,
                mission: mission.clone(),
            };
            let opened = EventFile::open(&self.dir.join(format!("{mission}.events")), log)?;
            streams.insert(
                mission.clone(),
                Stream {
                    file: opened.file,
                    recent: VecDeque::new(),
                    stored: None,
                    budget: Budget::new(
                        defaults::SIGNED_EVENTS_PER_S,
                        defaults::SIGNED_EVENTS_BURST,
                        now_ms(),
                    ),
                },
            );
        }
        let stream = streams.get_mut(mission).expect("inserted above");
        if !stream.budget.take(now_ms()) {
            return Err(EmitError::OverBudget);
        }
        let event = stream.file.log().next(
            &self.secret,
            Timestamp(now_ms()),
            topic,
            body.to_string(),
            cause.to_vec(),
        )?;
        stream.file.append(&event)?;
        stream.recent.push_back(event.clone());
        if stream.recent.len() > 2 * defaults::AGENT_EVENTS_KEPT {
            let keep = stream.recent.len() - defaults::AGENT_EVENTS_KEPT;
            stream.recent.drain(..keep);
            let kept: Vec<SignedEvent> = stream.recent.iter().cloned().collect();
            if let Err(e) = stream.file.trim(&kept) {
                log::warn!("could not trim the event log of {mission}: {e} (it keeps growing until it can)");
            }
        }
        drop(streams);
        self.wake.notify_one();
        Ok(event)
    }

    /// A new session: the proxy's copies are unknown again.
    pub(crate) fn new_session(&self) {
        for s in self.lock().values_mut() {
            s.stored = None;
        }
    }

    /// What to send the proxy now, per mission: the events after where its copy ends, or,
    /// when that is unknown, the last event alone (the answer says where it ends).
    pub(crate) fn pending(&self) -> Vec<(MissionName, Vec<Vec<u8>>)> {
        // Batches stay well under a frame: PUBLISH_BATCH events of at most MAX_EVENT_LEN.
        let streams = self.lock();
        let mut out = Vec::new();
        for (mission, s) in streams.iter() {
            let head = s.file.log().head().0;
            let from = match s.stored {
                Some(stored) if stored >= head => continue,
                Some(stored) => stored + 1,
                None if head == 0 => continue,
                None => head,
            };
            let batch: Vec<Vec<u8>> = s
                .recent
                .iter()
                .filter(|e| e.event().seq >= from)
                .take(defaults::PUBLISH_BATCH)
                .map(|e| e.bytes().to_vec())
                .collect();
            if batch.is_empty() {
                // The proxy is behind what this agent still keeps: nothing can fill it.
                continue;
            }
            out.push((mission.clone(), batch));
        }
        out
    }

    /// The proxy said its copy of `mission` ends at `seq`.
    pub(crate) fn stored(&self, mission: &MissionName, seq: u64) {
        if let Some(s) = self.lock().get_mut(mission) {
            let oldest = s.recent.front().map_or(0, |e| e.event().seq);
            if seq + 1 < oldest {
                log::error!(
                    "the proxy's copy of the {mission} events ends at {seq}, but this agent keeps only events from {oldest}: events {}..{} cannot be sent again",
                    seq + 1,
                    oldest - 1
                );
                s.stored = Some(s.file.log().head().0);
                return;
            }
            s.stored = Some(seq);
        }
    }

    /// The proxy refused events of `mission` (it said why): do not send them again.
    pub(crate) fn refused(&self, mission: &MissionName, up_to: u64) {
        if let Some(s) = self.lock().get_mut(mission) {
            s.stored = Some(up_to);
        }
    }

    /// The last event's number per mission, for tests and metrics.
    pub fn heads(&self) -> HashMap<MissionName, u64> {
        self.lock()
            .iter()
            .map(|(m, s)| (m.clone(), s.file.log().head().0))
            .collect()
    }
}

/// Sends the agent's new events to the proxy on `connection`, for the life of a session
/// (this future never ends by itself; the session drops it). One QUIC stream per batch: a
/// `PublishEvents` request and the proxy's answer, where its copy now ends.
pub(crate) async fn publish(streams: &EventStreams, connection: &wtd_transport::Connection) {
    streams.new_session();
    loop {
        let woken = streams.wake.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        let batches = streams.pending();
        if batches.is_empty() {
            woken.await;
            continue;
        }
        for (mission, entries) in batches {
            let last = entries
                .last()
                .and_then(|b| SignedEvent::decode(b).ok())
                .map_or(0, |e| e.event().seq);
            match publish_batch(connection, &mission, entries).await {
                Ok(wtd_wire::Response::EventsStored { seq, .. }) => streams.stored(&mission, seq),
                Ok(wtd_wire::Response::Error(why)) => {
                    log::warn!("the proxy did not store events of {mission} up to {last}: {why}");
                    streams.refused(&mission, last);
                }
                Ok(other) => {
                    log::warn!("the proxy answered a publish of {mission} events with {other:?}");
                    tokio::time::sleep(defaults::SUBSCRIBE_RETRY).await;
                }
                Err(e) => {
                    log::debug!("could not publish events of {mission}: {e}; retrying");
                    tokio::time::sleep(defaults::SUBSCRIBE_RETRY).await;
                }
            }
        }
    }
}

async fn publish_batch(
    connection: &wtd_transport::Connection,
    mission: &MissionName,
    entries: Vec<Vec<u8>>,
) -> Result<wtd_wire::Response, String> {
    let (mut send, mut recv) = connection.open_bi().await.map_err(|e| e.to_string())?;
    let request = wtd_wire::Open::Request(wtd_wire::Request::PublishEvents {
        mission: mission.to_string(),
        entries,
    });
    wtd_transport::write_frame(&mut send, &wtd_wire::encode(&request))
        .await
        .map_err(|e| e.to_string())?;
    let _ = send.finish();
    let reply = tokio::time::timeout(
        defaults::HELLO_TIMEOUT,
        wtd_transport::read_frame(&mut recv, wtd_wire::defaults::MAX_FRAME),
    )
    .await
    .map_err(|_| "the proxy did not answer".to_string())?
    .map_err(|e| e.to_string())?
    .ok_or("the proxy closed the stream")?;
    wtd_wire::decode::<wtd_wire::Response>(&reply).map_err(|e| e.to_string())
}
