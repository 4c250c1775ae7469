//! How long to wait before reconnecting: exponential backoff with full jitter.
//!
//! After the `n`-th failure in a row the agent waits a random time between zero and
//! `min(cap, base * 2^n)`:
//!
//! ```text
//! failures in a row   0      1      2      3      4       5+
//! longest wait        100ms  200ms  400ms  800ms  1.6s    2s (the cap)
//! ```
//!
//! *Exponential*, so a proxy that is down for an hour is not hammered; *jitter*, so 30 Pis
//! that lost the proxy at the same instant do not all come back at the same instant ("full
//! jitter": the whole wait is random, which spreads them best); a low *cap*, because wtd
//! promises every agent is back within 5 s of a proxy restart (see
//! [`crate::defaults::BACKOFF_CAP`] for the arithmetic).
//!
//! The delay is a pure function of the failure count and a random number, so it is tested
//! without a clock or a random source:
//!
//! ```
//! use std::time::Duration;
//! use wtd_agent::backoff::Backoff;
//!
//! let policy = Backoff::default();
//! assert_eq!(policy.delay(0, 0.5), Duration::from_millis(50)); // half of 100 ms
//! assert_eq!(policy.delay(30, 0.999_999), Duration::from_millis(1_999)); // capped at 2 s
//! ```

use std::time::Duration;

use crate::defaults::{BACKOFF_BASE, BACKOFF_CAP};

/// The backoff policy: where it starts and where it stops growing. The factor is always 2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The longest wait after the first failure.
    pub base: Duration,
    /// The longest wait ever.
    pub cap: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            base: BACKOFF_BASE,
            cap: BACKOFF_CAP,
        }
    }
}

impl Backoff {
    /// The longest wait after `failures` failures in a row: `min(cap, base * 2^failures)`.
    pub fn ceiling(&self, failures: u32) -> Duration {
        // 2^failures overflows quickly; past 31 doublings every sane base is over the cap.
        let factor = 1u32.checked_shl(failures.min(31)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// The wait after `failures` failures in a row, given `unit`, a random number in
    /// `[0, 1)`: `unit * ceiling(failures)`, rounded down to whole milliseconds. A `unit`
    /// outside `[0, 1)` is clamped into it, so the result never exceeds the ceiling.
    pub fn delay(&self, failures: u32, unit: f64) -> Duration {
        let unit = if unit.is_finite() {
            unit.clamp(0.0, 1.0)
        } else {
            0.0
        };
        let ceiling_ms = self.ceiling(failures).as_millis() as f64;
        let ms = (unit * ceiling_ms).floor().min((ceiling_ms - 1.0).max(0.0));
        Duration::from_millis(ms as u64)
    }
}

/// A random number in `[0, 1)` from the operating system. Jitter needs no cryptographic
/// quality, but `getrandom` is already here for keys, and it never blocks once the system
/// has booted. Falls back to the clock's nanoseconds if the OS source fails.
pub fn random_unit() -> f64 {
    let mut bytes = [0u8; 8];
    let raw = match getrandom::getrandom(&mut bytes) {
        Ok(()) => u64::from_le_bytes(bytes),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| u64::from(d.subsec_nanos()).wrapping_mul(0x9e37_79b9_7f4a_7c15))
            .unwrap_or(0),
    };
    // The top 53 bits fill an f64's mantissa exactly: uniform over [0, 1).
    (raw >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn ceilings_double_up_to_the_cap() {
        let b = Backoff::default();
        let ceilings: Vec<Duration> = (0..7).map(|n| b.ceiling(n)).collect();
        assert_eq!(
            ceilings,
            [MS(100), MS(200), MS(400), MS(800), MS(1600), MS(2000), MS(2000)]
        );
        assert_eq!(
            b.ceiling(u32::MAX),
            MS(2000),
            "huge failure counts do not overflow"
        );
    }

    #[test]
    fn full_jitter_spans_zero_to_the_ceiling() {
        let b = Backoff::default();
        assert_eq!(b.delay(0, 0.0), Duration::ZERO);
        assert_eq!(b.delay(0, 0.5), MS(50));
        assert_eq!(b.delay(3, 0.25), MS(200));
        assert_eq!(b.delay(10, 0.5), MS(1000));
        // Just under 1: just under the ceiling, never on or over it.
        assert_eq!(b.delay(10, 0.999_999_999), MS(1999));
    }

    #[test]
    fn out_of_range_randomness_is_clamped() {
        let b = Backoff::default();
        assert_eq!(b.delay(10, 1.0), MS(1999));
        assert_eq!(b.delay(10, 7.0), MS(1999));
        assert_eq!(b.delay(10, -1.0), Duration::ZERO);
        assert_eq!(b.delay(10, f64::NAN), Duration::ZERO);
        assert_eq!(b.delay(10, f64::INFINITY), Duration::ZERO);
    }

    #[test]
    fn the_cap_keeps_the_five_second_promise() {
        // Worst case after a proxy restart: a handshake timeout (2.5 s), then the longest wait.
        let b = Backoff::default();
        let handshake_timeout = MS(2_500);
        assert!(handshake_timeout + b.ceiling(u32::MAX) < Duration::from_secs(5));
    }

    #[test]
    fn a_zero_base_never_waits() {
        let b = Backoff {
            base: Duration::ZERO,
            cap: MS(100),
        };
        assert_eq!(b.delay(5, 0.9), Duration::ZERO);
    }

    #[test]
    fn random_units_are_in_range_and_vary() {
        let units: Vec<f64> = (0..64).map(|_| random_unit()).collect();
        assert!(units.iter().all(|u| (0.0..1.0).contains(u)));
        assert!(
            units.windows(2).any(|w| w[0] != w[1]),
            "64 equal draws: not random"
        );
    }
}
