//! The peer mesh: how shard threads hand [`PeerMessage`]s to each other.
//!
//! Every shard has an inbox (an unbounded `crossbeam-channel`) and a wake-up eventfd. Its
//! [`PeerLinks`] holds the inbox's receiving end, its own eventfd, and for every shard of
//! the group (itself included) a sender plus that shard's eventfd. Sending is two steps: the
//! message goes on the target's channel at once (`PeerLinks::queue`), and the target's
//! eventfd is written once per round of transmits however many messages went to it
//! (`PeerLinks::flush_wakes`). The [`Reactor`](super::Reactor) has the eventfd in its
//! epoll set, so a woken shard leaves `epoll_wait` (or, on io_uring, its multishot poll on
//! the epoll descriptor completes), drains the eventfd and then the inbox.
//!
//! No message is lost to a race: the sender enqueues before it writes the eventfd, and the
//! receiver reads the eventfd before it empties the inbox, so a message that arrives after
//! the inbox looked empty comes with a wake-up still to be seen.

use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};
use tracing::debug;

use super::sys::EventFd;
use crate::peer::PeerMessage;

/// One shard of the group as seen by another: where to put messages and how to wake it.
struct Peer {
    sender: Sender<Box<PeerMessage>>,
    wake: Arc<EventFd>,
    /// Queued to since the last [`PeerLinks::flush_wakes`].
    marked: bool,
}

/// A shard's end of the peer mesh (see the module documentation). Built by [`peer_mesh`];
/// entry `i` of its result belongs to shard `i`.
pub struct PeerLinks {
    index: usize,
    inbox: Receiver<Box<PeerMessage>>,
    wake: Arc<EventFd>,
    peers: Vec<Peer>,
    /// Indices of the marked peers, in marking order.
    to_wake: Vec<usize>,
}

impl fmt::Debug for PeerLinks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerLinks")
            .field("index", &self.index)
            .field("shards", &self.peers.len())
            .field("queued", &self.inbox.len())
            .field("wake_fd", &self.wake.as_raw_fd())
            .finish()
    }
}

/// Builds the links of a group of `shards` shards: entry `i` is shard `i`'s. Each link can
/// reach every shard of the group, itself included.
pub fn peer_mesh(shards: usize) -> io::Result<Vec<PeerLinks>> {
    let mut ends = Vec::with_capacity(shards);
    for _ in 0..shards {
        let (sender, receiver) = crossbeam_channel::unbounded();
        ends.push((sender, receiver, Arc::new(EventFd::new()?)));
    }
    let links = ends
        .iter()
        .enumerate()
        .map(|(index, (_, inbox, wake))| PeerLinks {
            index,
            inbox: inbox.clone(),
            wake: Arc::clone(wake),
            peers: ends
                .iter()
                .map(|(sender, _, wake)| Peer {
                    sender: sender.clone(),
                    wake: Arc::clone(wake),
                    marked: false,
                })
                .collect(),
            to_wake: Vec::with_capacity(shards),
        })
        .collect();
    Ok(links)
}

/// The process's handle on every shard of a group: it hands them messages from outside the
/// shard threads (a new configuration on reload).
#[derive(Clone)]
pub struct ShardControl {
    shards: Vec<(Sender<Box<PeerMessage>>, Arc<EventFd>)>,
}

impl fmt::Debug for ShardControl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShardControl")
            .field("shards", &self.shards.len())
            .finish()
    }
}

impl ShardControl {
    /// Sends a copy of `message` to every shard and wakes it; returns how many shards
    /// took it (a stopped shard does not).
    pub fn broadcast(&self, message: &PeerMessage) -> usize {
        let mut delivered = 0;
        for (shard, (sender, wake)) in self.shards.iter().enumerate() {
            if sender.send(Box::new(message.clone())).is_err() {
                debug!("control message for stopped shard {shard}; dropped");
                continue;
            }
            if let Err(e) = wake.wake() {
                debug!("waking shard {shard}: {e}");
            }
            delivered += 1;
        }
        delivered
    }
}

impl PeerLinks {
    /// A handle the process keeps to reach every shard of this link's group.
    pub fn control(&self) -> ShardControl {
        ShardControl {
            shards: self
                .peers
                .iter()
                .map(|p| (p.sender.clone(), Arc::clone(&p.wake)))
                .collect(),
        }
    }

    /// The links of a group of one (a shard with no peers).
    pub fn single() -> io::Result<PeerLinks> {
        let mut mesh = peer_mesh(1)?;
        Ok(mesh.pop().expect("a mesh of one has one link"))
    }

    /// This shard's index in the group.
    pub fn index(&self) -> usize {
        self.index
    }

    /// How many shards the group has.
    pub fn shards(&self) -> usize {
        self.peers.len()
    }

    /// Messages waiting in this shard's inbox.
    pub fn queued(&self) -> usize {
        self.inbox.len()
    }

    /// The descriptor that becomes readable when this shard is woken.
    pub(crate) fn wake_fd(&self) -> RawFd {
        self.wake.as_raw_fd()
    }

