//! The `shardns` binary's command line: `--validate` and the exit codes of bad configs.

use std::path::PathBuf;
use std::process::{Command, Output};

fn shardns(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_shardns"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run shardns")
}

fn testdata(name: &str) -> String {
    concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/").to_string() + name
}

/// A Corefile written to a fresh temporary file.
fn corefile(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("shardns-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn validate_built_in_corefile() {
    let output = shardns(&["--validate", "--resolv-conf", &testdata("resolv.conf")]);
    assert!(output.status.success(), "{output:?}");
    assert_eq!(String::from_utf8_lossy(&output.stdout), "OK\n");
}

#[test]
fn validate_stock_corefile() {
    let output = shardns(&["--validate", "--conf", &testdata("stock.Corefile")]);
    assert!(output.status.success(), "{output:?}");
    assert_eq!(String::from_utf8_lossy(&output.stdout), "OK\n");
}

#[test]
fn bad_config_exits_64_naming_file_and_line() {
    let file = corefile("bad", ".:53 {\n    errors\n    pprof localhost:6053\n}\n");
    let path = file.to_str().unwrap();
    let output = shardns(&["--validate", "--conf", path]);
    assert_eq!(output.status.code(), Some(64), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "{path}:3: directive \"pprof\" is not supported yet"
        )),
        "{stderr}"
    );
    assert!(output.stdout.is_empty());
    std::fs::remove_dir_all(file.parent().unwrap()).unwrap();
}

#[test]
fn resolv_conf_without_nameserver_exits_64() {
    let output = shardns(&[
        "--validate",
        "--resolv-conf",
        &testdata("empty-resolv.conf"),
    ]);
    assert_eq!(output.status.code(), Some(64), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("has no usable nameserver line"), "{stderr}");
}

#[test]
fn missing_corefile_exits_64() {
    let output = shardns(&["--validate", "--conf", "/nonexistent/Corefile"]);
    assert_eq!(output.status.code(), Some(64), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stderr).contains("/nonexistent/Corefile: cannot read"));
}
