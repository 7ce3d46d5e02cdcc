//! The `acl` and `ratelimit` families, summed over the shards' request slots
//! ([`PolicyStats`](shardns_shard::PolicyStats)):
//!
//! - CoreDNS's `coredns_acl_blocked_requests_total`, `coredns_acl_filtered_requests_total`
//!   and `coredns_acl_dropped_requests_total` `{server, view, zone}`, with `zone` the zone the
//!   deciding rule applied through, and `coredns_acl_allowed_requests_total{server, view}`,
//!   as CoreDNS's plugin/acl names and labels them;
//! - shardns's `shardns_ratelimited_total{action, server, zone}`, `zone` being the block's.
//!
//! `server` is `dns://` and the address the query came in on, `view` empty. A family is
//! written when some block has its directive; as with the Go client, a series appears once
//! it has counted something.

use std::sync::Arc;

use shardns_shard::config::RateLimitAction;
use shardns_shard::{Config, RequestSlots, ShardStats};

use super::exposition::{header, sample, server_label};

/// CoreDNS's `acl` families of the actions that answer, indexed like
/// [`PolicyStats::acl_denied`](shardns_shard::PolicyStats::acl_denied)'s second dimension,
/// with CoreDNS's help texts.
const ACL_DENIED: [(&str, &str); 3] = [
    (
        "coredns_acl_blocked_requests_total",
        "Counter of DNS requests being blocked.",
    ),
    (
        "coredns_acl_filtered_requests_total",
        "Counter of DNS requests being filtered.",
    ),
    (
        "coredns_acl_dropped_requests_total",
        "Counter of DNS requests being dropped.",
    ),
];

/// The labels of one request slot that serves a block.
#[derive(Debug)]
struct Slot {
    index: usize,
    server: String,
    /// The block's zone.
    zone: String,
    /// The block's `acl` zones, by counter slot.
    acl_zones: Vec<String>,
}

/// The `acl` and `ratelimit` families of a configuration.
#[derive(Debug)]
pub(crate) struct PolicySeries {
    slots: Vec<Slot>,
    acl: bool,
    ratelimit: bool,
}

impl PolicySeries {
    /// The series of `config` (with its listeners' bound addresses) in counters with room
    /// for `blocks` server blocks.
    pub(crate) fn new(config: &Config, blocks: usize) -> PolicySeries {
        let slots = RequestSlots::of(config, blocks)
            .labels()
            .into_iter()
            .filter_map(|(index, listener, server)| {
                let block = &config.servers[server?];
                Some(Slot {
                    index,
                    server: server_label(config.listeners.get(listener).map(|l| l.addr)),
                    zone: block.zone_text.clone(),
                    acl_zones: block.acl.as_ref().map_or_else(Vec::new, |acl| {
                        acl.zones.iter().map(|zone| zone.text.clone()).collect()
                    }),
                })
            })
            .collect();
        PolicySeries {
            slots,
            acl: config.servers.iter().any(|block| block.acl.is_some()),
            ratelimit: config.servers.iter().any(|block| block.ratelimit.is_some()),
        }
    }

    /// Writes the families of the directives some block has.
    pub(crate) fn render(&self, out: &mut String, shards: &[Arc<ShardStats>]) {
        // The sum over the shards of what `value` reads in request slot `index`.
        let sum = |index: usize, value: &dyn Fn(&shardns_shard::PolicyStats) -> u64| {
            shards
                .iter()
                .filter_map(|shard| shard.policies.get(index))
                .fold(0u64, |sum, stats| sum.wrapping_add(value(stats)))
        };
        if self.acl {
            for (action, (name, help)) in ACL_DENIED.iter().enumerate() {
                header(out, name, "counter", help);
                let mut series: Vec<(&str, &str, u64)> = Vec::new();
                for slot in &self.slots {
                    for (zone, text) in slot.acl_zones.iter().enumerate() {
                        let count = sum(slot.index, &|stats| {
                            stats.acl_denied.get(zone).map_or(0, |c| c[action].get())
                        });
                        add(&mut series, (&slot.server, text), count);
                    }
                }
                for (server, zone, count) in series.into_iter().filter(|s| s.2 != 0) {
                    let labels = [("server", server), ("view", ""), ("zone", zone)];
                    sample(out, name, &labels, count);
                }
            }
            let name = "coredns_acl_allowed_requests_total";
            header(
                out,
                name,
                "counter",
                "Counter of DNS requests being allowed.",
            );
            let mut series: Vec<(&str, &str, u64)> = Vec::new();
            for slot in &self.slots {
                let count = sum(slot.index, &|stats| stats.acl_allowed.get());
                add(&mut series, (&slot.server, ""), count);
            }
            for (server, _, count) in series.into_iter().filter(|s| s.2 != 0) {
                sample(out, name, &[("server", server), ("view", "")], count);
            }
        }
        if self.ratelimit {
            let name = "shardns_ratelimited_total";
            header(
                out,
                name,
                "counter",
                "Queries over their client's rate (ratelimit), by what they got.",
            );
            for (action, label) in RateLimitAction::LABELS.iter().enumerate() {
                let mut series: Vec<(&str, &str, u64)> = Vec::new();
                for slot in &self.slots {
                    let count = sum(slot.index, &|stats| stats.ratelimited[action].get());
                    add(&mut series, (&slot.server, &slot.zone), count);
                }
                for (server, zone, count) in series.into_iter().filter(|s| s.2 != 0) {
                    let labels = [("action", *label), ("server", server), ("zone", zone)];
                    sample(out, name, &labels, count);
                }
            }
        }
    }
}

