//! The dashboard and the rules against a real Prometheus (Debian's `prometheus`) scraping a
//! real shardns under load, all on loopback: shardns runs in node-local mode (node-cache's
//! arguments, with interface and iptables setup and teardown off: nothing outside the process
//! changes)
//! so that the node families exist too, forwarding to a harness Unbound, and to a dead port
//! for one zone (SERVFAIL, failed health checks). Prometheus scrapes it every second and
//! evaluates deploy/prometheus/rules.yaml every second. The test asserts, through Prometheus's
//! HTTP API: `up == 1`, every rule loaded and evaluated without error, every recording rule
//! returns samples, and every expression of deploy/grafana/shardns.json (its variables
//! substituted as Grafana does) returns series, as do its variables' queries.
//!
//! Skipped with the reason where `prometheus` or Unbound is missing. Every wait is bounded.

#![forbid(unsafe_code)]

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use serde_json::Value;
use shardns_e2e::load::{Load, Mix};
use shardns_e2e::monitoring::{Prometheus, dashboard_queries, program_runs, repo_path, substitute};
use shardns_e2e::unbound::free_port;
use shardns_e2e::{Shardns, TempDir, UdpClient, Unbound, shardns_binary, zone};

/// How long the test waits for every check to pass once the load runs.
const SETTLE: Duration = Duration::from_secs(40);

/// How long the checks must keep holding (3 rule evaluations).
const REPEAT: Duration = Duration::from_secs(3);

/// Grafana's `$__rate_interval` for a 1 s scrape interval is 4 s at least; a little more
/// keeps a few samples in every window.
const RATE_INTERVAL: &str = "10s";

/// The zone forwarded to a port where nothing listens.
const BROKEN_ZONE: &str = "broken.test";

/// node-cache's Corefile template (what the `node-local-dns` ConfigMap holds) for loopback:
/// the cluster zone through `__PILLAR__CLUSTER__DNS__` (kube-dns, here Unbound), a zone whose
/// upstream is down, and the rest to Unbound.
fn template(dns: u16, metrics: u16, unbound: u16, dead: u16) -> String {
    let block = |zone: &str, forward: &str| {
        format!(
            "{zone}:{dns} {{\n    errors\n    cache 30\n    bind 127.0.0.1\n    forward . \
             {forward} {{\n        force_tcp\n    }}\n    prometheus 127.0.0.1:{metrics}\n}}\n"
        )
    };
    [
        block(
            "cluster.local",
            &format!("__PILLAR__CLUSTER__DNS__:{unbound}"),
        ),
        block(BROKEN_ZONE, &format!("127.0.0.1:{dead}")),
        block(".", &format!("127.0.0.1:{unbound}")),
    ]
    .concat()
}

/// shardns in node-local mode with [`template`], the metrics address it serves, and the
/// dead upstream's address.
fn start_node_cache(unbound: &Unbound) -> Result<(Shardns, SocketAddr, SocketAddr)> {
    let mut last_error = None;
    for _ in 0..3 {
        let dir = TempDir::new("mon")?;
        let (dns, metrics, wrapper, dead) =
            (free_port()?, free_port()?, free_port()?, free_port()?);
        std::fs::create_dir_all(dir.join("kube-dns"))?;
        std::fs::write(dir.join("resolv.conf"), "nameserver 127.0.0.1\n")?;
        let base = dir.join("Corefile.base");
        std::fs::write(&base, template(dns, metrics, unbound.port(), dead))?;
        let path = |name: &str| dir.join(name).display().to_string();
        let args: Vec<String> = [
            "-localip",
            "127.0.0.1",
            "-conf",
            &path("Corefile"),
            "-basecorefile",
            &base.display().to_string(),
            "-upstreamsvc",
            "kube-dns-upstream",
            "-kubednscm",
            &path("kube-dns"),
            "-setupinterface=false",
            "-setupiptables=false",
            "-skipteardown",
            "-metrics-listen-address",
            &format!("127.0.0.1:{wrapper}"),
            "--resolv-conf",
            &path("resolv.conf"),
            "--handoff-socket",
            &path("handoff.sock"),
            "--shards",
            "2",
        ]
        .iter()
        .map(|arg| arg.to_string())
        .collect();
        // node-cache reads kube-dns's address from the upstream Service's environment.
        let mut program = Command::new("env");
        program
            .arg("KUBE_DNS_UPSTREAM_SERVICE_HOST=127.0.0.1")
            .arg(shardns_binary()?);
        match Shardns::start_in(dir, &program, &args, None) {
            Ok(shardns) => {
                let at = |port| SocketAddr::from(([127, 0, 0, 1], port));
                return Ok((shardns, at(metrics), at(dead)));
            }
            Err(error) => last_error = Some(error),
        }
    }
    Err(last_error.expect("three tries"))
}

