//! Unit tests of the build: the stock node-local-dns Corefile, cache zones per block zone,
//! listener grouping, upstreams, metrics endpoints and the messages of what is refused.

use super::*;

/// The stock node-local-dns Corefile (placeholders filled, unsupported directives
/// removed; in-addr.arpa and ip6.arpa share one block).
const STOCK: &str = include_str!("../../../testdata/stock.Corefile");

fn addr(text: &str) -> SocketAddr {
    text.parse().unwrap()
}

#[test]
fn stock_node_local_dns_corefile() {
    let config = build("Corefile", STOCK).unwrap();
    let zones: Vec<&str> = config
        .servers
        .iter()
        .map(|s| s.zone_text.as_str())
        .collect();
    assert_eq!(zones, ["cluster.local.", "in-addr.arpa.", "ip6.arpa.", "."]);
    assert_eq!(config.servers[1].zone, b"\x07in-addr\x04arpa\x00");
    assert_eq!(config.servers[3].zone, b"\x00");
    assert_eq!(config.listeners.len(), 2);
    assert_eq!(config.listeners[0].addr, addr("169.254.20.10:53"));
    assert_eq!(config.listeners[1].addr, addr("10.96.0.10:53"));
    assert!(config.listeners.iter().all(|l| l.servers == [0, 1, 2, 3]));
    let upstreams: Vec<SocketAddr> = config.upstreams.iter().map(|u| u.addr).collect();
    assert_eq!(upstreams, [addr("10.0.0.10:53"), addr("8.8.8.8:53")]);
    let forward = |i: usize| config.servers[i].forward.clone().unwrap();
    assert_eq!(forward(0).upstreams, [0]);
    assert!(forward(0).force_tcp && forward(2).force_tcp && !forward(3).force_tcp);
    assert_eq!(forward(3).upstreams, [1, 0]);
    assert_eq!(forward(3).from, b"\x00");
    assert!(config.servers.iter().all(|s| s.log_errors));
    assert_eq!(config.servers[0].cache.as_ref().unwrap().denial.max_ttl, 5);
    assert_eq!(config.limits, Limits::default());
}

/// The wire form of `text`.
fn wire(text: &str) -> Vec<u8> {
    address::parse_zone(text).unwrap().wire
}

fn wires(texts: &[&str]) -> Vec<Vec<u8>> {
    texts.iter().map(|text| wire(text)).collect()
}

#[test]
fn cache_zones_per_block_zone() {
    // Without ZONES each block zone caches itself.
    let config = build("Corefile", "a.example b.example {\n cache 30\n}").unwrap();
    let zones = |i: usize| config.servers[i].cache.as_ref().unwrap().zones.clone();
    assert_eq!(zones(0), wires(&["a.example"]));
    assert_eq!(zones(1), wires(&["b.example"]));

    // A cache zone covers only the block zones it overlaps.
    let text = "cluster.local in-addr.arpa ip6.arpa {\n cache 30 Cluster.Local\n}";
    let config = build("Corefile", text).unwrap();
    let cache = config.servers[0].cache.clone().unwrap();
    assert_eq!(cache.zones, [b"\x07cluster\x05local\x00"]);
    assert_eq!(cache.success.max_ttl, 30);
    assert_eq!(config.servers[1].cache, None);
    assert_eq!(config.servers[2].cache, None);

    // Ancestors become the block zone; zones inside stay; unrelated ones are dropped.
    let text = "cluster.local in-addr.arpa ip6.arpa {\n cache 30 svc.cluster.local local \
                10.in-addr.arpa example.org cluster.local\n}";
    let config = build("Corefile", text).unwrap();
    let zones = |i: usize| config.servers[i].cache.as_ref().map(|c| c.zones.clone());
    assert_eq!(
        zones(0),
        Some(wires(&["svc.cluster.local", "cluster.local"]))
    );
    assert_eq!(zones(1), Some(wires(&["10.in-addr.arpa"])));
    assert_eq!(zones(2), None);

    // The root covers every block zone.
    let config = build("Corefile", "a.example b.example {\n cache 30 .\n}").unwrap();
    let zones = |i: usize| config.servers[i].cache.as_ref().unwrap().zones.clone();
    assert_eq!(zones(0), wires(&["a.example"]));
    assert_eq!(zones(1), wires(&["b.example"]));

    // A root block keeps the zones as written.
    let config = build("Corefile", ". {\n cache a.example b.example\n}").unwrap();
    let cache = config.servers[0].cache.clone().unwrap();
    assert_eq!(cache.zones, wires(&["a.example", "b.example"]));
}

