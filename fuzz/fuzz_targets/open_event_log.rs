//! `EventFile::open` on any bytes: the agent's and the proxy's signed event logs on disk.
//! The check itself is `wtd_fuzz_checks::files::open_event_log`, which `cargo test` also runs on
//! every input kept in `fuzz/regressions/open_event_log/`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| wtd_fuzz_checks::files::open_event_log(data));
