//! The kube-dns ConfigMap as node-cache reads it: the directory it is mounted on (`-kubednscm`,
//! else `/etc/kube-dns` when that exists), its files `stubDomains` (a JSON object mapping each
//! domain to a list of nameservers), `upstreamNameservers` (a JSON list, at most three) and
//! `federations` (`name=domain,...`, only checked), and the server blocks stub domains become.
//!
//! Sources (kubernetes/dns): `pkg/dns/config/sync.go` (`processUpdate`, `updateStubDomains`,
//! `updateUpstreamNameservers`, `updateFederations`), `pkg/dns/config/config.go` (`Validate`,
//! `ValidateNodeLocalCacheConfig`), `cmd/node-cache/app/configmap.go` (`stubDomainBlock`,
//! `getStubDomainStr`, `initDNSConfigSync`). The checks themselves are in `validation.rs`.
//!
//! A [`KubeDnsConfig`] is only made from files that pass every check, so that a ConfigMap that
//! does not is refused whole ([`ConfigMapError`]) and the caller keeps the one it has, as
//! node-cache does.

mod validation;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::setup_errors::SetupErrorType;
use crate::template::local_ip_list;

/// Where node-cache looks for the kube-dns ConfigMap when `-kubednscm` is not given
/// (`DefaultKubednsCMPath`).
pub const DEFAULT_KUBE_DNS_DIRECTORY: &str = "/etc/kube-dns";

/// The ConfigMap file holding the stub domains.
pub const STUB_DOMAINS_FILE: &str = "stubDomains";

/// The ConfigMap file holding the upstream nameservers.
pub const UPSTREAM_NAMESERVERS_FILE: &str = "upstreamNameservers";

/// The ConfigMap file holding kube-dns federations (checked, then unused by node-cache).
pub const FEDERATIONS_FILE: &str = "federations";

/// The `cache` TTL of a stub domain's block (node-cache's `defaultTTL`).
pub const STUB_DOMAIN_CACHE_TTL: u32 = 30;

/// A kube-dns ConfigMap that passed kube-dns's and node-cache's checks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KubeDnsConfig {
    stub_domains: BTreeMap<String, Vec<String>>,
    upstream_nameservers: Vec<String>,
}

/// Which of node-cache's two checks refused a ConfigMap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigMapCheck {
    /// kube-dns's own reading (`processUpdate`: JSON, then `Config.Validate`). node-cache
    /// only logs these ("Invalid configuration ..., ignoring update"); it does not count them.
    KubeDns,
    /// node-cache's `ValidateNodeLocalCacheConfig` (can the values go in a `forward` line),
    /// which it logs and counts as a `configmap` setup error.
    NodeLocalCache,
}

/// A kube-dns ConfigMap refused, with the file and the reason.
#[derive(Debug, Error)]
#[error("kube-dns ConfigMap {}: {problem}", file.display())]
pub struct ConfigMapError {
    /// The ConfigMap file at fault.
    pub file: PathBuf,
    /// What is wrong in it.
    pub problem: ConfigMapProblem,
}

/// What is wrong in a kube-dns ConfigMap file.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ConfigMapProblem {
    /// The file is not the JSON it should be.
    #[error("line {line}, column {column}: {message} (expected {expected})")]
    Json {
        /// Line of the error (from 1).
        line: usize,
        /// Column of the error (from 1).
        column: usize,
        /// The JSON parser's message.
        message: String,
        /// What the file should hold.
        expected: &'static str,
    },
    /// `federations` is not `name=domain,...` with valid names.
    #[error("{0}")]
    Federations(String),
    /// A stub domain that is not an RFC 1123 subdomain.
    #[error(
        "stub domain {domain:?} is not a valid domain name (expected a lowercase RFC 1123 \
         subdomain such as acme.local, at most 253 characters)"
    )]
    StubDomainName {
        /// The domain as written.
        domain: String,
    },
    /// A stub domain with an empty (or null) list of nameservers.
    #[error("stub domain {domain:?} has no nameservers (expected a list of IP or IP:port)")]
    NoStubNameservers {
        /// The domain as written.
        domain: String,
    },
    /// A stub domain's nameserver refused.
    #[error("nameserver {nameserver:?} of stub domain {domain:?}: {reason}")]
    StubNameserver {
        /// The domain as written.
        domain: String,
        /// The nameserver as written.
        nameserver: String,
        /// Why it was refused.
        reason: String,
        /// Which check refused it.
        check: ConfigMapCheck,
    },
    /// More than three upstream nameservers.
    #[error("{count} upstream nameservers (at most 3 are allowed)")]
    TooManyUpstreamNameservers {
        /// How many there are.
        count: usize,
    },
    /// An upstream nameserver refused.
    #[error("upstream nameserver {nameserver:?}: {reason}")]
    UpstreamNameserver {
        /// The nameserver as written.
        nameserver: String,
        /// Why it was refused.
        reason: String,
        /// Which check refused it.
        check: ConfigMapCheck,
    },
}

