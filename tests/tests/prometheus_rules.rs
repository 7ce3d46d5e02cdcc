//! deploy/prometheus/rules.yaml with Prometheus's promtool: `promtool check rules` accepts it,
//! `promtool test rules` passes rules_test.yaml, which shows every alert firing and staying
//! quiet; and both commands fail on a broken rule file and on a changed threshold.
//!
//! Skipped with the reason where promtool is missing (Debian package `prometheus`).

#![forbid(unsafe_code)]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use shardns_e2e::TempDir;
use shardns_e2e::monitoring::{program_runs, repo_path};
use shardns_e2e::process::run_with_deadline;

const PROMTOOL_TIMEOUT: Duration = Duration::from_secs(60);

fn skip_reason() -> Option<String> {
    (!program_runs("promtool"))
        .then(|| "promtool is missing (apt-get install prometheus)".to_string())
}

/// `promtool ARGS`: its output, or the error with its output.
fn promtool(args: &[&Path], command: &[&str]) -> anyhow::Result<String> {
    let mut cmd = Command::new("promtool");
    cmd.args(command).args(args);
    run_with_deadline(
        &mut cmd,
        PROMTOOL_TIMEOUT,
        "promtool (apt-get install prometheus)",
    )
}

fn yaml(relative: &str) -> serde_yaml::Value {
    let text = std::fs::read_to_string(repo_path(relative)).unwrap();
    serde_yaml::from_str(&text).unwrap()
}

/// A copy of rules.yaml with `from` replaced by `to` (which must occur), beside a copy of
/// rules_test.yaml, in a temp dir.
fn changed_copy(from: &str, to: &str) -> TempDir {
    let dir = TempDir::new("rules").unwrap();
    let rules = std::fs::read_to_string(repo_path("deploy/prometheus/rules.yaml")).unwrap();
    assert!(rules.contains(from), "{from} not in rules.yaml");
    std::fs::write(dir.join("rules.yaml"), rules.replacen(from, to, 1)).unwrap();
    std::fs::copy(
        repo_path("deploy/prometheus/rules_test.yaml"),
        dir.join("rules_test.yaml"),
    )
    .unwrap();
    dir
}

#[test]
fn promtool_checks_the_rules_and_passes_their_unit_tests() {
    if let Some(reason) = skip_reason() {
        eprintln!("skipped: {reason}");
        return;
    }
    let checked = promtool(
        &[&repo_path("deploy/prometheus/rules.yaml")],
        &["check", "rules"],
    )
    .unwrap();
    assert!(checked.contains("SUCCESS"), "{checked}");
    let tested = promtool(
        &[&repo_path("deploy/prometheus/rules_test.yaml")],
        &["test", "rules"],
    )
    .unwrap();
    assert!(tested.contains("SUCCESS"), "{tested}");
}

#[test]
fn every_alert_is_tested_firing_and_quiet() {
    let rules = yaml("deploy/prometheus/rules.yaml");
    let tests = yaml("deploy/prometheus/rules_test.yaml");
    let alerts: Vec<&str> = rules["groups"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|group| group["rules"].as_sequence().unwrap())
        .filter_map(|rule| {
            let name = rule["alert"].as_str()?;
            for key in ["for", "labels", "annotations"] {
                let optional_for = key == "for" && name == "ShardnsWorkerRestarts";
                assert!(optional_for || !rule[key].is_null(), "{name} has no {key}");
            }
            assert!(rule["labels"]["severity"].is_string(), "{name}: severity");
            for annotation in ["summary", "description"] {
                assert!(
                    rule["annotations"][annotation].is_string(),
                    "{name}: {annotation}"
                );
            }
            Some(name)
        })
        .collect();
    assert!(alerts.len() >= 6, "{alerts:?}");
    let cases: Vec<(&str, bool)> = tests["tests"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|test| {
            test["alert_rule_test"]
                .as_sequence()
                .cloned()
                .unwrap_or_default()
        })
        .map(|case| {
            let name = case["alertname"].as_str().unwrap().to_string();
            let fires = case["exp_alerts"]
                .as_sequence()
                .is_some_and(|alerts| !alerts.is_empty());
            (
                alerts.iter().copied().find(|a| *a == name).unwrap_or("?"),
                fires,
            )
        })
        .collect();
    for alert in &alerts {
        for fires in [true, false] {
            assert!(
                cases.contains(&(*alert, fires)),
                "rules_test.yaml has no case where {alert} {}",
                if fires { "fires" } else { "stays quiet" }
            );
        }
    }
    assert!(
        !cases.iter().any(|(name, _)| *name == "?"),
        "a case names no alert of rules.yaml"
    );
}

#[test]
fn promtool_rejects_a_broken_rule_file() {
    if let Some(reason) = skip_reason() {
        eprintln!("skipped: {reason}");
        return;
    }
    let dir = changed_copy(
        "sum by (job, instance) (rate(coredns_dns_requests_total[5m]))",
        "sum by (job, instance) (rate(coredns_dns_requests_total[5m])",
    );
    let error = promtool(&[&dir.join("rules.yaml")], &["check", "rules"]).unwrap_err();
    assert!(format!("{error:#}").contains("FAILED"), "{error:#}");
}

#[test]
fn promtool_unit_tests_fail_when_a_threshold_changes() {
    if let Some(reason) = skip_reason() {
        eprintln!("skipped: {reason}");
        return;
    }
    // A SERVFAIL ratio of 10% no longer fires at a 50% threshold.
    let dir = changed_copy("ratio_rate5m > 0.05", "ratio_rate5m > 0.5");
    let error = promtool(&[&dir.join("rules_test.yaml")], &["test", "rules"]).unwrap_err();
    let text = format!("{error:#}");
    assert!(
        text.contains("FAILED") && text.contains("ShardnsHighServfailRatio"),
        "{text}"
    );
    // An imbalance alert that fires on any balanced shard too: the quiet cases fail.
    let dir = changed_copy(
        "instance:shardns_shards:count < 0.25",
        "instance:shardns_shards:count < 1.5",
    );
    let error = promtool(&[&dir.join("rules_test.yaml")], &["test", "rules"]).unwrap_err();
    let text = format!("{error:#}");
    assert!(
        text.contains("FAILED") && text.contains("ShardnsShardImbalance"),
        "{text}"
    );
}
