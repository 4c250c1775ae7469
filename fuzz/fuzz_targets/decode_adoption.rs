//! `SignedAdoption::decode` and `EnrollmentToken::from_text` on arbitrary input: never a
//! panic; an accepted adoption decodes the same way again, an accepted token round-trips.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wtd_keys::{EnrollmentToken, SignedAdoption};

fuzz_target!(|data: &[u8]| {
    if let Ok(a) = SignedAdoption::decode(data) {
        assert_eq!(a.bytes(), data);
        assert_eq!(SignedAdoption::decode(a.bytes()).as_ref(), Ok(&a));
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(t) = EnrollmentToken::from_text(text) {
            assert_eq!(EnrollmentToken::from_text(&t.to_text()), Ok(t));
        }
    }
});
