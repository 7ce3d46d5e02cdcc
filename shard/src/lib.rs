//! The per-core engine of shardns.
//!
//! - [`config`]: the immutable configuration a shard runs on (swapped whole on reload).
//! - [`engine`]: the sans-IO query logic: answer from the packet cache, forward a miss, match
//!   upstream replies, retry and time out. It takes `now` and bytes and returns actions.
//! - [`cache`]: the per-shard packet cache that answers by patching ID, case and TTLs.
//! - [`peer`]: messages between shards (a miss goes to the key's owner shard).
//! - [`upstream`]: the in-flight table of queries sent upstream.
//! - [`tcp`]: RFC 7766 framing and client connection bookkeeping (sans-IO).
//! - [`driver`]: the io_uring and epoll drivers that move bytes for a [`Handler`]. All of the
//!   project's `unsafe` lives there.
//! - [`run`]: starting a shard thread's loop on ready-made sockets.
#![deny(unsafe_code)]

pub mod cache;
pub mod config;
pub mod driver;
pub mod engine;
pub mod handler;
pub mod health;
mod names;
pub mod peer;
pub mod run;
pub mod stats;
pub mod tcp;
pub mod upstream;

pub use config::Config;
pub use engine::Engine;
pub use handler::{Client, Handler, Link, MAX_MESSAGE, Outcome, Protocol, Transmit};
pub use run::{IoMode, PeerLinks, ShardControl, ShardSockets, ShardSpec, peer_mesh, run_shard};
pub use stats::ShardStats;
