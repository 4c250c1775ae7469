//! `SignedEvent::decode`, then a reader's chain and causal order: signed events.
//! The check itself is `wtd_fuzz_checks::records::decode_event`, which `cargo test` also runs on
//! every input kept in `fuzz/regressions/decode_event/`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| wtd_fuzz_checks::records::decode_event(data));
