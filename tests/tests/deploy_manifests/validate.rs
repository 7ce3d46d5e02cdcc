//! The DaemonSet's arguments run through the real `shardns --validate`, in a copy of the
//! file system the container would see: each volume laid out under a temporary root as the
//! kubelet would mount it (the ConfigMap's items written, emptyDirs and host paths made), the
//! arguments' paths moved under that root, kubelet's `$…_SERVICE_HOST` variable set for
//! `-upstreamsvc`. `--validate` parses the arguments (node-cache's flags in Go's syntax and
//! shardns's own), fills the template as node-local mode does, and builds the Corefile,
//! writing nothing.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};
use shardns_e2e::process::run_with_deadline;
use shardns_e2e::{TempDir, shardns_binary};

use crate::manifest::{Manifest, TOOL_TIMEOUT, Variant, base_manifest, flag_value, text, variants};

/// The kube-dns-upstream ClusterIP kubelet would put in the environment.
const UPSTREAM_CLUSTER_IP: &str = "10.96.0.20";

/// What the node's resolv.conf names (dnsPolicy Default: the node's resolver).
const NODE_NAMESERVER: &str = "192.0.2.53";

/// `path` (absolute, in the container) under `root`.
fn in_root(root: &Path, path: &str) -> PathBuf {
    root.join(path.trim_start_matches('/'))
}

/// Lays out under `root` what the container's volume mounts would show.
fn lay_out_volumes(manifest: &Manifest, root: &Path) -> Result<()> {
    let mounts = manifest.container()?["volumeMounts"]
        .as_sequence()
        .context("no volumeMounts")?;
    for mount in mounts {
        let mount_path = text(&mount["mountPath"]);
        let (_, volume) = crate::rules::mount_of(manifest, Path::new(&mount_path))?;
        let target = in_root(root, &mount_path);
        if volume["configMap"].is_mapping() {
            let config_map = &volume["configMap"];
            std::fs::create_dir_all(&target)?;
            let name = text(&config_map["name"]);
            let Ok(object) = manifest.object("ConfigMap", &name) else {
                ensure!(
                    config_map["optional"] == true,
                    "the ConfigMap {name} is neither in the manifest nor optional"
                );
                continue;
            };
            // Its items, each key at its path; without items, every key under its own name.
            let files: Vec<(String, String)> = match config_map["items"].as_sequence() {
                Some(items) => items
                    .iter()
                    .map(|item| (text(&item["key"]), text(&item["path"])))
                    .collect(),
                None => object["data"]
                    .as_mapping()
                    .into_iter()
                    .flatten()
                    .map(|(key, _)| (text(key), text(key)))
                    .collect(),
            };
            for (key, path) in files {
                let data = object["data"][key.as_str()]
                    .as_str()
                    .with_context(|| format!("the ConfigMap {name} has no key {key}"))?;
                std::fs::write(target.join(path), data)?;
            }
        } else if volume["emptyDir"].is_mapping() {
            std::fs::create_dir_all(&target)?;
        } else if let Some(kind) = volume["hostPath"]["type"].as_str() {
            match kind {
                "Directory" | "DirectoryOrCreate" => std::fs::create_dir_all(&target)?,
                "File" | "FileOrCreate" => {
                    std::fs::create_dir_all(target.parent().context("file at /")?)?;
                    std::fs::write(&target, "")?;
                }
                other => bail!("hostPath of type {other}"),
            }
        } else {
            bail!("volume {volume:?}: unknown kind");
        }
    }
    Ok(())
}

/// The container's arguments with every absolute path (`/x`, `-flag=/x`) under `root`.
fn arguments_in_root(args: &[String], root: &Path) -> Vec<String> {
    args.iter()
        .map(|arg| {
            if arg.starts_with('/') {
                return in_root(root, arg).display().to_string();
            }
            match arg.split_once("=/") {
                Some((flag, path)) if arg.starts_with('-') => {
                    format!("{flag}={}", in_root(root, path).display())
                }
                _ => arg.clone(),
            }
        })
        .collect()
}

/// Runs `shardns ARGS --validate` for the manifest's DaemonSet; returns its output.
fn validate(manifest: &Manifest) -> Result<String> {
    let root = TempDir::new("validate")?;
    lay_out_volumes(manifest, root.path())?;
    let args = manifest.args()?;
    // Where node-local mode reads, given or by default, must be in the laid-out file system:
    // the template from the ConfigMap, the kube-dns ConfigMap's directory, resolv.conf.
    let template = flag_value(&args, "basecorefile")
        .unwrap_or_else(|| "/etc/coredns/Corefile.base".to_string());
    let template = in_root(root.path(), &template);
    ensure!(
        template.is_file(),
        "the template -basecorefile is not mounted ({})",
        template.display()
    );
    let kube_dns = flag_value(&args, "kubednscm").unwrap_or_else(|| "/etc/kube-dns".to_string());
    let resolv_conf = in_root(root.path(), "/etc/resolv.conf");
    std::fs::write(&resolv_conf, format!("nameserver {NODE_NAMESERVER}\n"))?;
    let upstream = flag_value(&args, "upstreamsvc").unwrap_or_else(|| "kube-dns".to_string());
    let variable = format!(
        "{}_SERVICE_HOST",
        upstream.to_ascii_uppercase().replace('-', "_")
    );
    let mut command = Command::new(shardns_binary()?);
    command
        .args(arguments_in_root(&args, root.path()))
        .arg("-basecorefile")
        .arg(&template)
        .arg("-kubednscm")
        .arg(in_root(root.path(), &kube_dns))
        .arg("--resolv-conf")
        .arg(&resolv_conf)
        .arg("--validate")
        .env_remove("RUST_LOG")
        .env(&variable, UPSTREAM_CLUSTER_IP);
    let output = run_with_deadline(&mut command, TOOL_TIMEOUT, "shardns --validate")?;
    ensure!(
        output.trim() == "OK",
        "shardns --validate printed {output:?}"
    );
    // --validate writes nothing: no Corefile at -conf, no pidfile.
    for flag in ["conf", "pidfile"] {
        if let Some(path) = flag_value(&args, flag) {
            let path = in_root(root.path(), &path);
            ensure!(!path.exists(), "--validate wrote {}", path.display());
        }
    }
    Ok(output)
}

#[test]
fn the_arguments_and_the_corefile_pass_shardns_validate() -> Result<()> {
    let dir = TempDir::new("validate-variants")?;
    let (variants, missing) = variants(dir.path())?;
    if let Some(why) = missing {
        eprintln!("skipped for the overlays: {why}");
    }
    for Variant { name, text, .. } in &variants {
        let manifest = Manifest::parse(name, text)?;
        validate(&manifest).with_context(|| name.clone())?;
    }
    // The check can fail: the manifest before the sed does not validate.
    let raw = Manifest::parse("before sed", &std::fs::read_to_string(base_manifest())?)?;
    let refused = validate(&raw).expect_err("the manifest before the sed validated");
    let message = format!("{refused:#}");
    ensure!(
        message.contains("\"__PILLAR__LOCAL__DNS__\" is not an IP address"),
        "{message}"
    );
    Ok(())
}
