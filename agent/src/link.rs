//! The link to the proxy: connect out, say hello, heartbeat, receive owner logs, reconnect.
//!
//! The agent always connects *out* (a Pi behind NAT cannot be reached), over QUIC, pinning
//! the proxy's key from the join ticket. One connection is one *session*:
//!
//! ```text
//!  start --> connecting --Welcome--> welcomed --shutdown--> Leaving, finish, close
//!              |    ^                   |
//!   failed,    |    | after a random    |  lost, idle timeout,
//!   refused    v    | wait (backoff)    |  stream ended, bad message
//!            waiting <------------------+
//! ```
//!
//! While welcomed, two things happen at once on the control stream: a heartbeat with the
//! load goes out every interval, and `ToAgent::Log` messages come in and are verified into
//! [`OwnerLogs`]. Both run as futures inside one `select!`, in the agent's one task, so
//! nothing is spawned and nothing outlives the session.
//!
//! Cancellation safety matters here: a frame half-written or half-read when its future is
//! dropped would corrupt the stream. So a `select!` only ever drops a frame in progress
//! when the session is over anyway: the receiving loop when the heartbeats stop, a stuck
//! heartbeat write when shutdown comes (and then no goodbye is attempted on that stream).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use wtd_keys::{AgentId, ProxyId, ProxyInfo};
use wtd_transport::{
    read_frame, write_frame, Client, ConnectError, Connection, FrameError, RecvStream, SendStream,
    WriteFrameError,
};
use wtd_wire::defaults::MAX_FRAME;
use wtd_wire::jobs::{JobDelivery, JobUpdate};
use wtd_wire::{
    decode, encode, Advert, AgentHello, CallReport, FromAgent, MissionEvent, Open, Refusal, ToAgent,
    WireError, CALL_REPORTS_VERSION, EVENT_STREAMS_VERSION, JOBS_VERSION, MIN_PROTOCOL_VERSION,
    MISSION_EVENTS_VERSION,
};

use crate::backoff::{random_unit, Backoff};
use crate::calls::CallService;
use crate::defaults;
use crate::lan::LanFinder;
use crate::load::LoadSampler;
use crate::owner_logs::{ApplyError, OwnerLogs};
use crate::sensors::PiSensors;

/// QUIC application close code: the agent is stopping (it sent `Leaving` first). A proxy
/// that sees the connection closed with this code may treat it as a goodbye even if the
/// `Leaving` frame itself was lost in the close.
pub const CLOSE_LEAVING: u32 = 0;
/// QUIC application close code: the agent gave up on this session (bad message, refused,
/// no answer) and will reconnect.
pub const CLOSE_ERROR: u32 = 1;

