//! Reading shardns's HTTP endpoints: a plain HTTP/1.1 exchange (the request asks the server to
//! close the connection after its response) and lookups in the text exposition format.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::netns::Inside;

/// Time allowed for one HTTP exchange with the metrics endpoint.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(5);

/// Sends `request` on a fresh connection and reads the whole response: until the server closes
/// the connection, which it does at once for a request with `Connection: close` and otherwise
/// only after its keep-alive idle time.
pub fn http(addr: SocketAddr, request: &[u8]) -> String {
    assert!(
        addr.ip().is_loopback(),
        "metrics must be on loopback: {addr}"
    );
    exchange(addr, request)
}

/// [`http`] inside a namespace the test created (any address there is the test's).
pub fn http_inside(_: &Inside, addr: SocketAddr, request: &[u8]) -> String {
    exchange(addr, request)
}

/// `GET path` with `Connection: close` inside a namespace: the status code and the body.
pub fn get_inside(inside: &Inside, addr: SocketAddr, path: &str) -> (u16, String) {
    let request = format!("GET {path} HTTP/1.1\r\nHost: shardns\r\nConnection: close\r\n\r\n");
    let response = http_inside(inside, addr, request.as_bytes());
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map_or_else(String::new, |(_, body)| body.to_string());
    (status, body)
}

fn exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect_timeout(&addr, HTTP_TIMEOUT).expect("connect");
    stream.set_read_timeout(Some(HTTP_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(HTTP_TIMEOUT)).unwrap();
    stream.write_all(request).expect("send the request");
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .expect("read the response");
    String::from_utf8(response).expect("a UTF-8 response")
}

/// `GET /metrics`: asserts 200, the text format's content type and the body's length;
/// returns the body.
pub fn scrape(addr: SocketAddr) -> String {
    let response = http(
        addr,
        b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: e2e\r\nConnection: close\r\n\r\n",
    );
    let (head, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of head: {response}"));
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(
        head.contains("\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8"),
        "{head}"
    );
    assert!(
        head.contains(&format!("\r\nContent-Length: {}", body.len())),
        "{head}"
    );
    body.to_string()
}

/// The value of the one sample whose name and labels are `series`.
pub fn value(page: &str, series: &str) -> Option<u64> {
    let mut found = page
        .lines()
        .filter_map(|line| line.strip_prefix(series)?.strip_prefix(' '));
    let value = found.next()?.parse().expect("an integer value");
    assert!(found.next().is_none(), "{series} twice:\n{page}");
    Some(value)
}

/// The sum of every sample of family `name`.
pub fn family_sum(page: &str, name: &str) -> u64 {
    page.lines()
        .filter(|line| !line.starts_with('#'))
        .filter(|line| line.split(['{', ' ']).next() == Some(name))
        .map(|line| line.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum()
}

/// `promtool check metrics` (Debian package `prometheus`, installed by scripts/test.sh)
/// finds nothing wrong with `page`.
pub fn promtool_accepts(page: &str) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (apt-get install prometheus; scripts/test.sh installs it)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(page.as_bytes())
        .expect("writing the page to promtool");
    let out = child.wait_with_output().expect("promtool's verdict");
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {}{}\n{page}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
