//! The endpoints a [`Router`] can serve, as CoreDNS's plugins serve them:
//!
//! - `/metrics` (`prometheus`): the Prometheus page of the shards' counters, then the
//!   self-probe's series when there is a `/health` ([`Router::metrics`]);
//! - `/health` (`health`): `200 OK` with the body `OK` while the process runs, requested
//!   every second by the server itself ([`Router::health`]);
//! - `/ready` (`ready`): `200 OK` with the body `OK` when a readiness check passes, else
//!   `503 Service Unavailable` with the reason as the body ([`Router::ready`]).
//!
//! A router holds the routes of one listening address, so blocks naming the same address
//! share one: `Router::new().metrics(..).health(..).ready(..)`.

use std::sync::{Arc, Mutex};

use hyper::StatusCode;

use super::health_probe::HealthProbe;
use super::router::{Response, Router};
use crate::metrics::{self, Exposition};

/// The path of the Prometheus page.
const METRICS_PATH: &str = "/metrics";
/// The path of the liveness endpoint.
const HEALTH_PATH: &str = "/health";
/// The path of the readiness endpoint.
const READY_PATH: &str = "/ready";

/// Whether the process is ready to serve: `Err` holds the reason it is not, the body of the
/// 503. Called on each request to `/ready`, on the HTTP thread: it must not block.
pub(crate) type ReadinessCheck = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

impl Router {
    /// Adds `/metrics`: the page of `exposition` (its content type and bytes, as rendered by
    /// [`metrics::render`]), followed by the series of `health_probe` when given.
    pub(crate) fn metrics(
        self,
        exposition: Arc<Mutex<Exposition>>,
        health_probe: Option<HealthProbe>,
    ) -> Router {
        self.get(METRICS_PATH, move || {
            let mut body = metrics::render(&exposition);
            if let Some(probe) = &health_probe {
                probe.render(&mut body);
            }
            Response::ok(metrics::CONTENT_TYPE, body)
        })
    }

    /// Adds `/health`, `200 OK` with the body `OK` (as CoreDNS), and has the server request
    /// it every second, recording into `probe` (give the same probe to [`Router::metrics`]).
    pub(crate) fn health(self, probe: HealthProbe) -> Router {
        self.get(HEALTH_PATH, || {
            Response::text(StatusCode::OK, "OK".to_string())
        })
        .with_health_probe(probe)
    }

    /// Adds `/ready`: `200 OK` with the body `OK` when `check` passes, else
    /// `503 Service Unavailable` with its reason as the body.
    pub(crate) fn ready(self, check: ReadinessCheck) -> Router {
        self.get(READY_PATH, move || match check() {
            Ok(()) => Response::text(StatusCode::OK, "OK".to_string()),
            Err(reason) => {
                tracing::info!("not ready: {reason}");
                Response::text(StatusCode::SERVICE_UNAVAILABLE, reason)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use hyper::Method;
    use shardns_shard::ShardStats;

    use super::*;
    use crate::http::router::TEXT;

    fn get(router: &Router, path: &str) -> Response {
        router.answer(&Method::GET, &path.parse().unwrap()).0
    }

    fn exposition() -> Arc<Mutex<Exposition>> {
        let config = crate::corefile::build("Corefile", ".:53 {\n cache 30\n}\n").unwrap();
        let stats = (0..2)
            .map(|_| Arc::new(ShardStats::new(&config, config.upstreams.len())))
            .collect();
        Arc::new(Mutex::new(Exposition::new(
            &config,
            stats,
            Default::default(),
        )))
    }

    #[test]
    fn health_is_ok() {
        let router = Router::new().health(HealthProbe::new());
        let health = get(&router, "/health");
        assert_eq!(health, Response::text(StatusCode::OK, "OK".into()));
        assert_eq!(health.content_type, TEXT);
        assert!(router.health_probe().is_some());
        assert_eq!(get(&router, "/ready").status, StatusCode::NOT_FOUND);
    }

    #[test]
    fn ready_follows_its_check() {
        let started = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&started);
        let check: ReadinessCheck = Arc::new(move || {
            if flag.load(Ordering::Relaxed) {
                Ok(())
            } else {
                Err("shards starting".to_string())
            }
        });
        let router = Router::new().health(HealthProbe::new()).ready(check);
        let waiting = get(&router, "/ready");
        assert_eq!(waiting.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(waiting.body, "shards starting");
        assert_eq!(waiting.content_type, TEXT);
        started.store(true, Ordering::Relaxed);
        assert_eq!(
            get(&router, "/ready"),
            Response::text(StatusCode::OK, "OK".into())
        );
        // Both routes on one router.
        assert_eq!(get(&router, "/health").status, StatusCode::OK);
        assert_eq!(router.paths().collect::<Vec<_>>(), ["/health", "/ready"]);
    }

    #[test]
    fn metrics_is_the_exposition_and_then_the_probe() {
        let exposition = exposition();
        let expected = metrics::render(&exposition);
        assert!(expected.contains("shardns_shard_"), "{expected}");
        let plain = Router::new().metrics(Arc::clone(&exposition), None);
        assert_eq!(
            get(&plain, "/metrics"),
            Response::ok(metrics::CONTENT_TYPE, expected.clone())
        );
        assert!(plain.health_probe().is_none());
        let probe = HealthProbe::new();
        let with_probe = Router::new().metrics(exposition, Some(probe.clone()));
        let page = get(&with_probe, "/metrics").body;
        let mut probe_series = String::new();
        probe.render(&mut probe_series);
        assert_eq!(page, format!("{expected}{probe_series}"));
        // The metrics router only renders the probe; the router with `/health` runs it.
        assert!(with_probe.health_probe().is_none());
    }
}
