//! Tests of the template against node-cache's stock ConfigMap Corefile
//! (`testdata/Corefile.base`: the `Corefile` key of `cluster/addons/dns/nodelocaldns/
//! nodelocaldns.yaml` in kubernetes/kubernetes, verbatim) and the stock container arguments
//! `-localip 169.254.20.10,10.96.0.10 -conf /etc/Corefile -upstreamsvc kube-dns-upstream` with
//! `KUBE_DNS_UPSTREAM_SERVICE_HOST=10.96.0.11`.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::path::Path;

use super::*;

const STOCK_BASE: &str = include_str!("../../testdata/Corefile.base");

const LOCAL_IPS: [IpAddr; 2] = [
    IpAddr::V4(Ipv4Addr::new(169, 254, 20, 10)),
    IpAddr::V4(Ipv4Addr::new(10, 96, 0, 10)),
];

/// What node-cache writes from the stock template once the installer's sed has filled it
/// (`__PILLAR__DNS__DOMAIN__` → cluster.local, `__PILLAR__DNS__SERVER__` → 10.96.0.10,
/// `__PILLAR__LOCAL__DNS__` → 169.254.20.10), with no kube-dns ConfigMap.
const STOCK_EXPECTED: &str = "cluster.local:53 {
    errors
    cache {
            success 9984 30
            denial 9984 5
    }
    reload
    loop
    bind 169.254.20.10 10.96.0.10
    forward . 10.96.0.11 {
            force_tcp
    }
    prometheus :9253
    health 169.254.20.10:8080
    }
in-addr.arpa:53 {
    errors
    cache 30
    reload
    loop
    bind 169.254.20.10 10.96.0.10
    forward . 10.96.0.11 {
            force_tcp
    }
    prometheus :9253
    }
ip6.arpa:53 {
    errors
    cache 30
    reload
    loop
    bind 169.254.20.10 10.96.0.10
    forward . 10.96.0.11 {
            force_tcp
    }
    prometheus :9253
    }
.:53 {
    errors
    cache 30
    reload
    loop
    bind 169.254.20.10 10.96.0.10
    forward . /etc/resolv.conf
    prometheus :9253
    }
";

/// The installer's `sed` over the stock template.
fn installed(base: &str) -> String {
    base.replace("__PILLAR__DNS__DOMAIN__", "cluster.local")
        .replace("__PILLAR__DNS__SERVER__", "10.96.0.10")
        .replace("__PILLAR__LOCAL__DNS__", "169.254.20.10")
}

fn stock_environment(variable: &str) -> Option<String> {
    let environment = HashMap::from([("KUBE_DNS_UPSTREAM_SERVICE_HOST", "10.96.0.11")]);
    environment.get(variable).map(|value| (*value).to_owned())
}

fn stock_values() -> TemplateValues<'static> {
    TemplateValues {
        local_ips: &LOCAL_IPS,
        dns_port: 53,
        cluster_dns: cluster_dns_address("kube-dns-upstream", stock_environment).unwrap(),
        resolv_conf: "/etc/resolv.conf",
    }
}

fn config_map(entries: &[(&str, &str)]) -> KubeDnsConfig {
    let files: BTreeMap<String, String> = entries
        .iter()
        .map(|(name, text)| ((*name).to_owned(), (*text).to_owned()))
        .collect();
    KubeDnsConfig::from_files(Path::new("/etc/kube-dns"), &files).unwrap()
}

#[test]
fn stock_corefile_without_a_configmap() {
    let corefile = fill_template(
        &installed(STOCK_BASE),
        &stock_values(),
        &KubeDnsConfig::default(),
    );
    assert_eq!(corefile, STOCK_EXPECTED);
}