/// Why this test cannot run here, if it cannot.
fn skip_reason() -> Option<String> {
    if !program_runs("prometheus") {
        return Some("prometheus is missing (apt-get install prometheus)".to_string());
    }
    if !Path::new("/usr/sbin/unbound").exists() {
        return Some("/usr/sbin/unbound is missing (apt-get install unbound)".to_string());
    }
    None
}

/// The names of `kind` (`record` or `alert`) rules in rules.yaml.
fn rule_names(kind: &str) -> Vec<String> {
    let path = repo_path("deploy/prometheus/rules.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let rules: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    rules["groups"]
        .as_sequence()
        .into_iter()
        .flatten()
        .flat_map(|group| group["rules"].as_sequence().cloned().unwrap_or_default())
        .filter_map(|rule| rule[kind].as_str().map(str::to_string))
        .collect()
}

/// One round of checks; the list of what does not hold yet (empty: all hold).
fn unmet(prometheus: &Prometheus, instance: &str, dead: SocketAddr) -> Result<Vec<String>> {
    let mut unmet = Vec::new();
    let up = prometheus.query("up{job=\"shardns\"}")?;
    if up.len() != 1 || up[0]["value"][1] != "1" {
        unmet.push(format!("up == 1: {up:?}"));
    }

    // Every rule of rules.yaml loaded, evaluated, and without error.
    let rules: Vec<Value> = prometheus
        .rule_groups()?
        .iter()
        .flat_map(|group| group["rules"].as_array().cloned().unwrap_or_default())
        .collect();
    let loaded = |kind: &str| {
        rules
            .iter()
            .filter(|rule| rule["type"] == kind)
            .filter_map(|rule| rule["name"].as_str().map(str::to_string))
            .collect::<Vec<_>>()
    };
    for (kind, names) in [
        ("recording", rule_names("record")),
        ("alerting", rule_names("alert")),
    ] {
        if loaded(kind) != names {
            unmet.push(format!(
                "{kind} rules loaded: {:?} != {names:?}",
                loaded(kind)
            ));
        }
    }
    for rule in &rules {
        if rule["health"] != "ok" || rule["lastError"].as_str().is_some_and(|e| !e.is_empty()) {
            unmet.push(format!(
                "rule {} health {} {}",
                rule["name"], rule["health"], rule["lastError"]
            ));
        }
    }
    // The dead upstream's alert is on its way (pending: its `for` is 10 minutes).
    let alert = format!("ALERTS{{alertname=\"ShardnsUpstreamUnhealthy\",to=\"{dead}\"}}");
    if prometheus.query(&alert)?.is_empty() {
        unmet.push(format!("no {alert}"));
    }
    for record in rule_names("record") {
        if prometheus.query(&record)?.is_empty() {
            unmet.push(format!("recording rule {record} has no samples"));
        }
    }

    // The dashboard's variables, then every panel's expression, as Grafana would send them.
    let instance_regex = instance.replace('.', "\\\\.");
    let instances: BTreeSet<String> = prometheus
        .query("shardns_shard_info")?
        .iter()
        .filter_map(|s| s["metric"]["instance"].as_str().map(str::to_string))
        .collect();
    if !instances.contains(instance) {
        unmet.push(format!("$instance's values {instances:?} lack {instance}"));
    }
    let shards: BTreeSet<String> = prometheus
        .query(&format!(
            "shardns_shard_info{{instance=~\"{instance_regex}\"}}"
        ))?
        .iter()
        .filter_map(|s| s["metric"]["shard"].as_str().map(str::to_string))
        .collect();
    if shards != BTreeSet::from(["0".to_string(), "1".to_string()]) {
        unmet.push(format!("$shard's values: {shards:?}"));
    }
    let values = [
        ("instance", instance_regex.as_str()),
        ("shard", "(0|1)"),
        ("__rate_interval", RATE_INTERVAL),
        ("__interval", "2s"),
        ("datasource", "prometheus"),
    ];
    let text = std::fs::read_to_string(repo_path("deploy/grafana/shardns.json"))?;
    let dashboard: Value = serde_json::from_str(&text)?;
    let queries = dashboard_queries(&dashboard);
    if queries.len() < 30 {
        unmet.push(format!("only {} dashboard queries", queries.len()));
    }
    for query in queries {
        let expr = substitute(&query.expr, &values);
        if expr.contains('$') {
            unmet.push(format!("{}: a variable left in {expr}", query.panel));
        } else if prometheus.query(&expr)?.is_empty() {
            unmet.push(format!("{}: no series for {expr}", query.panel));
        }
    }
    Ok(unmet)
}

#[test]
fn prometheus_scrapes_shardns_evaluates_the_rules_and_every_dashboard_query_has_data() {
    if let Some(reason) = skip_reason() {
        eprintln!("skipped: {reason}");
        return;
    }
    let unbound = Unbound::start().expect("starting Unbound");
    let (shardns, metrics, dead) = start_node_cache(&unbound).expect("starting shardns");
    let config = format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
         rule_files:\n  - {}\n\
         scrape_configs:\n  - job_name: shardns\n    static_configs:\n      - targets: ['{metrics}']\n",
        repo_path("deploy/prometheus/rules.yaml").display()
    );
    let prometheus = Prometheus::start(&config).expect("starting prometheus");

    // Hits (the fixture's hosts), misses (fresh NXDOMAIN names), and SERVFAIL from the zone
    // whose upstream is down, all on loopback.
    let server = shardns.udp_addr();
    shardns_e2e::load::warm(server);
    let mix = Mix {
        hit_clients: 2,
        miss_clients: 1,
        pace: Duration::from_millis(5),
        ..Mix::unbound_hosts()
    };
    let load = Load::with(server, mix);
    let client = UdpClient::new(server).expect("UDP client");
    let cluster = client
        .query(zone::KUBE_DNS, RecordType::A)
        .expect("a reply");
    assert_eq!(cluster.response_code(), ResponseCode::NoError, "{cluster}");

    // Every check must hold twice, REPEAT apart: a rule's health is that of its last
    // evaluation, and one that fails only once the recording rules have data must be seen.
    let started = Instant::now();
    let mut last = Vec::new();
    let mut passed_at: Option<Instant> = None;
    let mut broken = 0u32;
    while started.elapsed() < SETTLE {
        broken += 1;
        let name = format!("q{broken}.{BROKEN_ZONE}.");
        let reply = client.query(&name, RecordType::A).expect("a reply");
        assert_eq!(reply.response_code(), ResponseCode::ServFail, "{reply}");
        last = unmet(&prometheus, &metrics.to_string(), dead)
            .with_context(|| prometheus.log())
            .unwrap();
        match (last.is_empty(), passed_at) {
            (false, _) => passed_at = None,
            (true, None) => passed_at = Some(Instant::now()),
            (true, Some(at)) if at.elapsed() >= REPEAT => break,
            (true, Some(_)) => {}
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    if passed_at.is_none_or(|at| at.elapsed() < REPEAT) && last.is_empty() {
        last.push(format!("the checks did not hold for {REPEAT:?}"));
    }
    let seen = load.stop();
    assert!(
        last.is_empty(),
        "not within {SETTLE:?}:\n{}\nprometheus log:\n{}",
        last.join("\n"),
        prometheus.log()
    );
    eprintln!(
        "all checks passed after {:?}; load {seen:?}",
        started.elapsed()
    );
    assert!(seen.answered > 0 && seen.lost == 0, "{seen:?}");

    // The dead upstream's alert is pending (checked above); the live one's is not.
    let healthy = format!(
        "ALERTS{{alertname=\"ShardnsUpstreamUnhealthy\",to=\"{}\"}}",
        unbound.addr()
    );
    assert_eq!(prometheus.query(&healthy).unwrap(), Vec::<Value>::new());

    // The check can fail: a misspelt family has no series, and a broken expression is an error.
    let typo = prometheus
        .query("sum(rate(coredns_dns_request_total[10s]))")
        .unwrap();
    assert!(typo.is_empty(), "{typo:?}");
    assert!(
        prometheus
            .query("sum(rate(coredns_dns_requests_total))")
            .is_err()
    );

    // What the data says: SERVFAIL counted, both shards served, the node family is there.
    let value = |expr: &str| -> Result<f64> {
        let samples = prometheus.query(expr)?;
        let Some(sample) = samples.first() else {
            bail!("{expr}: no samples")
        };
        Ok(sample["value"][1].as_str().unwrap_or("NaN").parse()?)
    };
    assert!(value("sum(coredns_dns_responses_total{rcode=\"SERVFAIL\"})").unwrap() >= 1.0);
    assert!(value("sum(coredns_cache_hits_total)").unwrap() > 0.0);
    assert_eq!(value("count(shardns_shard_info)").unwrap(), 2.0);
    assert_eq!(
        value("count(coredns_nodecache_setup_errors_total)").unwrap(),
        5.0
    );
    eprintln!(
        "figures: scrape_samples_scraped {}, scrape_duration_seconds {:.4}, dashboard queries {}",
        value("scrape_samples_scraped{job=\"shardns\"}").unwrap(),
        value("scrape_duration_seconds{job=\"shardns\"}").unwrap(),
        dashboard_queries(
            &serde_json::from_str(
                &std::fs::read_to_string(repo_path("deploy/grafana/shardns.json")).unwrap()
            )
            .unwrap()
        )
        .len()
    );
    drop(prometheus);
    shardns.stop();
}
