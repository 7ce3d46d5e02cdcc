//! The one HTTP server of the process: every endpoint is a route of one [`Router`], served on
//! one thread from every listener (the `prometheus` addresses, made by
//! [`crate::runtime::sockets::metrics_listener`]).
//!
//! - [`routes`]: the table of every route (today `/metrics`); a new endpoint is one more line
//!   there and the handler it names.
//! - [`router`]: path and method → handler; 404, 405 with `Allow`, `HEAD` from `GET`; the
//!   response bytes.
//! - [`request`]: reading and checking the request head.
//! - [`server`]: the accept loop and the handling of one connection, bounded in time and size.

mod request;
mod router;
mod server;

use std::io;
use std::net::TcpListener;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};

pub(crate) use router::{Page, Router};

use crate::metrics::{self, Exposition};

/// Every route the server answers: `/metrics`, the Prometheus page of `exposition`.
pub(crate) fn routes(exposition: Arc<Mutex<Exposition>>) -> Router {
    Router::new().get("/metrics", move || Page {
        content_type: metrics::CONTENT_TYPE,
        body: metrics::render(&exposition),
    })
}

/// Starts the thread that serves `router` on `listeners` (non-blocking, from
/// [`crate::runtime::sockets::metrics_listener`]) until `shutdown` is set.
pub(crate) fn start(
    listeners: Vec<TcpListener>,
    router: Router,
    shutdown: Arc<AtomicBool>,
) -> io::Result<JoinHandle<()>> {
    // Named for its first and, so far, only route.
    thread::Builder::new()
        .name("metrics".to_string())
        .spawn(move || server::serve(&listeners, &shutdown, &router))
}