/// Why one session with the proxy ended (other than shutdown). Every one of these is
/// followed by a backoff and a new connection; the message says what happened.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The proxy could not be reached, or is not who the ticket says.
    #[error("could not connect: {0}")]
    Connect(#[from] ConnectError),
    /// The connection failed before the control stream could be opened.
    #[error("the connection failed before the hello: {0}")]
    Open(#[source] std::io::Error),
    /// The proxy refused this agent; the reason says what to do.
    #[error("the proxy refused this agent: {0}")]
    Refused(Refusal),
    /// No `Welcome` or `Refused` in time: the proxy is overloaded or broken.
    #[error(
        "the proxy did not answer the hello within {}",
        humantime::format_duration(defaults::HELLO_TIMEOUT)
    )]
    HelloTimeout,
    /// Writing to the proxy failed: the connection was lost.
    #[error("{0}")]
    Send(#[from] WriteFrameError),
    /// Reading from the proxy failed: the connection was lost, timed out or was closed.
    #[error("{0}")]
    Receive(#[from] FrameError),
    /// The proxy ended the control stream: it is shutting down or dropped us.
    #[error("the proxy closed the control stream")]
    StreamEnded,
    /// The proxy sent something we cannot decode: a different wtd version, or a bug.
    #[error("the proxy sent an unreadable message: {0}")]
    Malformed(#[from] WireError),
    /// The proxy sent a valid message out of turn (e.g. owner logs before `Welcome`).
    #[error("the proxy broke the protocol: {0}")]
    OutOfTurn(&'static str),
    /// An owner-log entry could not be stored (a full or failing disk). The entries before
    /// it are kept; the session ends so that the next one starts from what is stored and the
    /// proxy sends the rest again, once there is room.
    #[error(
        "{0}; will reconnect so the proxy sends the entries again (free some space on the agent's disk)"
    )]
    Store(String),
}

/// How a session that did not fail ended.
enum Stopped {
    /// We said goodbye.
    Gracefully,
    /// Shutdown came while a write was stuck (the proxy stopped reading): no goodbye.
    Abruptly,
}

/// Everything the link needs, owned by it for the life of the agent.
#[derive(Debug)]
pub(crate) struct Link {
    /// Our id, attached to every log line.
    pub id: AgentId,
    /// The QUIC endpoint, bound once; every session's connection comes from it.
    pub client: Client,
    /// Where the proxy is: a ticket's, or found on the LAN for each connection.
    pub proxy: ProxyTarget,
    pub advert: Advert,
    pub logs: OwnerLogs,
    pub sampler: LoadSampler,
    /// The latest Pi sensor reading, kept fresh by `load::poll_sensors`.
    pub sensors: watch::Receiver<PiSensors>,
    pub heartbeat: Duration,
    pub backoff: Backoff,
    /// Answers the calls the proxy relays to us on this connection.
    pub calls: Arc<CallService>,
    /// Mission events to send to the proxy's bridge; `None` when this agent publishes them
    /// itself (`[mqtt]`), or lets no mission publish.
    pub events: Option<mpsc::Receiver<MissionEvent>>,
    /// Call reports for the proxy's dashboard; `None` unless the owner set `report_calls`.
    pub reports: Option<mpsc::Receiver<CallReport>>,
    /// The protocol version we say hello with: ours, or an older proxy's (then no events).
    pub version: u16,
    /// Jobs the proxy delivers go to the job runner (`jobs::run`) through here.
    pub jobs: mpsc::Sender<JobDelivery>,
    /// What became of them, to send to the proxy; kept across sessions, so an outcome
    /// reached while the proxy was away is sent when it is back.
    pub job_updates: mpsc::Receiver<JobUpdate>,
    /// The signed event logs to publish (version 5 proxies only).
    pub streams: Arc<crate::streams::EventStreams>,
    /// Functions subscribed to signed events, served on each session.
    pub handlers: Arc<Vec<Arc<crate::subscriber::Handler>>>,
}

/// The proxy a link connects to.
#[derive(Debug)]
pub(crate) enum ProxyTarget {
    /// From a join ticket: this id, at these addresses in turn.
    Ticket(ProxyInfo),
    /// Found on the LAN: each attempt takes the next allowed announcement.
    Lan(LanFinder),
}

impl Link {
    /// Keeps a session with the proxy going until `shutdown`, reconnecting with backoff.
    /// Returns once the last session has said goodbye and the close has gone out.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut failures = 0u32;
        let mut refusals = RefusalLog::default();
        // When each LAN sighting last failed its handshake, so a spoofer that keeps
        // announcing is logged at warn once per REFUSAL_LOG_EVERY, not on every retry.
        let mut spoofs: std::collections::HashMap<(ProxyId, SocketAddr), Instant> = Default::default();
        for attempt in 0usize.. {
            let (proxy, addr) = match &mut self.proxy {
                // With several addresses (LAN and Wi-Fi, say), try each in turn.
                ProxyTarget::Ticket(info) => (info.id, info.addrs[attempt % info.addrs.len()]),
                ProxyTarget::Lan(finder) => match finder.next(self.id, &shutdown).await {
                    Some((info, addr)) => (info.id, addr),
                    None => break,
                },
            };
            let mut welcomed_at = None;
            let outcome = self.session(proxy, addr, &mut welcomed_at, &shutdown).await;
            // A session that was healthy for a while resets the backoff: a proxy restart
            // after a day of uptime should be retried at once, a flapping one should not.
            if welcomed_at.is_some_and(|at: Instant| at.elapsed() >= self.backoff.cap) {
                failures = 0;
            }
            match outcome {
                Ok(_) => break,
                // An older proxy we can still talk to: say hello in its version (only
                // mission events are missing from it) and try again.
                Err(SessionError::Refused(Refusal::VersionMismatch { proxy }))
                    if (MIN_PROTOCOL_VERSION..self.version).contains(&proxy) =>
                {
                    log::info!(
                        agent:% = self.id, peer:% = addr;
                        "the proxy speaks protocol version {proxy}; speaking it too (what it does not know, mission events before 4 and call reports before 5, is not sent)"
                    );
                    self.version = proxy;
                }
                Err(SessionError::Refused(refusal)) => {
                    if refusals.should_log(&refusal, Instant::now()) {
                        log::error!(
                            agent:% = self.id, peer:% = addr;
                            "the proxy refused this agent: {refusal} (retrying; repeats are logged every {})",
                            humantime::format_duration(defaults::REFUSAL_LOG_EVERY)
                        );
                    } else {
                        log::debug!(agent:% = self.id, peer:% = addr; "refused again: {refusal}");
                    }
                }
                Err(e) if welcomed_at.is_some() => {
                    log::warn!(agent:% = self.id, peer:% = addr; "lost the proxy: {}; reconnecting", explain(&e))
                }
                // Anyone on the LAN can announce any id: say that this one failed to prove it.
                Err(e) if matches!(self.proxy, ProxyTarget::Lan(_)) => {
                    let now = Instant::now();
                    let quiet = spoofs
                        .get(&(proxy, addr))
                        .is_some_and(|at| now.duration_since(*at) < defaults::REFUSAL_LOG_EVERY);
                    if quiet {
                        log::debug!(agent:% = self.id, peer:% = addr; "the LAN sighting failed again: {}", explain(&e));
                    } else {
                        // Bounded: at most MAX_LAN_PROXIES sightings times their addresses.
                        spoofs.retain(|_, at| now.duration_since(*at) < defaults::REFUSAL_LOG_EVERY);
                        spoofs.insert((proxy, addr), now);
                        log::warn!(
                            agent:% = self.id, peer:% = addr, proxy:% = proxy;
                            "not joining the proxy announced on the LAN as {proxy} at {addr}: {} (repeats are logged every {})",
                            explain(&e),
                            humantime::format_duration(defaults::REFUSAL_LOG_EVERY)
                        );
                    }
                }
                Err(e) => log::warn!(agent:% = self.id, peer:% = addr; "{}", explain(&e)),
            }
            let delay = self.backoff.delay(failures, random_unit());
            failures = failures.saturating_add(1);
            log::debug!(agent:% = self.id; "next attempt in {}", humantime::format_duration(delay));
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(delay) => {}
            }
        }
        // Let close packets go out, so the proxy drops us now rather than at its idle
        // timeout. Bounded: a proxy that vanished never acknowledges.
        let _ = tokio::time::timeout(defaults::WAIT_IDLE_GRACE, self.client.endpoint().wait_idle()).await;
    }

    /// One connection, from connect to its end. `Ok` means shutdown was requested.
    async fn session(
        &mut self,
        proxy: ProxyId,
        addr: SocketAddr,
        welcomed_at: &mut Option<Instant>,
        shutdown: &CancellationToken,
    ) -> Result<Stopped, SessionError> {
        if wait_for_route(addr, route_to, defaults::ROUTE_POLL, shutdown, |e| {
            log::info!(
                agent:% = self.id, peer:% = addr;
                "no route to the proxy at {addr} yet ({e}): the network is not up (no address or no default route); connecting as soon as it is"
            )
        })
        .await
        .is_none()
        {
            return Ok(Stopped::Abruptly);
        }
        log::debug!(agent:% = self.id, peer:% = addr; "connecting to the proxy");
        let connection = tokio::select! {
            _ = shutdown.cancelled() => return Ok(Stopped::Abruptly),
            connection = self.client.connect(addr, *proxy.key()) => connection?,
        };
        let result = self
            .converse(&connection, proxy, addr, welcomed_at, shutdown)
            .await;
        match &result {
            Ok(Stopped::Gracefully) => {
                // The proxy closes the connection once it has read our `Leaving`; closing
                // first could make it discard the frame unread. Give it a moment to.
                let _ = tokio::time::timeout(defaults::CLOSE_GRACE, connection.closed()).await;
                connection.close(CLOSE_LEAVING.into(), b"agent stopping");
                log::info!(agent:% = self.id, peer:% = addr; "left the proxy");
            }
            Ok(Stopped::Abruptly) => connection.close(CLOSE_LEAVING.into(), b"agent stopping"),
            Err(_) => connection.close(CLOSE_ERROR.into(), b"session failed"),
        }
        result
    }

    /// The control stream: hello, then heartbeats out and owner logs in.
    async fn converse(
        &mut self,
        connection: &Connection,
        proxy: ProxyId,
        addr: SocketAddr,
        welcomed_at: &mut Option<Instant>,
        shutdown: &CancellationToken,
    ) -> Result<Stopped, SessionError> {
        let (mut send, mut recv) = connection
            .open_bi()
            .await
            .map_err(|e| SessionError::Open(e.into()))?;
        // The callers' sessions share this connection. When it cannot send everything at
        // once (its congestion window is full), quinn sends the highest-priority stream's
        // data first: a heartbeat must not queue behind a burst of answers, or the proxy
        // drops us and every session with us. Fails only on a closed stream: harmless.
        let _ = send.set_priority(defaults::CONTROL_STREAM_PRIORITY);
        let hello = Open::Agent(AgentHello {
            version: self.version,
            advert: self.advert.clone(),
            heads: self.logs.heads(),
        });
        write_frame(&mut send, &encode(&hello)).await?;

        let reply = tokio::select! {
            _ = shutdown.cancelled() => return Ok(Stopped::Abruptly),
            reply = tokio::time::timeout(defaults::HELLO_TIMEOUT, read_frame(&mut recv, MAX_FRAME)) => {
                reply.map_err(|_| SessionError::HelloTimeout)??.ok_or(SessionError::StreamEnded)?
            }
        };
        match decode::<ToAgent>(&reply)? {
            ToAgent::Welcome { proxy_software } => {
                *welcomed_at = Some(Instant::now());
                log::info!(
                    agent:% = self.id, peer:% = addr, proxy:% = proxy;
                    "connected to the proxy ({proxy_software}) as {}", self.advert.name
                );
            }
            ToAgent::Refused(refusal) => return Err(SessionError::Refused(refusal)),
            ToAgent::Log { .. } => return Err(SessionError::OutOfTurn("owner logs before Welcome")),
            ToAgent::Job(_) => return Err(SessionError::OutOfTurn("a job before Welcome")),
        }

        let Link {
            id,
            logs,
            sampler,
            sensors,
            heartbeat,
            calls,
            events,
            reports,
            version,
            jobs,
            job_updates,
            streams,
            handlers,
            ..
        } = self;
        // Only a version-5 proxy knows job updates (and only it delivers jobs).
        let job_updates = Some(job_updates).filter(|_| *version >= JOBS_VERSION);
        // A version-3 proxy knows no mission events: keep them (the queue drops the rest).
        let events = events.as_mut().filter(|_| *version >= MISSION_EVENTS_VERSION);
        // Nor does a version-4 one know call reports.
        let reports = reports.as_mut().filter(|_| *version >= CALL_REPORTS_VERSION);
        // Callers' sessions arrive as streams the proxy opens on this connection. This
        // arm never ends the session by itself; when another arm does, it is dropped and
        // takes every call session with it.
        let serve_calls = async {
            calls.clone().serve(connection.clone(), shutdown.clone()).await;
            std::future::pending::<()>().await;
        };
        // Signed events out, and subscribed handlers in, on the same connection (version 5
        // on: an older proxy would close the connection on a request it does not know).
        // Never ends the session by itself either; the handlers' tasks are owned by this
        // set and aborted when the session ends.
        let event_streams = async {
            if *version >= EVENT_STREAMS_VERSION {
                let mut subscriptions = tokio::task::JoinSet::new();
                for h in handlers.iter() {
                    let (h, conn, calls, stop) =
                        (h.clone(), connection.clone(), calls.clone(), shutdown.clone());
                    subscriptions.spawn(async move { h.run(&conn, &calls, &stop).await });
                }
                crate::streams::publish(streams, connection).await;
            }
            std::future::pending::<()>().await;
        };
        tokio::select! {
            () = serve_calls => unreachable!("serving calls never ends the session"),
            () = event_streams => unreachable!("event streams never end the session"),
            // Ends only with an error: the proxy or the connection went away.
            error = receive(&mut recv, logs, jobs, *id, addr) => Err(error),
            // Ends on shutdown, or when a heartbeat cannot be sent.
            stopped = send_heartbeats(&mut send, sampler, sensors, *heartbeat, events, reports, job_updates, shutdown) => stopped,
        }
    }
}

