//! The one canonical binary encoding used for every signed record.
//!
//! A record is a header and a list of fields:
//!
//! ```text
//! record  = kind:u8 version:u8 field*
//! field   = tag:u8 len:u32be value[len]
//! ```
//!
//! Canonical means there is exactly one encoding for each value, so a signature over the
//! bytes is a signature over the meaning:
//! - integers are fixed-width big-endian (no varints, so no over-long forms);
//! - tags appear in strictly increasing order, each at most once;
//! - every field's length is exactly what its type needs;
//! - nothing may follow the last field.
//!
//! A decoder rejects an unknown `kind` or `version`, an unknown tag, a missing or repeated
//! field, a bad length, trailing bytes, and input over [`MAX_RECORD_LEN`] before it parses.
//!
//! [`MAX_RECORD_LEN`]: crate::defaults::MAX_RECORD_LEN

use crate::identity::{KeyError, PublicId};
use crate::names::NameError;

/// What went wrong decoding a record. Each variant says what was wrong with the bytes;
/// none of them can be fixed by retrying: the sender (or whoever altered the bytes) must
/// send a well-formed record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The input is larger than any record we accept; it was not parsed.
    #[error("record is {len} bytes, over the {max}-byte limit")]
    TooLong { len: usize, max: usize },
    /// The input ended in the middle of something.
    #[error("record is truncated: it ended while reading {what}")]
    Truncated { what: &'static str },
    /// The record is of another type than the one expected.
    #[error("expected a {expected} record, found record kind {found}")]
    WrongKind { expected: &'static str, found: u8 },
    /// The record was written by a newer (or corrupt) wtd.
    #[error(
        "{what} uses format version {found}, but this wtd understands only version {supported}; upgrade wtd"
    )]
    UnknownVersion {
        what: &'static str,
        found: u8,
        supported: u8,
    },
    /// A field this version does not define.
    #[error("{what} has unknown field {tag}")]
    UnknownField { what: &'static str, tag: u8 },
    /// A required field is absent (or fields are out of order, which hides it).
    #[error("{what} is missing field `{field}` (or its fields are out of order)")]
    MissingField { what: &'static str, field: &'static str },
    /// A field's length is wrong for its type.
    #[error("field `{field}` has length {len}, which is invalid for its type")]
    BadLength { field: &'static str, len: usize },
    /// A field holds a value outside its allowed range.
    #[error("field `{field}` is invalid: {reason}")]
    BadValue {
        field: &'static str,
        reason: &'static str,
    },
    /// Bytes remain after the last field.
    #[error("{count} unexpected bytes after the end of the record")]
    TrailingBytes { count: usize },
    /// A key field does not hold an acceptable ed25519 public key.
    #[error("field `{field}`: {source}")]
    BadKey { field: &'static str, source: KeyError },
    /// A mission or function name is not canonical.
    #[error("field `{field}`: {source}")]
    BadName { field: &'static str, source: NameError },
}

/// Builds one record. Fields must be written in increasing tag order; that is checked in
/// debug builds because it is a programming error, not bad input.
#[derive(Debug)]
pub struct Writer {
    buf: Vec<u8>,
    last_tag: Option<u8>,
}

impl Writer {
    /// Starts a record of `kind` at `version`.
    pub fn new(kind: u8, version: u8) -> Self {
        Writer {
            buf: vec![kind, version],
            last_tag: None,
        }
    }

    /// Writes a raw field.
    pub fn bytes(&mut self, tag: u8, value: &[u8]) -> &mut Self {
        debug_assert!(
            self.last_tag.is_none_or(|t| t < tag),
            "fields must be written in increasing tag order"
        );
        self.last_tag = Some(tag);
        self.buf.push(tag);
        let len = u32::try_from(value.len()).expect("field longer than 4 GiB");
        self.buf.extend_from_slice(&len.to_be_bytes());
        self.buf.extend_from_slice(value);
        self
    }

    pub fn u8(&mut self, tag: u8, v: u8) -> &mut Self {
        self.bytes(tag, &[v])
    }

    pub fn u32(&mut self, tag: u8, v: u32) -> &mut Self {
        self.bytes(tag, &v.to_be_bytes())
    }

    pub fn u64(&mut self, tag: u8, v: u64) -> &mut Self {
        self.bytes(tag, &v.to_be_bytes())
    }

    pub fn key(&mut self, tag: u8, k: &PublicId) -> &mut Self {
        self.bytes(tag, k.as_bytes())
    }

    pub fn str(&mut self, tag: u8, s: &str) -> &mut Self {
        self.bytes(tag, s.as_bytes())
    }

    /// The bytes so far.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf
    }

    pub fn finish(self) -> Vec<u8> {
        self.buf
    }
}

/// Reads one record, field by field, in the order its schema lists them.
#[derive(Debug)]
pub struct Reader<'a> {
    input: &'a [u8],
    pos: usize,
    what: &'static str,
    /// Every tag this record type defines, so an unexpected tag can be told apart as
    /// unknown (a newer format) or merely missing/out of order.
    known: &'static [u8],
}

impl<'a> Reader<'a> {
    /// Checks the size limit and the header, then positions at the first field.
    pub fn new(
        input: &'a [u8],
        max: usize,
        what: &'static str,
        kind: u8,
        version: u8,
        known: &'static [u8],
    ) -> Result<Self, DecodeError> {
        if input.len() > max {
            return Err(DecodeError::TooLong {
                len: input.len(),
                max,
            });
        }
        let (&k, &v) = match input {
            [k, v, ..] => (k, v),
            _ => return Err(DecodeError::Truncated { what: "the header" }),
        };
        if k != kind {
            return Err(DecodeError::WrongKind {
                expected: what,
                found: k,
            });
        }
        if v != version {
            return Err(DecodeError::UnknownVersion {
                what,
                found: v,
                supported: version,
            });
        }
        Ok(Reader {
            input,
            pos: 2,
            what,
            known,
        })
    }

    /// Where the next field starts: everything before it has been read.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// The bytes already read, header included.
    pub fn consumed(&self) -> &'a [u8] {
        &self.input[..self.pos]
    }

    fn peek_tag(&self) -> Option<u8> {
        self.input.get(self.pos).copied()
    }

    /// Reads the field `tag` if it is next; `Ok(None)` if the next field has a higher
    /// known tag (or the record ended), so optional fields can be skipped.
    pub fn optional(&mut self, tag: u8, name: &'static str) -> Result<Option<&'a [u8]>, DecodeError> {
        let Some(next) = self.peek_tag() else {
            return Ok(None);
        };
        if !self.known.contains(&next) {
            return Err(DecodeError::UnknownField {
                what: self.what,
                tag: next,
            });
        }
        if next != tag {
            if next < tag {
                // A lower tag after we have moved past it: repeated or out of order.
                return Err(DecodeError::MissingField {
                    what: self.what,
                    field: name,
                });
            }
            return Ok(None);
        }
        let rest = &self.input[self.pos + 1..];
        let len_bytes: [u8; 4] = rest
            .get(..4)
            .and_then(|b| b.try_into().ok())
            .ok_or(DecodeError::Truncated { what: name })?;
        let len = u32::from_be_bytes(len_bytes) as usize;
        let value = rest
            .get(4..4 + len)
            .ok_or(DecodeError::Truncated { what: name })?;
        self.pos += 1 + 4 + len;
        Ok(Some(value))
    }

    /// Reads the required field `tag`.
    pub fn field(&mut self, tag: u8, name: &'static str) -> Result<&'a [u8], DecodeError> {
        match self.optional(tag, name)? {
            Some(v) => Ok(v),
            None if self.peek_tag().is_none() => Err(DecodeError::Truncated { what: name }),
            None => Err(DecodeError::MissingField {
                what: self.what,
                field: name,
            }),
        }
    }

    pub fn u8(&mut self, tag: u8, name: &'static str) -> Result<u8, DecodeError> {
        Ok(fixed::<1>(self.field(tag, name)?, name)?[0])
    }

    pub fn u32(&mut self, tag: u8, name: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(fixed(self.field(tag, name)?, name)?))
    }

    pub fn u64(&mut self, tag: u8, name: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(fixed(self.field(tag, name)?, name)?))
    }

    pub fn key(&mut self, tag: u8, name: &'static str) -> Result<PublicId, DecodeError> {
        key_value(self.field(tag, name)?, name)
    }

    /// A mission or function name.
    pub fn name<T>(&mut self, tag: u8, name: &'static str) -> Result<T, DecodeError>
    where
        T: std::str::FromStr<Err = NameError>,
    {
        name_value(self.field(tag, name)?, name)
    }

    /// Ends the record: anything left over is an error.
    pub fn finish(self) -> Result<(), DecodeError> {
        match self.peek_tag() {
            None => Ok(()),
            Some(tag) if !self.known.contains(&tag) => {
                Err(DecodeError::UnknownField { what: self.what, tag })
            }
            Some(_) => Err(DecodeError::TrailingBytes {
                count: self.input.len() - self.pos,
            }),
        }
    }
}

/// Checks a field has exactly `N` bytes.
pub fn fixed<const N: usize>(value: &[u8], name: &'static str) -> Result<[u8; N], DecodeError> {
    value.try_into().map_err(|_| DecodeError::BadLength {
        field: name,
        len: value.len(),
    })
}

/// Parses a field's value as a public key, strictly.
pub fn key_value(value: &[u8], name: &'static str) -> Result<PublicId, DecodeError> {
    PublicId::from_bytes(&fixed::<32>(value, name)?)
        .map_err(|source| DecodeError::BadKey { field: name, source })
}

/// Parses a field's value as a canonical name.
pub fn name_value<T>(value: &[u8], name: &'static str) -> Result<T, DecodeError>
where
    T: std::str::FromStr<Err = NameError>,
{
    let s = std::str::from_utf8(value).map_err(|_| DecodeError::BadName {
        field: name,
        source: NameError::BadChar { at: 0 },
    })?;
    s.parse()
        .map_err(|source| DecodeError::BadName { field: name, source })
}
