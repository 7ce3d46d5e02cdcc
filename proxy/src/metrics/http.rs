//! A small HTTP/1.1 server for `/metrics`, on one thread, with blocking reads and writes
//! bounded in time and size: one request per connection, answered and closed.
//!
//! The listeners are non-blocking: the loop polls them for new connections and sleeps
//! [`IDLE_POLL`] when none is waiting, so it notices the shutdown flag within that time.
//! `GET` or `HEAD` of `/metrics` (any query string) gets the page; another path 404, another
//! method 405, a request that is not HTTP/1.x 400 (505 for another HTTP version), a head over
//! [`MAX_REQUEST`] bytes 431, a client too slow to send its head 408. Nothing here panics on
//! what a client sends.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use super::exposition::CONTENT_TYPE;

/// Largest request head read (request line and headers).
pub const MAX_REQUEST: usize = 8 * 1024;
/// Time a client has to send its request head.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// Time a client has to take the response.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Sleep between polls of the listeners when no connection is waiting.
pub const IDLE_POLL: Duration = Duration::from_millis(50);
/// After answering, input still arriving is read and dropped for at most this long (and
/// [`DRAIN_LIMIT`] bytes), so that closing does not reset the connection under the answer.
const DRAIN_TIMEOUT: Duration = Duration::from_millis(200);
const DRAIN_LIMIT: usize = 64 * 1024;

/// What a request head asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// `GET /metrics`.
    Metrics,
    /// `HEAD /metrics`: the headers of the page without its body.
    MetricsHead,
    /// An error status with a short text body.
    Status(u16),
}