/// Sends a heartbeat every `interval`, and each job update, mission event and call report as
/// it comes, until shutdown, then `Leaving`. Events and reports are few (their sinks' budgets
/// bound them) and small, so one never holds a heartbeat back for more than one short write.
// One optional queue per kind of message on the control stream, each filtered by the
// proxy's version; bundling them into a struct would only move the same fields.
#[allow(clippy::too_many_arguments)]
async fn send_heartbeats(
    send: &mut SendStream,
    sampler: &mut LoadSampler,
    sensors: &watch::Receiver<PiSensors>,
    interval: Duration,
    mut events: Option<&mut mpsc::Receiver<MissionEvent>>,
    mut reports: Option<&mut mpsc::Receiver<CallReport>>,
    mut job_updates: Option<&mut mpsc::Receiver<JobUpdate>>,
    shutdown: &CancellationToken,
) -> Result<Stopped, SessionError> {
    let mut ticks = tokio::time::interval(interval);
    // After a stall (a slow fsync, a suspended laptop) send one heartbeat, not a burst.
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let next_event = async {
            match events.as_mut() {
                Some(rx) => rx.recv().await,
                None => std::future::pending().await,
            }
        };
        let next_report = async {
            match reports.as_mut() {
                Some(rx) => rx.recv().await,
                None => std::future::pending().await,
            }
        };
        let next_update = async {
            match job_updates.as_mut() {
                Some(rx) => rx.recv().await,
                None => std::future::pending().await,
            }
        };
        let message = tokio::select! {
            // Heartbeats first when several are ready: they keep us in the roster.
            biased;
            _ = shutdown.cancelled() => break,
            _ = ticks.tick() => FromAgent::Heartbeat(sampler.sample(&sensors.borrow())),
            Some(update) = next_update => FromAgent::JobUpdate(update),
            Some(event) = next_event => FromAgent::MissionEvent(event),
            Some(report) = next_report => FromAgent::CallReport(report),
        };
        let frame = encode(&message);
        // A write only waits when the proxy stops reading; don't let that block shutdown.
        tokio::select! {
            written = write_frame(send, &frame) => written?,
            _ = shutdown.cancelled() => return Ok(Stopped::Abruptly),
        }
    }
    let goodbye = async {
        write_frame(send, &encode(&FromAgent::Leaving)).await?;
        // Tell the proxy nothing follows. Fails only if already finished: harmless.
        let _ = send.finish();
        Ok::<_, WriteFrameError>(())
    };
    match tokio::time::timeout(defaults::CLOSE_GRACE, goodbye).await {
        Ok(written) => written.map(|()| Stopped::Gracefully).map_err(SessionError::from),
        Err(_) => Ok(Stopped::Abruptly),
    }
}

