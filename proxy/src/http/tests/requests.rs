//! What requests get over the wire: routing as before (200, 404, 405 with `Allow`, `HEAD`
//! from `GET`), hyper's answers to what it cannot parse (400, 431), and keep-alive.
//!
//! Where hyper answers differently from the old hand-written server, the test says so:
//! hyper's own 400 and 431 have an empty body and `connection: close`; an HTTP version
//! other than 1.0 and 1.1 is 400 (was 505); a request line longer than the head limit is 431
//! (was 400); an absolute-form target without a path means `/` (404, was 400); a head cut
//! short by the client's end of stream gets no answer (was 400); more than 100 header lines
//! are 431 (no limit before).

use std::net::Shutdown;

use super::*;
use crate::http::server::MAX_REQUEST;

#[test]
fn routes_as_before() {
    let server = TestServer::start(vec![metrics_router()], Limits::default());
    let addr = server.addr();
    for request in [
        &b"GET /metrics HTTP/1.1\r\nHost: x:9253\r\nAccept: text/plain;q=0.9\r\n\r\n"[..],
        b"GET /metrics?x=1 HTTP/1.0\n\n",
        b"GET http://h:1/metrics HTTP/1.1\r\n\r\n",
    ] {
        let reply = exchange(addr, request).unwrap();
        assert_eq!(
            (reply.status, reply.body.as_str()),
            (200, "up 1\n"),
            "{reply:?}"
        );
        assert_eq!(
            reply.header("content-type"),
            Some("text/plain; version=0.0.4; charset=utf-8")
        );
        assert_eq!(reply.header("content-length"), Some("5"));
    }
    // The head as the old server wrote it, in title case (hyper adds `Date` and leaves out
    // `Connection: close` on a kept-alive connection).
    let reply = get(addr, "/metrics");
    assert!(
        reply.head.starts_with(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n\
             Content-Length: 5\r\nDate: "
        ),
        "{reply:?}"
    );
    let post = exchange(addr, b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n").unwrap();
    assert_eq!(post.status, 405);
    assert!(post.head.contains("\r\nAllow: GET, HEAD\r\n"), "{post:?}");
    assert_eq!(post.header("allow"), Some("GET, HEAD"));
    assert_eq!(post.body, "405 method not allowed\n");
    for path in ["/", "/metricsx", "/metrics/", "/health"] {
        let reply = get(addr, path);
        assert_eq!(
            (reply.status, reply.body.as_str()),
            (404, "404 not found\n")
        );
        assert_eq!(
            reply.header("content-type"),
            Some("text/plain; charset=utf-8")
        );
    }
    // The old server's rules that hyper leaves to the router: a method of upper-case
    // letters, a target that is a path.
    for request in [
        &b"get /metrics HTTP/1.1\r\n\r\n"[..],
        b"GET metrics HTTP/1.1\r\n\r\n",
    ] {
        let reply = exchange(addr, request).unwrap();
        assert_eq!(
            (reply.status, reply.body.as_str()),
            (400, "400 bad request\n")
        );
    }
}

#[test]
fn head_has_the_headers_of_get_and_no_body() {
    let server = TestServer::start(vec![metrics_router()], Limits::default());
    let mut stream = connect(server.addr());
    stream.write_all(b"HEAD /metrics HTTP/1.1\r\n\r\n").unwrap();
    let head = read_reply(&mut stream, true).unwrap();
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), Some("5"));
    assert_eq!(head.body, "");
    // No body follows: the next bytes on the kept-alive connection are the next response.
    stream.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").unwrap();
    let get = read_reply(&mut stream, false).unwrap();
    assert!(get.head.starts_with("HTTP/1.1 200 OK\r\n"), "{get:?}");
    assert_eq!(get.body, "up 1\n");
}

