//! `shardns-bench compare -l 1 --rounds 1` end to end with whatever servers are installed.
//! Skips (printing why) when unbound, the upstream, is missing or when the `load` subcommand
//! is not written yet. Everything runs on loopback.

use std::process::Command;

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
}

#[test]
fn compare_runs_briefly_and_writes_report_and_chart() {
    if !on_path("unbound") {
        eprintln!("skipped: unbound (the upstream) is not installed; scripts/bench-peers.sh");
        return;
    }
    let nproc = std::thread::available_parallelism().map_or(1, |n| n.get());
    let load_cpu = if nproc > 1 { "1" } else { "0" };
    let out_dir = std::env::temp_dir().join(format!("shardns-compare-test-{}", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_shardns-bench"))
        .args([
            "compare",
            "-l",
            "1",
            "--rounds",
            "1",
            "--load-cpu",
            load_cpu,
            "--out-dir",
        ])
        .arg(&out_dir)
        .output()
        .expect("running shardns-bench compare");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() && stderr.contains("not written yet") {
        eprintln!(
            "skipped: the load subcommand is not written yet: {}",
            stderr.trim()
        );
        return;
    }
    assert!(out.status.success(), "compare failed:\n{stdout}\n{stderr}");
    assert!(
        stdout.contains("| server | client | answered QPS | q/CPU-s |"),
        "{stdout}"
    );
    let md: Vec<_> = std::fs::read_dir(&out_dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    let report = md
        .iter()
        .find(|p| p.extension().is_some_and(|e| e == "md"))
        .expect("a .md report");
    let text = std::fs::read_to_string(report).unwrap();
    assert!(
        text.contains("Command:") && text.contains("compare -l 1 --rounds 1"),
        "{text}"
    );
    assert!(text.contains("CPUs") && text.contains("kernel"), "{text}");
    // Every server that started has a row with a q/CPU-s figure; at least one started.
    let rows: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| server"))
        .collect();
    assert!(!rows.is_empty(), "{stdout}");
    if let Some(png) = md
        .iter()
        .find(|p| p.extension().is_some_and(|e| e == "png"))
    {
        assert!(std::fs::metadata(png).unwrap().len() > 0);
    }
    eprintln!("{stdout}");
    std::fs::remove_dir_all(out_dir).unwrap();
}