impl ConfigMapError {
    /// Which check refused the ConfigMap.
    pub fn check(&self) -> ConfigMapCheck {
        match &self.problem {
            ConfigMapProblem::StubNameserver { check, .. }
            | ConfigMapProblem::UpstreamNameserver { check, .. } => *check,
            // Not a check of node-cache's: it would write `forward . ` and CoreDNS would
            // refuse the Corefile. Refused here as what keeps a Corefile from being built.
            ConfigMapProblem::NoStubNameservers { .. } => ConfigMapCheck::NodeLocalCache,
            ConfigMapProblem::Json { .. }
            | ConfigMapProblem::Federations(_)
            | ConfigMapProblem::StubDomainName { .. }
            | ConfigMapProblem::TooManyUpstreamNameservers { .. } => ConfigMapCheck::KubeDns,
        }
    }

    /// What this refusal is counted as in `coredns_nodecache_setup_errors_total`: always
    /// `configmap`. node-cache counts only the refusals of its own check
    /// ([`ConfigMapCheck::NodeLocalCache`]) and merely logs those of kube-dns's (bad JSON, a
    /// bad domain name), so a ConfigMap it ignores could go unnoticed by alerts; every
    /// refused update is counted here.
    pub fn setup_error_type(&self) -> SetupErrorType {
        SetupErrorType::Configmap
    }
}

impl KubeDnsConfig {
    /// Reads the ConfigMap's files (name → contents, as the watched `directory` holds them),
    /// checking them as kube-dns and then node-cache do. Files other than `stubDomains`,
    /// `upstreamNameservers` and `federations` are ignored; no file at all is an empty
    /// ConfigMap (no stub domains, upstreams from resolv.conf).
    pub fn from_files(
        directory: &Path,
        files: &BTreeMap<String, String>,
    ) -> Result<Self, ConfigMapError> {
        let refuse = |name: &str, problem| ConfigMapError {
            file: directory.join(name),
            problem,
        };
        if let Some(text) = files.get(FEDERATIONS_FILE) {
            validation::check_federations(text).map_err(|reason| {
                refuse(FEDERATIONS_FILE, ConfigMapProblem::Federations(reason))
            })?;
        }
        let stub_domains = match files.get(STUB_DOMAINS_FILE) {
            Some(text) => parse_json::<Option<BTreeMap<String, Option<Vec<String>>>>>(
                text,
                "a JSON object mapping each domain to a list of nameservers, such as \
                 {\"acme.local\": [\"1.2.3.4\"]}",
            )
            .map_err(|problem| refuse(STUB_DOMAINS_FILE, problem))?
            .unwrap_or_default()
            .into_iter()
            .map(|(domain, servers)| (domain, servers.unwrap_or_default()))
            .collect(),
            None => BTreeMap::new(),
        };
        let upstream_nameservers = match files.get(UPSTREAM_NAMESERVERS_FILE) {
            Some(text) => parse_json::<Option<Vec<String>>>(
                text,
                "a JSON list of at most 3 nameservers, such as [\"8.8.8.8\", \"8.8.4.4:53\"]",
            )
            .map_err(|problem| refuse(UPSTREAM_NAMESERVERS_FILE, problem))?
            .unwrap_or_default(),
            None => Vec::new(),
        };
        let config = KubeDnsConfig {
            stub_domains,
            upstream_nameservers,
        };
        config
            .check_as_kube_dns()
            .map_err(|(name, problem)| refuse(name, problem))?;
        config
            .check_as_node_cache()
            .map_err(|(name, problem)| refuse(name, problem))?;
        Ok(config)
    }

    /// Stub domains (domain → nameservers as written), in domain order.
    pub fn stub_domains(&self) -> &BTreeMap<String, Vec<String>> {
        &self.stub_domains
    }

    /// Upstream nameservers as written, in order; empty when the ConfigMap names none.
    pub fn upstream_nameservers(&self) -> &[String] {
        &self.upstream_nameservers
    }

