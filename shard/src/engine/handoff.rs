//! The cache's part of a hand-off ([`crate::Control::ExportCache`],
//! [`crate::Control::ImportCache`]): the old process's shards export their fresh entries, the
//! new process's shards import them, each keeping the entries it owns, with the lifetime they
//! had left.

use std::time::Instant;

use shardns_wire::Key;

use super::{Coalesce, Engine};
use crate::cache::StoredResponse;
use crate::cache::transfer::{self, Chunks};
use crate::question::LowerQuestion;

/// What an import did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImportReport {
    /// Entries stored in this shard's caches.
    pub stored: usize,
    /// Entries another shard owns (each shard reads every chunk and keeps its own).
    pub others: usize,
    /// Entries with no cache to go to here (no block of that zone with a cache, or a name
    /// the cache does not cover), or that did not parse.
    pub dropped: usize,
}

impl Engine {
    /// Every fresh entry of this shard's caches that this shard owns (with `--coalesce
    /// within`, every entry: each shard holds its own copies), as hand-off chunks
    /// (the cache's `transfer` module).
    pub fn export_cache(&mut self, now: Instant) -> Vec<Vec<u8>> {
        let clock = self.nanos(now);
        let mut chunks = Chunks::default();
        let (group, shard) = (self.group, self.shard);
        let owns = |hash: u64| group.coalesce == Coalesce::Within || group.owner(hash) == shard;
        for (server, cache) in self.caches.iter().enumerate() {
            let (Some(cache), Some(block)) = (cache, self.config.servers.get(server)) else {
                continue;
            };
            cache.export(clock, &block.zone, owns, &mut chunks);
        }
        let entries = chunks.entries;
        let chunks = chunks.finish();
        tracing::debug!(shard, entries, chunks = chunks.len(), "cache exported");
        chunks
    }

    /// Stores the entries of `chunk` (from [`Engine::export_cache`] in another process) that
    /// this shard owns into the cache of the block of their zone, with the lifetime they had
    /// left. Nothing in `chunk` is trusted: a malformed entry ends the chunk, a message that
    /// does not parse is dropped.
    pub fn import_cache(&mut self, now: Instant, chunk: &[u8]) -> ImportReport {
        let clock = self.nanos(now);
        let mut report = ImportReport::default();
        for entry in transfer::entries(chunk) {
            let block = self
                .config
                .servers
                .iter()
                .position(|server| server.zone == entry.zone && server.cache.is_some());
            let (Some(block), Some(response)) = (block, StoredResponse::imported(&entry, clock))
            else {
                report.dropped += 1;
                continue;
            };
            let (qtype, qclass) = response.qtype_qclass();
            let key = Key::from_parts(response.qname(), qtype, qclass, entry.flags);
            let hash = key.hash_seeded(self.group.seed);
            if self.group.coalesce == Coalesce::Across && self.group.owner(hash) != self.shard {
                report.others += 1;
                continue;
            }
            let question = LowerQuestion::of_key(&key, hash);
            if !self.caches_name(block, question.qname()) {
                report.dropped += 1;
                continue;
            }
            if self.store_at(clock, block, &question, entry.kind, response) {
                report.stored += 1;
            }
        }
        report
    }
}
