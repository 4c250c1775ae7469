//! Integration tests for wtd-transport: real QUIC over UDP on 127.0.0.1.
//!
//! Each test reads as a lab script: set up peers, do one thing, check what each side saw.
//! Adversarial peers (impostors, weak keys, peers that would resume sessions) are built from
//! raw quinn and rustls around this crate's own TLS settings, changing one thing each.
//!
//! # Modules
//! - `harness`: endpoints on 127.0.0.1, connected pairs, and the adversarial building blocks.
//! - `handshake`: the happy path, a wrong pinned key, the wrong protocol, nobody answering.
//! - `impostors`: peers that present a key they do not hold, no key, or a weak key.
//! - `resumption`: every connection is a full handshake; no session tickets, no 0-RTT.
//! - `admission`: connection caps (total, per IP) and QUIC retry.
//! - `frames`: length-prefixed frames on streams.

mod admission;
mod frames;
mod handshake;
mod harness;
mod impostors;
mod resumption;
