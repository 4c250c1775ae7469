//! What peers send over the network: frames and the messages in them.

use serde::de::DeserializeOwned;
use serde::Serialize;
use wtd_wire::call::{AgentMsg, CallerMsg};
use wtd_wire::codec::decode_with_limit;
use wtd_wire::defaults::MAX_FRAME;
use wtd_wire::{
    decode, encode, Advert, AgentHello, AgentInfo, FromAgent, Open, RelayReply, Relayed, Request, Response,
    RosterEvent, ToAgent,
};

/// Whatever decodes must encode and decode back to the same bytes. (Compared as bytes, not
/// values: a load of NaN is not equal to itself, yet travels fine.)
fn round_trips<T: Serialize + DeserializeOwned>(limit: usize, data: &[u8]) {
    if let Ok(m) = decode_with_limit::<T>(data, limit) {
        let bytes = encode(&m);
        let again = decode_with_limit::<T>(&bytes, limit).expect("what decoded once decodes again");
        assert_eq!(encode(&again), bytes, "{}", std::any::type_name::<T>());
    }
}

/// Every message that travels in a frame between agents, the proxy and the CLI.
fn any_message(payload: &[u8]) {
    round_trips::<Open>(MAX_FRAME, payload);
    round_trips::<AgentHello>(MAX_FRAME, payload);
    round_trips::<FromAgent>(MAX_FRAME, payload);
    round_trips::<ToAgent>(MAX_FRAME, payload);
    round_trips::<Request>(MAX_FRAME, payload);
    round_trips::<Response>(MAX_FRAME, payload);
    round_trips::<RelayReply>(MAX_FRAME, payload);
    round_trips::<Relayed>(MAX_FRAME, payload);
    round_trips::<RosterEvent>(MAX_FRAME, payload);
}

/// A stream's bytes cut into frames (`len:u32be payload`, see `wtd_transport::frame`), as
/// a reader does: an announced length over the limit ends the stream before anything is
/// read or reserved for it; every payload is tried as every message.
pub fn decode_frames(data: &[u8]) {
    let mut rest = data;
    while rest.len() >= 4 {
        let len = u32::from_be_bytes(rest[..4].try_into().expect("4 bytes")) as usize;
        if len > MAX_FRAME {
            return;
        }
        let Some(payload) = rest.get(4..4 + len) else {
            return; // the stream ended inside a frame
        };
        any_message(payload);
        rest = &rest[4 + len..];
    }
}

/// An agent's advert as the proxy receives it: decode, the proxy's checks, the owners it
/// claims; and the roster entries watchers receive.
pub fn decode_advert(data: &[u8]) {
    if let Ok(advert) = decode::<Advert>(data) {
        let valid = advert.validate();
        let claimed = advert.claimed_owners().count();
        if valid.is_ok() {
            // A valid advert's every owner key parses, so every claim is counted.
            assert_eq!(claimed, advert.owners.len());
        }
        round_trips::<Advert>(MAX_FRAME, data);
    }
    if let Ok(hello) = decode::<AgentHello>(data) {
        let _ = hello.advert.validate();
    }
    round_trips::<AgentInfo>(MAX_FRAME, data);
}

/// The largest message either side of a call session accepts (the caller's `MAX_ANSWER`;
/// the agent's limit for a call message is smaller).
const SESSION_LIMIT: usize = 2 * 1024 * 1024;

/// The messages inside an end-to-end session (`wtd_wire::call`): what the agent decodes
/// from a caller and what a caller decodes from an agent.
pub fn decode_session_msgs(data: &[u8]) {
    round_trips::<CallerMsg>(SESSION_LIMIT, data);
    round_trips::<AgentMsg>(SESSION_LIMIT, data);
}
