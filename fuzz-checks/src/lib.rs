//! What every fuzz target checks, one plain function per target, so two runners share it:
//! `cargo fuzz run <target>` (in `fuzz/`, nightly, random bytes) and `cargo test -p
//! wtd-fuzz-checks` (stable, replaying every input kept in `fuzz/regressions/<target>/`).
//! A crash found by fuzzing is fixed, then its input is kept there, so the fix stays tested
//! on every machine, nightly or not.
//!
//! Each check must never panic on any input, except through its own `assert!`s, which
//! state what a decoder promises (what it accepts decodes the same way again, limits hold).
//!
//! # Layout
//! - [`records`]: owner-signed records and texts: grants, revocations, log entries,
//!   adoptions, tickets, calls, ids.
//! - [`wire`]: what peers send over the network: frames, every message, adverts, the
//!   messages inside a call session.
//! - [`files`]: state files read back from disk (owner logs, identity, keyring, grants,
//!   enrollment tokens, the time floor) and config files (agent, missions, proxy).
//! - [`seeds`]: valid inputs to start fuzzing from.
#![forbid(unsafe_code)]

pub mod files;
pub mod records;
pub mod seeds;
pub mod wire;

/// A target's check: returns on any input, panics only when a promise is broken.
pub type Check = fn(&[u8]);

/// Every fuzz target by name, with its check. `fuzz/Cargo.toml` has one `[[bin]]` for each
/// (a test keeps the two lists equal).
pub const TARGETS: &[(&str, Check)] = &[
    ("decode_grant", records::decode_grant),
    ("decode_revocation", records::decode_revocation),
    ("decode_log_entry", records::decode_log_entry),
    ("decode_ticket", records::decode_ticket),
    ("decode_call", records::decode_call),
    ("parse_ids", records::parse_ids),
    ("decode_adoption", records::decode_adoption),
    ("decode_session_msgs", wire::decode_session_msgs),
    ("decode_frames", wire::decode_frames),
    ("decode_advert", wire::decode_advert),
    ("open_owner_log", files::open_owner_log),
    ("open_state_files", files::open_state_files),
    ("parse_configs", files::parse_configs),
    ("decode_event", records::decode_event),
    ("open_event_log", files::open_event_log),
];

/// The check of the target called `name`.
pub fn check(name: &str) -> Option<Check> {
    TARGETS.iter().find(|(n, _)| *n == name).map(|(_, f)| *f)
}