#[test]
fn disable_zones_per_block_zone() {
    let text = "cluster.local in-addr.arpa ip6.arpa {\n cache 30 cluster.local \
                10.in-addr.arpa {\n  disable success\n  disable denial svc.cluster.local \
                arpa example.org\n  servfail 0\n }\n}";
    let config = build("Corefile", text).unwrap();
    let cache = |i: usize| config.servers[i].cache.clone().unwrap();
    assert_eq!(cache(0).disable_success, wires(&["cluster.local"]));
    assert_eq!(cache(0).disable_denial, wires(&["svc.cluster.local"]));
    assert_eq!(cache(0).servfail_ttl, 0);
    assert_eq!(cache(1).zones, wires(&["10.in-addr.arpa"]));
    assert_eq!(cache(1).disable_success, wires(&["10.in-addr.arpa"]));
    assert_eq!(cache(1).disable_denial, wires(&["10.in-addr.arpa"]));
    assert_eq!(cache(1).servfail_ttl, 0);
    assert_eq!(config.servers[2].cache, None);

    // A disable zone above the block zone becomes the block zone; one below stays.
    let text = "cluster.local {\n cache {\n  disable denial local\n  disable success \
                a.svc.cluster.local b.svc.cluster.local\n }\n}";
    let config = build("Corefile", text).unwrap();
    let cache = config.servers[0].cache.clone().unwrap();
    assert_eq!(cache.zones, wires(&["cluster.local"]));
    assert_eq!(cache.disable_denial, wires(&["cluster.local"]));
    assert_eq!(
        cache.disable_success,
        wires(&["a.svc.cluster.local", "b.svc.cluster.local"])
    );

    // Against several cache zones: clipped to each, without duplicates.
    let text = ". {\n cache a.example b.example {\n  disable success . a.example\n }\n}";
    let config = build("Corefile", text).unwrap();
    let cache = config.servers[0].cache.clone().unwrap();
    assert_eq!(cache.disable_success, wires(&["a.example", "b.example"]));
    assert!(cache.disable_denial.is_empty());
}

#[test]
fn cache_errors_name_the_line() {
    let text = "cluster.local {\n cache {\n  prefetch 1 1m 5%\n }\n}";
    assert_eq!(
        build("Corefile", text).unwrap_err().to_string(),
        "Corefile:3: bad prefetch percentage \"5%\" (expected a whole number from 10 to 90 \
         followed by %, e.g. 10%)"
    );
}

