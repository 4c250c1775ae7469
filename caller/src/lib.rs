//! The caller's side of wtd, as one library: what `wtd call`, the tests and the benchmark
//! all use, so there is one call path to get right.
//!
//! A [`Caller`] holds one QUIC connection to the proxy and, on top of it, a warm
//! end-to-end [`Session`] per agent it has called: a relayed stream with TLS 1.3 inside,
//! pinned to the agent's key. A session carries many calls at once, so a script that makes
//! a thousand calls, or `--all` over thirty Pis, pays one handshake per agent, not one per
//! call. Live calls are authenticated by the session (the handshake proved our key); with
//! [`CallRequest::receipt`] a call is also signed, and the agent signs its result, which
//! gives a [`Receipt`] anyone can check offline.
//!
//! ```no_run
//! # async fn demo(me: std::sync::Arc<wtd_keys::SecretKey>, conn: wtd_transport::Connection,
//! #               grants: Vec<wtd_keys::Grant>) -> Result<(), Box<dyn std::error::Error>> {
//! use wtd_caller::{dispatch, CallRequest, Caller};
//!
//! let caller = Caller::new(me.clone(), conn);
//! let roster = caller.roster().await?;
//! let request = CallRequest::new("demo", "echo", br#"{"msg":"hi"}"#.to_vec())?;
//! let me_user = wtd_keys::UserKey(me.public());
//! let grants: Vec<&wtd_keys::Grant> = grants.iter().collect();
//! // The grants' issuers' logs, fetched and verified (see `Caller::fetch_log`).
//! let adoptions = wtd_keys::AdoptionBook::new();
//! let cands = dispatch::candidates(&roster, &me_user, &grants, &adoptions, &request.mission,
//!                                  &request.function, &Default::default()).unwrap();
//! let cands = dispatch::order(cands, dispatch::Selector::LeastLoaded, 0, 0);
//! let (agent, answer) = caller.call_first(&cands, &request, &mut |_| {}).await?;
//! println!("{}: {}", agent.name, String::from_utf8_lossy(&answer.output));
//! # Ok(()) }
//! ```
//!
//! # Layout
//! - [`defaults`]: limits and queue sizes, each with its reason.
//! - [`dispatch`]: choosing agents from the roster (selectors, filters), pure.
//! - [`session`]: one end-to-end session to one agent, many calls in flight on it.
//! - [`relay`]: the relay request and the handshake sent together, one round trip saved.
//! - [`receipt`]: a kept receipt, its file form, and its offline check.
//! - [`caller`]: sessions kept warm per agent, dispatch with failover, `--all`.
#![forbid(unsafe_code)]

pub mod caller;
pub mod defaults;
pub mod dispatch;
pub mod receipt;
pub mod relay;
pub mod session;

pub use caller::{CallRequest, Caller, Failure, Notice, RequestError, RosterError};
pub use receipt::{Receipt, ReceiptFileError};
pub use session::{Answer, CallError, OpenError, PendingCall, Progress, Session};
