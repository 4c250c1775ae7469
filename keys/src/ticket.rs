//! Tickets: one pasteable string with what a newcomer needs.
//!
//! A ticket may carry a proxy to join (its pinned id and addresses) and grants made out to
//! the holder. It is not signed as a whole: each grant inside is signed by its owner, and
//! the proxy id is pinned because the ticket came to you out of band (a chat message, a QR
//! code on the projector). Text form: `wtdt1` + lowercase base32 of the bytes followed by
//! a 4-byte checksum, so a typo or a cut-off paste is refused rather than read as another
//! (or a smaller) ticket: the bytes alone cannot tell, because every field is optional.
//!
//! ```text
//! ticket = kind(4) version(1)
//!          1 proxy   proxy id (32)                      (optional)
//!          2 addrs   "ip:port" joined by ","            (with proxy)
//!          3 grants  (u32be length || signed grant)*    (optional)
//! ```

use std::net::SocketAddr;

use data_encoding::BASE32_NOPAD;
use sha2::{Digest, Sha256};

use crate::defaults::{MAX_TICKET_ADDRS, MAX_TICKET_GRANTS, MAX_TICKET_LEN};
use crate::encoding::{key_value, DecodeError, Reader, Writer};
use crate::grant::SignedGrant;
use crate::identity::ProxyId;
use crate::record::RecordError;

pub const KIND: u8 = 4;
pub const VERSION: u8 = 1;
pub const PREFIX: &str = "wtdt1";
const KNOWN: &[u8] = &[1, 2, 3];

/// Where to find a proxy, and which key it must prove it holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyInfo {
    pub id: ProxyId,
    pub addrs: Vec<SocketAddr>,
}

#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Ticket {
    pub proxy: Option<ProxyInfo>,
    pub grants: Vec<SignedGrant>,
}

/// Why a ticket was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TicketError {
    #[error("not a wtd ticket: it should start with `{PREFIX}`; copy the whole line")]
    BadPrefix,
    #[error("this ticket is damaged or incomplete; copy the whole line again")]
    BadText,
    #[error("this ticket is damaged: {0}")]
    Record(#[from] RecordError),
}

impl From<DecodeError> for TicketError {
    fn from(e: DecodeError) -> Self {
        TicketError::Record(e.into())
    }
}

impl Ticket {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new(KIND, VERSION);
        if let Some(p) = &self.proxy {
            let addrs: Vec<String> = p.addrs.iter().map(|a| a.to_string()).collect();
            w.key(1, p.id.key()).str(2, &addrs.join(","));
        }
        if !self.grants.is_empty() {
            let mut v = Vec::new();
            for g in &self.grants {
                v.extend_from_slice(&(g.bytes().len() as u32).to_be_bytes());
                v.extend_from_slice(g.bytes());
            }
            w.bytes(3, &v);
        }
        w.finish()
    }

    pub fn decode(bytes: &[u8]) -> Result<Ticket, TicketError> {
        let mut r = Reader::new(bytes, MAX_TICKET_LEN, "ticket", KIND, VERSION, KNOWN)?;
        let proxy = match r.optional(1, "proxy")? {
            Some(v) => {
                let id = ProxyId(key_value(v, "proxy")?);
                let text = std::str::from_utf8(r.field(2, "addrs")?).map_err(|_| DecodeError::BadValue {
                    field: "addrs",
                    reason: "not ASCII",
                })?;
                let addrs = text
                    .split(',')
                    .map(|a| a.parse::<SocketAddr>())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|_| DecodeError::BadValue {
                        field: "addrs",
                        reason: "not a list of ip:port",
                    })?;
                if addrs.len() > MAX_TICKET_ADDRS {
                    return Err(DecodeError::BadValue {
                        field: "addrs",
                        reason: "too many addresses",
                    }
                    .into());
                }
                Some(ProxyInfo { id, addrs })
            }
            None => None,
        };
        let mut grants = Vec::new();
        if let Some(mut raw) = r.optional(3, "grants")? {
            while !raw.is_empty() {
                if grants.len() == MAX_TICKET_GRANTS {
                    return Err(DecodeError::BadValue {
                        field: "grants",
                        reason: "too many grants in one ticket",
                    }
                    .into());
                }
                let len = raw
                    .get(..4)
                    .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
                    .ok_or(DecodeError::Truncated { what: "grants" })?;
                let g = raw
                    .get(4..4 + len)
                    .ok_or(DecodeError::Truncated { what: "grants" })?;
                grants.push(SignedGrant::decode(g)?);
                raw = &raw[4 + len..];
            }
            if grants.is_empty() {
                return Err(DecodeError::BadLength {
                    field: "grants",
                    len: 0,
                }
                .into());
            }
        }
        r.finish()?;
        Ok(Ticket { proxy, grants })
    }

    pub fn to_text(&self) -> String {
        let mut raw = self.encode();
        raw.extend_from_slice(&text_checksum(&raw));
        format!("{PREFIX}{}", BASE32_NOPAD.encode(&raw).to_ascii_lowercase())
    }

    pub fn from_text(s: &str) -> Result<Ticket, TicketError> {
        let body = s.trim().strip_prefix(PREFIX).ok_or(TicketError::BadPrefix)?;
        if body.len() > (MAX_TICKET_LEN + 4) * 8 / 5 + 8 || body.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(TicketError::BadText);
        }
        let raw = BASE32_NOPAD
            .decode(body.to_ascii_uppercase().as_bytes())
            .map_err(|_| TicketError::BadText)?;
        let (bytes, sum) = raw.split_at(raw.len().checked_sub(4).ok_or(TicketError::BadText)?);
        if sum != text_checksum(bytes) {
            return Err(TicketError::BadText);
        }
        Ticket::decode(bytes)
    }
}

/// The checksum that ends a ticket's text form.
fn text_checksum(bytes: &[u8]) -> [u8; 4] {
    let h = Sha256::new_with_prefix(b"wtd ticket checksum\0")
        .chain_update(bytes)
        .finalize();
    [h[0], h[1], h[2], h[3]]
}
