//! Tests of the server over real sockets on 127.0.0.1: the shared fixture (a server on
//! ephemeral ports and a small blocking client) here; what requests get in [`requests`], the
//! bounds (deadlines, cap, shutdown) in [`bounds`], several listeners and the endpoints in
//! [`endpoints`], 500 silent connections in [`slow_clients`].

mod bounds;
mod endpoints;
mod requests;
mod slow_clients;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use shardns_shard::Counter;

use super::router::Response;
use super::server::Limits;
use super::{Endpoint, Router, start_with};
use crate::runtime::sockets::metrics_listener;

/// How long the client waits for any one read.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);

/// A server on one ephemeral port of 127.0.0.1 per router, stopped when dropped.
struct TestServer {
    addrs: Vec<SocketAddr>,
    shutdown: Arc<AtomicBool>,
    /// Connections closed at the cap.
    refused: Arc<Counter>,
    thread: Option<JoinHandle<()>>,
}

impl TestServer {
    fn start(routers: Vec<Router>, limits: Limits) -> TestServer {
        let mut addrs = Vec::new();
        let endpoints = routers
            .into_iter()
            .map(|router| {
                let listener =
                    metrics_listener("127.0.0.1:0".parse().unwrap(), &mut Default::default())
                        .unwrap();
                addrs.push(listener.local_addr().unwrap());
                Endpoint { listener, router }
            })
            .collect();
        let shutdown = Arc::new(AtomicBool::new(false));
        let refused = Arc::new(Counter::default());
        let thread = start_with(
            endpoints,
            Arc::clone(&shutdown),
            limits,
            Arc::clone(&refused),
        )
        .unwrap();
        TestServer {
            addrs,
            shutdown,
            refused,
            thread: Some(thread),
        }
    }

    /// The address of the first router.
    fn addr(&self) -> SocketAddr {
        self.addrs[0]
    }

    /// Sets the shutdown flag and joins the thread: how long that took.
    fn stop(mut self) -> Duration {
        let started = Instant::now();
        self.shutdown.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
        started.elapsed()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A router with `/metrics` answering `up 1\n`.
fn metrics_router() -> Router {
    Router::new().get("/metrics", || {
        Response::ok(crate::metrics::CONTENT_TYPE, "up 1\n".to_string())
    })
}

/// A response as read off the wire.
#[derive(Debug)]
struct Reply {
    status: u16,
    /// The status line and headers, as sent.
    head: String,
    body: String,
}

impl Reply {
    /// The value of header `name` (case-insensitive).
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case(name).then(|| value.trim())
        })
    }
}

/// A client connection.
fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(CLIENT_TIMEOUT)).unwrap();
    stream
}

/// Sends `request` on a new connection and reads one response (`None`: the server closed
/// without one).
fn exchange(addr: SocketAddr, request: &[u8]) -> Option<Reply> {
    let mut stream = connect(addr);
    stream.write_all(request).unwrap();
    read_reply(&mut stream, request.starts_with(b"HEAD "))
}

/// `GET path` (HTTP/1.1, kept alive) on a new connection: the reply, which must come.
fn get(addr: SocketAddr, path: &str) -> Reply {
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n");
    exchange(addr, request.as_bytes()).expect("a response")
}

/// Reads one response from `stream`: its head, then `Content-Length` bytes of body (none
/// for a `HEAD`). `None` when the connection ends before a whole head.
fn read_reply(stream: &mut TcpStream, head_request: bool) -> Option<Reply> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let deadline = Instant::now() + CLIENT_TIMEOUT;
    loop {
        assert!(
            Instant::now() < deadline,
            "no whole response within the timeout"
        );
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buffer[..end]).into_owned();
            let status = head.split(' ').nth(1)?.parse().ok()?;
            let mut reply = Reply {
                status,
                head,
                body: String::new(),
            };
            let length: usize = match reply.header("content-length") {
                Some(_) if head_request => 0,
                Some(length) => length.parse().unwrap(),
                None => 0,
            };
            while buffer.len() < end + 4 + length {
                match stream.read(&mut chunk) {
                    Ok(0) => panic!("the body ended early: {reply:?}"),
                    Ok(read) => buffer.extend_from_slice(&chunk[..read]),
                    Err(error) => panic!("{error}: {reply:?}"),
                }
            }
            reply.body = String::from_utf8_lossy(&buffer[end + 4..]).into_owned();
            return Some(reply);
        }
        match stream.read(&mut chunk) {
            Ok(0) => return None,
            Ok(read) => buffer.extend_from_slice(&chunk[..read]),
            Err(error) if error.kind() == ErrorKind::Interrupted => {}
            Err(error) if error.kind() == ErrorKind::ConnectionReset => return None,
            Err(error) => panic!("reading a response: {error}"),
        }
    }
}

/// Whether the server closed `stream` (end of file or reset) within `within`, without
/// sending anything.
fn closed_silently(stream: &mut TcpStream, within: Duration) -> bool {
    stream.set_read_timeout(Some(within)).unwrap();
    let mut byte = [0u8; 1];
    match stream.read(&mut byte) {
        Ok(0) => true,
        Err(error) => error.kind() == ErrorKind::ConnectionReset,
        Ok(_) => false,
    }
}
