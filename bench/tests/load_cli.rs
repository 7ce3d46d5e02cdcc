//! `shardns-bench load` command line: query-file errors, the text summary, and TCP mode
//! against an in-test pipelining responder on 127.0.0.1.

mod support;

use std::process::Command;

use support::{BIN, EIGHT_NAMES, latency, load_json, n, query_file, tcp_echo};

#[test]
fn bad_query_line_is_an_error_naming_the_line() {
    let file = query_file("# comment\nwww.example.com A\nwww.example.com NOSUCHTYPE\n");
    let out = Command::new(BIN)
        .args(["load", "-p", "9", "-l", "1", "-d"])
        .arg(&file)
        .output()
        .expect("running load");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let want = format!("{}:3: unknown query type", file.display());
    assert!(stderr.contains(&want), "{stderr}");
}

#[test]
fn open_loop_needs_a_rate() {
    let file = query_file(EIGHT_NAMES);
    let out = Command::new(BIN)
        .args(["load", "--open", "-l", "1", "-d"])
        .arg(&file)
        .output()
        .expect("running load");
    assert!(!out.status.success());
}

#[test]
fn text_summary_against_reflect() {
    let reflector = support::Reflector::start();
    let file = query_file(EIGHT_NAMES);
    let out = Command::new(BIN)
        .args([
            "load",
            "-p",
            &reflector.addr.port().to_string(),
            "-l",
            "0.5",
            "-T",
            "2",
            "-d",
        ])
        .arg(&file)
        .output()
        .expect("running load");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    for line in [
        "Queries sent:",
        "Queries completed:",
        "Queries lost:         0 (0.00%)",
        "Response codes:       NOERROR",
        "Queries per second:",
        "Average Latency (s):",
        "p99.9",
    ] {
        assert!(stdout.contains(line), "{line:?} missing:\n{stdout}");
    }
}

#[test]
fn tcp_pipelines_over_connections() {
    let addr = tcp_echo();
    let file = query_file(EIGHT_NAMES);
    let port = addr.port().to_string();
    let (report, _) = load_json(&[
        "-m",
        "tcp",
        "-p",
        &port,
        "-d",
        file.to_str().unwrap(),
        "-l",
        "1",
        "-c",
        "2",
        "-q",
        "32",
    ]);
    assert_eq!(report["protocol"], "tcp");
    assert!(n(&report, "answered") > 100, "{report}");
    assert_eq!(n(&report, "lost"), 0, "{report}");
    assert_eq!(n(&report, "mismatched"), 0, "{report}");
    assert_eq!(n(&report, "answered"), n(&report, "sent"), "{report}");
    assert!(latency(&report, "p50") <= latency(&report, "max"));
}
