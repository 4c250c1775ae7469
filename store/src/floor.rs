//! The persisted time floor: the latest time this machine has trusted, as decimal
//! milliseconds in a small file. See [`wtd_keys::TimeFloor`] for why it exists.

use std::path::Path;

use wtd_keys::{TimeFloor, Timestamp};

use crate::atomic::write_atomic;
use crate::IoError;

/// Loads the floor; a missing or damaged file is a floor of zero (the clock is trusted as
/// is), since refusing to start would be worse on a Pi that just lost its state.
/// [`read`] tells the two apart, for a warning.
pub fn load(path: &Path) -> TimeFloor {
    read(path).ok().flatten().unwrap_or_default()
}

/// What the floor file holds: `Ok(None)` if there is none, `Err` with a sentence if it is
/// damaged. Only the exact form [`save`] writes is accepted (digits, then a newline), so a
/// file cut short by a power cut ("17331" of "1733190000000\n") is damaged, never a
/// smaller floor.
pub fn read(path: &Path) -> Result<Option<TimeFloor>, String> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let digits = bytes
        .strip_suffix(b"\n")
        .filter(|d| !d.is_empty() && d.len() <= 20 && d.iter().all(u8::is_ascii_digit))
        .ok_or_else(|| format!("{} is damaged (not a number of milliseconds)", path.display()))?;
    let ms = std::str::from_utf8(digits)
        .ok()
        .and_then(|d| d.parse().ok())
        .ok_or_else(|| format!("{} is damaged (out of range)", path.display()))?;
    Ok(Some(TimeFloor(Timestamp(ms))))
}

pub fn save(path: &Path, floor: TimeFloor) -> Result<(), IoError> {
    write_atomic(path, format!("{}\n", floor.0.millis()).as_bytes(), 0o600)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_what_save_writes_is_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("time-floor");
        assert_eq!(read(&path), Ok(None));
        save(&path, TimeFloor(Timestamp(1_733_190_000_000))).unwrap();
        assert_eq!(read(&path), Ok(Some(TimeFloor(Timestamp(1_733_190_000_000)))));
        // Cut short, zeroed, or garbage: damaged, and the loaded floor is zero, never a
        // smaller number taken for the floor.
        for bad in [
            &b"17331"[..],
            b"",
            b"\n",
            b"1733\0\0\0\n",
            b"-5\n",
            b"99999999999999999999\n",
        ] {
            std::fs::write(&path, bad).unwrap();
            assert!(read(&path).is_err(), "{bad:?}");
            assert_eq!(load(&path), TimeFloor::default());
        }
    }
}