/// Serves the page `render` makes on `listeners` until `shutdown` is set.
pub fn serve(listeners: &[TcpListener], shutdown: &AtomicBool, render: impl Fn() -> String) {
    while !shutdown.load(Ordering::Relaxed) {
        let mut accepted = false;
        for listener in listeners {
            match listener.accept() {
                Ok((stream, _)) => {
                    accepted = true;
                    handle(stream, &render);
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
fn handle(mut stream: TcpStream, render: &impl Fn() -> String) {
    if stream.set_nonblocking(false).is_err() {
        return;
    }
    let Some(answer) = read_request(&mut stream, Instant::now() + REQUEST_TIMEOUT) else {
        return;
    };
    let response = respond(answer, render);
    if let Err(error) = write_before(&mut stream, &response, Instant::now() + WRITE_TIMEOUT) {
        tracing::debug!(%error, "metrics: cannot send the response");
        return;
    }
    let _ = stream.shutdown(Shutdown::Write);
    drain(&mut stream);
}

/// Reads a request head; `None` when the client went away without sending one.
fn read_request(stream: &mut TcpStream, deadline: Instant) -> Option<Answer> {
    let mut buffer = vec![0u8; MAX_REQUEST];
    let mut filled = 0;
    loop {
        if let Some(answer) = parse(&buffer[..filled]) {
            return Some(answer);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            return Some(Answer::Status(408));
        }
        match stream.read(&mut buffer[filled..]) {
            Ok(0) if filled == 0 => return None,
            Ok(0) => return Some(Answer::Status(400)),
            Ok(read) => filled += read,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error)
                if matches!(
                    error.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Some(Answer::Status(408));
            }
            Err(_) => return None,
        }
    }
}

/// What the request head at the start of `buffer` asks for, or `None` while it is
/// incomplete (and shorter than [`MAX_REQUEST`]).
pub fn parse(buffer: &[u8]) -> Option<Answer> {
    let full = buffer.len() >= MAX_REQUEST;
    let mut lines = buffer.split_inclusive(|&byte| byte == b'\n');
    let request_line = match lines.next() {
        Some(line) if line.ends_with(b"\n") => trim_line_end(line),
        _ => return full.then_some(Answer::Status(400)),
    };
    let Some((method, path)) = request_line_parts(request_line) else {
        return Some(Answer::Status(400));
    };
    if let Err(status) = version_status(request_line) {
        return Some(Answer::Status(status));
    }
    loop {
        let line = match lines.next() {
            Some(line) if line.ends_with(b"\n") => trim_line_end(line),
            _ => return full.then_some(Answer::Status(431)),
        };
        if line.is_empty() {
            break;
        }
        if !header_line(line) {
            return Some(Answer::Status(400));
        }
    }
    Some(match (path, method) {
        ("/metrics", "GET") => Answer::Metrics,
        ("/metrics", "HEAD") => Answer::MetricsHead,
        ("/metrics", _) => Answer::Status(405),
        _ => Answer::Status(404),
    })
}

fn trim_line_end(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// `METHOD SP TARGET SP VERSION` → the method and the target's path (no query string, the
/// scheme and authority of an absolute-form target removed).
fn request_line_parts(line: &[u8]) -> Option<(&str, &str)> {
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return None;
    }
    let target = match target.strip_prefix("http://") {
        Some(rest) => &rest[rest.find('/')?..],
        None => target,
    };
    if !target.starts_with('/') || target.bytes().any(|b| b.is_ascii_control()) {
        return None;
    }
    let path = target.split(['?', '#']).next().unwrap_or(target);
    Some((method, path))
}

/// Checks the version of a request line that [`request_line_parts`] accepted: HTTP/1.0 and
/// 1.1 only (505 for other HTTP versions, 400 for anything else).
fn version_status(line: &[u8]) -> Result<(), u16> {
    let version = line.rsplit(|&b| b == b' ').next().unwrap_or_default();
    match version {
        b"HTTP/1.1" | b"HTTP/1.0" => Ok(()),
        _ if version.starts_with(b"HTTP/") => Err(505),
        _ => Err(400),
    }
}

/// `NAME: VALUE` with a token name and no control bytes but tab in the value.
fn header_line(line: &[u8]) -> bool {
    let Some(colon) = line.iter().position(|&b| b == b':') else {
        return false;
    };
    let (name, value) = (&line[..colon], &line[colon + 1..]);
    !name.is_empty()
        && name
            .iter()
            .all(|&b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b))
        && value.iter().all(|&b| b == b'\t' || !b.is_ascii_control())
}

/// The whole response for `answer`.
fn respond(answer: Answer, render: &impl Fn() -> String) -> Vec<u8> {
    let (status, content_type, body, head) = match answer {
        Answer::Metrics => (200, CONTENT_TYPE, render(), false),
        Answer::MetricsHead => (200, CONTENT_TYPE, render(), true),
        Answer::Status(status) => (
            status,
            "text/plain; charset=utf-8",
            format!("{status} {}\n", reason(status).to_ascii_lowercase()),
            false,
        ),
    };
    let allow = if status == 405 {
        "Allow: GET, HEAD\r\n"
    } else {
        ""
    };
    let mut response = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         {allow}Connection: close\r\n\r\n",
        reason(status),
        body.len()
    )
    .into_bytes();
    if !head {
        response.extend_from_slice(body.as_bytes());
    }
    response
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        505 => "HTTP Version Not Supported",
        _ => "Error",
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

    #[test]
    fn requests() {
        let get = b"GET /metrics HTTP/1.1\r\nHost: x:9253\r\nAccept: text/plain;q=0.9\r\n\r\n";
        assert_eq!(parse(get), Some(Answer::Metrics));
        assert_eq!(
            parse(b"GET /metrics?x=1 HTTP/1.0\n\n"),
            Some(Answer::Metrics)
        );
        assert_eq!(
            parse(b"GET http://h:1/metrics HTTP/1.1\r\n\r\n"),
            Some(Answer::Metrics)
        );
        assert_eq!(
            parse(b"HEAD /metrics HTTP/1.1\r\n\r\n"),
            Some(Answer::MetricsHead)
        );
        assert_eq!(
            parse(b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n"),
            Some(Answer::Status(405))
        );
        for path in ["/", "/metricsx", "/metrics/", "/health"] {
            let request = format!("GET {path} HTTP/1.1\r\n\r\n");
            assert_eq!(parse(request.as_bytes()), Some(Answer::Status(404)));
        }
        // Incomplete heads wait for more.
        for prefix in [&get[..0], &get[..10], &get[..30], &get[..get.len() - 1]] {
            assert_eq!(parse(prefix), None, "{prefix:?}");
        }
    }

    #[test]
    fn bad_requests() {
        for bad in [
            &b"garbage\r\n\r\n"[..],
            b"\x00\x01\x02\xff\n",
            b"GET /metrics\r\n\r\n",
            b"GET  /metrics HTTP/1.1\r\n\r\n",
            b"get /metrics HTTP/1.1\r\n\r\n",
            b"GET metrics HTTP/1.1\r\n\r\n",
            b"GET /metrics HTTP/1.1 x\r\n\r\n",
            b"GET /metrics FTP/1.1\r\n\r\n",
            b"GET /metrics HTTP/1.1\r\nno colon\r\n\r\n",
            b"GET /metrics HTTP/1.1\r\n: empty name\r\n\r\n",
            b"GET /metrics HTTP/1.1\r\nBad Name: x\r\n\r\n",
            b"GET /met\x7frics HTTP/1.1\r\n\r\n",
            b"GET http://host HTTP/1.1\r\n\r\n",
        ] {
            assert_eq!(parse(bad), Some(Answer::Status(400)), "{bad:?}");
        }
        assert_eq!(parse(b"PRI * HTTP/2.0\r\n\r\n"), Some(Answer::Status(400)));
        assert_eq!(
            parse(b"GET /metrics HTTP/2.0\r\n\r\n"),
            Some(Answer::Status(505))
        );
        // Too long: a request line, or headers, that do not end within the limit.
        assert_eq!(parse(&[b'A'; MAX_REQUEST]), Some(Answer::Status(400)));
        let mut long = b"GET /metrics HTTP/1.1\r\n".to_vec();
        while long.len() < MAX_REQUEST {
            long.extend_from_slice(b"X-Filler: 0123456789\r\n");
        }
        assert_eq!(parse(&long), Some(Answer::Status(431)));
        assert_eq!(parse(&long[..MAX_REQUEST - 1]), None);
    }

    #[test]
    fn responses() {
        let page = || "x_total 1\n".to_string();
        let ok = String::from_utf8(respond(Answer::Metrics, &page)).unwrap();
        assert_eq!(
            ok,
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n\
             Content-Length: 10\r\nConnection: close\r\n\r\nx_total 1\n"
        );
        let head = String::from_utf8(respond(Answer::MetricsHead, &page)).unwrap();
        assert!(head.ends_with("Content-Length: 10\r\nConnection: close\r\n\r\n"));
        let not_found = String::from_utf8(respond(Answer::Status(404), &page)).unwrap();
        assert!(not_found.starts_with("HTTP/1.1 404 Not Found\r\n"));
        assert!(not_found.ends_with("\r\n\r\n404 not found\n"));
        let method = String::from_utf8(respond(Answer::Status(405), &page)).unwrap();
        assert!(method.contains("\r\nAllow: GET, HEAD\r\n"));
    }

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
        let listener = crate::sockets::metrics_listener("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = Arc::new(AtomicBool::new(false));
        let (done, stopped) = mpsc::channel();
        let flag = Arc::clone(&shutdown);
        let thread = thread::spawn(move || {
            serve(&[listener], &flag, || "up 1\n".to_string());
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