#[test]
fn stock_corefile_with_a_configmap() {
    let kube_dns = config_map(&[
        ("upstreamNameservers", r#"["8.8.8.8", "8.8.4.4:53"]"#),
        (
            "stubDomains",
            r#"{"acme.local": ["1.2.3.4", "[2001:db8::53]:5353"]}"#,
        ),
    ]);
    let corefile = fill_template(&installed(STOCK_BASE), &stock_values(), &kube_dns);
    let expected = STOCK_EXPECTED
        .replace("forward . /etc/resolv.conf", "forward . 8.8.8.8 8.8.4.4:53")
        + "
acme.local:53 {
    errors
    cache 30
    bind 169.254.20.10 10.96.0.10
    forward . 1.2.3.4 [2001:db8::53]:5353
}
";
    assert_eq!(corefile, expected);
}

#[test]
fn leftover_placeholders_as_node_cache_treats_them() {
    // Without the installer's sed: `__PILLAR__LOCAL__DNS__` gets every -localip,
    // `__PILLAR__DNS__SERVER__` is removed (leaving the space before it), and
    // `__PILLAR__DNS__DOMAIN__` is not node-cache's to fill.
    let corefile = fill_template(STOCK_BASE, &stock_values(), &KubeDnsConfig::default());
    let expected = STOCK_EXPECTED
        .replace("cluster.local:53", "__PILLAR__DNS__DOMAIN__:53")
        .replace(
            "bind 169.254.20.10 10.96.0.10\n",
            "bind 169.254.20.10 10.96.0.10 \n",
        )
        .replace(
            "health 169.254.20.10:8080",
            "health 169.254.20.10 10.96.0.10:8080",
        );
    assert_eq!(corefile, expected);
    assert!(!corefile.contains(DNS_SERVER) && !corefile.contains(LOCAL_DNS));
}

#[test]
fn a_tcp_upstream_line_becomes_udp_with_configmap_upstreams() {
    let base =
        ".:53 {\n    forward . __PILLAR__UPSTREAM__SERVERS__ {\n            force_tcp\n    }\n}\n";
    let kube_dns = config_map(&[("upstreamNameservers", r#"["8.8.8.8"]"#)]);
    assert_eq!(
        fill_template(base, &stock_values(), &kube_dns),
        ".:53 {\n    forward . 8.8.8.8\n}\n"
    );
    // Without ConfigMap upstreams the resolv.conf path is forwarded to over TCP.
    let corefile = fill_template(base, &stock_values(), &KubeDnsConfig::default());
    assert_eq!(
        corefile,
        ".:53 {\n    forward . /etc/resolv.conf {\n            force_tcp\n    }\n}\n"
    );
    // Indented otherwise, the TCP block is not recognised and keeps force_tcp.
    let other = ".:53 {\n  forward . __PILLAR__UPSTREAM__SERVERS__ {\n    force_tcp\n  }\n}\n";
    let corefile = fill_template(other, &stock_values(), &kube_dns);
    assert_eq!(
        corefile,
        ".:53 {\n  forward . 8.8.8.8 {\n    force_tcp\n  }\n}\n"
    );
}

#[test]
fn resolv_conf_path_and_port_are_inputs() {
    let values = TemplateValues {
        dns_port: 5353,
        resolv_conf: "/tmp/resolv.conf",
        ..stock_values()
    };
    let kube_dns = config_map(&[("stubDomains", r#"{"acme.local": ["1.2.3.4"]}"#)]);
    let corefile = fill_template(
        ".:5353 {\n    forward . __PILLAR__UPSTREAM__SERVERS__\n}\n",
        &values,
        &kube_dns,
    );
    assert!(
        corefile.starts_with(".:5353 {\n    forward . /tmp/resolv.conf\n}\n"),
        "{corefile}"
    );
    assert!(corefile.contains("\nacme.local:5353 {\n"), "{corefile}");
}

#[test]
fn service_host_variable_names() {
    assert_eq!(
        service_host_variable("kube-dns-upstream"),
        "KUBE_DNS_UPSTREAM_SERVICE_HOST"
    );
    assert_eq!(service_host_variable("kube-dns"), "KUBE_DNS_SERVICE_HOST");
}

#[test]
fn cluster_dns_from_the_environment() {
    let none = |_: &str| None;
    assert_eq!(
        cluster_dns_address("kube-dns-upstream", none),
        Err(TemplateError::MissingEnvironmentVariable {
            variable: "KUBE_DNS_UPSTREAM_SERVICE_HOST".into(),
            service: "kube-dns-upstream".into(),
        })
    );
    let error = cluster_dns_address("kube-dns-upstream", none)
        .unwrap_err()
        .to_string();
    assert!(
        error.starts_with("environment variable KUBE_DNS_UPSTREAM_SERVICE_HOST is not set"),
        "{error}"
    );
    let empty = |_: &str| Some(String::new());
    assert!(matches!(
        cluster_dns_address("kube-dns", empty),
        Err(TemplateError::MissingEnvironmentVariable { .. })
    ));
    let word = |_: &str| Some("kube-dns".to_owned());
    let error = cluster_dns_address("kube-dns", word).unwrap_err();
    assert!(matches!(&error, TemplateError::NotAnIpAddress { value, .. } if value == "kube-dns"));
    assert!(
        error
            .to_string()
            .contains("KUBE_DNS_SERVICE_HOST is \"kube-dns\""),
        "{error}"
    );
    let mapped = |_: &str| Some("::ffff:10.96.0.11".to_owned());
    assert_eq!(
        cluster_dns_address("kube-dns", mapped).unwrap().to_string(),
        "10.96.0.11"
    );
    let v6 = |_: &str| Some("fd00:0:0::a".to_owned());
    assert_eq!(
        cluster_dns_address("kube-dns", v6).unwrap().to_string(),
        "fd00::a"
    );
}
