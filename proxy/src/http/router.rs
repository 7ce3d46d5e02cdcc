//! The router: which handler answers a request, by path and method, and the HTTP response
//! made of what it returns.
//!
//! A route is a path (matched exactly, after the query string is removed) and the handler of
//! its `GET`, which also serves `HEAD` (the same headers, no body). An unknown path is 404, a
//! known path with another method 405 with an `Allow` header. A handler returns a
//! [`Response`]: a status, a content type and a body. Error statuses get a short text body.
//!
//! Requests are parsed by hyper, which answers what it cannot parse itself (400, 431); the
//! router adds the checks hyper leaves to it: a method of upper-case letters only and a
//! target that is a path (origin or absolute form), else 400.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{ALLOW, CONTENT_LENGTH, CONTENT_TYPE, HeaderValue};
use hyper::{Method, StatusCode, Uri};

use super::health_probe::HealthProbe;

/// The methods every route allows: `GET`, and `HEAD` served from it.
const ALLOWED: &str = "GET, HEAD";

/// The content type of text bodies: error pages, `/health`, `/ready`.
pub(crate) const TEXT: &str = "text/plain; charset=utf-8";

/// What a handler returns: a status, a content type and a body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Response {
    /// The status (`200 OK`, `503 Service Unavailable`, ...).
    pub status: StatusCode,
    /// The `Content-Type` header.
    pub content_type: &'static str,
    /// The body.
    pub body: String,
}

impl Response {
    /// `200 OK` with `body` of `content_type`.
    pub(crate) fn ok(content_type: &'static str, body: String) -> Response {
        Response {
            status: StatusCode::OK,
            content_type,
            body,
        }
    }

    /// `status` with a plain text `body`.
    pub(crate) fn text(status: StatusCode, body: String) -> Response {
        Response {
            status,
            content_type: TEXT,
            body,
        }
    }

    /// The short text page of an error status: `404 not found\n`.
    fn error(status: StatusCode) -> Response {
        let reason = status.canonical_reason().unwrap_or("error");
        let body = format!("{} {}\n", status.as_u16(), reason.to_ascii_lowercase());
        Response::text(status, body)
    }
}

/// Makes the response of one route, on each request.
type Handler = Arc<dyn Fn() -> Response + Send + Sync>;

/// A path and the handler of its `GET`.
#[derive(Clone)]
struct Route {
    path: &'static str,
    get: Handler,
}

/// The routes served at one listening address, and the self-probe of its `/health`, if any.
#[derive(Clone, Default)]
pub(crate) struct Router {
    routes: Vec<Route>,
    /// Requests this router's `/health` every second (see [`HealthProbe`]).
    health_probe: Option<HealthProbe>,
}

impl Router {
    /// A router without routes: every request is 404.
    pub(crate) fn new() -> Router {
        Router::default()
    }

    /// Adds the route `path` (replacing one already there), answered by `handler` for `GET`
    /// and `HEAD`.
    pub(crate) fn get(
        mut self,
        path: &'static str,
        handler: impl Fn() -> Response + Send + Sync + 'static,
    ) -> Router {
        self.routes.retain(|route| route.path != path);
        self.routes.push(Route {
            path,
            get: Arc::new(handler),
        });
        self
    }

    /// Has the server request this router's `/health` every second and record it in `probe`.
    pub(super) fn with_health_probe(mut self, probe: HealthProbe) -> Router {
        self.health_probe = Some(probe);
        self
    }

    /// The self-probe of this router's `/health`, if it has one.
    pub(super) fn health_probe(&self) -> Option<&HealthProbe> {
        self.health_probe.as_ref()
    }

    /// The paths served, in the order they were added.
    pub(crate) fn paths(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.routes.iter().map(|route| route.path)
    }

