//! wtd-agent (being written).
pub mod sensors;
