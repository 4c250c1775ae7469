//! Parsing of the values people type: `10/min`, `2h`, `2026-12-01T12:00:00Z`.

use std::time::{Duration, UNIX_EPOCH};

use anyhow::{anyhow, bail};
use wtd_keys::{Rate, Timestamp};

/// `10/min`, `1/s`, `100/h`, `500/day`.
pub fn rate(s: &str) -> anyhow::Result<Rate> {
    let help = "write a rate as COUNT/UNIT, for example 10/min (units: s, min, h, day)";
    let (count, unit) = s
        .split_once('/')
        .ok_or_else(|| anyhow!("`{s}` is not a rate; {help}"))?;
    let calls: u32 = count
        .trim()
        .parse()
        .map_err(|_| anyhow!("`{count}` is not a count; {help}"))?;
    if calls == 0 {
        bail!("a rate of 0 would allow nothing; to stop someone, use `wtd revoke`");
    }
    let period_ms = match unit.trim() {
        "s" | "sec" | "second" => 1000,
        "m" | "min" | "minute" => 60_000,
        "h" | "hour" => 3_600_000,
        "d" | "day" => 86_400_000,
        other => bail!("`{other}` is not a time unit; {help}"),
    };
    Ok(Rate { calls, period_ms })
}

/// `2h`, `30min`, `7days` from `now`, or an RFC 3339 time such as `2026-12-01T12:00:00Z`.
pub fn expiry(s: &str, now: Timestamp) -> anyhow::Result<Timestamp> {
    if let Ok(d) = humantime::parse_duration(s) {
        if d.is_zero() {
            bail!("an expiry of 0 would make a grant that is already dead");
        }
        return Ok(now.plus_ms(d.as_millis().try_into().unwrap_or(u64::MAX)));
    }
    match humantime::parse_rfc3339_weak(s) {
        Ok(t) => {
            let ms = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
            if ms <= now.millis() {
                bail!("{s} is in the past");
            }
            Ok(Timestamp(ms))
        }
        Err(_) => {
            bail!("`{s}` is neither a duration (like 2h or 7days) nor a date (like 2026-12-01T12:00:00Z)")
        }
    }
}

/// `--until 15:45` (today, local time) or `--until "tomorrow 8:30"`: a wall-clock time in
/// `tz`, the machine's time zone. Pure (`now` and `tz` are passed in), so the edges are
/// tested on a fixed clock.
///
/// A time today that has already passed is refused, not moved to tomorrow: a teacher who
/// types 15:45 at 15:50 almost certainly mistyped, and silently granting until tomorrow
/// would hand the class a day's access nobody meant to give. Only 24-hour `H:MM` is read
/// (`3:45pm` is refused, not guessed), and a time the clocks skip or pass twice that day
/// (daylight saving) is refused with the reason, since either guess could be an hour off.
pub fn until(text: &str, now: Timestamp, tz: &jiff::tz::TimeZone) -> anyhow::Result<Timestamp> {
    let words: Vec<&str> = text.split_whitespace().collect();
    let (tomorrow, clock) = match words.as_slice() {
        [clock] => (false, *clock),
        ["tomorrow", clock] => (true, *clock),
        _ => bail!("--until {text}: write a time today like 15:45, or \"tomorrow 8:30\" (24-hour clock)"),
    };
    let (h, m) = clock
        .split_once(':')
        .and_then(|(h, m)| {
            let ok = |s: &str, max: u8, width: std::ops::RangeInclusive<usize>| {
                (width.contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit()))
                    .then(|| s.parse::<u8>().ok())
                    .flatten()
                    .filter(|v| *v <= max)
            };
            Some((ok(h, 23, 1..=2)?, ok(m, 59, 2..=2)?))
        })
        .ok_or_else(|| {
            anyhow::anyhow!(
                "--until {text}: `{clock}` is not a 24-hour time like 15:45 (hours 0-23, two-digit minutes; no am/pm)"
            )
        })?;
    let now_ts = jiff::Timestamp::from_millisecond(now.millis() as i64)?;
    let today = now_ts.to_zoned_datetime(tz.clone()).date();
    let day = if tomorrow { today.tomorrow()? } else { today };
    let wall = day.at(h as i8, m as i8, 0, 0);
    let ambiguous = tz.to_ambiguous_timestamp(wall);
    let when = match ambiguous.offset() {
        jiff::tz::AmbiguousOffset::Unambiguous { .. } => ambiguous.unambiguous()?,
        jiff::tz::AmbiguousOffset::Gap { .. } => bail!(
            "--until {text}: {clock} does not exist on {day} here (the clocks skip it for daylight saving); pick another time, or use --expires"
        ),
        jiff::tz::AmbiguousOffset::Fold { .. } => bail!(
            "--until {text}: {clock} happens twice on {day} here (the clocks go back); pick another time, or use --expires"
        ),
    };
    let ms = u64::try_from(when.as_millisecond()).unwrap_or(0);
    if ms <= now.millis() {
        let current = now_ts.to_zoned_datetime(tz.clone());
        bail!(
            "--until {text}: {clock} today has already passed (it is {:02}:{:02} now); for tomorrow, write --until \"tomorrow {clock}\"",
            current.hour(),
            current.minute()
        );
    }
    Ok(Timestamp(ms))
}

