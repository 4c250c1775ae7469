//! Exit codes of `wtd`, for scripts. Every failure also prints a sentence saying what
//! happened and what to do.
//!
//! | code | meaning |
//! |---|---|
//! | 0 | done |
//! | 1 | an error (the message says which) |
//! | 2 | the command line was wrong (bad arguments, bad JSON) |
//! | 3 | denied: no grant, expired, revoked, rate-limited (with retry-after), ... |
//! | 4 | no agent can take the call, or the proxy is unreachable |
//! | 5 | timed out |
//! | 6 | the agent vanished mid-call: a non-idempotent function may or may not have run |
//! | 7 | the function ran and failed (or was cancelled, or printed too much) |
//! | 8 | `wtd subscribe`: the event stream was altered, reordered, or has a hidden gap |

use std::fmt;

pub const USAGE: u8 = 2;
pub const DENIED: u8 = 3;
pub const UNREACHABLE: u8 = 4;
pub const TIMEOUT: u8 = 5;
pub const MAY_HAVE_RUN: u8 = 6;
pub const FAILED: u8 = 7;
/// The proxy (or something on the way) tampered with a signed event stream.
pub const TAMPERED: u8 = 8;

/// An error that ends `wtd` with a specific exit code.
#[derive(Debug)]
pub struct Exit {
    pub code: u8,
    pub message: String,
}

impl Exit {
    pub fn new(code: u8, message: String) -> Self {
        Exit { code, message }
    }
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Exit {}

/// The exit code for an error: its own if it is an [`Exit`], else 1.
pub fn code_of(e: &anyhow::Error) -> u8 {
    e.downcast_ref::<Exit>().map_or(1, |x| x.code)
}