    /// kube-dns's `Config.Validate` (federations were checked while read).
    fn check_as_kube_dns(&self) -> Result<(), (&'static str, ConfigMapProblem)> {
        for (domain, servers) in &self.stub_domains {
            if !validation::is_rfc1123_subdomain(domain) {
                let domain = domain.clone();
                return Err((
                    STUB_DOMAINS_FILE,
                    ConfigMapProblem::StubDomainName { domain },
                ));
            }
            for server in servers {
                validation::check_stub_nameserver(server).map_err(|reason| {
                    let problem = ConfigMapProblem::StubNameserver {
                        domain: domain.clone(),
                        nameserver: server.clone(),
                        reason,
                        check: ConfigMapCheck::KubeDns,
                    };
                    (STUB_DOMAINS_FILE, problem)
                })?;
            }
        }
        let count = self.upstream_nameservers.len();
        if count > validation::MAX_UPSTREAM_NAMESERVERS {
            let problem = ConfigMapProblem::TooManyUpstreamNameservers { count };
            return Err((UPSTREAM_NAMESERVERS_FILE, problem));
        }
        for server in &self.upstream_nameservers {
            validation::check_upstream_nameserver(server).map_err(|reason| {
                let problem = ConfigMapProblem::UpstreamNameserver {
                    nameserver: server.clone(),
                    reason,
                    check: ConfigMapCheck::KubeDns,
                };
                (UPSTREAM_NAMESERVERS_FILE, problem)
            })?;
        }
        Ok(())
    }

    /// node-cache's `ValidateNodeLocalCacheConfig`, plus a refusal of empty stub lists.
    fn check_as_node_cache(&self) -> Result<(), (&'static str, ConfigMapProblem)> {
        for (domain, servers) in &self.stub_domains {
            if servers.is_empty() {
                let domain = domain.clone();
                return Err((
                    STUB_DOMAINS_FILE,
                    ConfigMapProblem::NoStubNameservers { domain },
                ));
            }
            for server in servers {
                validation::check_forward_target(server).map_err(|reason| {
                    let problem = ConfigMapProblem::StubNameserver {
                        domain: domain.clone(),
                        nameserver: server.clone(),
                        reason,
                        check: ConfigMapCheck::NodeLocalCache,
                    };
                    (STUB_DOMAINS_FILE, problem)
                })?;
            }
        }
        for server in &self.upstream_nameservers {
            validation::check_forward_target(server).map_err(|reason| {
                let problem = ConfigMapProblem::UpstreamNameserver {
                    nameserver: server.clone(),
                    reason,
                    check: ConfigMapCheck::NodeLocalCache,
                };
                (UPSTREAM_NAMESERVERS_FILE, problem)
            })?;
        }
        Ok(())
    }
}

/// `text` as JSON of type `T`, or where and why it is not.
fn parse_json<T: serde::de::DeserializeOwned>(
    text: &str,
    expected: &'static str,
) -> Result<T, ConfigMapProblem> {
    serde_json::from_str(text).map_err(|error| ConfigMapProblem::Json {
        line: error.line(),
        column: error.column(),
        message: error.to_string(),
        expected,
    })
}

/// The server blocks node-cache appends to the Corefile for the stub domains
/// (`stubDomainBlock` in `configmap.go`), in domain order: each one a blank line, then
///
/// ```text
/// DOMAIN:PORT {
///     errors
///     cache 30
///     bind LOCAL_IP...
///     forward . NAMESERVER...
/// }
/// ```
///
/// node-cache writes them in Go map order, which is random; domain order here makes the
/// Corefile the same from one run to the next.
pub fn stub_domain_blocks(config: &KubeDnsConfig, local_ips: &[IpAddr], port: u16) -> String {
    let bind = local_ip_list(local_ips);
    let mut blocks = String::new();
    for (domain, servers) in &config.stub_domains {
        let _ = write!(
            blocks,
            "\n{domain}:{port} {{\n    errors\n    cache {STUB_DOMAIN_CACHE_TTL}\n    \
             bind {bind}\n    forward . {servers}\n}}\n",
            servers = servers.join(" "),
        );
    }
    blocks
}

/// The ConfigMap directory node-cache watches (`initDNSConfigSync`): `flag` (`-kubednscm`)
/// when given and not empty, else [`DEFAULT_KUBE_DNS_DIRECTORY`] unless it does not exist, else
/// none.
pub fn kube_dns_directory(flag: Option<&Path>) -> Option<PathBuf> {
    let default = Path::new(DEFAULT_KUBE_DNS_DIRECTORY);
    choose_kube_dns_directory(flag, default, std::fs::metadata(default).map(drop))
}

/// [`kube_dns_directory`] over the result of a `stat` of `default`: as Go's
/// `!os.IsNotExist(err)`, any outcome but "not found" (a file, a permission error) picks it.
fn choose_kube_dns_directory(
    flag: Option<&Path>,
    default: &Path,
    default_stat: io::Result<()>,
) -> Option<PathBuf> {
    match flag {
        Some(path) if !path.as_os_str().is_empty() => Some(path.to_path_buf()),
        _ => match default_stat {
            Err(error) if error.kind() == io::ErrorKind::NotFound => None,
            _ => Some(default.to_path_buf()),
        },
    }
}

#[cfg(test)]
mod tests;
