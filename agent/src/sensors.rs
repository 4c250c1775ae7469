//! Pi sensors (being written).
