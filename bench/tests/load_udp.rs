//! `shardns-bench load` over UDP against the real `reflect` subcommand and in-test
//! responders on 127.0.0.1: closed and open loop, a silent server, wrong questions, and the
//! JSON schema.

mod support;

use support::{EIGHT_NAMES, Reflector, UdpResponder, latency, load_json, n, query_file};

#[test]
fn closed_loop_against_reflect_answers_everything() {
    let reflector = Reflector::start();
    let file = query_file(EIGHT_NAMES);
    let port = reflector.addr.port().to_string();
    let (report, _) = load_json(&["-p", &port, "-d", file.to_str().unwrap(), "-l", "1"]);
    assert!(reflector.stop(), "reflect exits 0 on SIGTERM");
    assert_eq!(report["mode"], "closed");
    assert_eq!(report["protocol"], "udp");
    assert!(report["offered_qps"].is_null());
    assert!(n(&report, "answered") > 0, "{report}");
    assert_eq!(n(&report, "lost"), 0, "{report}");
    assert_eq!(n(&report, "mismatched"), 0, "{report}");
    assert_eq!(n(&report, "answered"), n(&report, "sent"), "{report}");
    assert_eq!(report["rcodes"]["NOERROR"], report["answered"]);
    let (p50, p99, max) = (
        latency(&report, "p50"),
        latency(&report, "p99"),
        latency(&report, "max"),
    );
    assert!(0.0 < p50 && p50 <= p99 && p99 <= max, "{report}");
}

#[test]
fn open_loop_offers_the_rate() {
    let reflector = Reflector::start();
    let file = query_file(EIGHT_NAMES);
    let port = reflector.addr.port().to_string();
    for spacing in ["even", "poisson"] {
        let (report, _) = load_json(&[
            "-p",
            &port,
            "-d",
            file.to_str().unwrap(),
            "-l",
            "1",
            "--open",
            "-Q",
            "2000",
            "--spacing",
            spacing,
        ]);
        assert_eq!(report["mode"], "open");
        assert_eq!(report["offered_qps"], 2000.0);
        let sent = n(&report, "sent");
        assert!(
            (1800..=2200).contains(&sent),
            "{spacing}: sent {sent}: {report}"
        );
        assert_eq!(
            n(&report, "answered") + n(&report, "lost"),
            sent,
            "{report}"
        );
        assert!(n(&report, "answered") >= sent * 9 / 10, "{report}");
    }
}

#[test]
fn silent_server_loses_everything_and_ends_on_time() {
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port().to_string();
    let file = query_file(EIGHT_NAMES);
    let (report, elapsed) = load_json(&[
        "-p",
        &port,
        "-d",
        file.to_str().unwrap(),
        "-l",
        "1",
        "--timeout-ms",
        "300",
        "-q",
        "32",
    ]);
    let sent = n(&report, "sent");
    assert!(
        sent >= 32,
        "slots are freed after the timeout and reused: {report}"
    );
    assert_eq!(n(&report, "answered"), 0);
    assert_eq!(n(&report, "lost"), sent, "{report}");
    assert!(elapsed.as_secs_f64() < 1.3 + 1.0, "run took {elapsed:?}");
    drop(silent);
}

#[test]
fn wrong_question_is_mismatched_not_answered() {
    // Sets QR but changes the first byte of the first label.
    let responder = UdpResponder::start(|message| {
        if message.len() < 14 {
            return false;
        }
        message[2] |= 0x80;
        message[13] ^= 0x01;
        true
    });
    let file = query_file(EIGHT_NAMES);
    let port = responder.addr.port().to_string();
    let (report, _) = load_json(&[
        "-p",
        &port,
        "-d",
        file.to_str().unwrap(),
        "-l",
        "1",
        "-q",
        "16",
    ]);
    assert!(n(&report, "mismatched") > 0, "{report}");
    assert_eq!(n(&report, "answered"), 0, "{report}");
    assert_eq!(
        n(&report, "sent"),
        n(&report, "mismatched") + n(&report, "lost"),
        "{report}"
    );
}

#[test]
fn json_has_every_schema_field() {
    // Answers NXDOMAIN with QR set, unchanged otherwise; EDNS and DO on.
    let responder = UdpResponder::start(|message| {
        if message.len() < 12 {
            return false;
        }
        message[2] |= 0x80;
        message[3] = (message[3] & 0xf0) | 3;
        true
    });
    let file = query_file("a.example A\nb.example HTTPS\n");
    let port = responder.addr.port().to_string();
    let (report, _) = load_json(&[
        "-p",
        &port,
        "-d",
        file.to_str().unwrap(),
        "-l",
        "0.5",
        "-D",
        "-q",
        "8",
    ]);
    let object = report.as_object().expect("an object");
    for field in [
        "mode",
        "protocol",
        "server",
        "duration_s",
        "offered_qps",
        "sent",
        "answered",
        "lost",
        "mismatched",
        "qps",
        "rcodes",
        "latency_us",
        "unique_names",
        "zipf_s",
    ] {
        assert!(object.contains_key(field), "{field} missing: {report}");
    }
    assert_eq!(object.len(), 14, "{report}");
    assert_eq!(n(&report, "unique_names"), 2, "{report}");
    assert!(report["zipf_s"].is_null(), "{report}");
    for field in ["mean", "p50", "p90", "p99", "p999", "max"] {
        assert!(
            report["latency_us"][field].is_f64(),
            "latency_us.{field}: {report}"
        );
    }
    assert_eq!(report["server"], format!("127.0.0.1:{port}"));
    assert_eq!(report["duration_s"], 0.5);
    assert!(n(&report, "answered") > 0);
    assert_eq!(report["rcodes"]["NXDOMAIN"], report["answered"], "{report}");
    assert!(report["qps"].as_f64().unwrap() > 0.0);
}