    /// Puts `message` on shard `shard`'s channel and marks that shard for the next
    /// [`PeerLinks::flush_wakes`]. Returns `false` (after a debug log) if the message was
    /// dropped: no such shard, or it has stopped.
    pub(crate) fn queue(&mut self, shard: usize, message: Box<PeerMessage>) -> bool {
        let Some(peer) = self.peers.get_mut(shard) else {
            debug!(
                "peer message for shard {shard} of a group of {}; dropped",
                self.peers.len()
            );
            return false;
        };
        if peer.sender.send(message).is_err() {
            debug!("peer message for stopped shard {shard}; dropped");
            return false;
        }
        if !peer.marked {
            peer.marked = true;
            self.to_wake.push(shard);
        }
        true
    }

    /// Writes the eventfd of every shard queued to since the last call, once each.
    pub(crate) fn flush_wakes(&mut self) {
        for shard in self.to_wake.drain(..) {
            let peer = &mut self.peers[shard];
            peer.marked = false;
            if let Err(e) = peer.wake.wake() {
                debug!("waking shard {shard}: {e}");
            }
        }
    }

    /// Consumes this shard's pending wake-ups (call before emptying the inbox).
    pub(crate) fn clear_wake(&self) {
        if let Err(e) = self.wake.drain() {
            debug!("peer eventfd read: {e}");
        }
    }

    /// Wakes this shard itself (more messages remain than one turn serves).
    pub(crate) fn wake_self(&self) {
        if let Err(e) = self.wake.wake() {
            debug!("peer eventfd write: {e}");
        }
    }

    /// The next message in this shard's inbox, if any.
    pub(crate) fn try_recv(&self) -> Option<Box<PeerMessage>> {
        // Never disconnected while `self` lives: it holds a sender to its own inbox.
        self.inbox.try_recv().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Protocol;
    use crate::peer::PeerQuestion;

    fn message(n: u64) -> Box<PeerMessage> {
        Box::new(PeerMessage::Miss {
            from: 0,
            question: PeerQuestion {
                server: 0,
                hash: n,
                qname: Box::new([0]),
                qtype: 1,
                qclass: 1,
                flag_bits: 0,
                protocol: Protocol::Udp,
            },
            newer_than: None,
        })
    }

    fn hash_of(m: &PeerMessage) -> u64 {
        match m {
            PeerMessage::Miss { question, .. } | PeerMessage::Answer { question, .. } => {
                question.hash
            }
            PeerMessage::Reconfigure(_) => u64::MAX,
        }
    }

    #[test]
    fn mesh_delivers_and_wakes_once_per_round() {
        let mut mesh = peer_mesh(3).expect("mesh");
        assert_eq!(mesh.len(), 3);
        assert!(mesh.iter().enumerate().all(|(i, l)| l.index() == i));
        assert!(mesh.iter().all(|l| l.shards() == 3));
        for n in 0..5 {
            assert!(mesh[0].queue(2, message(n)));
        }
        assert!(mesh[0].queue(1, message(100)));
        assert_eq!(mesh[2].queued(), 5);
        // Nothing is woken before the round ends.
        assert_eq!(mesh[2].wake.drain().expect("drain"), 0);
        mesh[0].flush_wakes();
        assert_eq!(
            mesh[2].wake.drain().expect("drain"),
            1,
            "one write per round"
        );
        assert_eq!(mesh[1].wake.drain().expect("drain"), 1);
        assert_eq!(mesh[0].wake.drain().expect("drain"), 0);
        let got: Vec<u64> = std::iter::from_fn(|| mesh[2].try_recv())
            .map(|m| hash_of(&m))
            .collect();
        assert_eq!(got, vec![0, 1, 2, 3, 4]);
        // A second round wakes again.
        assert!(mesh[0].queue(2, message(9)));
        mesh[0].flush_wakes();
        mesh[0].flush_wakes();
        assert_eq!(mesh[2].wake.drain().expect("drain"), 1);
        // To itself, through the same path.
        assert!(mesh[1].queue(1, message(7)));
        mesh[1].flush_wakes();
        assert_eq!(mesh[1].wake.drain().expect("drain"), 1);
        assert_eq!(mesh[1].try_recv().map(|m| hash_of(&m)), Some(100));
        assert_eq!(mesh[1].try_recv().map(|m| hash_of(&m)), Some(7));
        assert!(mesh[1].try_recv().is_none());
    }

    #[test]
    fn stopped_or_unknown_shard_drops() {
        let mut mesh = peer_mesh(2).expect("mesh");
        let gone = mesh.pop().expect("link 1");
        drop(gone);
        assert!(!mesh[0].queue(1, message(1)), "stopped shard");
        assert!(!mesh[0].queue(5, message(1)), "no such shard");
        mesh[0].flush_wakes();
        let mut one = PeerLinks::single().expect("single");
        assert_eq!((one.index(), one.shards()), (0, 1));
        assert!(one.queue(0, message(3)));
        one.flush_wakes();
        assert_eq!(one.wake.drain().expect("drain"), 1);
    }
}
