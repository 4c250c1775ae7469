//! Every text parser on arbitrary text: ids, names, secret keys. Never a panic; and the
//! canonical ones have one spelling, so whatever they accept prints back exactly as typed
//! (minus surrounding whitespace).
#![no_main]

use libfuzzer_sys::fuzz_target;
use wtd_keys::names::parse_target;
use wtd_keys::{GrantId, MissionName, PublicId, SecretKey};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(id) = s.parse::<PublicId>() {
        assert_eq!(id.to_string(), s.trim());
    }
    if let Ok(id) = s.parse::<GrantId>() {
        assert_eq!(id.to_string(), s.trim());
    }
    if let Ok(m) = s.parse::<MissionName>() {
        assert_eq!(m.as_str(), s);
    }
    if let Ok((m, f)) = parse_target(s) {
        assert_eq!(format!("{m}/{f}"), s);
    }
    let _ = SecretKey::from_text(s);
});
