//! Running one shard: pick the I/O driver, log the listeners, loop until shutdown.

use std::net::{TcpListener, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use crate::Handler;

/// Which I/O driver a shard uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IoMode {
    /// io_uring when the kernel and seccomp allow it, else epoll.
    #[default]
    Auto,
    Uring,
    Epoll,
}

/// The ready-made listening sockets of one shard (created and bound by the process, with
/// `SO_REUSEPORT`, before the shard starts), tagged with their listener index.
#[derive(Debug, Default)]
pub struct ShardSockets {
    pub udp: Vec<(u16, UdpSocket)>,
    pub tcp: Vec<(u16, TcpListener)>,
}

/// What a shard thread needs to run.
#[derive(Debug)]
pub struct ShardSpec {
    pub index: usize,
    pub io: IoMode,
    pub sockets: ShardSockets,
    /// Set by the signal handler; the loop notices within 100 ms and returns.
    pub shutdown: Arc<AtomicBool>,
}

/// Runs a shard's event loop on the calling thread until `spec.shutdown` is set.
pub fn run_shard<H: Handler>(spec: ShardSpec, handler: H) -> std::io::Result<()> {
    let _ = (spec, handler);
    todo!("driver task")
}
