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

/// A timestamp as RFC 3339, to the second, in UTC.
pub fn format_time(t: Timestamp) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(t.millis())).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

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