/// Adds `count` to the series labelled `(server, zone)`, in order of first appearance (two
/// blocks on one address may count under the same labels).
fn add<'a>(
    series: &mut Vec<(&'a str, &'a str, u64)>,
    (server, zone): (&'a str, &'a str),
    count: u64,
) {
    match series.iter_mut().find(|s| s.0 == server && s.1 == zone) {
        Some(found) => found.2 = found.2.wrapping_add(count),
        None => series.push((server, zone, count)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::corefile::build;

    #[test]
    fn acl_and_ratelimit_families_sum_the_shards_under_their_labels() {
        let config = build(
            "Corefile",
            "example.org:53 {\n bind 127.0.0.1 ::1\n acl a.example.org {\n block\n }\n \
             acl {\n filter\n }\n ratelimit 5\n}\n.:53 {\n bind 127.0.0.1\n acl\n}\n\
             plain.test:53 {\n bind 127.0.0.1\n}\n",
        )
        .unwrap();
        let room = config.servers.len() + 2;
        let slots = RequestSlots::of(&config, room);
        let (org, org_v6, root) = (
            slots.slot(0, 0).unwrap(),
            slots.slot(1, 0).unwrap(),
            slots.slot(0, 1).unwrap(),
        );
        let shards: Vec<Arc<ShardStats>> = (1..=2u64)
            .map(|shard| {
                let stats = ShardStats::with_room(&config, room, 0);
                let policies = &stats.policies;
                policies[org].acl_denied[0][0].add(shard); // blocked, a.example.org.
                policies[org].acl_denied[1][1].add(10 * shard); // filtered, example.org.
                policies[org_v6].acl_denied[0][0].add(100);
                policies[org].acl_allowed.add(3);
                policies[root].acl_allowed.add(4);
                policies[org].ratelimited[0].add(shard);
                policies[org_v6].ratelimited[1].add(7);
                Arc::new(stats)
            })
            .collect();
        let mut page = String::new();
        PolicySeries::new(&config, room).render(&mut page, &shards);
        let v4 = "server=\"dns://127.0.0.1:53\",view=\"\"";
        let v6 = "server=\"dns://[::1]:53\",view=\"\"";
        for line in [
            format!("coredns_acl_blocked_requests_total{{{v4},zone=\"a.example.org.\"}} 3"),
            format!("coredns_acl_blocked_requests_total{{{v6},zone=\"a.example.org.\"}} 200"),
            format!("coredns_acl_filtered_requests_total{{{v4},zone=\"example.org.\"}} 30"),
            format!("coredns_acl_allowed_requests_total{{{v4}}} 14"),
            "shardns_ratelimited_total{action=\"refuse\",server=\"dns://127.0.0.1:53\",\
             zone=\"example.org.\"} 3"
                .to_string(),
            "shardns_ratelimited_total{action=\"truncate\",server=\"dns://[::1]:53\",\
             zone=\"example.org.\"} 14"
                .to_string(),
        ] {
            assert!(page.contains(&format!("{line}\n")), "{line} in\n{page}");
        }
        for absent in [
            "dropped_requests_total{",
            "allowed_requests_total{server=\"dns://[::1]",
        ] {
            assert!(!page.contains(absent), "{absent} in\n{page}");
        }
        assert!(page.contains("# TYPE coredns_acl_dropped_requests_total counter\n"));
        // Without the directives, nothing.
        let plain = build("Corefile", ".:53 {\n}\n").unwrap();
        let mut page = String::new();
        PolicySeries::new(&plain, 1).render(&mut page, &shards);
        assert_eq!(page, "");
    }
}
