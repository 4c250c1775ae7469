//! A token bucket for mission events: pure, with the clock passed in.
//!
//! A handler may print events in a loop by mistake (or on purpose). The agent lets each
//! through only while its bucket has a token, and the proxy keeps a bucket of its own per
//! agent (it trusts no agent to count), so a flood costs a few events a second at most,
//! everywhere downstream: the control stream, the broker, Home Assistant's database.

/// `rate` tokens a second, at most `burst` saved up.
#[derive(Clone, Debug)]
pub struct Budget {
    rate_per_s: u32,
    burst: u32,
    /// Tokens, in thousandths, so a slow rate still refills between two calls.
    milli_tokens: u64,
    last_ms: u64,
}

impl Budget {
    /// A full bucket at `now_ms`.
    pub fn new(rate_per_s: u32, burst: u32, now_ms: u64) -> Self {
        Budget {
            rate_per_s,
            burst: burst.max(1),
            milli_tokens: u64::from(burst.max(1)) * 1000,
            last_ms: now_ms,
        }
    }

    /// Takes a token if there is one.
    pub fn take(&mut self, now_ms: u64) -> bool {
        let elapsed = now_ms.saturating_sub(self.last_ms);
        self.last_ms = self.last_ms.max(now_ms);
        let cap = u64::from(self.burst) * 1000;
        self.milli_tokens = (self.milli_tokens + elapsed * u64::from(self.rate_per_s)).min(cap);
        if self.milli_tokens >= 1000 {
            self.milli_tokens -= 1000;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_rate() {
        let mut b = Budget::new(10, 5, 0);
        assert_eq!((0..100).filter(|_| b.take(0)).count(), 5, "the burst");
        assert!(!b.take(50), "half a token is not a token");
        assert!(b.take(100), "10/s: one every 100 ms");
        assert!(!b.take(100));
        assert_eq!(
            (0..100).filter(|_| b.take(10_000)).count(),
            5,
            "never more than the burst"
        );
        assert!(!b.take(5_000), "a clock going back refills nothing");
    }
}
