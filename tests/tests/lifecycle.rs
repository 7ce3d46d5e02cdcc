//! Start-up and shut-down: the embedded default configuration, configuration errors,
//! `--validate`.

#![forbid(unsafe_code)]

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::process::{Command, Stdio};
use std::time::Duration;

use shardns_e2e::{Shardns, TempDir, dig_status, shardns_binary};

/// Can this machine give a child its own network namespace (only `lo`)? Then the embedded
/// default (fixed 127.0.0.1:5353, upstream = resolv.conf's nameserver on port 53) runs fully
/// isolated: no port clash with the host, and nothing it sends can leave loopback.
fn netns_available() -> bool {
    Command::new("unshare")
        .args(["-n", "sh", "-c", "ip link set lo up"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn port_free(addr: &str) -> bool {
    UdpSocket::bind(addr).is_ok() && TcpListener::bind(addr).is_ok()
}

/// `dig` run inside the network namespace of `pid` (or in ours when `pid` is `None`).
fn dig_in(pid: Option<u32>, tcp: bool) -> anyhow::Result<String> {
    let mut cmd = match pid {
        Some(pid) => {
            let mut c = Command::new("nsenter");
            c.arg(format!("--net=/proc/{pid}/ns/net")).arg("dig");
            c
        }
        None => Command::new("dig"),
    };
    cmd.args([
        "-r",
        "@127.0.0.1",
        "-p",
        "5353",
        "+tries=1",
        "+time=8",
        "+nosearch",
    ]);
    if tcp {
        cmd.arg("+tcp");
    }
    cmd.args(["www.example.test.", "A"]);
    let out = cmd.stdin(Stdio::null()).output()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    anyhow::ensure!(
        out.status.success(),
        "{cmd:?}: {}\n{text}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(text)
}

#[test]
fn embedded_default_config() {
    let dir = TempDir::new("def").unwrap();
    let resolv = dir.join("resolv.conf");
    // Nothing (or anything) may listen on 127.0.0.1:53: SERVFAIL and an answer are both fine.
    std::fs::write(&resolv, "nameserver 127.0.0.1\n").unwrap();
    let bin = shardns_binary().unwrap();
    let args = vec!["--resolv-conf".to_string(), resolv.display().to_string()];

    let isolated = netns_available();
    let program = if isolated {
        let mut c = Command::new("unshare");
        c.args(["-n", "sh", "-c", "ip link set lo up && exec \"$0\" \"$@\""])
            .arg(&bin);
        c
    } else {
        if !port_free("127.0.0.1:5353") {
            eprintln!("SKIPPED embedded_default_config: 127.0.0.1:5353 is already in use");
            return;
        }
        Command::new(&bin)
    };
    let sd = Shardns::start_in(dir, &program, &args, Some(1)).expect("shardns with no --conf");
    let want: SocketAddr = "127.0.0.1:5353".parse().unwrap();
    assert_eq!(sd.udp_addr(), want, "{}", sd.log_text());
    assert_eq!(sd.tcp_addr(), want, "{}", sd.log_text());
    assert!(
        sd.log_lines()
            .iter()
            .any(|l| l.contains("listening on udp 127.0.0.1:5353")),
        "{}",
        sd.log_text()
    );
    assert!(
        sd.log_lines().iter().any(|l| l.contains(
            "built-in configuration: a cache on 127.0.0.1:5353 forwarding . to 127.0.0.1:53 (from "
        )),
        "the built-in configuration says where it forwards:\n{}",
        sd.log_text()
    );

    // Only query when nothing can leave loopback: in the private namespace, or when the
    // host's own resolv.conf is loopback-only (guards against a binary ignoring --resolv-conf).
    let host_resolv_loopback = std::fs::read_to_string("/etc/resolv.conf")
        .unwrap_or_default()
        .lines()
        .all(|l| {
            let mut w = l.split_whitespace();
            w.next() != Some("nameserver")
                || w.next()
                    .and_then(|a| a.parse::<std::net::IpAddr>().ok())
                    .is_some_and(|a| a.is_loopback())
        });
    if isolated || host_resolv_loopback {
        let pid = isolated.then(|| sd.pid());
        for tcp in [false, true] {
            let out = dig_in(pid, tcp).unwrap_or_else(|e| {
                panic!(
                    "no reply from the embedded default: {e:#}\n{}",
                    sd.log_text()
                )
            });
            let status = dig_status(&out).unwrap_or("");
            assert!(
                ["SERVFAIL", "NOERROR", "NXDOMAIN", "REFUSED"].contains(&status),
                "unexpected status {status:?}:\n{out}"
            );
        }
    } else {
        eprintln!(
            "embedded_default_config: no network namespace and a non-loopback /etc/resolv.conf: not sending a query"
        );
    }
    sd.stop();
}

fn corefile_with_error() -> String {
    // Line 4 holds the unknown directive.
    ".:0 {\n    bind 127.0.0.1\n    cache 30\n    frobnicate 1 2\n    forward . 127.0.0.1:9\n    errors\n}\n"
        .to_string()
}

/// A server block without `forward` says at start-up what it does with what it has not
/// cached.
#[test]
fn a_block_without_forward_says_it_refuses() {
    let sd = Shardns::start(
        ".:0 {\n    bind 127.0.0.1\n    cache 30\n}\n",
        &["--shards", "1"],
    )
    .expect("shardns");
    assert!(
        sd.log_lines().iter().any(|l| l.contains(
            "server block . has no forward: it answers REFUSED to every query it has not cached"
        )),
        "{}",
        sd.log_text()
    );
    sd.stop();
}

#[test]
fn unknown_directive_is_a_config_error() {
    let dir = TempDir::new("bad").unwrap();
    let conf = dir.join("Corefile");
    std::fs::write(&conf, corefile_with_error()).unwrap();
    let exit = Shardns::run_to_exit(
        &["--conf".into(), conf.display().to_string()],
        Duration::from_secs(10),
    )
    .expect("shardns must refuse to start");
    assert_eq!(
        exit.status.code(),
        Some(64),
        "exit status for a bad Corefile:\n{}",
        exit.log
    );
    assert!(
        exit.log.contains("Corefile:4"),
        "the message must name Corefile:4:\n{}",
        exit.log
    );
    assert!(
        exit.log.contains("frobnicate"),
        "the message must name the directive:\n{}",
        exit.log
    );
}

#[test]
fn validate_flag() {
    let dir = TempDir::new("val").unwrap();
    let good = dir.join("Corefile");
    std::fs::write(&good, ".:0 {\n    bind 127.0.0.1\n    cache 30\n    forward . 127.0.0.1:9 {\n        force_tcp\n    }\n    errors\n}\n").unwrap();
    let exit = Shardns::run_to_exit(
        &[
            "--conf".into(),
            good.display().to_string(),
            "--validate".into(),
        ],
        Duration::from_secs(10),
    )
    .expect("--validate must exit by itself");
    assert_eq!(
        exit.status.code(),
        Some(0),
        "--validate of a good Corefile:\n{}",
        exit.log
    );

    let bad = dir.join("Bad.Corefile");
    std::fs::write(&bad, corefile_with_error()).unwrap();
    let exit = Shardns::run_to_exit(
        &[
            "--conf".into(),
            bad.display().to_string(),
            "--validate".into(),
        ],
        Duration::from_secs(10),
    )
    .expect("--validate must exit by itself");
    assert_eq!(
        exit.status.code(),
        Some(64),
        "--validate of a bad Corefile:\n{}",
        exit.log
    );
    assert!(exit.log.contains("Bad.Corefile:4"), "{}", exit.log);
}

/// A second shardns on an address the first one serves refuses to start, naming the address
/// and the process that holds it, instead of sharing the clients with it (`SO_REUSEPORT`);
/// the first one is unharmed.
#[test]
fn an_address_another_process_serves_is_refused() {
    let first = Shardns::start(
        ".:0 {\n    bind 127.0.0.1\n    forward . 127.0.0.1:9\n}\n",
        &["--shards", "1"],
    )
    .expect("the first shardns");
    let addr = first.udp_addr();
    let dir = TempDir::new("second").unwrap();
    let conf = dir.join("Corefile");
    let text = format!(
        ".:{} {{\n    bind 127.0.0.1\n    forward . 127.0.0.1:9\n}}\n",
        addr.port()
    );
    std::fs::write(&conf, text).unwrap();
    let exit = Shardns::run_to_exit(
        &["--conf".into(), conf.display().to_string()],
        Duration::from_secs(10),
    )
    .expect("the second one must exit by itself");
    assert_eq!(exit.status.code(), Some(1), "{}", exit.log);
    let expected = format!("{addr} (udp) is already served by process {}", first.pid());
    assert!(
        exit.log.contains(&expected),
        "{expected:?} not in:\n{}",
        exit.log
    );
    assert!(exit.log.contains("(shardns)"), "{}", exit.log);
    assert_eq!(
        exit.log.matches("already served").count(),
        1,
        "said once:\n{}",
        exit.log
    );
    let client = shardns_e2e::UdpClient::new(addr).expect("UDP client");
    let reply = client
        .query("www.example.test.", hickory_proto::rr::RecordType::A)
        .expect("the first one still answers");
    assert_eq!(
        reply.response_code(),
        hickory_proto::op::ResponseCode::ServFail
    );
    first.stop();
}

#[test]
fn a_loop_is_detected_and_exits_1_with_coredns_message() {
    let port = shardns_e2e::unbound::free_port().unwrap();
    let dir = TempDir::new("loop").unwrap();
    let conf = dir.join("Corefile");
    // The block forwards to itself: the loop check's probe comes back.
    let text =
        format!(".:{port} {{\n    bind 127.0.0.1\n    loop\n    forward . 127.0.0.1:{port}\n}}\n");
    std::fs::write(&conf, text).unwrap();
    let started = std::time::Instant::now();
    let exit = Shardns::run_to_exit(
        &[
            "--conf".into(),
            conf.display().to_string(),
            "--shards".into(),
            "2".into(),
        ],
        Duration::from_secs(20),
    )
    .expect("it must exit by itself");
    assert_eq!(exit.status.code(), Some(1), "{}", exit.log);
    let line = exit
        .log
        .lines()
        .find(|line| line.contains("plugin/loop"))
        .unwrap_or_else(|| panic!("no plugin/loop line:\n{}", exit.log));
    assert!(line.contains("ERROR"), "{line}");
    let expected_middle = format!(
        " -> 127.0.0.1:{port}) detected for zone \".\", see \
         https://coredns.io/plugins/loop#troubleshooting. Query: \"HINFO "
    );
    assert!(line.contains("Loop (127.0.0.1:"), "{line}");
    assert!(line.contains(&expected_middle), "{line}");
    assert!(line.trim_end().ends_with(".\""), "{line}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "detected at once"
    );
}

#[test]
fn a_block_forwarding_elsewhere_passes_the_loop_check() {
    let unbound = shardns_e2e::Unbound::start().unwrap();
    let corefile = format!(
        ".:0 {{\n    bind 127.0.0.1\n    loop\n    forward . {}\n}}\n",
        unbound.addr()
    );
    let mut shardns = Shardns::start(&corefile, &["--shards", "2"]).unwrap();
    // The probe goes out and is answered (REFUSED by Unbound): no loop.
    let probed = shardns_e2e::wait_for(Duration::from_secs(5), || {
        (unbound.total_queries() >= 1).then_some(())
    });
    assert!(probed.is_some(), "the probe reached the upstream");
    std::thread::sleep(Duration::from_millis(500));
    shardns.assert_alive();
    let log = shardns.stop();
    assert!(!log.contains("plugin/loop"), "{log}");
}

#[test]
fn lameduck_keeps_serving_dns_and_health_after_sigterm() {
    use shardns_e2e::metrics::http;

    let unbound = shardns_e2e::Unbound::start().unwrap();
    let health_port = shardns_e2e::unbound::free_port().unwrap();
    let health: SocketAddr = ([127, 0, 0, 1], health_port).into();
    let corefile = format!(
        ".:0 {{\n    bind 127.0.0.1\n    forward . {}\n    health {health} {{\n        lameduck 1500ms\n    }}\n}}\n",
        unbound.addr()
    );
    let mut shardns = Shardns::start(&corefile, &["--shards", "2"]).unwrap();
    let get = |path: &str| {
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        http(health, request.as_bytes())
    };
    assert!(get("/health").starts_with("HTTP/1.1 200 OK\r\n"));
    // Ready once the upstream has answered (its own query wakes it).
    let ready = shardns_e2e::wait_for(Duration::from_secs(5), || {
        get("/ready")
            .starts_with("HTTP/1.1 200 OK\r\n")
            .then_some(())
    });
    assert!(ready.is_some(), "{}", get("/ready"));

    let term = std::time::Instant::now();
    shardns_e2e::shardns::send_signal(shardns.pid(), "TERM").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    // In lameduck: DNS and /health answer, /ready says it is going.
    let client = shardns_e2e::UdpClient::new(shardns.udp_addr()).unwrap();
    let reply = client
        .query(shardns_e2e::zone::WWW, hickory_proto::rr::RecordType::A)
        .expect("answered in lameduck");
    assert_eq!(
        reply.response_code(),
        hickory_proto::op::ResponseCode::NoError
    );
    assert!(get("/health").starts_with("HTTP/1.1 200 OK\r\n"));
    let not_ready = get("/ready");
    assert!(
        not_ready.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
        "{not_ready}"
    );
    assert!(not_ready.ends_with("shutting down"), "{not_ready}");
    shardns.assert_alive();
    let log = shardns.stop();
    assert!(
        term.elapsed() >= Duration::from_millis(1500),
        "stopped after the lameduck: {:?}",
        term.elapsed()
    );
    assert!(log.contains("lameduck: still serving for 1500 ms"), "{log}");
}
