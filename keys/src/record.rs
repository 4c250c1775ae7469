//! The signed envelope shared by every record type.
//!
//! A signed record is its fields followed by one last field, tag [`SIGNATURE_TAG`], holding
//! an ed25519 signature over `domain || 0 || every byte before that field`. Because the
//! encoding is canonical, the signature covers exactly one meaning.

use crate::encoding::{fixed, DecodeError, Reader, Writer};
use crate::identity::{Domain, PublicId, SecretKey, Signature, SignatureError};

/// The tag of the signature field: always last.
pub const SIGNATURE_TAG: u8 = 0xff;

/// Why a signed record was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// The bytes are not a well-formed record.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The record is well formed but its signature does not verify with the key it names.
    #[error(transparent)]
    Signature(#[from] SignatureError),
}

/// Appends the signature field.
pub fn seal(mut w: Writer, domain: Domain, signer: &SecretKey) -> Vec<u8> {
    let sig = signer.sign(domain, w.as_bytes());
    w.bytes(SIGNATURE_TAG, &sig.0);
    w.finish()
}

/// Reads the signature field, checks nothing follows it, and verifies it with `signer`.
pub fn open(r: Reader<'_>, domain: Domain, signer: &PublicId) -> Result<Signature, RecordError> {
    open_with(r, domain, signer, Check::Signatures)
}

/// Whether decoding verifies signatures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Check {
    /// Every signature is verified: the only choice for bytes from anywhere else.
    Signatures,
    /// The structure is checked but not the signature, because these exact bytes were
    /// verified before and a seal only this machine can make vouches for them
    /// (`log::OwnerLog::reopen`, the only user). Never reachable from outside this crate.
    Sealed,
}

/// [`open`], verifying the signature only when `check` asks for it.
pub(crate) fn open_with(
    mut r: Reader<'_>,
    domain: Domain,
    signer: &PublicId,
    check: Check,
) -> Result<Signature, RecordError> {
    let signed = r.consumed();
    let sig = Signature(fixed::<64>(r.field(SIGNATURE_TAG, "signature")?, "signature")?);
    r.finish()?;
    if check == Check::Signatures {
        signer.verify(domain, signed, &sig)?;
    }
    Ok(sig)
}
