//! wtd-transport (being written).
