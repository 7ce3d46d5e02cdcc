//! Messages between shards. A cache miss is resolved by the key's *owner* shard (chosen by
//! the key's hash), so concurrent misses for one key on any shard cause one upstream query.
//! The engine emits these as [`crate::Transmit::Peer`] and consumes them in
//! [`crate::Handler::handle_peer`]; drivers only carry them (a queue per shard plus a wake-up).
//! The process uses the same path to hand every shard a new configuration on reload.

use std::sync::Arc;

use crate::Protocol;
use crate::cache::{Kind, StoredResponse};
use crate::config::Config;

/// The cache key of a miss, as shards exchange it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerQuestion {
    /// Server block (index into [`crate::Config::servers`]).
    pub server: u16,
    /// The key's hash under the shard group's common seed.
    pub hash: u64,
    /// Lowercased question name (wire form), type, class and key flag bits (DO, CD).
    pub qname: Box<[u8]>,
    pub qtype: u16,
    pub qclass: u16,
    pub flag_bits: u8,
    /// Transport to the upstream: waiters only share a query that went over the same one.
    pub protocol: Protocol,
}

/// What the owner answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerResult {
    /// A fresh response, and where it belongs in the cache (`None`: relay, do not cache).
    Response(StoredResponse, Option<Kind>),
    /// The upstream failed but the owner holds a usable expired entry: serve it stale.
    Stale(StoredResponse),
    /// No answer: reply with this RCODE (SERVFAIL after timeouts, REFUSED when over limits).
    Failed(u16),
}

/// A message from one shard to another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerMessage {
    /// Shard `from` has a miss for `question` (clients waiting, or a refresh). With
    /// `newer_than`, the requester already holds an entry stored at that instant (engine
    /// clock) and only a newer response will do.
    Miss {
        from: u16,
        question: PeerQuestion,
        newer_than: Option<u64>,
    },
    /// The owner's answer to a [`PeerMessage::Miss`].
    Answer {
        question: PeerQuestion,
        result: PeerResult,
    },
    /// From the process (a reload): switch to this configuration, keeping the cache.
    Reconfigure(Arc<Config>),
}
