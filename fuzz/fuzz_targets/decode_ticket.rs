//! `Ticket::decode` and `Ticket::from_text`: join and grant tickets.
//! The check itself is `wtd_fuzz_checks::records::decode_ticket`, which `cargo test` also runs on
//! every input kept in `fuzz/regressions/decode_ticket/`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| wtd_fuzz_checks::records::decode_ticket(data));
