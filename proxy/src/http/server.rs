//! The accept loop and the handling of one connection: a small HTTP/1.1 server on one
//! thread, with blocking reads and writes bounded in time and size: one request per
//! connection, answered and closed.
//!
//! The listeners are non-blocking: the loop polls them for new connections and sleeps
//! [`IDLE_POLL`] when none is waiting, so it notices the shutdown flag within that time.
//! The request head is read by [`super::request`] and answered by the [`Router`]; a client too
//! slow to send its head gets 408. Nothing here panics on what a client sends.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use super::request::{self, MAX_REQUEST, Request};
use super::router::Router;

/// Time a client has to send its request head.
pub(super) const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// Time a client has to take the response.
pub(super) const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Sleep between polls of the listeners when no connection is waiting.
pub(super) const IDLE_POLL: Duration = Duration::from_millis(50);
/// After answering, input still arriving is read and dropped for at most this long (and
/// [`DRAIN_LIMIT`] bytes), so that closing does not reset the connection under the answer.
const DRAIN_TIMEOUT: Duration = Duration::from_millis(200);
const DRAIN_LIMIT: usize = 64 * 1024;

/// Serves the routes of `router` on `listeners` until `shutdown` is set.
pub(super) fn serve(listeners: &[TcpListener], shutdown: &AtomicBool, router: &Router) {
    while !shutdown.load(Ordering::Relaxed) {
        let mut accepted = false;
        for listener in listeners {
            match listener.accept() {
                Ok((stream, _)) => {
                    accepted = true;
                    handle(stream, router);
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                Err(error) => tracing::debug!(%error, "metrics: accept failed"),
            }
        }
        if !accepted {
            thread::sleep(IDLE_POLL);
        }
    }
}

/// Reads one request from `stream`, answers it and closes.
fn handle(mut stream: TcpStream, router: &Router) {
    if stream.set_nonblocking(false).is_err() {
        return;
    }
    let Some(head) = read_request(&mut stream, Instant::now() + REQUEST_TIMEOUT) else {
        return;
    };
    let response = router.respond(router.answer(head));
    if let Err(error) = write_before(&mut stream, &response, Instant::now() + WRITE_TIMEOUT) {
        tracing::debug!(%error, "metrics: cannot send the response");
        return;
    }
    let _ = stream.shutdown(Shutdown::Write);
    drain(&mut stream);
}

/// Reads a request head: the request, or the error status it gets; `None` when the client
/// went away without sending one.
fn read_request(stream: &mut TcpStream, deadline: Instant) -> Option<Result<Request, u16>> {
    let mut buffer = vec![0u8; MAX_REQUEST];
    let mut filled = 0;
    loop {
        if let Some(head) = request::parse(&buffer[..filled]) {
            return Some(head);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            return Some(Err(408));
        }
        match stream.read(&mut buffer[filled..]) {
            Ok(0) if filled == 0 => return None,
            Ok(0) => return Some(Err(400)),
            Ok(read) => filled += read,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error)
                if matches!(
                    error.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Some(Err(408));
            }
            Err(_) => return None,
        }
    }
}

/// Writes all of `bytes` unless `deadline` passes first.
fn write_before(stream: &mut TcpStream, bytes: &[u8], deadline: Instant) -> io::Result<()> {
    let mut rest = bytes;
    while !rest.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        stream.set_write_timeout(Some(left))?;
        match stream.write(rest) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(written) => rest = &rest[written..],
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

/// Reads and drops what the client still sends, until it closes or a bound is reached.
fn drain(stream: &mut TcpStream) {
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    let mut buffer = [0u8; 4096];
    let mut total = 0;
    while total < DRAIN_LIMIT {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            return;
        }
        match stream.read(&mut buffer) {
            Ok(0) | Err(_) => return,
            Ok(read) => total += read,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::mpsc;

    use super::*;
    use crate::http::router::Page;

    /// Sends `request` and reads the whole response (the server closes).
    fn exchange(addr: std::net::SocketAddr, request: &[u8]) -> String {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        stream.write_all(request).unwrap();
        let mut response = Vec::new();
        stream.read_to_end(&mut response).unwrap();
        String::from_utf8_lossy(&response).into_owned()
    }

    #[test]
    fn serves_until_shutdown() {
        let listener =
            crate::runtime::sockets::metrics_listener("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = Arc::new(AtomicBool::new(false));
        let (done, stopped) = mpsc::channel();
        let flag = Arc::clone(&shutdown);
        let router = Router::new().get("/metrics", || Page {
            content_type: "text/plain",
            body: "up 1\n".to_string(),
        });
        let thread = thread::spawn(move || {
            serve(&[listener], &flag, &router);
            let _ = done.send(());
        });
        let ok = exchange(addr, b"GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n");
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.ends_with("\r\n\r\nup 1\n"), "{ok}");
        let missing = exchange(addr, b"GET /other HTTP/1.1\r\n\r\n");
        assert!(missing.starts_with("HTTP/1.1 404 "), "{missing}");
        let garbage = exchange(addr, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\n\n");
        assert!(garbage.starts_with("HTTP/1.1 400 "), "{garbage}");
        // Clients that leave without a request get nothing; half a head is a bad request.
        drop(TcpStream::connect(addr).unwrap());
        let mut silent = TcpStream::connect(addr).unwrap();
        silent
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        silent.shutdown(Shutdown::Write).unwrap();
        let mut nothing = String::new();
        silent.read_to_string(&mut nothing).unwrap();
        assert_eq!(nothing, "");
        let mut partial = TcpStream::connect(addr).unwrap();
        partial
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        partial.write_all(b"GET /met").unwrap();
        partial.shutdown(Shutdown::Write).unwrap();
        let mut rest = String::new();
        partial.read_to_string(&mut rest).unwrap();
        assert!(rest.starts_with("HTTP/1.1 400 "), "{rest}");
        let again = exchange(addr, b"GET /metrics HTTP/1.0\r\n\r\n");
        assert!(again.ends_with("up 1\n"), "{again}");
        shutdown.store(true, Ordering::Relaxed);
        stopped
            .recv_timeout(Duration::from_secs(5))
            .expect("the server stops on shutdown");
        thread.join().unwrap();
    }
}