/// Reads the proxy's messages until the session fails, verifying owner logs as they come.
async fn receive(
    recv: &mut RecvStream,
    logs: &mut OwnerLogs,
    jobs: &mpsc::Sender<JobDelivery>,
    id: AgentId,
    addr: SocketAddr,
) -> SessionError {
    loop {
        let frame = match read_frame(recv, MAX_FRAME).await {
            Ok(Some(frame)) => frame,
            Ok(None) => return SessionError::StreamEnded,
            Err(e) => return e.into(),
        };
        match decode::<ToAgent>(&frame) {
            Ok(ToAgent::Log { owner, entries }) => {
                // Appends fsync, which on an SD card can take tens of milliseconds; that
                // briefly delays a heartbeat, well within the proxy's patience.
                match logs.apply(&owner, &entries) {
                    Ok(applied) if applied.added > 0 => log::info!(
                        agent:% = id, peer:% = addr, owner:% = short(&owner), seq = applied.head;
                        "owner log: {} new entries verified and stored", applied.added
                    ),
                    Ok(applied) => log::debug!(
                        agent:% = id, owner:% = short(&owner), seq = applied.head;
                        "owner log: {} entries already held", applied.skipped
                    ),
                    // The agent keeps running and keeps what was good: the proxy can only
                    // withhold, never forge. Another session may bring the right entries.
                    Err(e @ (ApplyError::UnknownOwner { .. } | ApplyError::BadEntry { .. })) => {
                        log::error!(agent:% = id, peer:% = addr; "{e}")
                    }
                    Err(e @ ApplyError::Store(_)) => return SessionError::Store(explain(&e)),
                }
            }
            Ok(ToAgent::Job(delivery)) => {
                // Never waits: a full runner means the proxy sent more than it should; the
                // job stays delivered on the proxy and comes again on the next session.
                if jobs.try_send(delivery).is_err() {
                    log::warn!(agent:% = id, peer:% = addr; "too many jobs at once; one is left for the next delivery");
                }
            }
            Ok(ToAgent::Welcome { .. }) => {
                log::warn!(agent:% = id, peer:% = addr; "the proxy said Welcome twice; ignored")
            }
            Ok(ToAgent::Refused(refusal)) => return SessionError::Refused(refusal),
            Err(e) => return e.into(),
        }
    }
}

