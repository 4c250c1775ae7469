//! The messages inside an end-to-end session (`wtd_wire::call`): what the agent decodes from
//! a caller (`CallerMsg`) and what a caller decodes from an agent (`AgentMsg`), on arbitrary
//! bytes. Each must never panic, and whatever decodes must encode and decode back to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wtd_wire::call::{AgentMsg, CallerMsg};
use wtd_wire::codec::decode_with_limit;
use wtd_wire::encode;

/// The largest message either side accepts (the caller's `MAX_ANSWER`; the agent's limit
/// for a call message is smaller).
const LIMIT: usize = 2 * 1024 * 1024;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = decode_with_limit::<CallerMsg>(data, LIMIT) {
        assert_eq!(decode_with_limit::<CallerMsg>(&encode(&m), LIMIT).as_ref(), Ok(&m));
    }
    if let Ok(m) = decode_with_limit::<AgentMsg>(data, LIMIT) {
        assert_eq!(decode_with_limit::<AgentMsg>(&encode(&m), LIMIT).as_ref(), Ok(&m));
    }
});
