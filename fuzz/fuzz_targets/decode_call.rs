//! `SignedCall::decode`, `SignedResult::decode`, the agent's `check_call` and `RequestId`'s
//! text form on arbitrary bytes: they must never panic, and anything a decoder accepts must
//! be canonical (decoding its own bytes again gives the same record).
#![no_main]

use libfuzzer_sys::fuzz_target;
use wtd_keys::{check_call, ReplayGuard, RequestId, SignedCall, SignedResult};

fuzz_target!(|data: &[u8]| {
    if let Ok(c) = SignedCall::decode(data) {
        assert_eq!(c.bytes(), data);
        assert_eq!(SignedCall::decode(c.bytes()).as_ref(), Ok(&c));
        // Past the signature, drive the agent's other checks with the call's own fields, so
        // only the arguments (the input again) and the time can make it refuse.
        let call = c.call();
        let mut guard = ReplayGuard::with_limit(1);
        for _ in 0..2 {
            let _ = check_call(
                data,
                &call.caller,
                &call.agent,
                &call.session,
                data,
                call.issued_at,
                &mut guard,
            );
        }
    }
    if let Ok(r) = SignedResult::decode(data) {
        assert_eq!(r.bytes(), data);
        assert_eq!(SignedResult::decode(r.bytes()).as_ref(), Ok(&r));
    }
    // The text form of a request id (as pasted into `wtd` commands).
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(id) = s.parse::<RequestId>() {
            assert_eq!(id.to_string().parse::<RequestId>(), Ok(id));
        }
    }
});
