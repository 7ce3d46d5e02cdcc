//! The `shardns` binary's command line: `--validate`, the exit codes of bad configs, and
//! node-cache's flags in Go's syntax beside shardns's own.

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

/// node-cache's container arguments in the stock nodelocaldns.yaml (after the install's sed).
const STOCK: [&str; 8] = [
    "-localip",
    "169.254.20.10,10.96.0.10",
    "-conf",
    "/etc/Corefile",
    "-upstreamsvc",
    "kube-dns-upstream",
    "-pidfile",
    "/tmp/node-cache.pid",
];

#[test]
fn help_shows_both_spellings() {
    for flag in ["--help", "-help", "-h"] {
        let output = shardns(&[flag]);
        assert!(output.status.success(), "{output:?}");
        let stdout = String::from_utf8_lossy(&output.stdout);
        for both in [
            "-localip, --localip <IPS>",
            "-conf, --conf <FILE>",
            "-upstreamsvc, --upstreamsvc <NAME>",
            "-setupiptables[=BOOL], --setupiptables[=BOOL]",
            "-dns.port, --dns.port <PORT>",
        ] {
            assert!(stdout.contains(both), "{flag}: {both} in\n{stdout}");
        }
        assert!(stdout.contains("[default: kube-dns]"), "{stdout}");
        assert!(stdout.contains("--shards <N>"), "{stdout}");
    }
}

#[test]
fn unknown_flag_exits_2_with_clap_message() {
    for flag in ["--bogus", "-bogus"] {
        let output = shardns(&[flag]);
        assert_eq!(output.status.code(), Some(2), "{output:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.starts_with("error: unexpected argument '-"),
            "{stderr}"
        );
        assert!(stderr.contains("Usage: shardns [OPTIONS]"), "{stderr}");
        assert!(output.stdout.is_empty());
    }
}

#[test]
fn mixed_local_ip_families_exit_2_naming_the_problem() {
    let output = shardns(&["-localip", "169.254.20.10,fd00::10", "--validate"]);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(
            "invalid value '169.254.20.10,fd00::10' for '--localip <IPS>': 169.254.20.10 is IPv4 \
             but fd00::10 is IPv6: the addresses must all be IPv4 or all be IPv6"
        ),
        "{stderr}"
    );
    assert!(output.stdout.is_empty());
}

#[test]
fn boolean_with_separate_value_exits_2_with_the_fix() {
    let output = shardns(&["-localip", "169.254.20.10", "-setupiptables", "false"]);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("unexpected argument 'false' found"),
        "{stderr}"
    );
    assert!(stderr.contains("write -setupiptables=false"), "{stderr}");
}

#[test]
fn validate_with_stock_node_cache_arguments() {
    // The stock arguments, the template where the manifest mounts it given by -basecorefile,
    // and the variable kubelet sets: the Corefile is made in memory (nothing is written to
    // -conf) and checked.
    let base = testdata("Corefile.base");
    let conf = corefile("validate-conf", "").with_file_name("never-written");
    let mut args: Vec<&str> = STOCK.to_vec();
    let conf_text = conf.display().to_string();
    args[3] = &conf_text;
    let extra = [
        "-basecorefile",
        &base,
        "-kubednscm",
        "/nonexistent/kube-dns",
        "--resolv-conf",
        &testdata("resolv.conf"),
        "--validate",
    ];
    args.extend(extra);
    let with_env = |args: &[&str], value: Option<&str>| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_shardns"));
        command.args(args).env_remove("RUST_LOG");
        match value {
            Some(value) => command.env("KUBE_DNS_UPSTREAM_SERVICE_HOST", value),
            None => command.env_remove("KUBE_DNS_UPSTREAM_SERVICE_HOST"),
        };
        command.output().expect("run shardns")
    };
    let output = with_env(&args, Some("10.96.0.20"));
    assert!(output.status.success(), "{output:?}");
    assert_eq!(String::from_utf8_lossy(&output.stdout), "OK\n");
    assert!(!conf.exists(), "--validate writes nothing");
    // Without the variable: exit 64 naming it.
    let output = with_env(&args, None);
    assert_eq!(output.status.code(), Some(64), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("KUBE_DNS_UPSTREAM_SERVICE_HOST is not set"),
        "{stderr}"
    );
    // An unreadable template: exit 64 naming it.
    let mut missing = args.clone();
    let at = missing.iter().position(|a| *a == base).unwrap();
    missing[at] = "/nonexistent/Corefile.base";
    let output = with_env(&missing, Some("10.96.0.20"));
    assert_eq!(output.status.code(), Some(64), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("/nonexistent/Corefile.base"), "{stderr}");
    // Go's syntax and shardns's own arguments in any order, both spellings of -conf; a
    // plain --conf Corefile (no -localip) is loaded as is.
    let stock_corefile = testdata("stock.Corefile");
    let output = shardns(&[
        "--validate",
        "--conf",
        &stock_corefile,
        "-v",
        "--shards",
        "1",
    ]);
    assert!(output.status.success(), "{output:?}");
    assert_eq!(String::from_utf8_lossy(&output.stdout), "OK\n");
    // -conf is --conf: a missing file is the same exit 64.
    let output = shardns(&["--validate", "-conf", "/nonexistent/Corefile"]);
    assert_eq!(output.status.code(), Some(64), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stderr).contains("/nonexistent/Corefile: cannot read"));
}
