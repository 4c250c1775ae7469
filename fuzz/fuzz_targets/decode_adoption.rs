//! `SignedAdoption::decode` and `EnrollmentToken::from_text`.
//! The check itself is `wtd_fuzz_checks::records::decode_adoption`, which `cargo test` also runs on
//! every input kept in `fuzz/regressions/decode_adoption/`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| wtd_fuzz_checks::records::decode_adoption(data));
