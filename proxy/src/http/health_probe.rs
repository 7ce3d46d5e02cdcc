//! The self-probe of `/health`, as CoreDNS's health plugin does it (`overloaded.go`): every
//! second the HTTP thread requests its own `/health` over TCP and records how long the
//! answer took in `coredns_health_request_duration_seconds`, and every request that failed
//! (a connection error, or no answer within [`PROBE_TIMEOUT`]) in
//! `coredns_health_request_failures_total`, with CoreDNS's names, help texts and buckets
//! (`plugin.SlimTimeBuckets`). The series have no labels: being slow is a symptom of the
//! process, not of one server block. A failed request is also timed; an answer slower than
//! [`SLOW`] or a failure is logged at `warn`, as CoreDNS does. Any answer counts as a
//! success, whatever its status, as in CoreDNS.
//!
//! A request is a fresh connection to the listener's address (the IPv4 loopback for a
//! wildcard address, which a dual-stack listener also accepts), so it waits behind the same
//! accept queue and connection cap as every client. The series are rendered as Prometheus
//! text by [`HealthProbe::render`], which the `/metrics` route appends to its page.

use std::fmt::Write;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::header::{CONNECTION, HOST};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

/// Time between two requests (CoreDNS's ticker).
pub(super) const PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// Time a request has to be answered before it counts as failed (CoreDNS's client timeout).
pub(super) const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// An answer slower than this is logged.
const SLOW: Duration = Duration::from_secs(1);

const DURATION_FAMILY: &str = "coredns_health_request_duration_seconds";
const DURATION_HELP: &str = "Histogram of the time (in seconds) each request took.";
const FAILURES_FAMILY: &str = "coredns_health_request_failures_total";
const FAILURES_HELP: &str = "The number of times the health check failed.";
/// CoreDNS's `plugin.SlimTimeBuckets`, `prometheus.ExponentialBuckets(0.00025, 10, 5)`: the
/// upper bounds in seconds, with their `le` labels.
const BUCKETS: [(f64, &str); 5] = [
    (0.00025, "0.00025"),
    (0.0025, "0.0025"),
    (0.025, "0.025"),
    (0.25, "0.25"),
    (2.5, "2.5"),
];

/// The counts of the self-probe, shared by the probing task and the `/metrics` route (clones
/// share them).
#[derive(Debug, Clone, Default)]
pub(crate) struct HealthProbe {
    observations: Arc<Mutex<Observations>>,
}

/// What the probe has recorded since the start.
#[derive(Debug, Default)]
struct Observations {
    /// Requests whose duration fell in each bucket (not cumulative; longer ones only in
    /// `count`).
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum_seconds: f64,
    failures: u64,
}

