//! `SignedEntry::decode`, then `OwnerLog::sync` / `append`: owner-log entries.
//! The check itself is `wtd_fuzz_checks::records::decode_log_entry`, which `cargo test` also runs on
//! every input kept in `fuzz/regressions/decode_log_entry/`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| wtd_fuzz_checks::records::decode_log_entry(data));
