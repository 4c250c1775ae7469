//! Messages to bytes and back: postcard, with a size cap and no trailing bytes.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::defaults::MAX_FRAME;

/// A frame that could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("message of {0} bytes is over the {MAX_FRAME}-byte limit")]
    TooLarge(usize),
    #[error("malformed message: {0}")]
    Malformed(String),
    #[error("{0} unexpected bytes after the message")]
    TrailingBytes(usize),
}

impl WireError {
    /// The reason given to a peer whose message could not be read: always "malformed
    /// message: ...", said once (the `Malformed` text already says it).
    pub fn as_malformed(&self) -> String {
        match self {
            WireError::Malformed(_) => self.to_string(),
            other => format!("malformed message: {other}"),
        }
    }
}

pub fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    postcard::to_stdvec(msg).expect("wire messages always serialize")
}

/// Appends `msg` to `buf` as one frame: a u32 big-endian length, then the message. Lets a
/// writer put many messages in one buffer (and one write) without a copy each.
pub fn encode_frame_into<T: Serialize>(msg: &T, buf: &mut Vec<u8>) {
    let start = buf.len();
    buf.extend_from_slice(&[0; 4]);
    let taken = std::mem::take(buf);
    *buf = postcard::to_extend(msg, taken).expect("wire messages always serialize");
    let len = u32::try_from(buf.len() - start - 4).expect("a wire message fits in a frame");
    buf[start..start + 4].copy_from_slice(&len.to_be_bytes());
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, WireError> {
    if bytes.len() > MAX_FRAME {
        return Err(WireError::TooLarge(bytes.len()));
    }
    decode_unchecked(bytes)
}

/// [`decode`] with another size limit than [`MAX_FRAME`]: for the messages inside a call
/// session, whose answers may carry up to a megabyte of output next to their record.
pub fn decode_with_limit<T: DeserializeOwned>(bytes: &[u8], limit: usize) -> Result<T, WireError> {
    if bytes.len() > limit {
        return Err(WireError::TooLarge(bytes.len()));
    }
    decode_unchecked(bytes)
}

fn decode_unchecked<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, WireError> {
    let (msg, rest) = postcard::take_from_bytes(bytes).map_err(|e| WireError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(WireError::TrailingBytes(rest.len()));
    }
    Ok(msg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::*;
    use proptest::prelude::*;

    #[test]
    fn a_malformed_message_is_said_once() {
        assert_eq!(
            WireError::Malformed("x".into()).as_malformed(),
            "malformed message: x"
        );
        assert_eq!(
            WireError::TrailingBytes(3).as_malformed(),
            "malformed message: 3 unexpected bytes after the message"
        );
        assert!(WireError::TooLarge(9)
            .as_malformed()
            .starts_with("malformed message: message of 9"));
    }

    #[test]
    fn frames_appended_to_one_buffer_decode_one_by_one() {
        let mut buf = Vec::new();
        let msgs = [Refusal::Full, Refusal::OwnerNotAllowed, Refusal::Full];
        for m in &msgs {
            encode_frame_into(m, &mut buf);
        }
        let mut rest = &buf[..];
        for m in &msgs {
            let len = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
            assert_eq!(&decode::<Refusal>(&rest[4..4 + len]).unwrap(), m);
            rest = &rest[4 + len..];
        }
        assert!(rest.is_empty());
    }

    fn advert() -> Advert {
        Advert {
            name: "pi-1".into(),
            owners: vec![Key::from(wtd_keys::SecretKey::from_seed(&[1; 32]).public())],
            missions: vec![MissionInfo {
                name: "demo".into(),
                version: "1".into(),
                description: "".into(),
                functions: vec![FunctionInfo {
                    name: "echo".into(),
                    description: "".into(),
                    idempotent: true,
                }],
            }],
            tags: vec!["lab".into()],
            model: None,
            software: "wtd 0.1".into(),
            warnings: vec![],
            enrollment: None,
        }
    }

    #[test]
    fn round_trips_and_refuses_trailing_bytes() {
        let m = Open::Agent(AgentHello {
            version: PROTOCOL_VERSION,
            advert: advert(),
            heads: vec![],
        });
        let mut bytes = encode(&m);
        assert_eq!(decode::<Open>(&bytes), Ok(m));
        bytes.push(0);
        assert_eq!(decode::<Open>(&bytes), Err(WireError::TrailingBytes(1)));
        assert!(matches!(decode::<Open>(&[0xff; 3]), Err(WireError::Malformed(_))));
        assert!(matches!(
            decode::<Open>(&vec![0; MAX_FRAME + 1]),
            Err(WireError::TooLarge(_))
        ));
    }

    #[test]
    fn an_enrollment_proof_travels_and_a_waiting_agent_is_told_what_to_do() {
        let token = wtd_keys::EnrollmentToken::generate();
        let me = wtd_keys::AgentId(wtd_keys::SecretKey::from_seed(&[2; 32]).public());
        let mut a = advert();
        a.enrollment = Some(token.prove(&me).into());
        let back: Advert = decode(&encode(&a)).unwrap();
        assert_eq!(back, a);
        assert!(token.verifies(&back.enrollment.unwrap().into(), &me));
        let owner = a.owners[0];
        let why = Refusal::WaitingForAdoption { owners: vec![owner] }.to_string();
        assert!(why.starts_with("waiting for adoption by wtd1"), "{why}");
        assert!(why.contains("wtd adopt"), "{why}");
    }

    #[test]
    fn adverts_are_validated() {
        assert_eq!(advert().validate(), Ok(()));
        let mut a = advert();
        a.missions[0].name = "Demo".into();
        assert!(a.validate().is_err());
        let mut a = advert();
        a.owners.clear();
        assert!(a.validate().is_err());
        let mut a = advert();
        a.owners[0] = Key([0; 32]);
        assert!(a.validate().is_err());
        let mut a = advert();
        a.name = "evil\x1b[2J".into();
        assert!(a.validate().is_err());
        let mut a = advert();
        a.tags = vec!["t".into(); 17];
        assert!(a.validate().is_err());
        let mut a = advert();
        a.missions[0].functions.clear();
        assert!(a.validate().is_err());
    }

    proptest! {
        #[test]
        fn decoding_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode::<Open>(&bytes);
            let _ = decode::<ToAgent>(&bytes);
            let _ = decode::<FromAgent>(&bytes);
            let _ = decode::<Response>(&bytes);
        }
    }
}
