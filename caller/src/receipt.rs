//! A receipt: the caller's signed call and the agent's signed result, with the argument
//! and output bytes they cover. Anyone holding it can check it offline, with no key:
//! each record names the public key that signed it (`wtd_keys::call::verify_receipt`).
//!
//! Its file form is one JSON object, so a person can read it and any language can check
//! it:
//!
//! ```json
//! { "receipt": "wtd receipt v1",
//!   "call": "<base64 signed call>", "args": "<base64>",
//!   "result": "<base64 signed result>", "output": "<base64>" }
//! ```

use data_encoding::BASE64;
use serde::{Deserialize, Serialize};
use wtd_keys::call::{verify_receipt, ReceiptError, VerifiedReceipt};

/// The first field of every receipt file, so a file is recognised (and a future format
/// told apart).
pub const FORMAT: &str = "wtd receipt v1";

/// Largest receipt file read, in bytes: the records, 64 KiB of arguments and 1 MiB of
/// output, base64-encoded.
pub const MAX_FILE: usize = 2 * 1024 * 1024;

/// A receipt as kept by the caller.
#[derive(Clone, PartialEq, Eq)]
pub struct Receipt {
    /// The caller's signed call (`wtd_keys::call::SignedCall` bytes).
    pub call: Vec<u8>,
    /// The argument bytes the call covers.
    pub args: Vec<u8>,
    /// The agent's signed result (`wtd_keys::call::SignedResult` bytes).
    pub result: Vec<u8>,
    /// The output bytes the result covers.
    pub output: Vec<u8>,
}

impl std::fmt::Debug for Receipt {
    // The arguments and output are the caller's data: sizes only.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receipt")
            .field("call_bytes", &self.call.len())
            .field("args_bytes", &self.args.len())
            .field("result_bytes", &self.result.len())
            .field("output_bytes", &self.output.len())
            .finish()
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    receipt: String,
    call: String,
    args: String,
    result: String,
    output: String,
}

/// Why a receipt file could not be read. (Whether it *checks out* is [`ReceiptError`].)
#[derive(Debug, thiserror::Error)]
pub enum ReceiptFileError {
    /// Not a receipt file at all, or a damaged one.
    #[error("this is not a wtd receipt ({0}); receipts are the JSON files `wtd call --receipt` writes")]
    Malformed(String),
    /// A receipt of a newer format than this wtd reads.
    #[error("this receipt is in format `{0}`, which this wtd does not know; upgrade wtd")]
    UnknownFormat(String),
    /// Larger than any receipt can be.
    #[error("a {0}-byte file is too large to be a receipt")]
    TooLarge(usize),
}

impl Receipt {
    /// Checks the receipt: both signatures, that the result answers exactly this call,
    /// from the agent it names, and that the arguments and output are the signed ones.
    pub fn verify(&self) -> Result<VerifiedReceipt, ReceiptError> {
        verify_receipt(&self.call, &self.args, &self.result, &self.output)
    }

    /// The file form (see the module docs).
    pub fn to_json(&self) -> String {
        let file = File {
            receipt: FORMAT.to_string(),
            call: BASE64.encode(&self.call),
            args: BASE64.encode(&self.args),
            result: BASE64.encode(&self.result),
            output: BASE64.encode(&self.output),
        };
        serde_json::to_string_pretty(&file).expect("serializable")
    }

    /// Reads the file form. It does not verify: call [`Receipt::verify`].
    pub fn from_json(text: &[u8]) -> Result<Receipt, ReceiptFileError> {
        if text.len() > MAX_FILE {
            return Err(ReceiptFileError::TooLarge(text.len()));
        }
        let file: File =
            serde_json::from_slice(text).map_err(|e| ReceiptFileError::Malformed(e.to_string()))?;
        if file.receipt != FORMAT {
            return Err(ReceiptFileError::UnknownFormat(
                file.receipt.chars().take(40).collect(),
            ));
        }
        let field = |name: &str, v: &str| {
            BASE64
                .decode(v.as_bytes())
                .map_err(|e| ReceiptFileError::Malformed(format!("{name}: {e}")))
        };
        Ok(Receipt {
            call: field("call", &file.call)?,
            args: field("args", &file.args)?,
            result: field("result", &file.result)?,
            output: field("output", &file.output)?,
        })
    }
}
