//! Faults under a steady load (issue 12): each test injects one fault while the harness's
//! [`Load`](shardns_e2e::load::Load) asks for cached names and for fresh ones, and checks
//! what the clients saw (a stale answer where `serve_stale` is configured, SERVFAIL by the
//! query deadline, or nothing different), that the process stays up, and that its memory
//! stays bounded. Each prints one line of figures (`--nocapture`); docs/RELIABILITY.md
//! collects them.
//!
//! `cargo test -p shardns-e2e --test faults -- --nocapture NAME`

#![forbid(unsafe_code)]

mod clients;
mod common;
mod config;
mod disk;
mod unbound;
mod upstream;
