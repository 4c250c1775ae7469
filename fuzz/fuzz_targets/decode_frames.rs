//! A stream cut into frames, each payload tried as every proxy/agent/CLI message.
//! The check itself is `wtd_fuzz_checks::wire::decode_frames`, which `cargo test` also runs on
//! every input kept in `fuzz/regressions/decode_frames/`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| wtd_fuzz_checks::wire::decode_frames(data));
