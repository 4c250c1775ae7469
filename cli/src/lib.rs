//! wtd-cli (being written).
