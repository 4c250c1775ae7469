//! Whether a server spends a handshake on a new connection attempt: one pure function.
//!
//! It runs before any cryptography, on what the first packet tells us (is the source address
//! proven?) and what we are already holding. Order of the checks:
//!
//! 1. Full, or this IP is at its cap: **refuse** (a short CONNECTION_REFUSED packet, smaller
//!    than the one that caused it, so it cannot be used to amplify an attack).
//! 2. Address not validated and the [`RetryPolicy`] says so: **retry** (stateless: we keep
//!    nothing until the client echoes our token, which proves the address is real).
//! 3. Otherwise **accept**: start the handshake.

use std::fmt;

use crate::limits::{Limits, RetryPolicy};

/// What the first packet of an attempt tells us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempt {
    /// The client has proven it receives packets at its source address (it echoed a Retry
    /// or a NEW_TOKEN token).
    pub validated: bool,
    /// QUIC allows answering with a Retry (not after one was already sent).
    pub may_retry: bool,
}

/// What the server is already holding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Load {
    /// Connections admitted and not yet released (handshaking or established).
    pub connections: usize,
    /// Of those, handshakes from addresses that were not validated.
    pub unvalidated_handshakes: usize,
    /// Connections admitted from the attempt's IP address.
    pub from_same_ip: usize,
}

/// The decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Accept,
    Retry,
    Refuse(Refusal),
}

/// Why an attempt was refused (for the server's log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `max_connections` reached.
    Full,
    /// `max_connections_per_ip` reached for this address.
    TooManyFromIp,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Refusal::Full => "the server is at its connection limit",
            Refusal::TooManyFromIp => "this address is at its per-IP connection limit",
        })
    }
}

/// Decides what to do with one connection attempt.
pub fn decide(attempt: Attempt, load: Load, limits: &Limits) -> Admission {
    if load.connections >= limits.max_connections {
        return Admission::Refuse(Refusal::Full);
    }
    if load.from_same_ip >= limits.max_connections_per_ip {
        return Admission::Refuse(Refusal::TooManyFromIp);
    }
    if !attempt.validated && attempt.may_retry {
        let retry = match limits.retry {
            RetryPolicy::Always => true,
            RetryPolicy::WhenBusy { unvalidated_over } => load.unvalidated_handshakes >= unvalidated_over,
        };
        if retry {
            return Admission::Retry;
        }
    }
    Admission::Accept
}

#[cfg(test)]
mod tests {
    use super::*;

    const FRESH: Attempt = Attempt {
        validated: false,
        may_retry: true,
    };
    const PROVEN: Attempt = Attempt {
        validated: true,
        may_retry: false,
    };
    const IDLE: Load = Load {
        connections: 0,
        unvalidated_handshakes: 0,
        from_same_ip: 0,
    };

    fn limits(retry: RetryPolicy) -> Limits {
        Limits {
            max_connections: 10,
            max_connections_per_ip: 3,
            retry,
            ..Limits::default()
        }
    }

    #[test]
    fn an_idle_server_accepts_without_retry_by_default() {
        let l = limits(RetryPolicy::WhenBusy { unvalidated_over: 2 });
        assert_eq!(decide(FRESH, IDLE, &l), Admission::Accept);
        assert_eq!(decide(PROVEN, IDLE, &l), Admission::Accept);
    }

    #[test]
    fn a_busy_server_retries_unvalidated_addresses_only() {
        let l = limits(RetryPolicy::WhenBusy { unvalidated_over: 2 });
        let busy = Load {
            connections: 2,
            unvalidated_handshakes: 2,
            from_same_ip: 0,
        };
        assert_eq!(decide(FRESH, busy, &l), Admission::Retry);
        assert_eq!(decide(PROVEN, busy, &l), Admission::Accept);
        let below = Load {
            unvalidated_handshakes: 1,
            ..busy
        };
        assert_eq!(decide(FRESH, below, &l), Admission::Accept);
    }

    #[test]
    fn always_retries_every_unvalidated_address() {
        let l = limits(RetryPolicy::Always);
        assert_eq!(decide(FRESH, IDLE, &l), Admission::Retry);
        assert_eq!(decide(PROVEN, IDLE, &l), Admission::Accept);
        // QUIC forbids a second Retry; then we accept and let the handshake decide.
        let retried_yet_unvalidated = Attempt {
            validated: false,
            may_retry: false,
        };
        assert_eq!(decide(retried_yet_unvalidated, IDLE, &l), Admission::Accept);
    }

    #[test]
    fn a_full_server_refuses() {
        let l = limits(RetryPolicy::Always);
        let full = Load {
            connections: 10,
            unvalidated_handshakes: 0,
            from_same_ip: 0,
        };
        assert_eq!(decide(PROVEN, full, &l), Admission::Refuse(Refusal::Full));
        assert_eq!(decide(FRESH, full, &l), Admission::Refuse(Refusal::Full));
    }

    #[test]
    fn one_address_cannot_take_every_slot() {
        let l = limits(RetryPolicy::Always);
        let crowded = Load {
            connections: 3,
            unvalidated_handshakes: 0,
            from_same_ip: 3,
        };
        assert_eq!(
            decide(PROVEN, crowded, &l),
            Admission::Refuse(Refusal::TooManyFromIp)
        );
        let other_ip = Load {
            from_same_ip: 0,
            ..crowded
        };
        assert_eq!(decide(PROVEN, other_ip, &l), Admission::Accept);
    }
}
