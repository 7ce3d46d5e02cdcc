//! The Kubernetes manifests of `deploy/kubernetes/` (issue 13) checked as a user installs
//! them: the base `shardns.yaml` after the documented `sed` (iptables and IPVS mode) and every
//! kustomize overlay rendered by the real `kubectl kustomize`, then
//!
//! - here: `kubectl kustomize` renders every overlay; `kubernetes-validate --strict` accepts
//!   every variant for the oldest and the newest Kubernetes the manifests support
//!   ([`KUBERNETES_VERSIONS`]); `yamllint` (with `deploy/.yamllint`) accepts every file and the
//!   substituted manifests;
//! - `rules`: what the schemas cannot see (labels and selectors, ports, the seccomp profile
//!   file, the rolling update, the IPVS overlay, the writable paths);
//! - `validate`: the DaemonSet's arguments parse, and its Corefile builds, with
//!   `shardns --validate` in a copy of the container's file system;
//! - `resources`: the memory request and limit cover the measured bounds.
//!
//! A missing tool skips its test with the reason (`scripts/test.sh` installs them all).
//!
//! `cargo build -p shardns && cargo test -p shardns-e2e --test deploy_manifests`

#![forbid(unsafe_code)]

mod manifest;
mod resources;
mod rules;
mod validate;

use std::collections::BTreeSet;
use std::process::Command;

use anyhow::{Result, ensure};
use shardns_e2e::TempDir;
use shardns_e2e::process::run_with_deadline;

use manifest::{
    Manifest, OVERLAYS, Sed, TOOL_TIMEOUT, base_manifest, deploy_dir, find_tool, kustomize,
    variants,
};

/// The Kubernetes versions the manifests are validated for: the oldest kubernetes-validate
/// carries, which is also the first where a DaemonSet's `maxSurge` is GA, and the newest it
/// carries (its default).
const KUBERNETES_VERSIONS: [&str; 2] = ["1.25.0", "1.37.0"];

/// The program `name`, or `None` after printing why its test is skipped.
fn tool_or_skip(name: &str) -> Option<std::path::PathBuf> {
    let found = find_tool(name);
    if found.is_none() {
        eprintln!("skipped: {name} is not installed (scripts/test.sh installs it)");
    }
    found
}

#[test]
fn every_overlay_renders_with_kubectl_kustomize() -> Result<()> {
    let Some(kubectl) = tool_or_skip("kubectl") else {
        return Ok(());
    };
    let kubernetes = deploy_dir().join("kubernetes");
    // kustomize orders the objects by kind: compare them as sets.
    let objects_of = |name: &str, text: &str| -> Result<BTreeSet<(String, String)>> {
        Ok(Manifest::parse(name, text)?
            .kinds_and_names()
            .into_iter()
            .collect())
    };
    let in_file = objects_of("base file", &std::fs::read_to_string(base_manifest())?)?;
    let base = kustomize(&kubectl, &kubernetes.join("base"))?;
    let objects = objects_of("base rendered", &base)?;
    ensure!(
        objects == in_file,
        "the base renders {objects:?}, shardns.yaml holds {in_file:?}"
    );
    for overlay in OVERLAYS {
        let rendered = kustomize(&kubectl, &kubernetes.join("overlays").join(overlay))?;
        let rendered_objects = objects_of(overlay, &rendered)?;
        ensure!(
            rendered_objects == objects,
            "overlay {overlay} renders {rendered_objects:?}, the base {objects:?}"
        );
        if overlay == "iptables" {
            ensure!(rendered == base, "the iptables overlay is not the base");
        } else {
            ensure!(rendered != base, "overlay {overlay} changes nothing");
        }
    }
    Ok(())
}

#[test]
fn kubernetes_validate_strict_accepts_every_variant() -> Result<()> {
    let Some(validator) = tool_or_skip("kubernetes-validate") else {
        return Ok(());
    };
    let dir = TempDir::new("k8s-validate")?;
    let (variants, missing) = variants(dir.path())?;
    if let Some(why) = missing {
        eprintln!("skipped for the overlays: {why}");
    }
    for (index, variant) in variants.iter().enumerate() {
        let objects = variant.manifest()?.kinds_and_names().len();
        let file = dir.join(&format!("variant-{index}.yaml"));
        std::fs::write(&file, &variant.text)?;
        for version in KUBERNETES_VERSIONS {
            let output = run_with_deadline(
                Command::new(&validator)
                    .args(["--strict", "-k", version])
                    .arg(&file),
                TOOL_TIMEOUT,
                "kubernetes-validate",
            )?;
            let passed = output.matches(" passed for resource ").count();
            ensure!(
                passed == objects,
                "{}, Kubernetes {version}: {passed} of {objects} objects passed:\n{output}",
                variant.name
            );
        }
    }
    Ok(())
}

#[test]
fn yamllint_accepts_the_files_and_the_substituted_manifests() -> Result<()> {
    let Some(yamllint) = tool_or_skip("yamllint") else {
        return Ok(());
    };
    let config = deploy_dir().join(".yamllint");
    let lint = |path: &std::path::Path| {
        run_with_deadline(
            Command::new(&yamllint)
                .arg("-s")
                .arg("-c")
                .arg(&config)
                .arg(path),
            TOOL_TIMEOUT,
            "yamllint",
        )
    };
    // Every YAML file of deploy/kubernetes/ (the manifest, kustomizations, patches) and of
    // deploy/prometheus/ (the rules and their tests).
    lint(&deploy_dir().join("kubernetes"))?;
    lint(&deploy_dir().join("prometheus"))?;
    // The manifest after both seds. Rendered overlays are kustomize's layout, not ours: they
    // are checked by kubernetes-validate above.
    let dir = TempDir::new("yamllint")?;
    for sed in [Sed::Iptables, Sed::Ipvs] {
        let file = dir.join(&format!("shardns-{sed:?}.yaml"));
        std::fs::write(&file, sed.apply(&base_manifest())?)?;
        lint(&file)?;
    }
    Ok(())
}
