//! Several listeners, each with its own routes, and `/health`, `/ready` and the self-probe
//! served over the wire.

use std::sync::Mutex;

use super::*;
use crate::http::{HealthProbe, ReadinessCheck};

#[test]
fn each_listener_has_its_own_routes() {
    let ready = Arc::new(Mutex::new(Err("shards starting".to_string())));
    let state = Arc::clone(&ready);
    let check: ReadinessCheck = Arc::new(move || state.lock().unwrap().clone());
    let probe = HealthProbe::new();
    let server = TestServer::start(
        vec![
            metrics_router(),
            Router::new().health(probe.clone()),
            Router::new().ready(check),
            metrics_router().health(probe),
        ],
        Limits::default(),
    );
    let [metrics, health, readiness, both] = server.addrs[..] else {
        panic!("{:?}", server.addrs)
    };
    let routes = |addr| ["/metrics", "/health", "/ready"].map(|path| get(addr, path).status);
    assert_eq!(routes(metrics), [200, 404, 404]);
    assert_eq!(routes(health), [404, 200, 404]);
    assert_eq!(routes(readiness), [404, 404, 503]);
    assert_eq!(routes(both), [200, 200, 404]);

    let reply = get(health, "/health");
    assert_eq!(reply.body, "OK");
    assert_eq!(
        reply.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
    let not_ready = get(readiness, "/ready");
    assert_eq!(
        (not_ready.status, not_ready.body.as_str()),
        (503, "shards starting")
    );
    *ready.lock().unwrap() = Ok(());
    let ready = get(readiness, "/ready");
    assert_eq!((ready.status, ready.body.as_str()), (200, "OK"));
    let head = exchange(health, b"HEAD /health HTTP/1.1\r\n\r\n").unwrap();
    assert_eq!(
        (head.status, head.header("content-length")),
        (200, Some("2"))
    );
}

#[test]
fn the_self_probe_requests_health_every_second() {
    let probe = HealthProbe::new();
    let metrics = Router::new().get("/metrics", {
        let probe = probe.clone();
        move || {
            let mut page = String::new();
            probe.render(&mut page);
            Response::ok(crate::metrics::CONTENT_TYPE, page)
        }
    });
    let server = TestServer::start(
        vec![metrics, Router::new().health(probe)],
        Limits::default(),
    );
    let count = |page: &str, series: &str| -> u64 {
        let line = page.lines().find(|line| line.starts_with(series)).unwrap();
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    // The first request is one interval after the start.
    let since = Instant::now();
    let page = loop {
        let page = get(server.addr(), "/metrics").body;
        if count(&page, "coredns_health_request_duration_seconds_count ") >= 2 {
            break page;
        }
        assert!(since.elapsed() < Duration::from_secs(5), "{page}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        since.elapsed() >= Duration::from_millis(1900),
        "{:?}",
        since.elapsed()
    );
    assert_eq!(count(&page, "coredns_health_request_failures_total "), 0);
    // Local requests take well under 250 ms.
    assert_eq!(
        count(
            &page,
            "coredns_health_request_duration_seconds_bucket{le=\"0.25\"} "
        ),
        count(&page, "coredns_health_request_duration_seconds_count ")
    );
}
