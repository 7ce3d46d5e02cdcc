//! node-cache's Corefile template: the base Corefile (`-basecorefile`) with its `__PILLAR__`
//! placeholders filled and the stub-domain blocks appended, as `updateCorefile` in kubernetes/dns
//! `cmd/node-cache/app/configmap.go` does it, in the same order:
//!
//! 1. `__PILLAR__UPSTREAM__SERVERS__`: with no `upstreamNameservers` in the ConfigMap, the
//!    resolv.conf *path* (node-cache writes `/etc/resolv.conf` itself and lets the `forward`
//!    plugin read the file each time the Corefile is loaded). With some, the TCP form of the
//!    line (`forward . __PILLAR__UPSTREAM__SERVERS__ {` / `force_tcp` / `}`, indented exactly
//!    as the stock ConfigMap) is first turned into the plain UDP form, then every remaining
//!    placeholder gets the servers, space-separated.
//! 2. `__PILLAR__CLUSTER__DNS__`: the upstream service's ClusterIP, from the environment
//!    ([`cluster_dns_address`]).
//! 3. `__PILLAR__LOCAL__DNS__`: every `-localip`, space-separated.
//! 4. `__PILLAR__DNS__SERVER__`, if still there: removed (replaced by nothing). The installer
//!    normally fills it with the kube-dns ClusterIP (iptables mode) or removes it (IPVS mode);
//!    any left over is covered by step 3, which already binds every local IP.
//! 5. The stub-domain blocks ([`crate::kubedns::stub_domain_blocks`]) appended as they are.
//!
//! Other text, `__PILLAR__DNS__DOMAIN__` included (the installer's job), is left alone.

use std::net::IpAddr;

use thiserror::Error;

use crate::kubedns::{KubeDnsConfig, stub_domain_blocks};

/// Filled with the upstream service's ClusterIP (`UpstreamClusterDNSVar`).
pub const CLUSTER_DNS: &str = "__PILLAR__CLUSTER__DNS__";
/// Filled with the upstream nameservers or the resolv.conf path (`UpstreamServerVar`).
pub const UPSTREAM_SERVERS: &str = "__PILLAR__UPSTREAM__SERVERS__";
/// Filled with the local IPs (`LocalListenIPsVar`).
pub const LOCAL_DNS: &str = "__PILLAR__LOCAL__DNS__";
/// Removed when left over (`LocalDNSServerVar`).
pub const DNS_SERVER: &str = "__PILLAR__DNS__SERVER__";

/// node-cache's `upstreamTCPBlock`: the `.` forward line as a TCP one.
const UPSTREAM_TCP_BLOCK: &str =
    "\n    forward . __PILLAR__UPSTREAM__SERVERS__ {\n            force_tcp\n    }\n";
/// node-cache's `upstreamUDPBlock`: what the TCP form becomes with ConfigMap upstreams.
const UPSTREAM_UDP_BLOCK: &str = "\n    forward . __PILLAR__UPSTREAM__SERVERS__\n";

/// The Corefile template's inputs other than the base text and the ConfigMap.
#[derive(Debug, Clone, Copy)]
pub struct TemplateValues<'a> {
    /// `-localip`, in order.
    pub local_ips: &'a [IpAddr],
    /// The DNS port (CoreDNS's `-dns.port`), the stub-domain blocks' port.
    pub dns_port: u16,
    /// The upstream service's ClusterIP ([`cluster_dns_address`]).
    pub cluster_dns: IpAddr,
    /// The resolv.conf path forwarded to when the ConfigMap names no upstream (node-cache:
    /// `/etc/resolv.conf`), written as one Corefile word.
    pub resolv_conf: &'a str,
}

