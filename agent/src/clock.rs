//! The agent's wall clock: the one place it reads the time it authorizes by.
//!
//! Everything the agent decides by the date goes through a [`Clock`]: whether a grant has
//! started or ended, the time floor that stops a clock set back from reviving it, a job's
//! time window, and the times it signs into results. The security checks themselves take
//! `now` as an argument (`wtd_keys::authz`); this is where that `now` comes from.
//!
//! # The test clock (debug builds only)
//!
//! End-to-end tests need an agent whose grants have run out without waiting hours. So a
//! debug build (what `cargo test` builds) reads `WTD_TEST_CLOCK_OFFSET` once, when the
//! agent starts: a signed duration such as `+2h 5m` or `-90s`, added to the system clock.
//!
//! ```text
//! WTD_TEST_CLOCK_OFFSET=+3h wtd agent --config agent.toml   # this agent lives 3 h ahead
//! ```
//!
//! A release build (`cargo build --release`, the Pi image) never honours it: a variable
//! set in a unit file or a shell must not move a real agent's idea of the time, which
//! would let whoever sets it end every grant early or (on an agent whose time floor has
//! not yet seen a later time) revive expired ones. If it is set there, the agent logs that
//! it is ignored, so nobody thinks they changed the clock. Timeouts and heartbeats use the
//! monotonic clock, which the offset never moves.
//!
//! Log lines, metrics timestamps and the agent's signed event streams keep the real clock:
//! none of them decides who may call.

use wtd_keys::Timestamp;

/// The environment variable a debug build reads for its clock offset.
pub const TEST_OFFSET_VAR: &str = "WTD_TEST_CLOCK_OFFSET";

/// The wall clock, shifted by a test offset in debug builds (zero otherwise).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Clock {
    /// Added to the system clock, in ms; always 0 in release builds.
    offset_ms: i64,
}

/// `WTD_TEST_CLOCK_OFFSET` is set, in a debug build, to something that is not an offset.
/// The agent does not start: a test that meant to move the clock must not run on the real
/// one and pass or fail for the wrong reason.
#[derive(Debug, thiserror::Error)]
#[error(
    "{TEST_OFFSET_VAR}={value:?} is not a clock offset: {why}; write a sign and a duration, \
     like `+3h`, `-90s` or `+2h 5m`, or unset it to use the real clock"
)]
pub struct OffsetError {
    value: String,
    why: String,
}

impl Clock {
    /// The system clock, unshifted.
    pub fn system() -> Clock {
        Clock::default()
    }

    /// The clock this process should use: the system clock, shifted by
    /// `WTD_TEST_CLOCK_OFFSET` in a debug build. Call it once, at start, after logging is
    /// set up (it logs what it did).
    pub fn from_env() -> Result<Clock, OffsetError> {
        let value = std::env::var_os(TEST_OFFSET_VAR).map(|v| v.to_string_lossy().into_owned());
        Clock::from_setting(value, cfg!(debug_assertions))
    }

    /// The clock for the variable's `value` (if set), where `honoured` says whether this
    /// build obeys it (`cfg!(debug_assertions)`); apart from the environment, so both kinds
    /// of build are unit-tested here.
    fn from_setting(value: Option<String>, honoured: bool) -> Result<Clock, OffsetError> {
        let Some(value) = value else {
            return Ok(Clock::system());
        };
        if !honoured {
            log::warn!(
                "{TEST_OFFSET_VAR} is set ({value}) but ignored: it is a test setting that only \
                 debug builds honour; this agent uses the real clock. Unset it to silence this"
            );
            return Ok(Clock::system());
        }
        let offset_ms = parse_offset(&value).map_err(|why| OffsetError {
            value: value.clone(),
            why,
        })?;
        log::warn!(
            "{TEST_OFFSET_VAR}={value}: this agent's clock is moved by {offset_ms} ms, for tests; \
             grants expire (and start) by the moved clock. Debug builds only: a release build \
             ignores it"
        );
        Ok(Clock { offset_ms })
    }

