//! `shardns-bench flood` against the real `reflect` subcommand, and against an in-test
//! responder that answers only every other query (the rest must count as lost, not hang).

mod support;

use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};

use support::{BIN, EIGHT_NAMES, UdpResponder, query_file};

fn flood(addr: std::net::SocketAddr, file: &support::QueryFile) -> serde_json::Value {
    let out = Command::new(BIN)
        .args([
            "flood",
            &addr.to_string(),
            "-l",
            "0.6",
            "-c",
            "2",
            "-q",
            "8",
            "-d",
        ])
        .arg(file)
        .output()
        .expect("running flood");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON object")
}

#[test]
fn keeps_queries_in_flight_and_counts_the_replies() {
    let reflector = support::Reflector::start();
    let file = query_file(EIGHT_NAMES);
    let report = flood(reflector.addr, &file);
    let answered = report["answered"].as_u64().unwrap();
    assert!(answered > 1000, "{report}");
    assert_eq!(report["lost"], 0, "{report}");
    let qps = report["qps"].as_f64().unwrap();
    let seconds = report["seconds"].as_f64().unwrap();
    assert!((qps * seconds - answered as f64).abs() < 1.0, "{report}");
}

#[test]
fn unanswered_queries_count_as_lost_and_the_flood_goes_on() {
    let seen = std::sync::Arc::new(AtomicU64::new(0));
    let counter = std::sync::Arc::clone(&seen);
    let responder = UdpResponder::start(move |message| {
        message[2] |= 0x80;
        counter.fetch_add(1, Ordering::Relaxed).is_multiple_of(2)
    });
    let report = flood(responder.addr, &query_file(EIGHT_NAMES));
    let (answered, lost) = (
        report["answered"].as_u64().unwrap(),
        report["lost"].as_u64().unwrap(),
    );
    assert!(lost > 0, "{report}");
    assert!(answered > 0, "{report}");
    // Every lost query was sent: a window refilled after each stall.
    assert!(seen.load(Ordering::Relaxed) >= answered + lost, "{report}");
}
