//! Telling systemd how the agent is doing: `READY=1` once it has started, and `WATCHDOG=1`
//! pings while its event loop runs (the unit's `Type=notify` and `WatchdogSec=`).
//!
//! The protocol is one datagram per message to the unix socket named in `NOTIFY_SOCKET`
//! (a path, or `@name` for an abstract socket); `WATCHDOG_USEC` (with `WATCHDOG_PID`) says
//! how often systemd wants a ping. Outside systemd there is no socket and every call here
//! does nothing. The environment is read once, in [`Notifier::from_env`]; tests build a
//! [`Notifier`] on a socket they bound with [`Notifier::new`].
//!
//! The pinger runs on the agent's own (single-threaded) runtime, so a stuck event loop
//! stops the pings and systemd restarts the agent (`Restart=on-failure` counts a watchdog
//! timeout as a failure).

use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::PathBuf;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Where to send notifications, and how often systemd wants a watchdog ping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notifier {
    socket: Option<NotifySocket>,
    watchdog: Option<Duration>,
}

/// The `NOTIFY_SOCKET` address.
#[derive(Debug, Clone, PartialEq, Eq)]
enum NotifySocket {
    Path(PathBuf),
    Abstract(Vec<u8>),
}

impl Notifier {
    /// A notifier that sends nothing (not under systemd).
    pub fn none() -> Self {
        Notifier {
            socket: None,
            watchdog: None,
        }
    }

    /// A notifier sending to the socket at `path`, pinging the watchdog every half of
    /// `watchdog` if given (what systemd asks for with `WATCHDOG_USEC`).
    pub fn new(path: impl Into<PathBuf>, watchdog: Option<Duration>) -> Self {
        Notifier {
            socket: Some(NotifySocket::Path(path.into())),
            watchdog,
        }
    }

    /// Reads `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID` (the watchdog is ours only
    /// if `WATCHDOG_PID` is unset or is this process).
    pub fn from_env() -> Self {
        let socket = std::env::var_os("NOTIFY_SOCKET").and_then(|s| {
            let bytes = s.into_encoded_bytes();
            match bytes.split_first() {
                None => None,
                Some((b'@', name)) => Some(NotifySocket::Abstract(name.to_vec())),
                Some(_) => Some(NotifySocket::Path(PathBuf::from(
                    std::ffi::OsString::from_vec_compat(bytes),
                ))),
            }
        });
        let ours = std::env::var("WATCHDOG_PID")
            .ok()
            .is_none_or(|pid| pid.trim() == std::process::id().to_string());
        let watchdog = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|usec| usec.trim().parse::<u64>().ok())
            .filter(|&usec| usec > 0 && ours)
            .map(Duration::from_micros);
        Notifier { socket, watchdog }
    }

    /// How often systemd wants a ping, if it watches this process.
    pub fn watchdog(&self) -> Option<Duration> {
        self.watchdog
    }

    /// Sends one notification (`READY=1`, `STATUS=...`, `WATCHDOG=1`). Does nothing
    /// without a socket.
    pub fn send(&self, state: &str) -> io::Result<()> {
        let Some(socket) = &self.socket else {
            return Ok(());
        };
        let addr = match socket {
            NotifySocket::Path(path) => SocketAddr::from_pathname(path)?,
            NotifySocket::Abstract(name) => {
                use std::os::linux::net::SocketAddrExt;
                SocketAddr::from_abstract_name(name)?
            }
        };
        let sender = UnixDatagram::unbound()?;
        sender.send_to_addr(state.as_bytes(), &addr)?;
        Ok(())
    }

    /// Tells systemd the agent has started (`READY=1`) and why it is waiting, if it is.
    pub fn ready(&self, status: &str) {
        if let Err(e) = self.send(&format!("READY=1\nSTATUS={status}")) {
            log::warn!("could not tell systemd the agent is ready: {e}");
        }
    }

    /// Pings the watchdog every half period until `shutdown`; returns at once if systemd
    /// does not watch this process.
    pub async fn feed_watchdog(&self, shutdown: CancellationToken) {
        let Some(period) = self.watchdog else {
            return;
        };
        let mut ticks = tokio::time::interval(period / 2);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut warned = false;
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                _ = shutdown.cancelled() => return,
            }
            if let Err(e) = self.send("WATCHDOG=1") {
                if !warned {
                    log::warn!("could not ping systemd's watchdog: {e}");
                    warned = true;
                }
            }
        }
    }
}

/// `OsString::from_vec` lives in an extension trait; this keeps the call site short.
trait FromVecCompat {
    fn from_vec_compat(bytes: Vec<u8>) -> std::ffi::OsString;
}

impl FromVecCompat for std::ffi::OsString {
    fn from_vec_compat(bytes: Vec<u8>) -> std::ffi::OsString {
        use std::os::unix::ffi::OsStringExt;
        std::ffi::OsString::from_vec(bytes)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn receiver() -> (tempfile::TempDir, PathBuf, UnixDatagram) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        socket.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        (dir, path, socket)
    }

    fn recv(socket: &UnixDatagram) -> String {
        let mut buf = [0u8; 512];
        let n = socket.recv(&mut buf).unwrap();
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    #[test]
    fn ready_reaches_the_socket_systemd_bound() {
        let (_dir, path, socket) = receiver();
        Notifier::new(&path, None).ready("connecting to the proxy");
        assert_eq!(recv(&socket), "READY=1\nSTATUS=connecting to the proxy");
    }

    #[test]
    fn the_watchdog_is_fed_until_shutdown() {
        let (_dir, path, socket) = receiver();
        let notifier = Notifier::new(&path, Some(Duration::from_millis(40)));
        let shutdown = CancellationToken::new();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let stop = shutdown.clone();
        runtime.block_on(async {
            let feeder = notifier.feed_watchdog(shutdown);
            let reader = tokio::task::spawn_blocking(move || {
                let pings: Vec<String> = (0..3).map(|_| recv(&socket)).collect();
                stop.cancel();
                (pings, socket)
            });
            let ((), got) = tokio::join!(feeder, reader);
            // The feeder returned: it stopped on shutdown.
            let (pings, _socket) = got.unwrap();
            assert_eq!(pings, ["WATCHDOG=1"; 3]);
        });
    }

    #[test]
    fn without_a_watchdog_the_feeder_returns_at_once() {
        let (_dir, path, _socket) = receiver();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        // Never cancelled: it must return by itself.
        runtime.block_on(Notifier::new(&path, None).feed_watchdog(CancellationToken::new()));
    }

    #[test]
    fn a_missing_socket_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let err = Notifier::new(dir.path().join("absent.sock"), None)
            .send("READY=1")
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        // And outside systemd nothing is sent at all.
        Notifier::none().send("READY=1").unwrap();
    }
}
