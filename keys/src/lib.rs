//! The security core of wtd: who you are, what you may do, and how that is written down.
//!
//! This crate is pure: no sockets, no async runtime, and no clock of its own (every check
//! takes `now`). The agent, the proxy and the CLI all build on it, so a bug here is a bug
//! everywhere, and a fix here fixes everything; every rejecting branch has a test.
//!
//! # Layout
//! - [`defaults`]: every limit and duration, each with its reason.
//! - [`identity`]: ed25519 keys, their text form (`wtd1...`), domain-separated signing.
//! - [`job`]: signed queued calls (`wtd push`), checked by the agent at delivery time.
//! - [`names`]: canonical mission and function names.
//! - [`paste`]: finding the one id in pasted text (a QR code, a sheet, `wtd id` output).
//! - [`time`]: timestamps and the persisted time floor.
//! - [`encoding`]: the one canonical binary encoding of every signed record.
//! - [`record`]: the signature envelope shared by every record type.
//! - [`grant`]: holder-bound, owner-signed grants.
//! - [`revocation`]: owner-signed, permanent revocations.
//! - [`adoption`]: owner-signed adoption (and disowning) of agents; who counts as whose.
//! - [`enroll`]: one-time enrollment tokens and the proof a headless Pi shows with one.
//! - [`event`]: signed, hash-chained event logs per agent and mission; causal order.
//! - [`cause`]: a call's cause: the events it was made because of, and their text form.
//! - [`log`]: the owner's hash-chained log of grants, revocations and adoptions.
//! - [`seal`]: re-reading a log this machine verified before without verifying it again.
//! - [`authz`]: authorization as one pure function, with token buckets.
//! - [`call`]: receipts: signed calls and results, the agent's check of one, the replay guard.
//! - [`ticket`]: the pasteable string a newcomer imports.
#![forbid(unsafe_code)]

pub mod adoption;
pub mod authz;
pub mod call;
pub mod cause;
pub mod defaults;
pub mod encoding;
pub mod enroll;
pub mod event;
pub mod grant;
pub mod identity;
pub mod job;
pub mod log;
pub mod names;
pub mod paste;
pub mod record;
pub mod revocation;
pub mod seal;
pub mod ticket;
pub mod time;

pub use adoption::{Action, Adoption, AdoptionBook, Ownership, SignedAdoption};
pub use authz::{
    authorize, evaluate, Decision, Deny, Evaluation, GrantStatus, Permit, Policy, RateLimits, Request,
};
pub use call::{
    args_hash, check_call, check_receipt_call, output_hash, verify_receipt, verify_result, Call, CallError,
    CallResult, CallStatus, ReceiptError, ReplayGuard, RequestId, ResultError, SignedCall, SignedResult,
    VerifiedReceipt, VerifiedResult,
};
pub use enroll::{EnrollProof, EnrollmentToken, IssuedToken, TokenId};
pub use grant::{Audience, Grant, GrantId, Rate, SignedGrant};
pub use identity::{AgentId, Domain, KeyError, OwnerKey, ProxyId, PublicId, SecretKey, Signature, UserKey};
pub use log::{OwnerLog, Record, SignedEntry};
pub use names::{FunctionName, MissionName, TopicName};
pub use revocation::{Revocation, SignedRevocation, Target};
pub use ticket::{ProxyInfo, Ticket};
pub use time::{TimeFloor, Timestamp};
