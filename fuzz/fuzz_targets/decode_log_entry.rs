//! `SignedEntry::decode` on arbitrary bytes, then an attempt to append the entry to an
//! empty log of its owner: never a panic, whatever the entry claims.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wtd_keys::{OwnerLog, SignedEntry};

fuzz_target!(|data: &[u8]| {
    if let Ok(e) = SignedEntry::decode(data) {
        assert_eq!(e.bytes(), data);
        let mut log = OwnerLog::new(e.owner);
        let _ = log.sync([e.clone()]);
        let _ = log.append(e);
    }
});
