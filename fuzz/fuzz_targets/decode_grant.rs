//! `SignedGrant::decode`: owner-signed grants, as stored, relayed and pasted.
//! The check itself is `wtd_fuzz_checks::records::decode_grant`, which `cargo test` also runs on
//! every input kept in `fuzz/regressions/decode_grant/`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| wtd_fuzz_checks::records::decode_grant(data));
