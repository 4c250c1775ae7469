//! The wtd agent: the small daemon on every Pi (or laptop) that offers missions.
//!
//! It connects out to the discovery proxy over QUIC (pinning the proxy's key from a join
//! ticket), tells it who it is and what it offers (its *advert*), reports its load every
//! second, and receives its owners' signed logs of grants and revocations, which it
//! verifies, stores, and exposes to the rest of the agent. It trusts the proxy for delivery
//! only: a log entry the proxy forged, altered or reordered is refused.
//!
//! `wtd agent` is [`cli::run`]; tests and embedders call [`run`] (or [`Agent::new`] then
//! [`Agent::run`]) with a [`AgentConfig`] and a cancellation token, in-process.
//!
//! # Layout
//! - [`defaults`]: every number and path, each with its reason.
//! - [`config`]: `agent.toml`, parsed strictly and checked ([`AgentConfig`]).
//! - [`missions`]: mission files and the built-in `sys` mission ([`Catalogue`]).
//! - [`advert`]: what the agent says about itself, cut to fit the wire limits.
//! - [`sensors`]: Raspberry Pi temperature, throttling and model.
//! - [`load`]: the load report (sysinfo plus sensors) sent with each heartbeat.
//! - [`sandbox`]: the mission box: a call's cgroup or subreaper, limits, private directory.
//! - [`owner_logs`]: the owners' logs, verified, stored, and shared ([`LogsHandle`]).
//! - [`backoff`]: how long to wait before reconnecting (pure, exponential, jittered).
//! - [`clock`]: the wall clock grants are checked by (and its test-only offset, debug builds).
//! - [`events`]: mission events from handlers, allowed per mission, bounded ([`events::MissionEvents`]).
//! - [`reports`]: call reports for the proxy's dashboard, the owner's opt-in, bounded.
//! - [`streams`]: signed event logs of handlers' `wtd-emit:` lines, sent to the proxy.
//! - `subscriber`: functions called once per signed event they subscribe to, in causal order.
//! - `mqtt`: publishing this agent to a broker itself (`[mqtt]`), when no proxy bridges.
//! - [`metrics`]: the agent's opt-in Prometheus metrics (calls, durations, queues).
//! - `lan`: finding the proxy on the LAN by mDNS when there is no ticket (`proxy = "<id>"`).
//! - [`jobs`]: queued calls the proxy delivers, run at most once (a durable seen-set).
//! - [`link`]: the connection to the proxy: hello, heartbeats, logs, reconnects, goodbye.
//! - [`agent`]: start-up and the whole agent's life ([`Agent`], [`run`]).
//! - [`logging`]: log lines to the journal or stderr, for binaries.
//! - [`notify`]: `READY=1` and watchdog pings to systemd (`Type=notify`).
//! - [`firstboot`]: `wtd firstboot`, the image's `wtd.toml` on the boot partition applied.
//! - [`growroot`]: `wtd firstboot --grow-root`, the image's root partition grown to fill its card.
//! - [`cli`]: `wtd agent` (arguments, runtime, signals).
#![forbid(unsafe_code)]

pub mod advert;
pub mod agent;
pub mod backoff;
pub mod calls;
pub mod cli;
pub mod clock;
pub mod config;
pub mod defaults;
pub mod events;
pub mod exec;
pub mod firstboot;
pub mod growroot;
pub mod jobs;
mod lan;
pub mod link;
pub mod load;
pub mod logging;
pub mod metrics;
pub mod missions;
mod mqtt;
pub mod notify;
pub mod owner_logs;
pub mod reports;
pub mod sandbox;
pub mod sensors;
pub mod streams;
mod subscriber;

pub use agent::{run, Agent, AgentError};
pub use config::{AgentConfig, ConfigError, LoadConfigError};
pub use missions::{Catalogue, Function, Mission, Run};
pub use owner_logs::{LogsHandle, VerifiedLogs};
