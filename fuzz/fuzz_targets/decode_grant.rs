//! `SignedGrant::decode` on arbitrary bytes: it must never panic, and anything it accepts
//! must be canonical (decoding its own bytes again gives the same grant).
#![no_main]

use libfuzzer_sys::fuzz_target;
use wtd_keys::SignedGrant;

fuzz_target!(|data: &[u8]| {
    if let Ok(g) = SignedGrant::decode(data) {
        assert_eq!(g.bytes(), data);
        assert!(g.grant().validate().is_ok(), "decode accepted an invalid grant");
        assert_eq!(SignedGrant::decode(g.bytes()).as_ref(), Ok(&g));
    }
});