/// The upstream service's ClusterIP cannot be had from the environment.
#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum TemplateError {
    /// The service's `_SERVICE_HOST` variable is not set (or empty).
    #[error(
        "environment variable {variable} is not set: it holds the ClusterIP of the upstream \
         service {service:?} (-upstreamsvc), which fills {CLUSTER_DNS}"
    )]
    MissingEnvironmentVariable {
        /// The variable's name.
        variable: String,
        /// The service it stands for.
        service: String,
    },
    /// The variable does not hold an IP address.
    #[error(
        "environment variable {variable} is {value:?}, expected the IP address of the upstream \
         service {service:?} (-upstreamsvc)"
    )]
    NotAnIpAddress {
        /// The variable's name.
        variable: String,
        /// Its value.
        value: String,
        /// The service it stands for.
        service: String,
    },
}

/// The variable Kubernetes sets in every pod to a service's ClusterIP (node-cache's
/// `toSvcEnv`): `-` replaced by `_`, upper-cased, then `_SERVICE_HOST`
/// (`kube-dns-upstream` → `KUBE_DNS_UPSTREAM_SERVICE_HOST`).
pub fn service_host_variable(service: &str) -> String {
    format!("{}_SERVICE_HOST", service.replace('-', "_").to_uppercase())
}

/// The upstream service's ClusterIP from the environment (`environment` returns a variable's
/// value), as node-cache's `NewCacheApp` reads it once at start-up: `net.ParseIP` of the
/// variable, written back in Go's form (an IPv4-mapped IPv6 address as IPv4).
///
/// node-cache only warns when the variable is unset or not an IP, and then writes `<nil>`
/// into the Corefile, which CoreDNS refuses; here it is an error naming the variable.
pub fn cluster_dns_address(
    service: &str,
    environment: impl Fn(&str) -> Option<String>,
) -> Result<IpAddr, TemplateError> {
    let variable = service_host_variable(service);
    match environment(&variable) {
        None => Err(TemplateError::MissingEnvironmentVariable {
            variable,
            service: service.to_owned(),
        }),
        Some(value) if value.is_empty() => Err(TemplateError::MissingEnvironmentVariable {
            variable,
            service: service.to_owned(),
        }),
        Some(value) => match value.parse::<IpAddr>() {
            Ok(address) => Ok(address.to_canonical()),
            Err(_) => Err(TemplateError::NotAnIpAddress {
                variable,
                value,
                service: service.to_owned(),
            }),
        },
    }
}

/// The local IPs as node-cache writes them after `bind` and for `__PILLAR__LOCAL__DNS__`:
/// space-separated.
pub fn local_ip_list(local_ips: &[IpAddr]) -> String {
    local_ips
        .iter()
        .map(IpAddr::to_string)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The Corefile node-cache writes from the `base` template text (see the module's steps).
pub fn fill_template(base: &str, values: &TemplateValues<'_>, kube_dns: &KubeDnsConfig) -> String {
    let stub_blocks = stub_domain_blocks(kube_dns, values.local_ips, values.dns_port);
    let upstreams = kube_dns.upstream_nameservers().join(" ");
    let mut corefile = if upstreams.is_empty() {
        base.replace(UPSTREAM_SERVERS, values.resolv_conf)
    } else {
        let udp_block = UPSTREAM_UDP_BLOCK.replace(UPSTREAM_SERVERS, &upstreams);
        let corefile = base.replace(UPSTREAM_TCP_BLOCK, &udp_block);
        if corefile.contains(UPSTREAM_SERVERS) {
            tracing::debug!(
                "no TCP upstream block in the base Corefile to turn into UDP; filling \
                 {UPSTREAM_SERVERS} as it is"
            );
        }
        corefile.replace(UPSTREAM_SERVERS, &upstreams)
    };
    corefile = corefile.replace(CLUSTER_DNS, &values.cluster_dns.to_string());
    corefile = corefile.replace(LOCAL_DNS, &local_ip_list(values.local_ips));
    corefile = corefile.replace(DNS_SERVER, "");
    corefile.push_str(&stub_blocks);
    corefile
}

#[cfg(test)]
mod tests;
