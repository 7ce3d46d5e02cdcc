//! The peer mesh: how shard threads hand messages to each other, and how the process hands
//! them [`Control`]s.
//!
//! Every shard has an inbox (an unbounded `crossbeam-channel`) and a wake-up eventfd. Its
//! [`PeerLinks`] holds the inbox's receiving end, its own eventfd, and for every shard of
//! the group (itself included) a sender plus that shard's eventfd. Sending is two steps: the
//! message goes on the target's channel at once (`PeerLinks::queue`), and the target's
//! eventfd is written once per round of transmits however many messages went to it
//! (`PeerLinks::flush_wakes`). The [`Reactor`](super::Reactor) has the eventfd in its
//! epoll set, so a woken shard leaves `epoll_wait` (or, on io_uring, its multishot poll on
//! the epoll descriptor completes), drains the eventfd, then its control channel (messages
//! from the process, through a [`ShardControl`], which share the eventfd), then the inbox.
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
use crate::Control;

/// One shard of the group as seen by another: where to put messages and how to wake it.
struct Peer<M> {
    sender: Sender<M>,
    control: Sender<Control>,
    wake: Arc<EventFd>,
    /// Queued to since the last [`PeerLinks::flush_wakes`].
    marked: bool,
}

/// A shard's end of the peer mesh (see the module documentation), carrying messages of type
/// `M` (the handler's [`crate::Handler::Peer`]) between shards and [`Control`]s from the
/// process. Built by [`peer_mesh`]; entry `i` of its result belongs to shard `i`.
pub struct PeerLinks<M> {
    index: usize,
    inbox: Receiver<M>,
    control: Receiver<Control>,
    wake: Arc<EventFd>,
    peers: Vec<Peer<M>>,
    /// Indices of the marked peers, in marking order.
    to_wake: Vec<usize>,
}

impl<M> fmt::Debug for PeerLinks<M> {
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
pub fn peer_mesh<M>(shards: usize) -> io::Result<Vec<PeerLinks<M>>> {
    let mut ends = Vec::with_capacity(shards);
    for _ in 0..shards {
        let (sender, receiver) = crossbeam_channel::unbounded();
        let control = crossbeam_channel::unbounded();
        ends.push((sender, receiver, control, Arc::new(EventFd::new()?)));
    }
    let links = ends
        .iter()
        .enumerate()
        .map(|(index, (_, inbox, (_, control), wake))| PeerLinks {
            index,
            inbox: inbox.clone(),
            control: control.clone(),
            wake: Arc::clone(wake),
            peers: ends
                .iter()
                .map(|(sender, _, (control, _), wake)| Peer {
                    sender: sender.clone(),
                    control: control.clone(),
                    wake: Arc::clone(wake),
                    marked: false,
                })
                .collect(),
            to_wake: Vec::with_capacity(shards),
        })
        .collect();
    Ok(links)
}

/// The process's handle on every shard of a group: it hands them [`Control`]s from outside
/// the shard threads (a new configuration on reload).
#[derive(Clone)]
pub struct ShardControl {
    shards: Vec<(Sender<Control>, Arc<EventFd>)>,
}

impl fmt::Debug for ShardControl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShardControl")
            .field("shards", &self.shards.len())
            .finish()
    }
}

