//! wtd-proxy (being written).
