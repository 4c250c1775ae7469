//! An agent's advert as the proxy receives it, and roster entries.
//! The check itself is `wtd_fuzz_checks::wire::decode_advert`, which `cargo test` also runs on
//! every input kept in `fuzz/regressions/decode_advert/`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| wtd_fuzz_checks::wire::decode_advert(data));