impl ShardControl {
    /// Sends a copy of `control` to every shard and wakes it; returns how many shards
    /// took it (a stopped shard does not).
    pub fn broadcast(&self, control: &Control) -> usize {
        let mut delivered = 0;
        for (shard, (sender, wake)) in self.shards.iter().enumerate() {
            if sender.send(control.clone()).is_err() {
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

    /// Sends `control` to shard `shard` alone and wakes it; `false` when it has stopped (or
    /// there is no such shard).
    pub fn send(&self, shard: usize, control: Control) -> bool {
        let Some((sender, wake)) = self.shards.get(shard) else {
            return false;
        };
        if sender.send(control).is_err() {
            return false;
        }
        if let Err(e) = wake.wake() {
            debug!("waking shard {shard}: {e}");
        }
        true
    }

    /// Wakes every shard without a message, so that it looks at its flags at once (a drain
    /// just requested) rather than after its longest sleep.
    pub fn wake_all(&self) {
        for (shard, (_, wake)) in self.shards.iter().enumerate() {
            if let Err(e) = wake.wake() {
                debug!("waking shard {shard}: {e}");
            }
        }
    }
}

impl<M> PeerLinks<M> {
    /// A handle the process keeps to reach every shard of this link's group.
    pub fn control(&self) -> ShardControl {
        ShardControl {
            shards: self
                .peers
                .iter()
                .map(|p| (p.control.clone(), Arc::clone(&p.wake)))
                .collect(),
        }
    }

    /// The links of a group of one (a shard with no peers).
    pub fn single() -> io::Result<PeerLinks<M>> {
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

    /// Messages (control and peer) waiting for this shard.
    pub fn queued(&self) -> usize {
        self.inbox.len() + self.control.len()
    }

    /// The descriptor that becomes readable when this shard is woken.
    pub(crate) fn wake_fd(&self) -> RawFd {
        self.wake.as_raw_fd()
    }

    /// Puts `message` on shard `shard`'s channel and marks that shard for the next
    /// [`PeerLinks::flush_wakes`]. Returns `false` (after a debug log) if the message was
    /// dropped: no such shard, or it has stopped.
    pub(crate) fn queue(&mut self, shard: usize, message: M) -> bool {
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

    /// Consumes this shard's pending wake-ups (call before emptying the channels).
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

    /// The next message from the process, if any (read before peer messages).
    pub(crate) fn try_recv_control(&self) -> Option<Control> {
        // Never disconnected while `self` lives: it holds a sender to its own channel.
        self.control.try_recv().ok()
    }

    /// The next message in this shard's inbox, if any.
    pub(crate) fn try_recv(&self) -> Option<M> {
        // Never disconnected while `self` lives: it holds a sender to its own inbox.
        self.inbox.try_recv().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Config;

    /// A reload to an empty configuration.
    fn reconfigure() -> Control {
        Control::Reconfigure(Arc::new(Config {
            listeners: Vec::new(),
            servers: Vec::new(),
            upstreams: Vec::new(),
            limits: Default::default(),
        }))
    }

    #[test]
    fn mesh_delivers_and_wakes_once_per_round() {
        let mut mesh = peer_mesh::<u64>(3).expect("mesh");
        assert_eq!(mesh.len(), 3);
        assert!(mesh.iter().enumerate().all(|(i, l)| l.index() == i));
        assert!(mesh.iter().all(|l| l.shards() == 3));
        for n in 0..5 {
            assert!(mesh[0].queue(2, n));
        }
        assert!(mesh[0].queue(1, 100));
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
        let got: Vec<u64> = std::iter::from_fn(|| mesh[2].try_recv()).collect();
        assert_eq!(got, vec![0, 1, 2, 3, 4]);
        // A second round wakes again.
        assert!(mesh[0].queue(2, 9));
        mesh[0].flush_wakes();
        mesh[0].flush_wakes();
        assert_eq!(mesh[2].wake.drain().expect("drain"), 1);
        // To itself, through the same path.
        assert!(mesh[1].queue(1, 7));
        mesh[1].flush_wakes();
        assert_eq!(mesh[1].wake.drain().expect("drain"), 1);
        assert_eq!(mesh[1].try_recv(), Some(100));
        assert_eq!(mesh[1].try_recv(), Some(7));
        assert!(mesh[1].try_recv().is_none());
    }

    #[test]
    fn control_messages_travel_apart_and_wake_every_shard() {
        let mesh = peer_mesh::<u64>(2).expect("mesh");
        let control = mesh[1].control();
        assert_eq!(control.broadcast(&reconfigure()), 2);
        for link in &mesh {
            assert_eq!(link.wake.drain().expect("drain"), 1);
            assert_eq!(link.queued(), 1);
            assert!(link.try_recv().is_none(), "not a peer message");
            assert!(matches!(
                link.try_recv_control(),
                Some(Control::Reconfigure(_))
            ));
        }
    }

    #[test]
    fn stopped_or_unknown_shard_drops() {
        let mut mesh = peer_mesh::<u64>(2).expect("mesh");
        let gone = mesh.pop().expect("link 1");
        let control = gone.control();
        drop(gone);
        assert!(!mesh[0].queue(1, 1), "stopped shard");
        assert!(!mesh[0].queue(5, 1), "no such shard");
        mesh[0].flush_wakes();
        assert_eq!(control.broadcast(&reconfigure()), 1);
        let mut one = PeerLinks::single().expect("single");
        assert_eq!((one.index(), one.shards()), (0, 1));
        assert!(one.queue(0, 3u64));
        one.flush_wakes();
        assert_eq!(one.wake.drain().expect("drain"), 1);
    }
}
