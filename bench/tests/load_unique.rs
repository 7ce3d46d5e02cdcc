//! `shardns-bench load --unique` against in-test responders on 127.0.0.1: every query asks a
//! name never asked before, under one random prefix per run, across threads and over TCP.

mod support;

use std::collections::HashSet;
use std::process::Command;
use std::sync::{Arc, Mutex};

use support::{BIN, UdpResponder, load_json, n, query_file, tcp_echo};

/// The query name of `message` in presentation form (lowercase as sent), if it parses.
fn qname(message: &[u8]) -> Option<String> {
    let mut labels = Vec::new();
    let mut at = 12;
    loop {
        let len = usize::from(*message.get(at)?);
        if len == 0 {
            return Some(labels.join("."));
        }
        labels.push(String::from_utf8(message.get(at + 1..at + 1 + len)?.to_vec()).ok()?);
        at += 1 + len;
    }
}

/// A UDP responder that echoes with QR set and records every query name.
fn recording_responder() -> (UdpResponder, Arc<Mutex<Vec<String>>>) {
    let names = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&names);
    let responder = UdpResponder::start(move |message| {
        if let Some(name) = qname(message) {
            seen.lock().unwrap().push(name);
        }
        message[2] |= 0x80;
        true
    });
    (responder, names)
}

/// The `PREFIX.ZONE` part shared by `names` (everything after the first label), asserting
/// that every first label is a distinct decimal number.
fn shared_suffix(names: &[String], zone: &str) -> String {
    let mut numbers = HashSet::new();
    let mut suffixes = HashSet::new();
    for name in names {
        let (number, suffix) = name.split_once('.').expect("at least two labels");
        assert!(number.bytes().all(|b| b.is_ascii_digit()), "{name}");
        assert!(numbers.insert(number.to_owned()), "{name} asked twice");
        assert!(suffix.ends_with(zone), "{name} not under {zone}");
        suffixes.insert(suffix.to_owned());
    }
    assert_eq!(suffixes.len(), 1, "one prefix per run: {suffixes:?}");
    suffixes.into_iter().next().unwrap()
}

#[test]
fn every_query_is_a_new_name_and_each_run_a_new_prefix() {
    let (responder, names) = recording_responder();
    let port = responder.addr.port().to_string();
    let mut suffixes = Vec::new();
    for threads in ["1", "2"] {
        names.lock().unwrap().clear();
        let (report, _) = load_json(&[
            "--unique", "-p", &port, "-l", "0.5", "-q", "64", "-T", threads,
        ]);
        let seen = names.lock().unwrap().clone();
        let sent = n(&report, "sent");
        assert!(sent > 100, "{report}");
        assert_eq!(n(&report, "answered"), sent, "{report}");
        assert_eq!(n(&report, "mismatched"), 0, "{report}");
        assert_eq!(n(&report, "unique_names"), sent, "{report}");
        assert_eq!(seen.len() as u64, sent, "the responder saw every query");
        suffixes.push(shared_suffix(&seen, ".miss.test"));
    }
    assert_ne!(suffixes[0], suffixes[1], "a new random prefix per run");
}

#[test]
fn zone_type_and_edns_are_honoured_and_tcp_works() {
    let (responder, names) = recording_responder();
    let port = responder.addr.port().to_string();
    let (report, _) = load_json(&[
        "--unique",
        "--unique-zone",
        "other.example.",
        "--unique-type",
        "AAAA",
        "-e",
        "-p",
        &port,
        "-l",
        "0.3",
        "-q",
        "8",
    ]);
    assert_eq!(n(&report, "answered"), n(&report, "sent"), "{report}");
    shared_suffix(&names.lock().unwrap(), ".other.example");

    let tcp = tcp_echo();
    let (report, _) = load_json(&[
        "--unique",
        "-m",
        "tcp",
        "-c",
        "2",
        "-p",
        &tcp.port().to_string(),
        "-l",
        "0.5",
        "-q",
        "32",
    ]);
    assert!(n(&report, "answered") > 100, "{report}");
    assert_eq!(n(&report, "answered"), n(&report, "sent"), "{report}");
    assert_eq!(n(&report, "unique_names"), n(&report, "sent"), "{report}");
}

#[test]
fn a_reply_for_another_name_is_a_mismatch() {
    // Answers with the first label's last digit changed: right ID, wrong question.
    let responder = UdpResponder::start(|message| {
        message[2] |= 0x80;
        let len = usize::from(message[12]);
        message[12 + len] = if message[12 + len] == b'0' {
            b'1'
        } else {
            b'0'
        };
        true
    });
    let (report, _) = load_json(&[
        "--unique",
        "-p",
        &responder.addr.port().to_string(),
        "-l",
        "0.3",
        "-q",
        "8",
    ]);
    assert_eq!(n(&report, "answered"), 0, "{report}");
    assert!(n(&report, "mismatched") > 0, "{report}");
}

#[test]
fn unique_excludes_a_query_file_and_zipf() {
    let file = query_file("www.example.com A\n");
    for extra in [
        vec!["-d", file.to_str().unwrap()],
        vec!["--zipf", "1.0"],
        vec!["--unique-type", "BOGUS"],
        vec!["--unique-zone", "a..b"],
    ] {
        let out = Command::new(BIN)
            .args(["load", "--unique", "-p", "9", "-l", "0.1"])
            .args(&extra)
            .output()
            .expect("running load");
        assert!(!out.status.success(), "{extra:?} accepted");
    }
}

#[test]
fn text_summary_names_the_prefix() {
    let (responder, _) = recording_responder();
    let out = Command::new(BIN)
        .args(["load", "--unique", "-l", "0.2", "-q", "4", "-p"])
        .arg(responder.addr.port().to_string())
        .output()
        .expect("running load");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("(--unique: every query a new name, N.") && stdout.contains(".miss.test)"),
        "{stdout}"
    );
}
