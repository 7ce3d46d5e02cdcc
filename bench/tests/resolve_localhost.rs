//! `shardns-bench resolve` against names that resolve without any network: `localhost`
//! (from /etc/hosts) and an invalid name that getaddrinfo rejects before sending anything.

use std::process::Command;

fn resolve(args: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_shardns-bench"))
        .arg("resolve")
        .args(args)
        .args(["-c", "4", "-l", "0.5", "--json"])
        .output()
        .expect("running shardns-bench resolve");
    assert!(
        out.status.success(),
        "resolve failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("resolve --json prints one JSON object")
}

#[test]
fn localhost_lookups_succeed_with_percentiles() {
    let r = resolve(&["-n", "localhost"]);
    let lookups = r["lookups"].as_u64().unwrap();
    assert!(lookups > 0);
    assert_eq!(r["ok"].as_u64().unwrap(), lookups);
    assert_eq!(r["error_count"], 0);
    assert!(r["qps"].as_f64().unwrap() > 0.0);
    let l = &r["latency_us"];
    for key in ["p50", "p90", "p99", "p999", "max"] {
        assert!(l[key].as_u64().unwrap() >= 1, "{key}");
    }
    assert!(l["p50"].as_u64() <= l["max"].as_u64());
    assert_eq!(r["limit_ms"], 100);
}

#[test]
fn invalid_name_counts_as_error_not_crash() {
    let r = resolve(&["-n", "localhost", "foo..bar"]);
    let lookups = r["lookups"].as_u64().unwrap();
    let errors = r["error_count"].as_u64().unwrap();
    assert!(errors > 0 && r["ok"].as_u64().unwrap() > 0);
    assert_eq!(r["ok"].as_u64().unwrap() + errors, lookups);
    let by_kind: u64 = r["errors"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(by_kind, errors);
}

#[test]
fn names_file_and_family_filter() {
    let dir = std::env::temp_dir().join(format!("shardns-resolve-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("names.txt");
    std::fs::write(&file, "# loopback only\nlocalhost A\n").unwrap();
    let r = resolve(&["-f", file.to_str().unwrap(), "--family", "v4"]);
    assert_eq!(r["names"], serde_json::json!(["localhost"]));
    assert_eq!(r["family"], "v4");
    assert_eq!(r["error_count"], 0);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn text_report_names_the_limit() {
    let out = Command::new(env!("CARGO_BIN_EXE_shardns-bench"))
        .args([
            "resolve",
            "-n",
            "localhost",
            "-c",
            "2",
            "-l",
            "0.2",
            "--limit-ms",
            "50",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("slower than 50 ms: "), "{text}");
    assert!(text.contains("p99.9"), "{text}");
}
