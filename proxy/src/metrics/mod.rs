//! The Prometheus page, what the `/metrics` route renders (the route itself is in
//! [`crate::http`]): every shard counts into its own
//! [`ShardStats`](shardns_shard::ShardStats) (single-writer counters, nothing shared on the
//! query path); a scrape reads them all and sums them.
//!
//! - [`exposition`]: the text format 0.0.4 page, CoreDNS's `coredns_cache_*`,
//!   `coredns_proxy_*` and `coredns_forward_*` series plus shardns's per-upstream
//!   `shardns_upstream_*` and per-shard `shardns_shard_*` series.
//! - `families`: the tables of those families (names, help texts, the counters they read).
//! - `requests`: CoreDNS's `coredns_dns_*` request families.
//! - `policy`: CoreDNS's `coredns_acl_*` families and shardns's `shardns_ratelimited_total`.

pub(crate) mod exposition;
mod families;
mod policy;
mod requests;

use std::sync::{Mutex, PoisonError};

pub(crate) use exposition::{
    CONTENT_TYPE, Exposition, ProcessCounters, header, render_setup_errors, sample,
};

/// The page as a scrape sees it now (`exposition` is relabelled by reloads, hence the lock).
pub(crate) fn render(exposition: &Mutex<Exposition>) -> String {
    exposition
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .render()
}
