//! Reloads that add and remove server blocks (a stub domain added to or dropped from the
//! kube-dns ConfigMap): a configuration built afresh from the Corefile is re-indexed so that
//! every block the running one has keeps its index ([`Config::aligned_to`]).
//!
//! A block's index is what shards, their counters and their messages to each other hold for
//! it. So a block of the new configuration takes the index of the running block with the same
//! zone (one serving the same addresses first); new blocks come after the running ones; a
//! running block the new configuration lacks stays as a *retired* block: same zone, no
//! address serves it, no cache, no forward. Queries already under way for it end as they
//! would have; no new query reaches it; should it come back, it takes its old index (and
//! the cache counters it had).

use std::net::SocketAddr;

use crate::config::{Config, ServerConfig};

impl Config {
    /// `self` (a configuration just built) re-indexed after `running`: see the module. The
    /// result passes [`Config::check_reload`] against `running` unless the listening
    /// addresses differ.
    pub fn aligned_to(&self, running: &Config) -> Config {
        let served_on = |config: &Config, block: usize| -> Vec<SocketAddr> {
            config
                .listeners
                .iter()
                .filter(|listener| listener.servers.contains(&block))
                .map(|listener| listener.addr)
                .collect()
        };
        // The index each new block takes, in two passes: same zone and addresses first, then
        // same zone alone; each running index taken once.
        let mut taken = vec![false; running.servers.len()];
        let mut index: Vec<Option<usize>> = vec![None; self.servers.len()];
        for exact in [true, false] {
            for (block, server) in self.servers.iter().enumerate() {
                if index[block].is_some() {
                    continue;
                }
                let found = (0..running.servers.len()).find(|&old| {
                    !taken[old]
                        && running.servers[old].zone == server.zone
                        && (!exact || served_on(running, old) == served_on(self, block))
                });
                if let Some(old) = found {
                    taken[old] = true;
                    index[block] = Some(old);
                }
            }
        }
        let mut next_index = running.servers.len();
        let index: Vec<usize> = index
            .into_iter()
            .map(|slot| {
                slot.unwrap_or_else(|| {
                    next_index += 1;
                    next_index - 1
                })
            })
            .collect();
        let mut servers: Vec<Option<ServerConfig>> = vec![None; next_index];
        for (block, server) in self.servers.iter().enumerate() {
            servers[index[block]] = Some(server.clone());
        }
        let servers = servers
            .into_iter()
            .enumerate()
            .map(|(slot, server)| server.unwrap_or_else(|| retired(&running.servers[slot])))
            .collect();
        let mut listeners = self.listeners.clone();
        for listener in &mut listeners {
            for server in &mut listener.servers {
                *server = index[*server];
            }
        }
        Config {
            listeners,
            servers,
            upstreams: self.upstreams.clone(),
            limits: self.limits,
        }
    }
}

/// `block` retired: its zone, nothing else.
fn retired(block: &ServerConfig) -> ServerConfig {
    ServerConfig {
        zone: block.zone.clone(),
        zone_text: block.zone_text.clone(),
        cache: None,
        forward: None,
        log_errors: false,
        log_queries: None,
        loop_probe: None,
        acl: None,
        ratelimit: None,
        fastpath: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ForwardConfig, Limits, ListenerConfig, UpstreamConfig};

    fn block(zone: &str) -> ServerConfig {
        let mut wire = Vec::new();
        for label in zone
            .trim_end_matches('.')
            .split('.')
            .filter(|l| !l.is_empty())
        {
            wire.push(label.len() as u8);
            wire.extend_from_slice(label.as_bytes());
        }
        wire.push(0);
        ServerConfig {
            zone: wire,
            zone_text: zone.to_string(),
            cache: None,
            forward: Some(ForwardConfig {
                upstreams: vec![0],
                ..ForwardConfig::default()
            }),
            log_errors: true,
            log_queries: None,
            loop_probe: None,
            acl: None,
            ratelimit: None,
            fastpath: None,
        }
    }

    /// Blocks `zones`, all served on one address.
    fn config(zones: &[&str]) -> Config {
        Config {
            listeners: vec![ListenerConfig {
                addr: "127.0.0.1:53".parse().unwrap(),
                servers: (0..zones.len()).collect(),
            }],
            servers: zones.iter().map(|zone| block(zone)).collect(),
            upstreams: vec![UpstreamConfig {
                addr: "127.0.0.1:5300".parse().unwrap(),
            }],
            limits: Limits::default(),
        }
    }

    fn zones(config: &Config) -> Vec<&str> {
        config
            .servers
            .iter()
            .map(|s| s.zone_text.as_str())
            .collect()
    }

    #[test]
    fn added_blocks_come_after_and_removed_ones_are_retired() {
        let running = config(&["cluster.local.", "in-addr.arpa.", "."]);
        // A stub domain added where the generator writes it, at the end…
        let next = config(&["cluster.local.", "in-addr.arpa.", ".", "acme.local."]);
        let aligned = next.aligned_to(&running);
        assert_eq!(running.check_reload(&aligned), Ok(()));
        assert_eq!(aligned, next, "nothing to move");
        // …or anywhere: running blocks keep their index.
        let next = config(&["acme.local.", "cluster.local.", "."]);
        let aligned = next.aligned_to(&running);
        assert_eq!(running.check_reload(&aligned), Ok(()));
        assert_eq!(
            zones(&aligned),
            ["cluster.local.", "in-addr.arpa.", ".", "acme.local."]
        );
        // The address serves the new set, by the new indices; the retired block by none.
        assert_eq!(aligned.listeners[0].servers, [3, 0, 2]);
        let retired = &aligned.servers[1];
        assert!(retired.forward.is_none() && retired.cache.is_none() && !retired.log_errors);
        // Without alignment the same change needs a restart.
        assert_eq!(
            running.check_reload(&next),
            Err(crate::RestartNeeded::Servers)
        );
        // A retired block coming back takes its index again.
        let back = config(&["cluster.local.", "in-addr.arpa.", "."]).aligned_to(&aligned);
        assert_eq!(
            zones(&back),
            ["cluster.local.", "in-addr.arpa.", ".", "acme.local."]
        );
        assert_eq!(back.listeners[0].servers, [0, 1, 2]);
        assert!(back.servers[1].forward.is_some(), "in service again");
        assert!(back.servers[3].forward.is_none(), "acme.local. retired");
    }

    #[test]
    fn one_zone_on_two_ports_keeps_each_its_own_index() {
        let mut running = config(&["example.", "example."]);
        running.listeners = vec![
            ListenerConfig {
                addr: "127.0.0.1:53".parse().unwrap(),
                servers: vec![0],
            },
            ListenerConfig {
                addr: "127.0.0.1:5353".parse().unwrap(),
                servers: vec![1],
            },
        ];
        // Built again with the blocks in the other order.
        let mut next = running.clone();
        next.listeners[0].servers = vec![1];
        next.listeners[1].servers = vec![0];
        next.servers[0].log_errors = false;
        let aligned = next.aligned_to(&running);
        assert_eq!(aligned.listeners[0].servers, [0]);
        assert_eq!(aligned.listeners[1].servers, [1]);
        assert!(!aligned.servers[1].log_errors, "the 5353 block's settings");
        assert!(aligned.servers[0].log_errors);
    }
}
