//! What the monitoring tests share: the deploy files' paths, a real Prometheus (Debian's
//! `prometheus` binary) on a loopback port with its HTTP API, and the expressions of the
//! Grafana dashboard with its template variables substituted.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::TempDir;
use crate::metrics::http;
use crate::unbound::free_port;

/// How long Prometheus may take to start and say it is ready.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A path of the repository, from its root (`deploy/prometheus/rules.yaml`).
pub fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(relative)
}

/// Whether `program --version` runs and succeeds (the tools these tests skip without).
pub fn program_runs(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// A running Prometheus on 127.0.0.1, its storage and configuration in a temp dir; killed on
/// drop.
#[derive(Debug)]
pub struct Prometheus {
    child: Child,
    addr: SocketAddr,
    dir: TempDir,
}

impl Prometheus {
    /// Starts `prometheus` with `config` (prometheus.yml's text; `rule_files` paths are
    /// relative to the temp dir, so name files by absolute paths) on a free loopback port
    /// (up to 3 tries, should another process take the port first), and waits until `/-/ready`
    /// answers 200.
    pub fn start(config: &str) -> Result<Prometheus> {
        let mut last_error = None;
        for _ in 0..3 {
            match Prometheus::start_once(config) {
                Ok(prometheus) => return Ok(prometheus),
                Err(error) => last_error = Some(error),
            }
        }
        Err(last_error.expect("three tries"))
    }

    fn start_once(config: &str) -> Result<Prometheus> {
        let dir = TempDir::new("prom")?;
        let config_path = dir.join("prometheus.yml");
        std::fs::write(&config_path, config)?;
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let log = std::fs::File::create(dir.join("prometheus.log"))?;
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()
            .context(
                "running prometheus (apt-get install prometheus; scripts/test.sh installs it)",
            )?;
        let mut prometheus = Prometheus { child, addr, dir };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = prometheus.child.try_wait()? {
                bail!("prometheus exited with {status}:\n{}", prometheus.log());
            }
            if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
                && prometheus.get("/-/ready").0 == 200
            {
                return Ok(prometheus);
            }
            if Instant::now() >= deadline {
                bail!(
                    "prometheus not ready within {START_TIMEOUT:?}:\n{}",
                    prometheus.log()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// What Prometheus logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }

    /// `GET path`: the status code and the body (de-chunked).
    pub fn get(&self, path: &str) -> (u16, String) {
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: shardns-e2e\r\nConnection: close\r\n\r\n",
            self.addr
        );
        let response = http(self.addr, request.as_bytes());
        let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|code| code.parse().ok())
            .unwrap_or(0);
        let chunked = head
            .lines()
            .any(|line| line.eq_ignore_ascii_case("transfer-encoding: chunked"));
        let body = if chunked {
            dechunk(body)
        } else {
            body.to_string()
        };
        (status, body)
    }

    /// `GET /api/v1/PATH` as JSON; fails unless Prometheus says `"status": "success"`.
    pub fn api(&self, path_and_query: &str) -> Result<Value> {
        let (status, body) = self.get(&format!("/api/v1/{path_and_query}"));
        let json: Value = serde_json::from_str(&body)
            .with_context(|| format!("{path_and_query}: HTTP {status}, not JSON: {body}"))?;
        if json["status"] != "success" {
            bail!("{path_and_query}: HTTP {status}: {body}");
        }
        Ok(json["data"].clone())
    }

    /// An instant query now: the result vector's samples (`/api/v1/query`).
    pub fn query(&self, expr: &str) -> Result<Vec<Value>> {
        let data = self.api(&format!("query?query={}", url_encode(expr)))?;
        match data["result"].as_array() {
            Some(samples) => Ok(samples.clone()),
            None => bail!("{expr}: the result is not a vector: {data}"),
        }
    }

    /// The rule groups Prometheus loaded and evaluates (`/api/v1/rules`).
    pub fn rule_groups(&self) -> Result<Vec<Value>> {
        let data = self.api("rules")?;
        Ok(data["groups"].as_array().cloned().unwrap_or_default())
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A body in HTTP/1.1's chunked transfer coding, decoded.
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size =
            usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16).unwrap_or(0);
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}

/// `text` percent-encoded for a URL's query string.
pub fn url_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

/// One query of the dashboard: the panel's title and the PromQL expression as written.
#[derive(Debug, Clone)]
pub struct PanelQuery {
    pub panel: String,
    pub expr: String,
}

/// Every Prometheus expression of `dashboard` (the JSON model), panels inside rows included.
pub fn dashboard_queries(dashboard: &Value) -> Vec<PanelQuery> {
    fn walk(panels: &[Value], out: &mut Vec<PanelQuery>) {
        for panel in panels {
            let title = panel["title"].as_str().unwrap_or("").to_string();
            for target in panel["targets"].as_array().into_iter().flatten() {
                if let Some(expr) = target["expr"].as_str() {
                    out.push(PanelQuery {
                        panel: title.clone(),
                        expr: expr.to_string(),
                    });
                }
            }
            walk(panel["panels"].as_array().map_or(&[], Vec::as_slice), out);
        }
    }
    let mut out = Vec::new();
    walk(
        dashboard["panels"].as_array().map_or(&[], Vec::as_slice),
        &mut out,
    );
    out
}

/// `expr` with Grafana's variables replaced as Grafana does before it sends the query:
/// `$name` and `${name}` by `values` (name, text), the rest left alone.
pub fn substitute(expr: &str, values: &[(&str, &str)]) -> String {
    let mut out = expr.to_string();
    // Longest names first, so that `$__rate_interval` is not taken for `$__rate`.
    let mut values = values.to_vec();
    values.sort_by_key(|(name, _)| std::cmp::Reverse(name.len()));
    for (name, value) in values {
        out = out.replace(&format!("${{{name}}}"), value);
        out = out.replace(&format!("${name}"), value);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dechunks() {
        assert_eq!(
            dechunk("4\r\nWiki\r\n7\r\npedia i\r\n0\r\n\r\n"),
            "Wikipedia i"
        );
        assert_eq!(dechunk("0\r\n\r\n"), "");
    }

    #[test]
    fn encodes_and_substitutes() {
        assert_eq!(url_encode("up{a=\"b c\"}"), "up%7Ba%3D%22b%20c%22%7D");
        let values = [("__rate_interval", "10s"), ("shard", "(0|1)")];
        assert_eq!(
            substitute(
                "rate(x{shard=~\"$shard\"}[$__rate_interval]) ${shard}",
                &values
            ),
            "rate(x{shard=~\"(0|1)\"}[10s]) (0|1)"
        );
    }
}
