//! Running the process: from a built configuration to the end of the run.
//!
//! - [`lifecycle`]: the phases of start-up and shutdown, in order, and how a run ended.
//! - [`sockets`]: the one place sockets are created (DNS listeners of every shard, the HTTP
//!   listeners).
//! - [`shards`]: the counters, spawning and pinning the shard threads, and joining them.
//! - [`signals`]: every signal handler (SIGTERM, SIGINT, SIGUSR1).
//! - [`reload`]: the reload thread (SIGUSR1 and the `reload` directive).
//! - [`pidfile`]: the pidfile, written whole or not at all.
//! - [`fastpath`]: the `fastpath` directive's thread: the BPF program loaded and attached,
//!   the shards' publications written to its map.

pub(crate) mod endpoints;
pub(crate) mod fastpath;
pub(crate) mod handoff;
pub(crate) mod lifecycle;
pub(crate) mod loop_check;
pub(crate) mod node_local;
pub(crate) mod pidfile;
pub(crate) mod readiness;
pub(crate) mod reload;
pub(crate) mod shards;
pub(crate) mod signals;
pub(crate) mod sockets;