#[test]
fn forward_blocks() {
    use std::time::Duration;

    use shardns_shard::config::Policy;

    // As node-local-dns writes it: `forward . __PILLAR__UPSTREAM__SERVERS__` becomes the
    // node's resolv.conf, here with `max_concurrent`.
    let resolv = std::env::temp_dir().join(format!(
        "shardns-config-forward-{}.conf",
        std::process::id()
    ));
    std::fs::write(
        &resolv,
        "search default.svc.cluster.local\nnameserver 10.0.0.2\nnameserver 10.0.0.3\n",
    )
    .unwrap();
    let text = format!(
        "cluster.local:53 {{\n forward . 10.0.0.10 {{\n  force_tcp\n }}\n}}\n\
         .:53 {{\n forward . {} {{\n  max_concurrent 1000\n }}\n}}\n",
        resolv.display()
    );
    let built = build("Corefile", &text);
    let _ = std::fs::remove_file(&resolv);
    let config = built.unwrap();
    let upstreams: Vec<SocketAddr> = config.upstreams.iter().map(|u| u.addr).collect();
    assert_eq!(
        upstreams,
        [
            addr("10.0.0.10:53"),
            addr("10.0.0.2:53"),
            addr("10.0.0.3:53")
        ]
    );
    assert_eq!(
        config.servers[0].forward,
        Some(ForwardConfig {
            upstreams: vec![0],
            force_tcp: true,
            ..ForwardConfig::default()
        })
    );
    assert_eq!(
        config.servers[1].forward,
        Some(ForwardConfig {
            upstreams: vec![1, 2],
            max_concurrent: Some(1000),
            ..ForwardConfig::default()
        })
    );

    // Every option, shared by the zones of the block.
    let text = "a.example b.example {\n forward example 10.0.0.10 dns://10.0.0.11:5353 {\n  \
                except A.Example. c.b.example\n  prefer_udp\n  expire 30s\n  max_fails 0\n  \
                policy round_robin\n  health_check 2s no_rec domain Health.Example\n  \
                max_concurrent 50\n  next nxdomain REFUSED\n  \
                failfast_all_unhealthy_upstreams\n }\n}\n";
    let config = build("Corefile", text).unwrap();
    let expected = ForwardConfig {
        from: wire("example"),
        except: wires(&["a.example", "c.b.example"]),
        upstreams: vec![0, 1],
        force_tcp: false,
        prefer_udp: true,
        expire: Duration::from_secs(30),
        max_fails: 0,
        policy: Policy::RoundRobin,
        health_check: Duration::from_secs(2),
        health_no_rec: true,
        health_domain: wire("health.example"),
        max_concurrent: Some(50),
        next: codes(&[3, 5]),
        failfast: true,
    };
    assert_eq!(config.servers[0].forward.as_ref(), Some(&expected));
    assert_eq!(config.servers[1].forward.as_ref(), Some(&expected));
    let upstreams: Vec<SocketAddr> = config.upstreams.iter().map(|u| u.addr).collect();
    assert_eq!(upstreams, [addr("10.0.0.10:53"), addr("10.0.0.11:5353")]);

    let text = ".:53 {\n errors\n forward . 10.0.0.10 {\n  force_tcp\n  max_fails x\n }\n}\n";
    assert_eq!(
        build("Corefile", text).unwrap_err().to_string(),
        "Corefile:5: bad max_fails \"x\" (expected a whole number from 0 to 4294967295)"
    );
}

#[test]
fn listener_grouping() {
    let text = "a.example:53 {\n bind 127.0.0.1\n}\nb.example:5353 {\n bind 127.0.0.1 ::1\n}\n\
                c.example {\n bind 127.0.0.1\n}\nd.example:0 {\n}\n";
    let config = build("Corefile", text).unwrap();
    let listeners: Vec<(String, Vec<usize>)> = config
        .listeners
        .iter()
        .map(|l| (l.addr.to_string(), l.servers.clone()))
        .collect();
    assert_eq!(
        listeners,
        [
            ("127.0.0.1:53".to_string(), vec![0, 2]),
            ("127.0.0.1:5353".to_string(), vec![1]),
            ("[::1]:5353".to_string(), vec![1]),
            ("0.0.0.0:0".to_string(), vec![3]),
            ("[::]:0".to_string(), vec![3]),
        ]
    );
    assert!(
        config
            .servers
            .iter()
            .all(|s| s.cache.is_none() && s.forward.is_none() && !s.log_errors)
    );
}

#[test]
fn same_zone_twice() {
    let text = ".:53 {\n bind 127.0.0.1\n}\n\n. {\n bind 127.0.0.2 127.0.0.1\n}\n";
    assert_eq!(
        build("Corefile", text).unwrap_err().to_string(),
        "Corefile:5: zone \".\" is already served on 127.0.0.1:53 (server block key at line 1)"
    );
    assert!(build("Corefile", "a.example a.example. {\n}").is_err());
    // The same zone on different ports or addresses is fine.
    assert!(build("Corefile", ".:53 {\n}\n.:54 {\n}\n. {\n bind 127.0.0.1\n}").is_ok());
}

#[test]
fn bad_keys() {
    assert!(
        build("Corefile", "\n.:http {\n}")
            .unwrap_err()
            .to_string()
            .starts_with("Corefile:2: server block key \".:http\": bad port")
    );
    assert!(
        build("Corefile", "tls://.:853 {\n}")
            .unwrap_err()
            .to_string()
            .contains("not supported yet")
    );
}

