//! Identity key, keyring, received grants, enrollment tokens, time floor.
//! The check itself is `wtd_fuzz_checks::files::open_state_files`, which `cargo test` also runs on
//! every input kept in `fuzz/regressions/open_state_files/`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| wtd_fuzz_checks::files::open_state_files(data));
