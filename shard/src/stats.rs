//! Per-shard counters (plain integers owned by the shard; summed when scraped).
/// Counters.
#[derive(Debug, Default, Clone)]
pub struct ShardStats;
