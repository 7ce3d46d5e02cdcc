//! What the fast-path thread decides, free of the kernel and the clock: which addresses the
//! program serves under which block number ([`Plan`]), and which published entries the map
//! holds, for which shards, until when ([`Table`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Instant;

use shardns_shard::Config;

/// The addresses served and how entries map to the program's block numbers.
///
/// The program matches a query's destination address and port, and finds the block number
/// to look its key up under; it cannot route by zone. So a number stands for a listener's
/// *set* of server blocks (the stock node-local Corefile puts four blocks on the same
/// addresses): listeners with the same set share a number, and an entry of block `s` is
/// published under each number whose listeners route its name to `s`. A name routed
/// elsewhere on a listener is never under that listener's number, so the program never
/// answers it from the wrong block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Plan {
    /// Every address served, with its number.
    pub(crate) served: Vec<(SocketAddr, u8)>,
    /// Per number: a listener having it (all with it have the same blocks).
    listeners: Vec<usize>,
    /// The interface names and patterns of every `fastpath` directive.
    pub(crate) interfaces: Vec<String>,
    /// Some directive has `force`.
    pub(crate) force: bool,
}

impl Plan {
    /// The plan for `config`; `None` when no block has `fastpath`. Errors past 256 numbers.
    pub(crate) fn of(config: &Config) -> Result<Option<Plan>, String> {
        let blocks: Vec<usize> = (0..config.servers.len())
            .filter(|&s| config.servers[s].fastpath.is_some())
            .collect();
        if blocks.is_empty() {
            return Ok(None);
        }
        let mut plan = Plan {
            served: Vec::new(),
            listeners: Vec::new(),
            interfaces: Vec::new(),
            force: false,
        };
        for &block in &blocks {
            let directive = config.servers[block].fastpath.as_ref().expect("filtered");
            plan.force |= directive.force;
            for interface in &directive.interfaces {
                if !plan.interfaces.contains(interface) {
                    plan.interfaces.push(interface.clone());
                }
            }
        }
        for (index, listener) in config.listeners.iter().enumerate() {
            if !listener.servers.iter().any(|s| blocks.contains(s)) {
                continue;
            }
            let same = |other: &usize| {
                let mut a = config.listeners[*other].servers.clone();
                let mut b = listener.servers.clone();
                a.sort_unstable();
                b.sort_unstable();
                a == b
            };
            let number = match plan.listeners.iter().position(same) {
                Some(number) => number,
                None => {
                    plan.listeners.push(index);
                    plan.listeners.len() - 1
                }
            };
            let number = u8::try_from(number)
                .map_err(|_| "fastpath: more than 256 sets of server blocks".to_string())?;
            plan.served.push((listener.addr, number));
        }
        Ok(Some(plan))
    }

    /// The numbers an entry of block `server` for `qname` is published under.
    pub(crate) fn numbers(&self, config: &Config, server: usize, qname: &[u8]) -> Vec<u8> {
        self.listeners
            .iter()
            .enumerate()
            .filter(|&(_, &listener)| config.block_for(listener, qname) == Some(server))
            .map(|(number, _)| number as u8)
            .collect()
    }
}

/// One entry the map holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Held {
    /// The shards that published it (and have not withdrawn it).
    pub(crate) shards: Vec<usize>,
    pub(crate) expires_at: Instant,
    /// Its server block and kind (success or not), for `coredns_cache_hits_total`.
    pub(crate) server: usize,
    pub(crate) success: bool,
    /// Hits already counted into the metrics.
    pub(crate) counted: u64,
}

/// The entries the map holds, by key.
#[derive(Debug)]
pub(crate) struct Table<K> {
    held: HashMap<K, Held>,
}

impl<K> Default for Table<K> {
    fn default() -> Self {
        Table {
            held: HashMap::new(),
        }
    }
}

impl<K: std::hash::Hash + Eq + Clone> Table<K> {
    /// Shard `shard` published `key` (block `server`, expiring at `expires_at`): the entry
    /// is written (new, or replaced with a later answer), its publishers now include
    /// `shard`.
    pub(crate) fn insert(
        &mut self,
        key: K,
        shard: usize,
        (server, success): (usize, bool),
        expires_at: Instant,
    ) {
        let held = self.held.entry(key).or_insert_with(|| Held {
            shards: Vec::new(),
            expires_at,
            server,
            success,
            counted: 0,
        });
        if !held.shards.contains(&shard) {
            held.shards.push(shard);
        }
        held.expires_at = expires_at;
        held.success = success;
    }

    /// Shard `shard` withdrew `key`: `Some(held)` when no publisher is left and the entry
    /// must leave the map.
    pub(crate) fn withdraw(&mut self, key: &K, shard: usize) -> Option<Held> {
        let held = self.held.get_mut(key)?;
        held.shards.retain(|&s| s != shard);
        if held.shards.is_empty() {
            self.held.remove(key)
        } else {
            None
        }
    }

    /// Shard `shard` withdrew everything: the keys that must leave the map.
    pub(crate) fn withdraw_shard(&mut self, shard: usize) -> Vec<(K, Held)> {
        let keys: Vec<K> = self
            .held
            .iter()
            .filter(|(_, held)| held.shards.contains(&shard))
            .map(|(key, _)| key.clone())
            .collect();
        keys.into_iter()
            .filter_map(|key| self.withdraw(&key, shard).map(|held| (key, held)))
            .collect()
    }

    /// The entries expired at `now`: they leave the map (the program passes them anyway).
    pub(crate) fn expired(&mut self, now: Instant) -> Vec<(K, Held)> {
        let keys: Vec<K> = self
            .held
            .iter()
            .filter(|(_, held)| held.expires_at <= now)
            .map(|(key, _)| key.clone())
            .collect();
        keys.into_iter()
            .filter_map(|key| self.held.remove(&key).map(|held| (key, held)))
            .collect()
    }

    /// Every entry held, for counting their hits.
    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = (&K, &mut Held)> {
        self.held.iter_mut()
    }

    pub(crate) fn len(&self) -> usize {
        self.held.len()
    }
}

#[cfg(test)]
mod tests;
