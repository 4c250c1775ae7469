//! The persisted time floor: the latest time this machine has trusted, as decimal
//! milliseconds in a small file. See [`wtd_keys::TimeFloor`] for why it exists.

use std::path::Path;

use wtd_keys::{TimeFloor, Timestamp};

use crate::atomic::write_atomic;
use crate::IoError;

/// Loads the floor; a missing or damaged file is a floor of zero (the clock is trusted as
/// is), since refusing to start would be worse on a Pi that just lost its state.
pub fn load(path: &Path) -> TimeFloor {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .map(|ms| TimeFloor(Timestamp(ms)))
        .unwrap_or_default()
}

pub fn save(path: &Path, floor: TimeFloor) -> Result<(), IoError> {
    write_atomic(path, format!("{}\n", floor.0.millis()).as_bytes(), 0o600)
}
