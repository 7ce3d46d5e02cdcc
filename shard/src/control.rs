//! Messages from the process to its shards. They travel on a channel of their own, beside the
//! shards' [`crate::PeerMessage`]s, and a shard reads them first when it wakes: a reload now,
//! and the steps of a shutdown or hand-off as those are added.

use std::sync::Arc;

use crate::Config;

/// What the process asks of a shard ([`crate::ShardControl::broadcast`] sends one to every
/// shard; [`crate::Handler::handle_control`] receives it).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Control {
    /// Switch to this configuration (a reload), keeping the cache. A configuration that
    /// [`Config::check_reload`] refuses is logged and ignored.
    Reconfigure(Arc<Config>),
}
