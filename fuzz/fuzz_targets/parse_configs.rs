//! agent.toml, a mission file, proxy.toml.
//! The check itself is `wtd_fuzz_checks::files::parse_configs`, which `cargo test` also runs on
//! every input kept in `fuzz/regressions/parse_configs/`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| wtd_fuzz_checks::files::parse_configs(data));
