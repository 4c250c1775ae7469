//! How much a peer may ask of us: streams, buffers, timeouts, connection counts.
//!
//! [`Limits::default()`] is sized for a 512 MB Pi (see [`crate::defaults`] for the reason
//! behind every number). A server uses all of it; a client uses the per-connection part.

use std::time::Duration;

use quinn::{IdleTimeout, TransportConfig, VarInt};

use crate::defaults;

/// When a server makes a new client prove its address with a QUIC Retry before spending a
/// handshake on it.
///
/// A Retry costs an honest client one extra round trip (~1 ms on a LAN) and costs a
/// spoofing attacker everything: it never sees the Retry, so it cannot continue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryPolicy {
    /// Retry every client whose address is not yet validated. Use on an exposed server.
    Always,
    /// Retry only while more than `unvalidated_over` handshakes from unvalidated addresses
    /// are in progress, i.e. when someone may be flooding us with spoofed packets.
    WhenBusy { unvalidated_over: usize },
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy::WhenBusy {
            unvalidated_over: defaults::RETRY_WHEN_UNVALIDATED_OVER,
        }
    }
}

/// Connection limits. Construct with `Limits::default()` and change what you need:
///
/// ```
/// let limits = wtd_transport::Limits { max_connections_per_ip: 64, ..Default::default() };
/// assert!(limits.max_connections >= limits.max_connections_per_ip);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Connections a server keeps at once; further attempts are refused.
    pub max_connections: usize,
    /// Connections a server keeps at once from one IP address; further ones are refused.
    pub max_connections_per_ip: usize,
    /// When a server asks clients to prove their address first.
    pub retry: RetryPolicy,
    /// Bidirectional streams (calls) a peer may have open at once per connection.
    pub max_concurrent_bidi_streams: u32,
    /// Unidirectional streams a peer may have open at once per connection.
    pub max_concurrent_uni_streams: u32,
    /// Bytes a peer may send on one stream before we read them.
    pub stream_receive_window: u32,
    /// Bytes a peer may send on one connection before we read them.
    pub connection_receive_window: u32,
    /// Bytes we buffer for sending per connection.
    pub send_window: u64,
    /// A connection silent for this long is dropped.
    pub idle_timeout: Duration,
    /// A quiet connection sends a keep-alive this often. Must be shorter than `idle_timeout`.
    pub keep_alive_interval: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: defaults::MAX_CONNECTIONS,
            max_connections_per_ip: defaults::MAX_CONNECTIONS_PER_IP,
            retry: RetryPolicy::default(),
            max_concurrent_bidi_streams: defaults::MAX_CONCURRENT_BIDI_STREAMS,
            max_concurrent_uni_streams: defaults::MAX_CONCURRENT_UNI_STREAMS,
            stream_receive_window: defaults::STREAM_RECEIVE_WINDOW,
            connection_receive_window: defaults::CONNECTION_RECEIVE_WINDOW,
            send_window: defaults::SEND_WINDOW,
            idle_timeout: defaults::IDLE_TIMEOUT,
            keep_alive_interval: defaults::KEEP_ALIVE_INTERVAL,
        }
    }
}

impl Limits {
    /// The per-connection part, as quinn wants it. Fails with a sentence saying which field
    /// is unusable.
    pub(crate) fn transport_config(&self) -> Result<TransportConfig, &'static str> {
        if self.keep_alive_interval >= self.idle_timeout {
            return Err("keep_alive_interval must be shorter than idle_timeout, \
                        or quiet but healthy connections are dropped");
        }
        if self.max_connections_per_ip == 0 || self.max_connections == 0 {
            return Err("max_connections and max_connections_per_ip must be at least 1");
        }
        let idle = IdleTimeout::try_from(self.idle_timeout).map_err(|_| "idle_timeout is too long")?;
        let mut t = TransportConfig::default();
        t.max_concurrent_bidi_streams(VarInt::from_u32(self.max_concurrent_bidi_streams))
            .max_concurrent_uni_streams(VarInt::from_u32(self.max_concurrent_uni_streams))
            .stream_receive_window(VarInt::from_u32(self.stream_receive_window))
            .receive_window(VarInt::from_u32(self.connection_receive_window))
            .send_window(self.send_window)
            .max_idle_timeout(Some(idle))
            .keep_alive_interval(Some(self.keep_alive_interval))
            // wtd sends nothing as unreliable datagrams; refusing them removes a buffer a
            // peer could fill.
            .datagram_receive_buffer_size(None);
        Ok(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_make_a_transport_config() {
        assert!(Limits::default().transport_config().is_ok());
    }

    #[test]
    fn keep_alive_must_be_shorter_than_idle_timeout() {
        let limits = Limits {
            keep_alive_interval: Duration::from_secs(3),
            ..Limits::default()
        };
        assert!(limits.transport_config().is_err());
    }

    #[test]
    fn zero_connection_limits_are_refused() {
        let limits = Limits {
            max_connections_per_ip: 0,
            ..Limits::default()
        };
        assert!(limits.transport_config().is_err());
    }
}
