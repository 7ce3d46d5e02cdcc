//! Messages from the process to its shards. They travel on a channel of their own, beside the
//! shards' [`crate::PeerMessage`]s, and a shard reads them first when it wakes: a reload, and
//! the cache's part of a hand-off.

use std::sync::Arc;
use std::sync::mpsc::Sender;

use crate::Config;

/// What the process asks of a shard ([`crate::ShardControl::broadcast`] sends one to every
/// shard; [`crate::Handler::handle_control`] receives it).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Control {
    /// Switch to this configuration (a reload), keeping the cache. A configuration that
    /// [`Config::check_reload`] refuses is logged and ignored.
    Reconfigure(Arc<Config>),
    /// A hand-off: send every fresh cache entry this shard owns, as chunks
    /// ([`crate::Engine::export_cache`]), then an empty chunk to say it is done.
    ExportCache(Sender<Vec<u8>>),
    /// A hand-off: store the entries of this chunk (from another process's export) that this
    /// shard owns ([`crate::Engine::import_cache`]).
    ImportCache(Arc<[u8]>),
    /// Hits the in-kernel fast path answered for entries this shard published
    /// ([`crate::Engine::kernel_hits`]).
    KernelHits(Arc<[crate::fastpath::KernelHit]>),
}
