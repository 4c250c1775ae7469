//! wtd-store (being written).