#[test]
fn what_hyper_cannot_parse() {
    let server = TestServer::start(vec![metrics_router()], Limits::default());
    let addr = server.addr();
    let status = |request: &[u8]| exchange(addr, request).map(|reply| reply.status);
    for bad in [
        &b"garbage\r\n\r\n"[..],
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\n\n",
        b"\x00\x01\x02\xff\n",
        b"GET /metrics\r\n\r\n",
        b"GET  /metrics HTTP/1.1\r\n\r\n",
        b"GET /metrics HTTP/1.1 x\r\n\r\n",
        b"GET /metrics FTP/1.1\r\n\r\n",
        b"GET /metrics HTTP/1.1\r\nno colon\r\n\r\n",
        b"GET /metrics HTTP/1.1\r\n: empty name\r\n\r\n",
        b"GET /metrics HTTP/1.1\r\nBad Name: x\r\n\r\n",
        b"GET /met\x7frics HTTP/1.1\r\n\r\n",
        b"PRI * HTTP/2.0\r\n\r\n",
        // Was 505.
        b"GET /metrics HTTP/2.0\r\n\r\n",
    ] {
        assert_eq!(status(bad), Some(400), "{bad:?}");
    }
    let reply = exchange(addr, b"garbage\r\n\r\n").unwrap();
    assert_eq!(reply.header("connection"), Some("close"));
    // Was 400: absolute form without a path is `/`.
    assert_eq!(status(b"GET http://host HTTP/1.1\r\n\r\n"), Some(404));
    // Too long: a request line (was 400), or headers, that do not end within the limit.
    assert_eq!(status(&[b'A'; MAX_REQUEST]), Some(431));
    let mut long = b"GET /metrics HTTP/1.1\r\n".to_vec();
    while long.len() < MAX_REQUEST {
        long.extend_from_slice(b"X-Filler: 0123456789\r\n");
    }
    long.extend_from_slice(b"\r\n");
    assert_eq!(status(&long), Some(431));
    // A head just under the limit is served; more than 100 header lines are too many (the
    // old server had no such limit).
    let filler = "x".repeat(MAX_REQUEST - 100);
    let under = format!("GET /metrics HTTP/1.1\r\nX-Filler: {filler}\r\n\r\n");
    assert_eq!(status(under.as_bytes()), Some(200));
    let many = format!("GET /metrics HTTP/1.1\r\n{}\r\n", "X: 1\r\n".repeat(101));
    assert_eq!(status(many.as_bytes()), Some(431));
}

#[test]
fn incomplete_heads_wait_for_more() {
    let server = TestServer::start(vec![metrics_router()], Limits::default());
    let mut stream = connect(server.addr());
    let request = b"GET /metrics HTTP/1.1\r\nHost: x:9253\r\n\r\n";
    for part in [
        &request[..10],
        &request[10..30],
        &request[30..request.len() - 1],
    ] {
        stream.write_all(part).unwrap();
        std::thread::sleep(Duration::from_millis(100));
    }
    stream.write_all(&request[request.len() - 1..]).unwrap();
    let reply = read_reply(&mut stream, false).unwrap();
    assert_eq!(reply.status, 200);
}

#[test]
fn clients_that_leave() {
    let server = TestServer::start(vec![metrics_router()], Limits::default());
    let addr = server.addr();
    // Gone without a request: nothing.
    drop(TcpStream::connect(addr).unwrap());
    let mut silent = connect(addr);
    silent.shutdown(Shutdown::Write).unwrap();
    assert!(closed_silently(&mut silent, CLIENT_TIMEOUT));
    // Half a head, then the end of the stream: closed without an answer (was 400).
    let mut partial = connect(addr);
    partial.write_all(b"GET /met").unwrap();
    partial.shutdown(Shutdown::Write).unwrap();
    assert!(closed_silently(&mut partial, CLIENT_TIMEOUT));
    // A whole request, then the end of the stream: answered.
    let mut whole = connect(addr);
    whole.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").unwrap();
    whole.shutdown(Shutdown::Write).unwrap();
    let reply = read_reply(&mut whole, false).expect("answered after a half close");
    assert_eq!(reply.body, "up 1\n");
    // And the server still serves.
    assert_eq!(get(addr, "/metrics").status, 200);
}

#[test]
fn keep_alive_and_close() {
    let server = TestServer::start(vec![metrics_router()], Limits::default());
    let addr = server.addr();
    let mut stream = connect(addr);
    for _ in 0..3 {
        stream.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!(read_reply(&mut stream, false).unwrap().status, 200);
    }
    // Pipelined, and a 404 does not end the connection.
    stream
        .write_all(b"GET /x HTTP/1.1\r\n\r\nGET /metrics HTTP/1.1\r\n\r\n")
        .unwrap();
    assert_eq!(read_reply(&mut stream, false).unwrap().status, 404);
    assert_eq!(read_reply(&mut stream, false).unwrap().status, 200);
    // `Connection: close`, and HTTP/1.0 without keep-alive, end it after the response.
    for request in [
        &b"GET /metrics HTTP/1.1\r\nConnection: close\r\n\r\n"[..],
        b"GET /metrics HTTP/1.0\r\n\r\n",
    ] {
        let mut stream = connect(addr);
        stream.write_all(request).unwrap();
        assert_eq!(read_reply(&mut stream, false).unwrap().status, 200);
        assert!(closed_silently(&mut stream, CLIENT_TIMEOUT));
    }
}

#[test]
fn a_large_page_is_sent_whole() {
    let page = "x".repeat(3 << 20);
    let expected = page.clone();
    let router = Router::new().get("/metrics", move || Response::ok("text/plain", page.clone()));
    let server = TestServer::start(vec![router], Limits::default());
    let reply = get(server.addr(), "/metrics");
    assert_eq!(reply.status, 200);
    assert!(reply.body == expected, "{} bytes", reply.body.len());
}
