//! The HTTP server of the process: `/metrics`, `/health` and `/ready`, served by hyper on a
//! current-thread tokio runtime on one thread, `http`, from every listening address (made by
//! [`crate::runtime::sockets::metrics_listener`]), each address with its own [`Router`].
//!
//! Using it: build one [`Router`] per listening address from the route constructors
//! ([`Router::metrics`], [`Router::health`], [`Router::ready`]; blocks naming the same
//! address share one router), pair each with its listener in an [`Endpoint`], and
//! [`start`] the thread; it stops within [`server::SHUTDOWN_POLL`] of the shutdown flag,
//! then the caller joins it.
//!
//! - [`routes`]: the endpoints (`/metrics`, `/health`, `/ready`) as router methods.
//! - [`router`]: path and method → handler; 404, 405 with `Allow`, `HEAD` from `GET`; the
//!   response a handler returns (status, content type, body).
//! - [`server`]: the runtime, the accept loops, the connection cap and the per-connection
//!   deadlines.
//! - [`health_probe`]: the self-probe of `/health` and its series
//!   (`coredns_health_request_duration_seconds`, `coredns_health_request_failures_total`).

mod health_probe;
mod router;
mod routes;
mod server;

#[cfg(test)]
mod tests;

use std::io;
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::thread::{self, JoinHandle};

use shardns_shard::Counter;

pub(crate) use health_probe::HealthProbe;
pub(crate) use router::{Response, Router};
pub(crate) use routes::ReadinessCheck;

/// One listening address and the routes served there.
#[derive(Debug)]
pub(crate) struct Endpoint {
    /// The listener (from [`crate::runtime::sockets::metrics_listener`]).
    pub listener: TcpListener,
    /// Its routes.
    pub router: Router,
}

/// Starts the `http` thread, serving every endpoint until `shutdown` is set (it then stops
/// within [`server::SHUTDOWN_POLL`], closing every connection). The runtime is made and the
/// listeners registered before the thread starts: an error here is returned, not logged.
/// Connections closed at once because the cap was reached are counted in `refused`
/// (`shardns_http_connections_refused_total`).
pub(crate) fn start(
    endpoints: Vec<Endpoint>,
    shutdown: Arc<AtomicBool>,
    refused: Arc<Counter>,
) -> io::Result<JoinHandle<()>> {
    start_with(endpoints, shutdown, server::Limits::default(), refused)
}

/// [`start`] with other limits (the tests' smaller cap and shorter deadlines).
fn start_with(
    endpoints: Vec<Endpoint>,
    shutdown: Arc<AtomicBool>,
    limits: server::Limits,
    refused: Arc<Counter>,
) -> io::Result<JoinHandle<()>> {
    let server = server::Server::new(endpoints, limits, refused)?;
    thread::Builder::new()
        .name("http".to_string())
        .spawn(move || server.run(&shutdown))
}
