//! Messages between the shards of one group. A cache miss is resolved by the key's *owner*
//! shard (chosen by the key's hash), so concurrent misses for one key on any shard cause one
//! upstream query. The engine emits them from [`crate::Handler::poll_peer`] and consumes them
//! in [`crate::Handler::handle_peer`]; the drivers only carry them (a queue per shard plus a
//! wake-up) and never look inside: outside this crate a [`PeerMessage`] is opaque.
//!
//! Messages from the process (a new configuration) are not peer messages: they are
//! [`crate::Control`]s, on a channel of their own that a shard reads first.

use shardns_wire::Rcode;

use crate::cache::{Kind, StoredResponse};
use crate::failure::FailureReason;
use crate::question::PendingKey;

/// A message from one shard's engine to another's (boxed: one pointer in the queues).
#[derive(Debug)]
pub struct PeerMessage(pub(crate) Box<Peer>);

/// What a [`PeerMessage`] says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Peer {
    /// Shard `from` has a miss for `key` (clients waiting, or a refresh). With `newer_than`,
    /// the requester already holds an entry stored at that instant (engine clock) and only
    /// a newer response will do.
    Miss {
        from: u16,
        key: PendingKey,
        newer_than: Option<u64>,
    },
    /// The owner's answer to a [`Peer::Miss`].
    Answer { key: PendingKey, result: PeerResult },
}

/// What the owner answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PeerResult {
    /// A fresh response, and where it belongs in the cache (`None`: relay, do not cache).
    Response(StoredResponse, Option<Kind>),
    /// The upstream failed but the owner holds a usable expired entry: serve it stale.
    Stale(StoredResponse),
    /// No answer: reply with this RCODE (SERVFAIL after timeouts, REFUSED when over limits),
    /// for this reason.
    Failed(Rcode, FailureReason),
}

impl From<Peer> for PeerMessage {
    fn from(peer: Peer) -> PeerMessage {
        PeerMessage(Box::new(peer))
    }
}
