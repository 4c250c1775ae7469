//! `SignedRevocation::decode` on arbitrary bytes: never a panic; what it accepts decodes
//! the same way again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wtd_keys::SignedRevocation;

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = SignedRevocation::decode(data) {
        assert_eq!(r.bytes(), data);
        assert_eq!(SignedRevocation::decode(r.bytes()).as_ref(), Ok(&r));
    }
});
