//! An owner log file opened by the store, the agent and the proxy.
//! The check itself is `wtd_fuzz_checks::files::open_owner_log`, which `cargo test` also runs on
//! every input kept in `fuzz/regressions/open_owner_log/`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| wtd_fuzz_checks::files::open_owner_log(data));
