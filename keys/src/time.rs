//! Time as the security core sees it: a number passed in, never read from a clock.
//!
//! Every check takes `now` as an argument, so tests drive it with a fake clock and the
//! same inputs always give the same answer.

use std::fmt;

/// Milliseconds since the Unix epoch (UTC).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub u64);

impl Timestamp {
    pub fn from_secs(s: u64) -> Self {
        Timestamp(s.saturating_mul(1000))
    }

    pub fn millis(self) -> u64 {
        self.0
    }

    pub fn plus_ms(self, ms: u64) -> Self {
        Timestamp(self.0.saturating_add(ms))
    }

    pub fn minus_ms(self, ms: u64) -> Self {
        Timestamp(self.0.saturating_sub(ms))
    }

    /// Milliseconds from `self` to `later`, zero if `later` is not later.
    pub fn until(self, later: Timestamp) -> u64 {
        later.0.saturating_sub(self.0)
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Timestamp({}ms)", self.0)
    }
}

/// A persisted lower bound on "now". The agent records the latest time it has seen; if the
/// clock is later stepped back (a Pi without a battery-backed clock boots in 1970, or
/// someone sets it back on purpose), checks use the floor instead, so an expired grant
/// never comes back to life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct TimeFloor(pub Timestamp);

impl TimeFloor {
    /// The time to check against: the clock, unless it is behind the floor.
    pub fn effective(&self, now: Timestamp) -> Timestamp {
        now.max(self.0)
    }

    /// Raises the floor to `now`; returns true when it moved (the caller then persists it).
    pub fn observe(&mut self, now: Timestamp) -> bool {
        if now > self.0 {
            self.0 = now;
            true
        } else {
            false
        }
    }
}

/// Formats a span of milliseconds for people: `45s`, `3 min`, `2 h`, `5 days`.
pub fn human_duration(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0 => format!("{ms} ms"),
        1..=119 => format!("{s}s"),
        120..=7199 => format!("{} min", s / 60),
        7200..=172_799 => format!("{} h", s / 3600),
        _ => format!("{} days", s / 86_400),
    }
}