    /// A clock `offset_ms` away from the system clock (for unit tests of the agent).
    #[cfg(test)]
    pub(crate) fn offset_by(offset_ms: i64) -> Clock {
        Clock { offset_ms }
    }

    /// Now, by this clock, in ms since the Unix epoch. A system clock before 1970 reads 0,
    /// and the time floor takes over from there.
    pub fn now(&self) -> Timestamp {
        let system = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        shift(system, self.offset_ms)
    }
}

/// `ms` moved by `offset_ms`, clamped to the range a [`Timestamp`] holds.
fn shift(ms: u64, offset_ms: i64) -> Timestamp {
    Timestamp(ms.saturating_add_signed(offset_ms))
}

/// `+3h`, `-90s`, `+2h 5m`, `3h` (a missing sign means `+`): the offset in ms. The
/// magnitude is anything `humantime` reads as a duration.
fn parse_offset(text: &str) -> Result<i64, String> {
    let text = text.trim();
    let (negative, magnitude) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        Some(_) => (false, text),
        None => return Err("it is empty".into()),
    };
    let duration = humantime::parse_duration(magnitude.trim()).map_err(|e| e.to_string())?;
    let ms = i64::try_from(duration.as_millis()).map_err(|_| "it is too large".to_string())?;
    Ok(if negative { -ms } else { ms })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3_600_000;

    #[test]
    fn offsets_read_with_either_sign_or_none() {
        assert_eq!(parse_offset("+3h"), Ok(3 * HOUR));
        assert_eq!(parse_offset("3h"), Ok(3 * HOUR));
        assert_eq!(parse_offset("-90s"), Ok(-90_000));
        assert_eq!(parse_offset(" +2h 5m "), Ok(2 * HOUR + 5 * 60_000));
        assert_eq!(parse_offset("+0s"), Ok(0));
    }

    #[test]
    fn what_is_not_an_offset_is_refused() {
        for bad in ["", "+", "-", "three hours", "+3x", "++3h", "+-3h"] {
            assert!(parse_offset(bad).is_err(), "{bad:?} was accepted");
        }
        let huge = format!("+{}s", u64::MAX / 100);
        assert!(parse_offset(&huge).is_err());
    }

    #[test]
    fn only_a_build_that_honours_it_moves_the_clock() {
        let set = |v: &str| Some(v.to_string());
        assert_eq!(Clock::from_setting(None, true).unwrap(), Clock::system());
        assert_eq!(
            Clock::from_setting(set("+3h"), true).unwrap(),
            Clock::offset_by(3 * HOUR)
        );
        // A release build ignores the variable, even one it could not read.
        assert_eq!(Clock::from_setting(set("+3h"), false).unwrap(), Clock::system());
        assert_eq!(Clock::from_setting(set("soon"), false).unwrap(), Clock::system());
        let err = Clock::from_setting(set("soon"), true).unwrap_err().to_string();
        assert!(err.contains("WTD_TEST_CLOCK_OFFSET=\"soon\""), "{err}");
        assert!(err.contains("`+3h`") && err.contains("unset it"), "{err}");
    }

    #[test]
    fn the_offset_moves_now_and_stays_in_range() {
        assert_eq!(shift(10_000, 5_000), Timestamp(15_000));
        assert_eq!(shift(10_000, -4_000), Timestamp(6_000));
        assert_eq!(shift(10_000, -20_000), Timestamp(0), "before 1970 reads 0");
        assert_eq!(shift(u64::MAX - 1, 5), Timestamp(u64::MAX));
        let ahead = Clock::offset_by(3 * HOUR).now();
        let real = Clock::system().now();
        assert!(ahead.0 > real.0 + 2 * HOUR as u64, "{ahead:?} vs {real:?}");
    }
}