/// A timestamp as RFC 3339, to the second, in UTC.
pub fn format_time(t: Timestamp) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(t.millis())).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-12-03 15:50:00 UTC.
    const T: Timestamp = Timestamp(1_796_313_000_000);

    fn utc() -> jiff::tz::TimeZone {
        jiff::tz::TimeZone::UTC
    }

    #[test]
    fn until_is_today_in_local_time() {
        assert_eq!(until("16:45", T, &utc()).unwrap(), T.plus_ms(55 * 60_000));
        assert_eq!(until("15:51", T, &utc()).unwrap(), T.plus_ms(60_000));
        assert_eq!(
            until("23:59", T, &utc()).unwrap(),
            T.plus_ms((8 * 60 + 9) * 60_000)
        );
        // Two hours ahead of UTC, 17:45 there is 15:45 UTC: already past.
        let cairo = jiff::tz::TimeZone::fixed(jiff::tz::offset(2));
        assert!(until("17:45", T, &cairo).is_err());
        assert_eq!(until("17:51", T, &cairo).unwrap(), T.plus_ms(60_000));
        assert_eq!(
            until("tomorrow 8:30", T, &utc()).unwrap(),
            T.plus_ms((16 * 60 + 40) * 60_000)
        );
    }

    #[test]
    fn until_refuses_the_past_and_anything_ambiguous() {
        let err = until("15:45", T, &utc()).unwrap_err().to_string();
        assert!(
            err.contains("already passed") && err.contains("15:50") && err.contains("tomorrow 15:45"),
            "{err}"
        );
        assert!(until("15:50", T, &utc()).is_err(), "now is not in the future");
        for bad in [
            "3:45pm",
            "15h45",
            "24:00",
            "15:60",
            "15:5",
            "1545",
            "",
            "today 15:45",
            "tomorrow",
            "015:45",
        ] {
            let err = until(bad, T, &utc()).unwrap_err().to_string();
            assert!(
                err.contains("24-hour") || err.contains("write a time"),
                "{bad}: {err}"
            );
        }
        // Daylight saving in the UK: 2026-03-29 01:30 never happens, 2026-10-25 01:30 twice.
        let uk = jiff::tz::TimeZone::posix("GMT0BST,M3.5.0/1,M10.5.0").unwrap();
        let before_spring = Timestamp(1_774_731_600_000); // 2026-03-28 21:00 UTC
        let err = until("tomorrow 1:30", before_spring, &uk)
            .unwrap_err()
            .to_string();
        assert!(err.contains("does not exist"), "{err}");
        let before_autumn = Timestamp(1_792_875_600_000); // 2026-10-24 21:00 UTC
        let err = until("tomorrow 1:30", before_autumn, &uk)
            .unwrap_err()
            .to_string();
        assert!(err.contains("happens twice"), "{err}");
        assert!(until("tomorrow 3:30", before_autumn, &uk).is_ok());
    }

    #[test]
    fn rates() {
        assert_eq!(
            rate("10/min").unwrap(),
            Rate {
                calls: 10,
                period_ms: 60_000
            }
        );
        assert_eq!(
            rate("3/s").unwrap(),
            Rate {
                calls: 3,
                period_ms: 1000
            }
        );
        for bad in ["10", "0/min", "x/min", "10/fortnight", "-1/s"] {
            assert!(rate(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn expiries() {
        let now = Timestamp(1_000_000);
        assert_eq!(expiry("2h", now).unwrap(), Timestamp(1_000_000 + 7_200_000));
        assert!(expiry("0s", now).is_err());
        assert!(expiry("1970-01-01T00:00:01Z", now).is_err());
        assert_eq!(
            expiry("1970-01-02T00:00:00Z", now).unwrap(),
            Timestamp(86_400_000)
        );
        assert!(expiry("soon", now).is_err());
    }
}
