//! wtd-wire (being written).