/// An error and its causes in one line, skipping causes its message already quotes
/// (`connection lost: closed by peer: proxy restarting`).
fn explain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text = format!("{text}: {cause_text}");
        }
        source = cause.source();
    }
    text
}

/// The owner key of a `Log` message, short, for log lines.
fn short(owner: &wtd_wire::Key) -> String {
    owner
        .parse()
        .map_or_else(|_| "<invalid key>".to_string(), |k| k.short())
}

/// Decides whether a refusal is logged at error level: the first time, when the reason
/// changes, and then at most every [`defaults::REFUSAL_LOG_EVERY`].
#[derive(Debug, Default)]
struct RefusalLog {
    last: Option<(Refusal, Instant)>,
}

impl RefusalLog {
    fn should_log(&mut self, refusal: &Refusal, now: Instant) -> bool {
        let quiet = matches!(&self.last, Some((last, at))
            if last == refusal && now.duration_since(*at) < defaults::REFUSAL_LOG_EVERY);
        if !quiet {
            self.last = Some((refusal.clone(), now));
        }
        !quiet
    }
}

/// Whether this machine has a route to `addr` now: a UDP socket's `connect` asks the
/// kernel for one and sends nothing. `Err` with "network unreachable" (no address, no
/// default route), "no route to host" or "cannot assign address" means none yet.
fn route_to(addr: SocketAddr) -> std::io::Result<()> {
    let any: SocketAddr = if addr.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    std::net::UdpSocket::bind(any)?.connect(addr)
}