    /// What to answer to `method` on `target`, and whether it is a `HEAD` (the headers
    /// without the body).
    pub(crate) fn answer(&self, method: &Method, target: &Uri) -> (Response, bool) {
        let method = method.as_str();
        if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
            return (Response::error(StatusCode::BAD_REQUEST), false);
        }
        let path = target.path();
        if !path.starts_with('/') {
            return (Response::error(StatusCode::BAD_REQUEST), false);
        }
        let Some(route) = self.routes.iter().find(|route| route.path == path) else {
            return (Response::error(StatusCode::NOT_FOUND), false);
        };
        match method {
            "GET" => ((route.get)(), false),
            "HEAD" => ((route.get)(), true),
            _ => (Response::error(StatusCode::METHOD_NOT_ALLOWED), false),
        }
    }

    /// The HTTP response to `method` on `target`.
    pub(crate) fn respond(&self, method: &Method, target: &Uri) -> hyper::Response<Full<Bytes>> {
        let (response, head) = self.answer(method, target);
        let length = response.body.len();
        let body = if head {
            Bytes::new()
        } else {
            Bytes::from(response.body)
        };
        let mut http = hyper::Response::new(Full::new(body));
        *http.status_mut() = response.status;
        let headers = http.headers_mut();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static(response.content_type),
        );
        // Written for HEAD too, where the body is empty: the length GET would send.
        headers.insert(CONTENT_LENGTH, HeaderValue::from(length));
        if response.status == StatusCode::METHOD_NOT_ALLOWED {
            headers.insert(ALLOW, HeaderValue::from_static(ALLOWED));
        }
        http
    }
}

impl fmt::Debug for Router {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Router")
            .field("paths", &self.paths().collect::<Vec<_>>())
            .field("health_probe", &self.health_probe.is_some())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::CONTENT_TYPE as METRICS_TYPE;

    fn router() -> Router {
        Router::new().get("/metrics", || {
            Response::ok(METRICS_TYPE, "x_total 1\n".to_string())
        })
    }

    /// The status, whether it is a HEAD, and the body of `method` on `target`.
    fn answer(method: &str, target: &str) -> (u16, bool, String) {
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let (response, head) = router().answer(&method, &target.parse().unwrap());
        (response.status.as_u16(), head, response.body)
    }

    #[test]
    fn routes_by_exact_path_without_query_string() {
        let page = (200, false, "x_total 1\n".to_string());
        assert_eq!(answer("GET", "/metrics"), page);
        assert_eq!(answer("GET", "/metrics?x=1"), page);
        assert_eq!(answer("GET", "http://h:1/metrics"), page);
        assert_eq!(
            answer("HEAD", "/metrics"),
            (200, true, "x_total 1\n".to_string())
        );
        for path in ["/", "/metricsx", "/metrics/", "/health", "/Metrics"] {
            assert_eq!(answer("GET", path), (404, false, "404 not found\n".into()));
        }
        // A router without routes.
        let empty = Router::new().answer(&Method::GET, &"/metrics".parse().unwrap());
        assert_eq!(empty.0.status, StatusCode::NOT_FOUND);
    }

    #[test]
    fn other_methods_and_bad_requests() {
        for method in ["POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE"] {
            let (status, _, body) = answer(method, "/metrics");
            assert_eq!((status, body.as_str()), (405, "405 method not allowed\n"));
        }
        // Hyper takes any token as a method; the old server's rule (upper-case letters) stays.
        for method in ["get", "Get", "M-SEARCH", "GET1"] {
            assert_eq!(answer(method, "/metrics").0, 400, "{method}");
        }
        // An authority-form or asterisk-form target is not a path.
        assert_eq!(answer("GET", "metrics:80").0, 400);
        assert_eq!(answer("GET", "*").0, 400);
    }

    #[test]
    fn http_responses() {
        let router = router();
        let get = router.respond(&Method::GET, &"/metrics".parse().unwrap());
        assert_eq!(get.status(), StatusCode::OK);
        assert_eq!(get.headers()[CONTENT_TYPE], METRICS_TYPE);
        assert_eq!(get.headers()[CONTENT_LENGTH], "10");
        let head = router.respond(&Method::HEAD, &"/metrics".parse().unwrap());
        assert_eq!(head.headers()[CONTENT_LENGTH], "10");
        assert_eq!(hyper::body::Body::size_hint(head.body()).exact(), Some(0));
        let post = router.respond(&Method::POST, &"/metrics".parse().unwrap());
        assert_eq!(post.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(post.headers()[ALLOW], "GET, HEAD");
        assert_eq!(post.headers()[CONTENT_TYPE], TEXT);
        let missing = router.respond(&Method::GET, &"/x".parse().unwrap());
        assert_eq!(missing.status(), StatusCode::NOT_FOUND);
        assert!(!missing.headers().contains_key(ALLOW));
    }

    #[test]
    fn a_route_added_again_replaces_the_first() {
        let router = router().get("/metrics", || Response::text(StatusCode::OK, "b".into()));
        assert_eq!(router.paths().collect::<Vec<_>>(), ["/metrics"]);
        assert_eq!(answer_with(&router, "/metrics").body, "b");
    }

    fn answer_with(router: &Router, path: &str) -> Response {
        router.answer(&Method::GET, &path.parse().unwrap()).0
    }
}
