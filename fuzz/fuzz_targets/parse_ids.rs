//! Ids, mission names, targets and secret keys in their text forms.
//! The check itself is `wtd_fuzz_checks::records::parse_ids`, which `cargo test` also runs on
//! every input kept in `fuzz/regressions/parse_ids/`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| wtd_fuzz_checks::records::parse_ids(data));