/// The errors of [`route_to`] that mean "no route yet"; any other error is left for the
/// connection attempt to report.
fn no_route(e: &std::io::Error) -> bool {
    use nix::errno::Errno;
    let none_yet = [Errno::ENETUNREACH, Errno::EHOSTUNREACH, Errno::EADDRNOTAVAIL];
    e.raw_os_error()
        .is_some_and(|code| none_yet.iter().any(|n| *n as i32 == code))
}

/// Waits until `probe` finds a route to `addr`, checking every `poll`; `Some(polls)` (how
/// many checks found none) once there is one, `None` if `shutdown` came first. `said` is
/// told the first "no route" (once per wait).
///
/// At boot the agent starts before DHCP or Wi-Fi have given the Pi an address (it does not
/// wait for network-online.target). A QUIC attempt then fails at once to send, but only
/// gives up after its handshake timeout, and the next waits out a backoff: seconds lost
/// after the network came up. Checking the route first, cheaply, connects within `poll`
/// of the network being there.
async fn wait_for_route(
    addr: SocketAddr,
    probe: impl Fn(SocketAddr) -> std::io::Result<()>,
    poll: Duration,
    shutdown: &CancellationToken,
    said: impl FnOnce(&std::io::Error),
) -> Option<u64> {
    let mut said = Some(said);
    let mut polls = 0u64;
    loop {
        match probe(addr) {
            Err(e) if no_route(&e) => {
                if let Some(say) = said.take() {
                    say(&e);
                }
            }
            _ => return Some(polls),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            _ = tokio::time::sleep(poll) => {}
        }
        polls += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explanations_quote_each_cause_once() {
        #[derive(Debug, thiserror::Error)]
        #[error("outer: {0}")]
        struct Quotes(#[source] Inner);
        #[derive(Debug, thiserror::Error)]
        #[error("outer")]
        struct Wraps(#[source] Inner);
        #[derive(Debug, thiserror::Error)]
        #[error("inner")]
        struct Inner;
        assert_eq!(explain(&Quotes(Inner)), "outer: inner");
        assert_eq!(explain(&Wraps(Inner)), "outer: inner");
    }

    #[test]
    fn a_route_is_found_to_loopback_and_no_route_means_only_unreachable() {
        assert!(route_to("127.0.0.1:9".parse().unwrap()).is_ok());
        let errno = |n: nix::errno::Errno| std::io::Error::from_raw_os_error(n as i32);
        assert!(no_route(&errno(nix::errno::Errno::ENETUNREACH)));
        assert!(no_route(&errno(nix::errno::Errno::EHOSTUNREACH)));
        assert!(no_route(&errno(nix::errno::Errno::EADDRNOTAVAIL)));
        // Anything else is for the connection attempt to report.
        assert!(!no_route(&errno(nix::errno::Errno::EACCES)));
        assert!(!no_route(&std::io::Error::other("not an OS error")));
    }

    #[tokio::test]
    async fn the_agent_waits_for_a_route_then_connects_and_says_so_once() {
        let addr: SocketAddr = "10.0.2.2:4433".parse().unwrap();
        let unreachable = || std::io::Error::from_raw_os_error(nix::errno::Errno::ENETUNREACH as i32);
        // No route for the first three checks (the Pi's network coming up), then one.
        let checks = std::cell::Cell::new(0);
        let probe = |_| {
            checks.set(checks.get() + 1);
            if checks.get() <= 3 {
                Err(unreachable())
            } else {
                Ok(())
            }
        };
        let said = std::cell::Cell::new(0);
        let shutdown = CancellationToken::new();
        let polls = wait_for_route(addr, probe, Duration::from_millis(1), &shutdown, |_| {
            said.set(said.get() + 1)
        })
        .await;
        assert_eq!(polls, Some(3));
        assert_eq!(said.get(), 1, "said once, not at every check");
        // A route at once: no wait, nothing said.
        let polls = wait_for_route(
            addr,
            |_| Ok(()),
            Duration::from_millis(1),
            &shutdown,
            |_| panic!("nothing to say"),
        )
        .await;
        assert_eq!(polls, Some(0));
        // Another error: not waited for (the connection attempt reports it).
        let other = |_| {
            Err(std::io::Error::from_raw_os_error(
                nix::errno::Errno::EACCES as i32,
            ))
        };
        let polls = wait_for_route(addr, other, Duration::from_millis(1), &shutdown, |_| {
            panic!("not a missing route")
        })
        .await;
        assert_eq!(polls, Some(0));
        // Never a route, and the agent is told to stop: it stops waiting.
        shutdown.cancel();
        let polls = wait_for_route(
            addr,
            |_| Err(unreachable()),
            Duration::from_secs(3600),
            &shutdown,
            |_| {},
        )
        .await;
        assert_eq!(polls, None);
    }

    #[test]
    fn repeated_refusals_are_logged_once_a_minute() {
        let mut log = RefusalLog::default();
        let t0 = Instant::now();
        let s = Duration::from_secs;
        assert!(log.should_log(&Refusal::OwnerNotAllowed, t0));
        assert!(!log.should_log(&Refusal::OwnerNotAllowed, t0 + s(2)));
        assert!(
            log.should_log(&Refusal::Full, t0 + s(4)),
            "a new reason is logged"
        );
        assert!(!log.should_log(&Refusal::Full, t0 + s(63)));
        assert!(log.should_log(&Refusal::Full, t0 + s(64)), "once a minute");
    }
}
