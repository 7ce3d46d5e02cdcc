//! The per-core engine of shardns.
//!
//! # Contract
//!
//! A shard is an [`Engine`] (the protocol logic) run by a driver on one thread. The engine is
//! sans-IO, after quinn-proto: it never reads the clock and never touches a socket. It takes
//! `now` and bytes through the [`Handler`] methods and hands back what to do through three
//! polls: [`Handler::poll_transmit`] (network output: replies, upstream queries, closes),
//! [`Handler::poll_peer`] (messages to the other shards of its [`Group`]) and
//! [`Handler::poll_timeout`] (when to call [`Handler::handle_timeout`] next). So every
//! behaviour is tested with a virtual clock, and the drivers only move bytes.
//!
//! [`run_shard`] runs a [`Handler`] on ready-made sockets ([`ShardSockets`]) with an I/O
//! driver ([`IoMode`]: io_uring or epoll); [`peer_mesh`] links the shards of a group, and the
//! process reaches them all through a [`ShardControl`] with [`Control`] messages (a reload).
//! Each shard counts into its own [`ShardStats`], which a scraper sums.
//!
//! # Map
//!
//! - `engine/`: the query decision (`query`), the miss path (`miss`), upstream attempts
//!   (`attempt`), health probes (`probe`) and reloads (`reload`).
//! - `cache/`: the per-shard packet cache that answers by patching ID, case and TTLs.
//! - `upstream/`: the in-flight table and the upstream TCP pool; `health`: upstream health.
//! - `timer`: every deadline, one enum in one table. `question`: the owned question of a
//!   miss. `peer`, `control`: messages between shards, and from the process.
//! - `tcp`: RFC 7766 framing and client connection bookkeeping (sans-IO).
//! - `driver/`: the io_uring and epoll drivers; all of the project's `unsafe` lives there.
//! - `policy/`: `acl` and `ratelimit`, what a block allows before its cache is consulted.
//! - [`config`]: the immutable configuration a shard runs on (swapped whole on reload).
#![deny(unsafe_code)]
#![warn(unreachable_pub)]

mod align;
mod cache;
pub mod config;
mod control;
mod drain;
mod driver;
mod engine;
mod failure;
pub mod fastpath;
mod handler;
mod health;
mod log_limit;
mod loop_probe;
mod names;
mod peer;
mod policy;
mod question;
mod run;
mod stats;
mod tcp;
mod timer;
mod upstream;

pub use cache::PacketCache;
pub use config::{Config, FastpathConfig, RestartNeeded};
pub use control::Control;
pub use drain::Drain;
pub use driver::fdpass;
pub use driver::{PeerLinks, ShardControl, peer_mesh, uring_available};
pub use engine::{Coalesce, Engine, Group, ImportReport};
pub use handler::{Client, Handler, Link, LinkError, MAX_MESSAGE, Outcome, Protocol, Transmit};
pub use loop_probe::{HINFO, LoopProbe};
pub use peer::PeerMessage;
pub use run::{DRIVER_EPOLL, DRIVER_URING, IoMode, ShardSockets, ShardSpec, run_shard};
pub use stats::{
    Bound, BoundStats, CacheStats, Counter, DURATION_BUCKETS, DurationHistogram, Gauge, LOG_EVERY,
    PolicyStats, QUERY_TYPES, ReachedLog, RequestSlots, RequestStats, SIZE_BUCKETS, ShardStats,
    SizeHistogram, TYPE_SLOTS, UpstreamStats, Writer,
};
