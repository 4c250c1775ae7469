//! `wtd-box`: the mission box on its own, for the agent's tests. The `wtd` binary runs the
//! same code as `wtd agent-box`; the agent uses that, never this.
//!
//! It exists because integration tests of a library crate can only run binaries of their
//! own package (`CARGO_BIN_EXE_*`), and the box must be a real program: it sets its limits
//! in a process of its own, which is how a crate without `unsafe` can (see `sandbox`).
#![forbid(unsafe_code)]

fn main() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    wtd_agent::sandbox::box_main(&[], &args)
}
