//! deploy/grafana/shardns.json: type-checked against @grafana/schema's types by
//! deploy/grafana/check/check.sh (TypeScript, the npm packages pinned in its package-lock.json;
//! `npm ci` installs them when they are missing), which must also fail on broken copies; and
//! the dashboard's own conventions: every panel queries the `$datasource` variable and every
//! per-shard panel filters by `$shard`.
//!
//! The type check is skipped with the reason where node (or, without node_modules, npm) is
//! missing. The expressions are run against a real Prometheus in tests/tests/monitoring.rs.

#![forbid(unsafe_code)]

use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::Value;
use shardns_e2e::TempDir;
use shardns_e2e::monitoring::{dashboard_queries, program_runs, repo_path};
use shardns_e2e::process::run_with_deadline;

/// `npm ci` downloads two packages; tsc takes a few seconds.
const NPM_TIMEOUT: Duration = Duration::from_secs(300);
const CHECK_TIMEOUT: Duration = Duration::from_secs(120);

/// Why the type check cannot run here, if it cannot; installs the packages with `npm ci`
/// (once for all the tests of this file) when they are missing.
fn skip_reason() -> Option<String> {
    static READY: OnceLock<Option<String>> = OnceLock::new();
    READY
        .get_or_init(|| {
            if !program_runs("node") {
                return Some("node is missing (apt-get install nodejs npm)".to_string());
            }
            let check = repo_path("deploy/grafana/check");
            if check.join("node_modules/.bin/tsc").exists() {
                return None;
            }
            if !program_runs("npm") {
                return Some(format!(
                    "{}/node_modules is missing and npm is not installed",
                    check.display()
                ));
            }
            let mut npm = Command::new("npm");
            npm.args(["ci", "--no-audit", "--no-fund", "--prefix"])
                .arg(&check);
            run_with_deadline(&mut npm, NPM_TIMEOUT, "npm ci").expect("npm ci");
            None
        })
        .clone()
}

/// check.sh on `dashboard`: Ok(its output) or Err(its error output).
fn check(dashboard: &Path) -> Result<String, String> {
    let mut cmd = Command::new(repo_path("deploy/grafana/check/check.sh"));
    cmd.arg(dashboard);
    run_with_deadline(&mut cmd, CHECK_TIMEOUT, "check.sh").map_err(|error| format!("{error:#}"))
}

fn dashboard() -> Value {
    let text = std::fs::read_to_string(repo_path("deploy/grafana/shardns.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Every panel, those inside rows too.
fn panels(dashboard: &Value) -> Vec<Value> {
    let mut all = Vec::new();
    let mut stack: Vec<Value> = dashboard["panels"].as_array().cloned().unwrap_or_default();
    while let Some(panel) = stack.pop() {
        stack.extend(panel["panels"].as_array().cloned().unwrap_or_default());
        all.push(panel);
    }
    all
}

#[test]
fn the_dashboard_type_checks_against_grafana_schema() {
    if let Some(reason) = skip_reason() {
        eprintln!("skipped: {reason}");
        return;
    }
    let out = check(&repo_path("deploy/grafana/shardns.json")).unwrap();
    assert!(out.contains(": OK (@grafana/schema 13.2.3"), "{out}");
}

/// What is broken, how, and what the check must say.
type Breakage = (&'static str, fn(&mut Value), &'static str);

#[test]
fn broken_dashboards_fail_the_type_check() {
    if let Some(reason) = skip_reason() {
        eprintln!("skipped: {reason}");
        return;
    }
    let dir = TempDir::new("dash").unwrap();
    let breakages: [Breakage; 4] = [
        (
            "a panel height as a string",
            |d| d["panels"][1]["gridPos"]["h"] = "8".into(),
            "Type 'string' is not assignable to type 'number'",
        ),
        (
            "an enum value misspelt",
            |d| d["panels"][1]["fieldConfig"]["defaults"]["thresholds"]["mode"] = "absolut".into(),
            "'\"absolut\"' is not assignable",
        ),
        (
            "an unknown field",
            |d| d["panels"][1]["titel"] = "x".into(),
            "'\"titel\"' does not exist",
        ),
        (
            "a time series legend option of a wrong type",
            |d| {
                let panel = d["panels"]
                    .as_array_mut()
                    .unwrap()
                    .iter_mut()
                    .find(|p| p["type"] == "timeseries")
                    .unwrap();
                panel["options"]["legend"]["showLegend"] = "yes".into();
            },
            "Type 'string' is not assignable to type 'boolean",
        ),
    ];
    for (what, breakage, expected) in breakages {
        let mut broken = dashboard();
        breakage(&mut broken);
        let path = dir.join("broken.json");
        std::fs::write(&path, serde_json::to_string_pretty(&broken).unwrap()).unwrap();
        let error = check(&path).expect_err(what);
        assert!(
            error.contains(expected) && error.contains(&format!("{}:", path.display())),
            "{what}: {error}"
        );
    }
}

#[test]
fn every_panel_queries_the_datasource_variable_and_shard_panels_filter_by_shard() {
    let dashboard = dashboard();
    let variables: Vec<&str> = dashboard["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|variable| variable["name"].as_str().unwrap())
        .collect();
    assert_eq!(variables, ["datasource", "instance", "shard"]);
    let datasource = serde_json::json!({"type": "prometheus", "uid": "${datasource}"});
    let mut per_shard = 0;
    for panel in panels(&dashboard) {
        let title = panel["title"].as_str().unwrap();
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(panel["datasource"], datasource, "{title}");
        for target in panel["targets"].as_array().unwrap() {
            assert_eq!(target["datasource"], datasource, "{title}");
            let expr = target["expr"].as_str().unwrap();
            assert!(expr.contains("instance=~\"$instance\""), "{title}: {expr}");
            if title.contains("per shard") {
                per_shard += 1;
                assert!(expr.contains("shard=~\"$shard\""), "{title}: {expr}");
            }
        }
    }
    assert!(per_shard >= 7, "{per_shard} per-shard queries");
    assert_eq!(dashboard["schemaVersion"], 42);
    assert!(dashboard_queries(&dashboard).len() >= 30);
}
