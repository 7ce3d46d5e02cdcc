//! The bounds on connections: the request deadline (silent, slow and idle clients are
//! closed, without a 408: hyper closes), the lifetime of a kept-alive connection, the
//! connection cap, and shutdown within [`SHUTDOWN_POLL`] and a margin.

use super::*;
use crate::http::server::SHUTDOWN_POLL;

/// Limits with a short request deadline and lifetime.
fn short() -> Limits {
    Limits {
        max_connections: 16,
        request_timeout: Duration::from_millis(300),
        connection_lifetime: Duration::from_millis(800),
        close_grace: Duration::from_millis(300),
    }
}

/// Whether the server closed `stream` between `not_before` and `by` after `since`.
fn closed_between(stream: &mut TcpStream, since: Instant, not_before: Duration, by: Duration) {
    assert!(closed_silently(stream, by.saturating_sub(since.elapsed())));
    let after = since.elapsed();
    assert!(after >= not_before, "closed after {after:?}");
}

#[test]
fn silent_slow_and_idle_clients_are_closed() {
    let server = TestServer::start(vec![metrics_router()], short());
    let addr = server.addr();
    let since = Instant::now();
    let mut silent = connect(addr);
    let mut slow = connect(addr);
    slow.write_all(b"GET /metrics HTTP/1.1\r\nHost").unwrap();
    let mut idle = connect(addr);
    idle.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").unwrap();
    assert_eq!(read_reply(&mut idle, false).unwrap().status, 200);
    let (at_least, at_most) = (Duration::from_millis(250), Duration::from_millis(1500));
    closed_between(&mut silent, since, at_least, at_most);
    closed_between(&mut idle, since, at_least, at_most);
    // The slow head had one deadline to start and one to finish.
    closed_between(&mut slow, since, at_least, at_most * 2);
    // Others are served meanwhile and after.
    assert_eq!(get(addr, "/metrics").status, 200);
}

#[test]
fn a_kept_alive_connection_ends_with_its_lifetime() {
    let server = TestServer::start(vec![metrics_router()], short());
    let since = Instant::now();
    let mut stream = connect(server.addr());
    let mut answered = 0;
    // A request every 100 ms keeps it from idling out; the lifetime (800 ms) ends it.
    while since.elapsed() < Duration::from_secs(3) {
        if stream.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").is_err() {
            break;
        }
        match read_reply(&mut stream, false) {
            Some(reply) => assert_eq!(reply.status, 200),
            None => break,
        }
        answered += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    let lasted = since.elapsed();
    assert!(answered >= 4, "{answered} answers in {lasted:?}");
    assert!(
        lasted >= Duration::from_millis(700) && lasted < Duration::from_millis(2000),
        "{lasted:?}"
    );
}

#[test]
fn the_cap_closes_new_connections_at_once() {
    let limits = Limits {
        max_connections: 4,
        request_timeout: Duration::from_secs(10),
        ..Limits::default()
    };
    let server = TestServer::start(vec![metrics_router()], limits);
    let addr = server.addr();
    let mut held: Vec<TcpStream> = (0..4).map(|_| connect(addr)).collect();
    // The kernel queues connections in order: the held ones are accepted (and counted)
    // before the next.
    let since = Instant::now();
    let mut refused = connect(addr);
    refused.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").unwrap();
    assert!(closed_silently(&mut refused, Duration::from_secs(2)));
    assert!(
        since.elapsed() < Duration::from_secs(1),
        "{:?}",
        since.elapsed()
    );
    // Counted (shardns_http_connections_refused_total), each one.
    assert_eq!(server.refused.get(), 1);
    for _ in 0..3 {
        let mut more = connect(addr);
        assert!(closed_silently(&mut more, Duration::from_secs(2)));
    }
    assert_eq!(server.refused.get(), 4);
    // One held connection asks and is served: the cap counts connections, not requests.
    held[0].write_all(b"GET /metrics HTTP/1.1\r\n\r\n").unwrap();
    assert_eq!(read_reply(&mut held[0], false).unwrap().status, 200);
    // One leaves: its place is taken by the next client.
    drop(held.pop());
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        if let Some(reply) = exchange(addr, b"GET /metrics HTTP/1.1\r\n\r\n") {
            assert_eq!(reply.status, 200);
            break;
        }
        assert!(Instant::now() < deadline, "no place freed");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn stops_promptly_with_connections_open() {
    let server = TestServer::start(vec![metrics_router()], Limits::default());
    let addr = server.addr();
    let mut silent = connect(addr);
    let mut slow = connect(addr);
    slow.write_all(b"GET /metrics HTTP/1.1\r\n").unwrap();
    let mut kept = connect(addr);
    kept.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").unwrap();
    assert_eq!(read_reply(&mut kept, false).unwrap().status, 200);
    let took = server.stop();
    eprintln!("stopped in {took:?}");
    assert!(
        took < SHUTDOWN_POLL + Duration::from_millis(150),
        "{took:?}"
    );
    for stream in [&mut silent, &mut slow, &mut kept] {
        assert!(closed_silently(stream, Duration::from_millis(500)));
    }
    assert!(TcpStream::connect(addr).is_err(), "the listener is closed");
}
