//! Upgrades without losing a query: a new shardns started with the same `--handoff-socket`
//! takes the running one's listening sockets and cache over a Unix socket.
//!
//! The exchange ([`channel::Frame`] in order):
//!
//! 1. The new process connects and says which protocol versions it speaks (`Hello`); the old
//!    one picks the highest both speak and answers with its shard count and the sockets it
//!    hands over (`Welcome`, then the descriptors in `Sockets` batches), or `Refuse` with the
//!    reason. Nobody listening: the new process starts as usual; refused: it waits for the
//!    old one to exit first (two processes never set up or tear down the node at once).
//! 2. The new process says `Ready` and the old one, still serving, streams its cache (`Cache`
//!    chunks of entries with their remaining lifetime, `CacheEnd`), bounded in time.
//! 3. The new process starts its shards on the inherited sockets (as many shards as the old
//!    one had), each first storing the entries it owns; both processes read the sockets for a
//!    moment, each datagram reaching one of them, both with the same cache.
//! 4. The new process says `Switch`: the old one stops reading (its shards answer what they
//!    took, close client TCP connections after their owed replies and leave), says `Done`,
//!    and exits 0 without touching the node's interface, rules or pidfile.
//!
//! - [`channel`]: the framing, with descriptors beside the frames.
//! - [`protocol`]: the messages and the versions.
//! - [`predecessor`]: the running process's side (the `handoff` thread).
//! - [`successor`]: the new process's side.

pub(crate) mod channel;
pub(crate) mod predecessor;
pub(crate) mod protocol;
pub(crate) mod successor;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;

use serde::{Deserialize, Serialize};

/// What a handed-over socket is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum SocketKind {
    /// A shard's UDP socket of a DNS listener.
    Udp,
    /// A shard's TCP listener of a DNS listener.
    Tcp,
    /// The TCP listener of an HTTP endpoint.
    Http,
}

/// One handed-over socket, as the `Welcome` message lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SocketInfo {
    pub kind: SocketKind,
    /// The address as the Corefile (or flag) writes it, port 0 included: what the new
    /// process's configuration is matched on.
    pub written: SocketAddr,
    /// The shard that reads it (`None` for HTTP).
    pub shard: Option<usize>,
}

/// The sockets a running process offers to its successor.
#[derive(Debug, Default)]
pub(crate) struct Offer {
    pub infos: Vec<SocketInfo>,
    pub fds: Vec<OwnedFd>,
}

impl Offer {
    /// Adds a socket.
    pub(crate) fn add(&mut self, info: SocketInfo, fd: OwnedFd) {
        self.infos.push(info);
        self.fds.push(fd);
    }
}

/// The sockets a new process received, taken one by one as it binds.
#[derive(Debug, Default)]
pub(crate) struct Inherited {
    sockets: HashMap<(SocketKind, SocketAddr, Option<usize>), OwnedFd>,
    /// The predecessor's shard count (its sockets are per shard).
    pub shards: usize,
}

impl Inherited {
    /// The sockets of `infos`, received as `fds` (in the same order).
    pub(crate) fn new(infos: Vec<SocketInfo>, fds: Vec<OwnedFd>, shards: usize) -> Inherited {
        let sockets = infos
            .into_iter()
            .zip(fds)
            .map(|(info, fd)| ((info.kind, info.written, info.shard), fd))
            .collect();
        Inherited { sockets, shards }
    }

    /// The socket of `kind` for `written` (as the configuration writes it) and `shard`, if
    /// one was handed over.
    pub(crate) fn take(
        &mut self,
        kind: SocketKind,
        written: SocketAddr,
        shard: Option<usize>,
    ) -> Option<OwnedFd> {
        self.sockets.remove(&(kind, written, shard))
    }

    /// How many sockets were not taken (addresses the new configuration does not serve).
    pub(crate) fn left(&self) -> usize {
        self.sockets.len()
    }
}
