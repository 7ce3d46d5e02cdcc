//! The Prometheus endpoint (`prometheus [ADDRESS]`): every shard counts into its own
//! [`ShardStats`](shardns_shard::ShardStats) (single-writer counters, nothing shared on the
//! query path); a scrape reads them all and sums them.
//!
//! - [`exposition`]: the text format 0.0.4 page, CoreDNS's `coredns_cache_*`,
//!   `coredns_proxy_*` and `coredns_forward_*` series plus shardns's per-upstream
//!   `shardns_upstream_*` and per-shard `shardns_shard_*` series.
//! - `families`: the tables of those families (names, help texts, the counters they read).
//! - [`http`]: a small blocking HTTP/1.1 server on its own thread serving `GET /metrics`.

pub mod exposition;
mod families;
pub mod http;

use std::io;
use std::net::TcpListener;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};

pub use exposition::Exposition;

/// Starts the thread that serves `exposition` on `listeners` (non-blocking, from
/// [`crate::sockets::metrics_listener`]) until `shutdown` is set.
pub fn start(
    listeners: Vec<TcpListener>,
    exposition: Arc<Mutex<Exposition>>,
    shutdown: Arc<AtomicBool>,
) -> io::Result<JoinHandle<()>> {
    thread::Builder::new()
        .name("metrics".to_string())
        .spawn(move || {
            http::serve(&listeners, &shutdown, || {
                exposition
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .render()
            })
        })
}
