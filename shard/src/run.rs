//! Running one shard: pick the I/O driver, log the listeners, loop until shutdown.

use std::io;
use std::net::{TcpListener, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use tracing::info;

use crate::config::Limits;
use crate::driver::{PeerLinks, Reactor, epoll, uring::Uring};
use crate::{Drain, Handler, ShardStats};

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

/// What a shard thread needs to run; `M` is its handler's peer message type.
#[derive(Debug)]
pub struct ShardSpec<M> {
    pub index: usize,
    pub io: IoMode,
    pub sockets: ShardSockets,
    /// Set by the signal handler; the loop notices within 100 ms and returns.
    pub shutdown: Arc<AtomicBool>,
    /// Client TCP idle timeout and connection cap (the rest is the handler's business).
    pub limits: Limits,
    /// This shard's end of the group's peer mesh: entry `index` of [`crate::peer_mesh`]`(shards)`
    /// ([`PeerLinks::single`] for a shard on its own).
    pub peers: PeerLinks<M>,
    /// Where the driver in use is published ([`ShardStats::driver`]), if anywhere.
    pub stats: Option<Arc<ShardStats>>,
    /// The group's drain (a hand-off): once requested, the shard stops reading and returns
    /// when the whole group has stopped reading and it owes nothing ([`Drain`]).
    pub drain: Arc<Drain>,
}

/// [`ShardStats::driver`]'s value for epoll.
pub const DRIVER_EPOLL: u64 = 1;
/// [`ShardStats::driver`]'s value for io_uring.
pub const DRIVER_URING: u64 = 2;

/// Runs a shard's event loop on the calling thread until `spec.shutdown` is set.
///
/// The driver is chosen by `spec.io`: `Auto` uses io_uring when a ring with the needed
/// opcodes and a buffer ring can be set up (logging why not at info otherwise), `Uring`
/// fails with an error naming why it is unavailable, `Epoll` always uses epoll. Every
/// listening socket is logged as `listening on udp ADDR (shard N, DRIVER)`.
///
/// `spec.peers` must belong to shard `spec.index` (else `InvalidInput`): its eventfd joins
/// the reactor's epoll set, messages from the process go to [`Handler::handle_control`] and
/// from other shards to [`Handler::handle_peer`], and what [`Handler::poll_peer`] returns is
/// queued to its shard, which is woken once per round.
pub fn run_shard<H: Handler>(spec: ShardSpec<H::Peer>, mut handler: H) -> io::Result<()> {
    let ShardSpec {
        index,
        io: mode,
        sockets,
        shutdown,
        limits,
        peers,
        stats,
        drain,
    } = spec;
    if peers.index() != index {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "shard {index} given the peer links of shard {} (of {})",
                peers.index(),
                peers.shards()
            ),
        ));
    }
    let ShardSockets { udp, tcp } = sockets;
    let mut reactor = Reactor::new(tcp, &limits)?;
    reactor.count_bounds(index, stats.clone().unwrap_or_default());
    reactor.attach_peers(peers)?;
    let mut ring = match mode {
        IoMode::Epoll => None,
        IoMode::Uring => Some(Uring::new(&udp).map_err(|why| {
            io::Error::new(
                io::ErrorKind::Unsupported,
                format!("io_uring unavailable: {why}"),
            )
        })?),
        IoMode::Auto => match Uring::new(&udp) {
            Ok(r) => Some(r),
            Err(why) => {
                info!("shard {index}: io_uring unavailable ({why}); using epoll");
                None
            }
        },
    };
    let driver = if ring.is_some() { "io_uring" } else { "epoll" };
    if let Some(stats) = &stats {
        let value = if ring.is_some() {
            DRIVER_URING
        } else {
            DRIVER_EPOLL
        };
        stats.driver.set(value);
    }
    for (_, s) in &udp {
        info!(
            "listening on udp {} (shard {index}, {driver})",
            s.local_addr()?
        );
    }
    for (_, l) in reactor.listeners() {
        info!(
            "listening on tcp {} (shard {index}, {driver})",
            l.local_addr()?
        );
    }
    match &mut ring {
        Some(r) => r.run(&mut reactor, &mut handler, &shutdown, &drain),
        None => epoll::run(&udp, &mut reactor, &mut handler, &shutdown, &drain),
    }
}
