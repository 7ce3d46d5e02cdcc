//! Reading an HTTP/1.x request head: the request line (method, target, version) and the
//! header lines, checked but not kept. The router needs only the method and the path.
//!
//! A request that is not HTTP/1.x is 400 (505 for another HTTP version), a head over
//! [`MAX_REQUEST`] bytes 431. Nothing here panics on what a client sends.

/// Largest request head read (request line and headers).
pub(super) const MAX_REQUEST: usize = 8 * 1024;

/// What the router needs of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Request {
    /// `GET`, `HEAD`, ... (upper-case letters only).
    pub method: String,
    /// The target's path: no query string or fragment, the scheme and authority of an
    /// absolute-form target removed.
    pub path: String,
}

/// The request head at the start of `buffer`: `None` while it is incomplete (and shorter than
/// [`MAX_REQUEST`]), else the request or the error status it gets.
pub(super) fn parse(buffer: &[u8]) -> Option<Result<Request, u16>> {
    let full = buffer.len() >= MAX_REQUEST;
    let mut lines = buffer.split_inclusive(|&byte| byte == b'\n');
    let request_line = match lines.next() {
        Some(line) if line.ends_with(b"\n") => trim_line_end(line),
        _ => return full.then_some(Err(400)),
    };
    let Some((method, path)) = request_line_parts(request_line) else {
        return Some(Err(400));
    };
    if let Err(status) = version_status(request_line) {
        return Some(Err(status));
    }
    loop {
        let line = match lines.next() {
            Some(line) if line.ends_with(b"\n") => trim_line_end(line),
            _ => return full.then_some(Err(431)),
        };
        if line.is_empty() {
            break;
        }
        if !header_line(line) {
            return Some(Err(400));
        }
    }
    Some(Ok(Request {
        method: method.to_string(),
        path: path.to_string(),
    }))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::router::{Answer, Page, Router};

    const METRICS: Answer = Answer::Page {
        path: "/metrics",
        head: false,
    };
    const METRICS_HEAD: Answer = Answer::Page {
        path: "/metrics",
        head: true,
    };

    /// What a server with the one route `/metrics` answers to the head in `buffer`.
    fn answer(buffer: &[u8]) -> Option<Answer> {
        let router = Router::new().get("/metrics", || Page {
            content_type: "text/plain",
            body: String::new(),
        });
        parse(buffer).map(|head| router.answer(head))
    }

    #[test]
    fn requests() {
        let get = b"GET /metrics HTTP/1.1\r\nHost: x:9253\r\nAccept: text/plain;q=0.9\r\n\r\n";
        assert_eq!(answer(get), Some(METRICS));
        assert_eq!(answer(b"GET /metrics?x=1 HTTP/1.0\n\n"), Some(METRICS));
        assert_eq!(
            answer(b"GET http://h:1/metrics HTTP/1.1\r\n\r\n"),
            Some(METRICS)
        );
        assert_eq!(
            answer(b"HEAD /metrics HTTP/1.1\r\n\r\n"),
            Some(METRICS_HEAD)
        );
        assert_eq!(
            answer(b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n"),
            Some(Answer::Status(405))
        );
        for path in ["/", "/metricsx", "/metrics/", "/health"] {
            let request = format!("GET {path} HTTP/1.1\r\n\r\n");
            assert_eq!(answer(request.as_bytes()), Some(Answer::Status(404)));
        }
        // Incomplete heads wait for more.
        for prefix in [&get[..0], &get[..10], &get[..30], &get[..get.len() - 1]] {
            assert_eq!(answer(prefix), None, "{prefix:?}");
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
            assert_eq!(answer(bad), Some(Answer::Status(400)), "{bad:?}");
        }
        assert_eq!(answer(b"PRI * HTTP/2.0\r\n\r\n"), Some(Answer::Status(400)));
        assert_eq!(
            answer(b"GET /metrics HTTP/2.0\r\n\r\n"),
            Some(Answer::Status(505))
        );
        // Too long: a request line, or headers, that do not end within the limit.
        assert_eq!(answer(&[b'A'; MAX_REQUEST]), Some(Answer::Status(400)));
        let mut long = b"GET /metrics HTTP/1.1\r\n".to_vec();
        while long.len() < MAX_REQUEST {
            long.extend_from_slice(b"X-Filler: 0123456789\r\n");
        }
        assert_eq!(answer(&long), Some(Answer::Status(431)));
        assert_eq!(answer(&long[..MAX_REQUEST - 1]), None);
    }
}
