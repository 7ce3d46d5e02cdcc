//! The server: a current-thread tokio runtime on the HTTP thread, hyper's HTTP/1.1 on every
//! connection, each connection a task, so that no client waits for another.
//!
//! Bounds, so that slow or silent clients cost little and never stall the others:
//!
//! - at most [`Limits::max_connections`] connections at once, over every listener: beyond,
//!   a new connection is accepted and closed at once, counted, and logged (the first at
//!   once, then at most one line every 10 s with the count since: [`ReachedLog`]);
//! - a connection gets no buffers until its first bytes arrive, and is closed if none arrive
//!   within [`Limits::request_timeout`]; hyper then closes it when a request head (the first,
//!   or the next on a kept-alive connection) is not complete within that time again, and
//!   answers 431 to a head longer than [`MAX_REQUEST`] bytes or of more than 100 headers;
//! - keep-alive is allowed but a connection lives at most [`Limits::connection_lifetime`]:
//!   then it takes no new request, and the response under way has
//!   [`Limits::close_grace`] more to be sent before the connection is dropped.
//!
//! Header names are written in title case (`Content-Type`), as the old server and Go's
//! `net/http` (CoreDNS) write them.
//!
//! The runtime checks the shutdown flag every [`SHUTDOWN_POLL`]; when it is set, the
//! runtime is dropped with every task, which closes the listeners and the connections.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use shardns_shard::{Counter, ReachedLog};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::Endpoint;
use super::router::Router;

/// Largest request head (request line and headers) read; a longer one is 431.
pub(super) const MAX_REQUEST: usize = 8 * 1024;
/// How often the runtime looks at the shutdown flag.
pub(super) const SHUTDOWN_POLL: Duration = Duration::from_millis(20);
/// Pause after a failed `accept` (out of file descriptors, say) before the next.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// What bounds the connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Limits {
    /// Connections open at once, over every listener.
    pub max_connections: usize,
    /// Time a client has to start a request, and to send a whole request head.
    pub request_timeout: Duration,
    /// Time after which a connection takes no new request.
    pub connection_lifetime: Duration,
    /// Time the response under way still has at the end of the lifetime.
    pub close_grace: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_connections: 1024,
            request_timeout: Duration::from_secs(2),
            connection_lifetime: Duration::from_secs(10),
            close_grace: Duration::from_secs(5),
        }
    }
}

/// The runtime and the listeners it serves, ready to run on the HTTP thread.
#[derive(Debug)]
pub(super) struct Server {
    runtime: Runtime,
    listeners: Vec<Listening>,
    limits: Limits,
    refused: Arc<Counter>,
}

/// One listener, registered with the runtime, and its routes.
#[derive(Debug)]
struct Listening {
    listener: TcpListener,
    addr: SocketAddr,
    router: Arc<Router>,
}

impl Server {
    /// The runtime, with `endpoints`' listeners registered in it.
    pub(super) fn new(
        endpoints: Vec<Endpoint>,
        limits: Limits,
        refused: Arc<Counter>,
    ) -> io::Result<Server> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()?;
        let listeners = {
            let _context = runtime.enter();
            endpoints
                .into_iter()
                .map(|Endpoint { listener, router }| {
                    listener.set_nonblocking(true)?;
                    Ok(Listening {
                        addr: listener.local_addr()?,
                        listener: TcpListener::from_std(listener)?,
                        router: Arc::new(router),
                    })
                })
                .collect::<io::Result<Vec<_>>>()?
        };
        Ok(Server {
            runtime,
            listeners,
            limits,
            refused,
        })
    }

    /// Serves every listener, and runs the self-probe of each router that has one, until
    /// `shutdown` is set; then drops every connection.
    pub(super) fn run(self, shutdown: &AtomicBool) {
        let Server {
            runtime,
            listeners,
            limits,
            refused,
        } = self;
        let permits = Arc::new(Semaphore::new(limits.max_connections));
        // Shared by the accept loops (locked only when the cap is reached).
        let cap = Arc::new(Mutex::new(CapLog {
            refused,
            log: ReachedLog::default(),
        }));
        runtime.block_on(async {
            for listening in listeners {
                if let Some(probe) = listening.router.health_probe() {
                    tokio::spawn(probe.clone().run(listening.addr));
                }
                let cap = Arc::clone(&cap);
                tokio::spawn(accept(listening, Arc::clone(&permits), limits, cap));
            }
            let mut ticks = tokio::time::interval(SHUTDOWN_POLL);
            while !shutdown.load(Ordering::Relaxed) {
                ticks.tick().await;
            }
        });
        // Every task (accept loops, connections, probes) is dropped with the runtime.
        drop(runtime);
    }
}

/// The count and the log limit of connections closed at the cap.
#[derive(Debug)]
struct CapLog {
    refused: Arc<Counter>,
    log: ReachedLog,
}

impl CapLog {
    /// A connection to `addr` was closed at `now` because `max` were open.
    fn refused(&mut self, now: Instant, addr: SocketAddr, max: usize) {
        self.refused.inc();
        let Some(more) = self.log.reached(now) else {
            return;
        };
        tracing::warn!(
            limit = "http_connections",
            "http: {max} connections open, a new connection to {addr} was closed; \
             {more} more closed since the last line"
        );
    }
}

/// Accepts connections on one listener for ever, each served by a task of its own while the
/// cap allows, else closed at once.
async fn accept(
    listening: Listening,
    permits: Arc<Semaphore>,
    limits: Limits,
    cap: Arc<Mutex<CapLog>>,
) {
    let Listening {
        listener,
        addr,
        router,
    } = listening;
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                tracing::debug!(%error, "http: accept on {addr} failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            // Counted before the client can see the close.
            cap.lock().unwrap_or_else(PoisonError::into_inner).refused(
                Instant::now(),
                addr,
                limits.max_connections,
            );
            drop(stream);
            continue;
        };
        tokio::spawn(serve_connection(
            stream,
            Arc::clone(&router),
            limits,
            permit,
        ));
    }
}

/// Serves the requests of one connection within `limits`; the permit is given back when it
/// ends.
async fn serve_connection(
    stream: TcpStream,
    router: Arc<Router>,
    limits: Limits,
    _permit: OwnedSemaphorePermit,
) {
    // A silent connection costs its socket and this task, no buffers: hyper takes it once a
    // byte arrives (`readable` alone may wake up before that).
    let mut first = [0u8; 1];
    match tokio::time::timeout(limits.request_timeout, stream.peek(&mut first)).await {
        Ok(Ok(read)) if read > 0 => {}
        Ok(_) | Err(_) => return,
    }
    let service = service_fn(move |request: hyper::Request<Incoming>| {
        let response = router.respond(request.method(), request.uri());
        std::future::ready(Ok::<_, Infallible>(response))
    });
    let mut connection = pin!(
        http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.request_timeout)
            .max_buf_size(MAX_REQUEST)
            .keep_alive(true)
            // A client that sends its request and then shuts down its write side still gets
            // the answer (without this hyper may see the end of stream first and close).
            .half_close(true)
            .title_case_headers(true)
            .serve_connection(TokioIo::new(stream), service)
    );
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(error) = result {
                tracing::debug!(%error, "http: connection ended");
            }
            return;
        }
        () = tokio::time::sleep(limits.connection_lifetime) => {
            connection.as_mut().graceful_shutdown();
        }
    }
    if tokio::time::timeout(limits.close_grace, connection)
        .await
        .is_err()
    {
        tracing::debug!("http: connection dropped at the end of its lifetime");
    }
}
