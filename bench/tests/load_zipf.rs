//! `shardns-bench names` and `load --zipf` against the real `reflect` subcommand on
//! 127.0.0.1: the names file parses, Zipf draws repeat popular names (fewer distinct names
//! than the same number of queries in file order), and the JSON and text report them.

mod support;

use std::process::Command;

use support::{BIN, Reflector, load_json, n, query_file};

/// `names COUNT --zone zipf.test` written to a query file.
fn names_file(count: u32) -> support::QueryFile {
    let out = Command::new(BIN)
        .args(["names", &count.to_string(), "--zone", "zipf.test."])
        .output()
        .expect("running names");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("UTF-8");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), count as usize);
    assert_eq!(lines[0], "n0.zipf.test A");
    assert_eq!(
        lines[count as usize - 1],
        format!("n{}.zipf.test A", count - 1)
    );
    query_file(&text)
}

#[test]
fn zipf_draws_fewer_distinct_names_than_file_order() {
    let reflector = Reflector::start();
    let file = names_file(1000);
    let port = reflector.addr.port().to_string();
    // 2,000 queries over 1,000 names: in file order every name is sent; with s = 1 about
    // 570 distinct names are (rank k is drawn with probability 1 / (k H(1000)), H ≈ 7.49).
    let common = [
        "-p",
        &port,
        "-d",
        file.to_str().unwrap(),
        "-l",
        "1",
        "--open",
        "-Q",
        "2000",
    ];
    let (ordered, _) = load_json(&common);
    let mut zipf_args = common.to_vec();
    zipf_args.extend(["--zipf", "1.0", "--seed", "7"]);
    let (zipf, _) = load_json(&zipf_args);
    assert!(reflector.stop());
    for report in [&ordered, &zipf] {
        assert!(n(report, "sent") >= 1900, "{report}");
        assert_eq!(n(report, "lost"), 0, "{report}");
        assert_eq!(n(report, "answered"), n(report, "sent"), "{report}");
    }
    assert_eq!(n(&ordered, "unique_names"), 1000, "{ordered}");
    assert!(ordered["zipf_s"].is_null());
    assert_eq!(zipf["zipf_s"], 1.0);
    let unique = n(&zipf, "unique_names");
    assert!((450..700).contains(&unique), "{zipf}");
}

#[test]
fn text_summary_names_the_law_and_bad_exponent_fails() {
    let reflector = Reflector::start();
    let file = names_file(50);
    let port = reflector.addr.port().to_string();
    let out = Command::new(BIN)
        .args(["load", "-p", &port, "-l", "0.3", "--zipf", "0.5", "-d"])
        .arg(&file)
        .output()
        .expect("running load");
    assert!(reflector.stop());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("Unique names sent:    50 of 50 lines (Zipf s = 0.5)"),
        "{stdout}"
    );
    for bad in ["0", "nan", "inf"] {
        let out = Command::new(BIN)
            .args(["load", "-p", "9", "-l", "0.1", "--zipf", bad, "-d"])
            .arg(&file)
            .output()
            .expect("running load");
        assert!(!out.status.success(), "--zipf {bad}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("--zipf"), "{stderr}");
    }
}

#[test]
fn names_rejects_a_bad_type() {
    let out = Command::new(BIN)
        .args(["names", "3", "--zone", "zipf.test", "--type", "BOGUS"])
        .output()
        .expect("running names");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown query type"));
}