/// Why a request to `/health` failed.
#[derive(Debug, thiserror::Error)]
pub(super) enum ProbeError {
    #[error("cannot connect: {0}")]
    Connect(#[from] io::Error),
    #[error("{0}")]
    Http(#[from] hyper::Error),
    #[error("cannot make the request: {0}")]
    Request(#[from] hyper::http::Error),
    #[error("no answer within {} ms", .0.as_millis())]
    Timeout(Duration),
}

impl HealthProbe {
    /// A probe with nothing recorded.
    pub(crate) fn new() -> HealthProbe {
        HealthProbe::default()
    }

    /// Appends the two families, in the Prometheus text format, to `out`.
    pub(crate) fn render(&self, out: &mut String) {
        let observations = self
            .observations
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let _ = writeln!(out, "# HELP {DURATION_FAMILY} {DURATION_HELP}");
        let _ = writeln!(out, "# TYPE {DURATION_FAMILY} histogram");
        let mut cumulative = 0u64;
        for ((_, le), count) in BUCKETS.iter().zip(observations.buckets) {
            cumulative += count;
            let _ = writeln!(out, "{DURATION_FAMILY}_bucket{{le=\"{le}\"}} {cumulative}");
        }
        let count = observations.count;
        let _ = writeln!(out, "{DURATION_FAMILY}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{DURATION_FAMILY}_sum {}", observations.sum_seconds);
        let _ = writeln!(out, "{DURATION_FAMILY}_count {count}");
        let _ = writeln!(out, "# HELP {FAILURES_FAMILY} {FAILURES_HELP}");
        let _ = writeln!(out, "# TYPE {FAILURES_FAMILY} counter");
        let _ = writeln!(out, "{FAILURES_FAMILY} {}", observations.failures);
    }

    /// Requests `/health` at `listening` every [`PROBE_INTERVAL`], the first one interval
    /// after the start, until the runtime drops the task.
    pub(super) async fn run(self, listening: SocketAddr) {
        let target = probe_target(listening);
        let mut ticks = tokio::time::interval_at(Instant::now() + PROBE_INTERVAL, PROBE_INTERVAL);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let _ = self.probe(target, PROBE_TIMEOUT).await;
        }
    }

    /// One request to `/health` at `target`, recorded and logged.
    pub(super) async fn probe(
        &self,
        target: SocketAddr,
        timeout: Duration,
    ) -> Result<StatusCode, ProbeError> {
        let started = Instant::now();
        let result = match tokio::time::timeout(timeout, request_health(target)).await {
            Ok(result) => result,
            Err(_) => Err(ProbeError::Timeout(timeout)),
        };
        let elapsed = started.elapsed();
        self.record(elapsed, result.is_err());
        match &result {
            Err(error) => {
                tracing::warn!(
                    "local health request to \"http://{target}/health\" failed: {error}"
                );
            }
            Ok(_) if elapsed > SLOW => tracing::warn!(
                "local health request to \"http://{target}/health\" took more than 1s: {} ms",
                elapsed.as_millis()
            ),
            Ok(_) => {}
        }
        result
    }

    /// Records one request that took `elapsed` (and `failed`).
    fn record(&self, elapsed: Duration, failed: bool) {
        let mut observations = self
            .observations
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let seconds = elapsed.as_secs_f64();
        if let Some(bucket) = BUCKETS.iter().position(|&(le, _)| seconds <= le) {
            observations.buckets[bucket] += 1;
        }
        observations.count += 1;
        observations.sum_seconds += seconds;
        if failed {
            observations.failures += 1;
        }
    }
}

/// The address to request for a listener bound to `listening`: the IPv4 loopback for a
/// wildcard address.
fn probe_target(listening: SocketAddr) -> SocketAddr {
    if listening.ip().is_unspecified() {
        SocketAddr::new(Ipv4Addr::LOCALHOST.into(), listening.port())
    } else {
        listening
    }
}

/// `GET /health` on a new connection to `target`: the status, once the whole body is read.
async fn request_health(target: SocketAddr) -> Result<StatusCode, ProbeError> {
    let stream = TcpStream::connect(target).await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    let _connection = AbortOnDrop(tokio::spawn(async move {
        let _ = connection.await;
    }));
    let request = Request::get("/health")
        .header(HOST, target.to_string())
        .header(CONNECTION, "close")
        .body(Empty::<Bytes>::new())?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    response.into_body().collect().await?;
    Ok(status)
}

/// Ends the task driving a client connection when the request is done or given up.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_coredns_families() {
        let probe = HealthProbe::new();
        let mut empty = String::new();
        probe.render(&mut empty);
        assert_eq!(
            empty,
            "# HELP coredns_health_request_duration_seconds Histogram of the time (in seconds) \
             each request took.\n\
             # TYPE coredns_health_request_duration_seconds histogram\n\
             coredns_health_request_duration_seconds_bucket{le=\"0.00025\"} 0\n\
             coredns_health_request_duration_seconds_bucket{le=\"0.0025\"} 0\n\
             coredns_health_request_duration_seconds_bucket{le=\"0.025\"} 0\n\
             coredns_health_request_duration_seconds_bucket{le=\"0.25\"} 0\n\
             coredns_health_request_duration_seconds_bucket{le=\"2.5\"} 0\n\
             coredns_health_request_duration_seconds_bucket{le=\"+Inf\"} 0\n\
             coredns_health_request_duration_seconds_sum 0\n\
             coredns_health_request_duration_seconds_count 0\n\
             # HELP coredns_health_request_failures_total The number of times the health \
             check failed.\n\
             # TYPE coredns_health_request_failures_total counter\n\
             coredns_health_request_failures_total 0\n"
        );
        probe.record(Duration::from_micros(250), false);
        probe.record(Duration::from_millis(3), false);
        probe.record(Duration::from_millis(500), false);
        probe.record(Duration::from_secs(3), true);
        let mut page = String::new();
        probe.render(&mut page);
        for line in [
            "_bucket{le=\"0.00025\"} 1\n",
            "_bucket{le=\"0.0025\"} 1\n",
            "_bucket{le=\"0.025\"} 2\n",
            "_bucket{le=\"0.25\"} 2\n",
            "_bucket{le=\"2.5\"} 3\n",
            "_bucket{le=\"+Inf\"} 4\n",
            "_sum 3.50325\n",
            "_count 4\n",
            "coredns_health_request_failures_total 1\n",
        ] {
            assert!(page.contains(line), "{line} in\n{page}");
        }
    }

    #[test]
    fn the_wildcard_is_probed_on_the_loopback() {
        let target = |text: &str| probe_target(text.parse().unwrap()).to_string();
        assert_eq!(target("0.0.0.0:8080"), "127.0.0.1:8080");
        assert_eq!(target("[::]:8080"), "127.0.0.1:8080");
        assert_eq!(target("127.0.0.2:8080"), "127.0.0.2:8080");
        assert_eq!(target("[::1]:8080"), "[::1]:8080");
    }

    /// A refused connection and a listener that never answers are failures, timed.
    #[test]
    fn failures_are_counted() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let probe = HealthProbe::new();
            let closed = {
                let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                listener.local_addr().unwrap()
            };
            let refused = probe.probe(closed, Duration::from_secs(2)).await;
            assert!(
                matches!(refused, Err(ProbeError::Connect(_))),
                "{refused:?}"
            );
            // Accepted by the kernel (backlog) but never answered.
            let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let timeout = Duration::from_millis(100);
            let started = std::time::Instant::now();
            let unanswered = probe.probe(silent.local_addr().unwrap(), timeout).await;
            assert!(
                matches!(unanswered, Err(ProbeError::Timeout(_))),
                "{unanswered:?}"
            );
            assert!(started.elapsed() < Duration::from_secs(2));
            let mut page = String::new();
            probe.render(&mut page);
            assert!(page.contains("_count 2\n"), "{page}");
            assert!(page.contains("failures_total 2\n"), "{page}");
        });
    }
}
