//! `SignedRevocation::decode`: owner-signed revocations.
//! The check itself is `wtd_fuzz_checks::records::decode_revocation`, which `cargo test` also runs on
//! every input kept in `fuzz/regressions/decode_revocation/`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| wtd_fuzz_checks::records::decode_revocation(data));
