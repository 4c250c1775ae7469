//! The agent against a fake proxy, over real QUIC on 127.0.0.1, in-process.
//!
//! Each test starts a [`fake_proxy::FakeProxy`] (a real wtd-transport server speaking the
//! real wire messages, driven by hand), points an agent at it (the library's `run`, with
//! temporary directories), and checks what crosses the wire and what lands on disk. Tests
//! wait for conditions with a bound ([`harness::WAIT`]) and never assert on timing.
//!
//! # Index
//! - [`harness`]: keys, owner logs, agent directories, the running agent, captured logs.
//! - [`fake_proxy`]: the test peer.
//! - [`hello`]: the advert (missions, built-in `sys`, tags, warnings), the identity file,
//!   a refusal logged and retried, a proxy with the wrong key.
//! - [`heartbeats`]: load reports (the pinned test load), `Leaving` on shutdown.
//! - [`owner_logs`]: catch-up verified and persisted, heads in the next hello; strangers'
//!   entries, altered entries and gaps refused while earlier entries stay.
//! - [`jobs`]: a job signed for a tag the agent lacks is refused by the agent, with why.
//! - [`reconnect`]: the proxy restarts on the same port; the agent comes back.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test, with a backtrace

mod fake_proxy;
mod harness;
mod heartbeats;
mod hello;
mod jobs;
mod owner_logs;
mod reconnect;
