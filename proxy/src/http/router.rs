//! The router: which handler answers a request, by path and method, and the response it
//! makes.
//!
//! A route is a path (matched exactly, after the query string is removed) and the handler of
//! its `GET`, which also serves `HEAD` (the same headers, no body). An unknown path is 404, a
//! known path with another method 405 with an `Allow` header. Error statuses get a short
//! text body. Every response closes its connection.

use std::fmt;

use super::request::Request;

/// The methods every route allows: `GET`, and `HEAD` served from it.
const ALLOW: &str = "GET, HEAD";

/// What a handler returns: a page sent with `200 OK`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Page {
    /// The `Content-Type` header.
    pub content_type: &'static str,
    /// The body.
    pub body: String,
}

/// Makes the page of one route, on each request.
type Handler = Box<dyn Fn() -> Page + Send>;

/// A path and the handler of its `GET`.
struct Route {
    path: &'static str,
    get: Handler,
}

/// Every route of the server.
#[derive(Default)]
pub(crate) struct Router {
    routes: Vec<Route>,
}

/// What the server sends for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Answer {
    /// The page of the route at `path` (`head`: the headers without the body).
    Page {
        /// The route's path.
        path: &'static str,
        /// A `HEAD` request.
        head: bool,
    },
    /// An error status with a short text body.
    Status(u16),
}

impl Router {
    /// A router without routes: every request is 404.
    pub(crate) fn new() -> Router {
        Router::default()
    }

    /// Adds the route `path`, answered by `handler` for `GET` and `HEAD`.
    pub(crate) fn get(
        mut self,
        path: &'static str,
        handler: impl Fn() -> Page + Send + 'static,
    ) -> Router {
        self.routes.push(Route {
            path,
            get: Box::new(handler),
        });
        self
    }

    /// What to send for a request head: the request, or the error status it got.
    pub(crate) fn answer(&self, head: Result<Request, u16>) -> Answer {
        let request = match head {
            Ok(request) => request,
            Err(status) => return Answer::Status(status),
        };
        let Some(route) = self.route(&request.path) else {
            return Answer::Status(404);
        };
        match request.method.as_str() {
            "GET" => Answer::Page {
                path: route.path,
                head: false,
            },
            "HEAD" => Answer::Page {
                path: route.path,
                head: true,
            },
            _ => Answer::Status(405),
        }
    }

    /// The whole response for `answer`.
    pub(crate) fn respond(&self, answer: Answer) -> Vec<u8> {
        let (status, page, head) = match answer {
            Answer::Page { path, head } => match self.route(path) {
                Some(route) => (200, (route.get)(), head),
                None => (404, error_page(404), false),
            },
            Answer::Status(status) => (status, error_page(status), false),
        };
        let allow = if status == 405 {
            format!("Allow: {ALLOW}\r\n")
        } else {
            String::new()
        };
        let mut response = format!(
            "HTTP/1.1 {status} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n\
             {allow}Connection: close\r\n\r\n",
            reason(status),
            page.content_type,
            page.body.len()
        )
        .into_bytes();
        if !head {
            response.extend_from_slice(page.body.as_bytes());
        }
        response
    }

    /// The route at `path`.
    fn route(&self, path: &str) -> Option<&Route> {
        self.routes.iter().find(|route| route.path == path)
    }
}

impl fmt::Debug for Router {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.routes.iter().map(|route| route.path))
            .finish()
    }
}

/// The short text page of an error status.
fn error_page(status: u16) -> Page {
    Page {
        content_type: "text/plain; charset=utf-8",
        body: format!("{status} {}\n", reason(status).to_ascii_lowercase()),
    }
}

/// The reason phrase of `status`.
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::CONTENT_TYPE;

    #[test]
    fn responses() {
        let page = || Page {
            content_type: CONTENT_TYPE,
            body: "x_total 1\n".to_string(),
        };
        let router = Router::new().get("/metrics", page);
        let respond = |answer| router.respond(answer);
        let metrics = |head| Answer::Page {
            path: "/metrics",
            head,
        };
        let ok = String::from_utf8(respond(metrics(false))).unwrap();
        assert_eq!(
            ok,
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n\
             Content-Length: 10\r\nConnection: close\r\n\r\nx_total 1\n"
        );
        let head = String::from_utf8(respond(metrics(true))).unwrap();
        assert!(head.ends_with("Content-Length: 10\r\nConnection: close\r\n\r\n"));
        let not_found = String::from_utf8(respond(Answer::Status(404))).unwrap();
        assert!(not_found.starts_with("HTTP/1.1 404 Not Found\r\n"));
        assert!(not_found.ends_with("\r\n\r\n404 not found\n"));
        let method = String::from_utf8(respond(Answer::Status(405))).unwrap();
        assert!(method.contains("\r\nAllow: GET, HEAD\r\n"));
    }
}