#[test]
fn metrics_endpoints() {
    let text = ".:53 {\n prometheus :9253\n}\ncluster.local:53 {\n prometheus 0.0.0.0:9253\n}\n\
                in-addr.arpa:53 {\n prometheus\n}\nip6.arpa:53 {\n prometheus [::1]:9254\n}\n\
                example.org:53 {\n}\n";
    let process = build_process("Corefile", text).unwrap();
    let metrics: Vec<String> = process.metrics.iter().map(ToString::to_string).collect();
    assert_eq!(metrics, ["0.0.0.0:9253", "127.0.0.1:9153", "[::1]:9254"]);
    assert_eq!(process.config.servers.len(), 5);
    let stock = build_process("Corefile", STOCK).unwrap();
    assert_eq!(stock.metrics, [addr("0.0.0.0:9253")]);
}

#[test]
fn metrics_endpoints_that_clash() {
    let text =
        ".:53 {\n prometheus 127.0.0.1:9253\n}\n\ncluster.local:53 {\n prometheus :9253\n}\n";
    assert_eq!(
        build_process("Corefile", text).unwrap_err().to_string(),
        "Corefile:6: prometheus address :9253 clashes with the prometheus address 127.0.0.1:9253 \
         at line 2 (the same port on every address); name one address in every block"
    );
    // Different ports, or different IPs on one port, are several endpoints.
    let text = ".:53 {\n prometheus 127.0.0.1:9253\n}\na.example {\n prometheus 127.0.0.2:9253\n}\n\
                b.example {\n prometheus :9254\n}\n";
    assert_eq!(build_process("Corefile", text).unwrap().metrics.len(), 3);
    // The wildcard takes IPv6 too.
    let text = ".:53 {\n prometheus [::]:9253\n}\na.example {\n prometheus [::1]:9253\n}\n";
    assert!(
        build_process("Corefile", text)
            .unwrap_err()
            .to_string()
            .starts_with("Corefile:5: prometheus address [::1]:9253 clashes with the prometheus address :9253 at line 2")
    );
}

/// RCODEs from their values.
fn codes(values: &[u16]) -> Vec<shardns_wire::Rcode> {
    values
        .iter()
        .map(|&v| shardns_wire::Rcode::new(v))
        .collect()
}

#[test]
fn health_ready_log_and_loop() {
    let text = "cluster.local:53 {\n bind 127.0.0.1\n health 127.0.0.1:8080 {\n  lameduck 5s\n }\n \
                loop\n log\n prometheus 127.0.0.1:8080\n}\n\
                .:53 {\n bind 127.0.0.1\n health 127.0.0.1:8080 {\n  lameduck 7s\n }\n ready\n \
                log example.org\n}\n";
    let process = build_process("Corefile", text).unwrap();
    let addr = |text: &str| text.parse::<std::net::SocketAddr>().unwrap();
    assert_eq!(
        process.health,
        [addr("127.0.0.1:8080")],
        "shared by both blocks"
    );
    assert_eq!(
        process.metrics,
        [addr("127.0.0.1:8080")],
        "the same endpoint"
    );
    assert_eq!(process.ready, [addr("0.0.0.0:8181")]);
    assert_eq!(
        process.lameduck,
        Some(std::time::Duration::from_secs(7)),
        "the longest"
    );
    let servers = &process.config.servers;
    assert!(servers[0].loop_probe.is_some() && servers[1].loop_probe.is_none());
    let probe = servers[0].loop_probe.as_ref().unwrap();
    assert!(
        probe.qname().ends_with(b"\x07cluster\x05local\x00"),
        "<random>.<random>.<zone>"
    );
    assert_eq!(servers[0].log_queries, Some(Vec::new()), "every name");
    assert_eq!(
        servers[1].log_queries,
        Some(vec![b"\x07example\x03org\x00".to_vec()])
    );
    let clash = build_process(
        "Corefile",
        ".:53 {\n health 127.0.0.1:8080\n}\nexample.org:53 {\n ready :8080\n}\n",
    )
    .unwrap_err()
    .to_string();
    assert_eq!(
        clash,
        "Corefile:5: ready address :8080 clashes with the health address 127.0.0.1:8080 at \
         line 2 (the same port on every address); name one address in every block"
    );
}
