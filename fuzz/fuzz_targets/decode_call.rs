//! `SignedCall::decode`, `check_call`, `SignedResult::decode`: signed calls and receipts.
//! The check itself is `wtd_fuzz_checks::records::decode_call`, which `cargo test` also runs on
//! every input kept in `fuzz/regressions/decode_call/`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| wtd_fuzz_checks::records::decode_call(data));
