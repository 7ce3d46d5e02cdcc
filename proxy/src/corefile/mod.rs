//! The Corefile language: from the text of a Corefile to the shards' [`Config`] and the
//! process-level settings beside it ([`ProcessConfig`]). Nothing here runs anything.
//!
//! - [`tokenizer`]: text → words and braces, each with its line (quotes, comments, `{$ENV}`).
//! - [`parser`]: words → server blocks (`ZONE[:PORT]... { ... }`) of directives.
//! - [`directives`]: what each directive means, one file per directive (`acl`, `cache`,
//!   `forward`, `health` and `ready`, `log`, `prometheus`, `ratelimit`, `reload`); `bind`,
//!   `errors` and `loop` are read in `directives/mod.rs`.
//! - [`build`]: server blocks → [`Config`] (listeners, servers, upstreams) and
//!   [`ProcessConfig`].
//! - [`address`], [`duration`], [`resolv`]: the value syntaxes directives share (zones, keys
//!   and addresses; Go durations; resolv.conf `nameserver` lines).
//!
//! Every error is a [`ConfigError`] naming the file and, when it has one, the line.

pub(crate) mod address;
mod build;
pub(crate) mod directives;
pub(crate) mod duration;
mod parser;
mod resolv;
mod tokenizer;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use shardns_shard::Config;

#[cfg(test)]
pub(crate) use build::build;
pub(crate) use build::build_process;
pub(crate) use directives::ReloadSettings;

/// A Corefile that cannot be read or is not valid; every message names the file and, when
/// it has one, the line.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum ConfigError {
    /// Something wrong at a given line.
    #[error("{file}:{line}: {message}")]
    At {
        /// The file as named on the command line.
        file: String,
        /// 1-based line number.
        line: usize,
        /// What was wrong or what was expected.
        message: String,
    },
    /// Something wrong with the file as a whole.
    #[error("{file}: {message}")]
    File {
        /// The file as named on the command line.
        file: String,
        /// What was wrong.
        message: String,
    },
}

impl ConfigError {
    /// An error at `line` of `file`.
    pub(crate) fn at(file: &str, line: usize, message: impl Into<String>) -> ConfigError {
        ConfigError::At {
            file: file.to_string(),
            line,
            message: message.into(),
        }
    }
}

/// A built Corefile: the shards' configuration and what the process serves beside them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProcessConfig {
    /// What every shard runs on.
    pub config: Config,
    /// Addresses of the Prometheus `/metrics` endpoints, one per distinct `prometheus`
    /// address, in order of appearance. An unspecified IP (`0.0.0.0`) means every address.
    pub metrics: Vec<SocketAddr>,
    /// The `reload` directive: how often the Corefile is checked (the shortest of all
    /// blocks'); `None`: only on SIGUSR1.
    pub reload: Option<ReloadSettings>,
    /// Addresses of the `/health` endpoints, one per distinct `health` address.
    pub health: Vec<SocketAddr>,
    /// Addresses of the `/ready` endpoints, one per distinct `ready` address.
    pub ready: Vec<SocketAddr>,
    /// `health ... { lameduck DURATION }`: the longest of all blocks'.
    pub lameduck: Option<Duration>,
}

/// The name used in messages about the built-in Corefile.
pub(crate) const DEFAULT_COREFILE_NAME: &str = "<built-in Corefile>";

/// The Corefile used without `--conf`: a cache on 127.0.0.1:5353 forwarding to the
/// nameservers of `resolv_conf`.
pub(crate) fn default_corefile(resolv_conf: &Path) -> String {
    let path = resolv_conf.display().to_string().replace('"', "\\\"");
    format!(
        ".:5353 {{\n    bind 127.0.0.1\n    cache 30\n    forward . \"{path}\"\n    errors\n}}\n"
    )
}

/// Reads and builds the Corefile at `conf`, or the built-in one when there is none.
pub(crate) fn load(conf: Option<&Path>, resolv_conf: &Path) -> Result<ProcessConfig, ConfigError> {
    match conf {
        Some(path) => {
            let file = path.display().to_string();
            let text = std::fs::read_to_string(path).map_err(|error| ConfigError::File {
                file: file.clone(),
                message: format!("cannot read the Corefile: {error}"),
            })?;
            build_process(&file, &text)
        }
        None => build_process(DEFAULT_COREFILE_NAME, &default_corefile(resolv_conf)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[test]
    fn default_corefile_reads_resolv_conf() {
        let resolv = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/resolv.conf");
        let process = load(None, Path::new(resolv)).unwrap();
        assert!(process.metrics.is_empty());
        let config = process.config;
        assert_eq!(config.listeners.len(), 1);
        assert_eq!(config.listeners[0].addr, addr("127.0.0.1:5353"));
        assert_eq!(
            config.servers[0].cache,
            Some(shardns_shard::config::CacheConfig::with_ttl(Some(30)))
        );
        assert!(config.servers[0].log_errors);
        let upstreams: Vec<SocketAddr> = config.upstreams.iter().map(|u| u.addr).collect();
        assert_eq!(upstreams, [addr("10.96.0.10:53"), addr("[fd00::10]:53")]);

        let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
        let error = load(None, Path::new(manifest)).unwrap_err().to_string();
        assert!(
            error.starts_with("<built-in Corefile>:4: resolv.conf"),
            "{error}"
        );
        assert!(error.ends_with("has no usable nameserver line"), "{error}");
    }

    #[test]
    fn default_corefile_binds_only_loopback() {
        // Without --conf nothing may listen beyond the machine: DNS on 127.0.0.1 only, and no
        // HTTP endpoint at all.
        let resolv = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/resolv.conf");
        let process = load(None, Path::new(resolv)).unwrap();
        assert!(!process.config.listeners.is_empty());
        for listener in &process.config.listeners {
            assert!(listener.addr.ip().is_loopback(), "{}", listener.addr);
        }
        assert!(process.metrics.is_empty() && process.health.is_empty());
        assert!(process.ready.is_empty());
    }

    #[test]
    fn unreadable_corefile() {
        let error = load(Some(Path::new("/nonexistent/Corefile")), Path::new("/")).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("/nonexistent/Corefile: cannot read the Corefile:")
        );
    }
}
