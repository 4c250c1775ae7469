//! Every number the transport uses, each with its reason.
//!
//! The budget is the smallest machine wtd runs on: a Raspberry Pi Zero 2 W with 512 MB of RAM,
//! on Wi-Fi, possibly serving as the proxy for a classroom. Worst-case memory held for peers is
//! roughly `MAX_CONNECTIONS * (CONNECTION_RECEIVE_WINDOW + SEND_WINDOW)` =
//! 128 * 512 KiB = 64 MiB, and that only if every peer floods us at once.
//!
//! All of these can be changed per endpoint through [`crate::Limits`]; these are the defaults.

use std::time::Duration;

/// How long a connection may stay silent before it is dropped.
///
/// wtd promises that a silent agent disappears from `wtd ls` within about 3 seconds, so
/// calls stop being routed to a Pi that was unplugged. 2.5 s leaves room for the proxy to
/// notice and update its table inside that budget. The timeout both sides use is the
/// *smaller* of the two advertised values, so a peer cannot make us keep a dead connection
/// longer. (QUIC never times out faster than 3 probe timeouts, so on a very slow link with
/// a round trip near 300 ms the effective timeout stretches to about 3 s.)
pub const IDLE_TIMEOUT: Duration = Duration::from_millis(2_500);

/// How often an otherwise quiet connection sends a tiny PING to prove it is alive.
///
/// Three keep-alives fit in one [`IDLE_TIMEOUT`], so a healthy peer on flaky Wi-Fi can lose
/// two in a row without being dropped. Each is a ~40-byte packet: negligible traffic.
pub const KEEP_ALIVE_INTERVAL: Duration = Duration::from_millis(750);

/// Bidirectional streams a peer may have open at once on one connection.
///
/// One call is one stream. 32 concurrent calls per connection is far more than a Pi can
/// execute at once (it has 4 cores), yet bounds the per-stream state a peer can make us hold.
pub const MAX_CONCURRENT_BIDI_STREAMS: u32 = 32;

/// Unidirectional streams a peer may have open at once on one connection.
///
/// Kept small: they carry one-way notices (events, progress), not calls.
pub const MAX_CONCURRENT_UNI_STREAMS: u32 = 8;

/// Bytes a peer may send on one stream before we have read them (flow control).
///
/// 64 KiB holds a typical call's arguments or result whole, so small calls never wait for
/// a window update, while a single stream cannot claim the whole connection window.
pub const STREAM_RECEIVE_WINDOW: u32 = 64 * 1024;

/// Bytes a peer may send on all streams of one connection before we have read them.
///
/// 256 KiB sustains about 40 Mbit/s at a 50 ms round trip (more than a Pi Zero's Wi-Fi
/// delivers) and far more on a LAN; it is also the most a peer can make us buffer.
pub const CONNECTION_RECEIVE_WINDOW: u32 = 256 * 1024;

/// Bytes we buffer for sending on one connection before writers have to wait.
///
/// quinn's default is 10 MiB per connection, which across 128 peers would be a large part of
/// a Pi's memory. 256 KiB matches the receive window: sending more ahead than the peer can
/// accept gains nothing.
pub const SEND_WINDOW: u64 = 256 * 1024;

/// Connections a server keeps at once (handshaking or established).
///
/// A classroom is ~30 Pis and ~30 students: 128 leaves twice that headroom while keeping
/// the worst case above (64 MiB) within an eighth of a Pi Zero 2 W's RAM.
pub const MAX_CONNECTIONS: usize = 128;

/// Connections a server keeps at once from one IP address.
///
/// Stops one misbehaving machine from taking every slot. 32 still lets a whole classroom
/// share one NAT address when it reaches a proxy on the internet (raise it if a bigger
/// group does).
pub const MAX_CONNECTIONS_PER_IP: usize = 32;

/// Handshakes from not-yet-validated addresses in progress above which a server asks new
/// clients to prove their address first (a QUIC Retry).
///
/// An unvalidated address may be spoofed: an attacker can make us spend a handshake (and
/// send ~3x its bytes back to a victim) per forged packet. Retry stops that at the cost of
/// one extra round trip, so it is only worth paying under load. 16 simultaneous unvalidated
/// handshakes never happen in a classroom; they do in a flood.
pub const RETRY_WHEN_UNVALIDATED_OVER: usize = 16;

/// Connection attempts quinn queues before the server's accept loop has looked at them.
///
/// quinn's default (65 536) budgets ~100 MiB. Our accept loop decides in microseconds, so
/// a short queue only matters in a flood, where refusing early is what we want anyway.
pub const MAX_INCOMING: usize = 256;

/// Bytes buffered for one queued connection attempt beyond its first packet.
///
/// Without 0-RTT a client sends only its Initial packets before we answer: a few KiB.
pub const INCOMING_BUFFER_SIZE: u64 = 16 * 1024;

/// Bytes buffered for all queued connection attempts together.
pub const INCOMING_BUFFER_SIZE_TOTAL: u64 = 1024 * 1024;

/// Frames up to this size get their buffer in one allocation; bigger ones grow as their
/// bytes arrive, so a peer must actually send data to make us hold memory for it.
pub const FRAME_PREALLOCATE: usize = 16 * 1024;

/// Driver turns [`crate::client::close_and_flush`] waits for a CONNECTION_CLOSE to leave.
///
/// One turn is enough when the runtime is idle (the close wakes the connection's driver,
/// which sends at once); a few more cover a driver that was busy with other packets. Each
/// turn is a `yield_now`, microseconds, so a command that exits pays almost nothing.
pub const CLOSE_FLUSH_TURNS: usize = 8;

/// Proxies a LAN browser remembers at once. A classroom has one or two; anyone on the LAN
/// can announce as many fake ones as they like, so the list is capped, not grown.
pub const MAX_LAN_PROXIES: usize = 32;

/// Addresses kept from one LAN announcement: as many as a ticket may hold.
pub const MAX_LAN_ADDRS: usize = wtd_keys::defaults::MAX_TICKET_ADDRS;
