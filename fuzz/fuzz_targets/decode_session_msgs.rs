//! `CallerMsg` and `AgentMsg`, the messages inside an end-to-end session.
//! The check itself is `wtd_fuzz_checks::wire::decode_session_msgs`, which `cargo test` also runs on
//! every input kept in `fuzz/regressions/decode_session_msgs/`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| wtd_fuzz_checks::wire::decode_session_msgs(data));
