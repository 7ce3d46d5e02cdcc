//! The manifests as a user installs them: the base and each overlay (rendered by the real
//! `kubectl kustomize`), after the install's real `sed`, parsed with serde_yaml into the
//! objects the rules read.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Deserialize as _;
use serde_yaml::Value;
use shardns_e2e::process::run_with_deadline;

/// What the install's sed puts in: the link-local IP, the cluster domain and the kube-dns
/// ClusterIP of the documentation's example (and of `proxy/testdata/Corefile.base`).
pub const LOCAL_DNS: &str = "169.254.20.10";
pub const DNS_DOMAIN: &str = "cluster.local";
pub const KUBE_DNS: &str = "10.96.0.10";

/// The overlays under `deploy/kubernetes/overlays/`.
pub const OVERLAYS: [&str; 5] = [
    "iptables",
    "ipvs",
    "io-uring",
    "iptables-legacy",
    "fastpath",
];

/// How long a tool (kubectl, sed, yamllint, kubernetes-validate, shardns) may take.
pub const TOOL_TIMEOUT: Duration = Duration::from_secs(60);

/// `deploy/` in the repository.
pub fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// `deploy/kubernetes/base/shardns.yaml`, the file the documented `sed | kubectl apply` takes.
pub fn base_manifest() -> PathBuf {
    deploy_dir().join("kubernetes/base/shardns.yaml")
}

/// The program `name` on `PATH`, if installed.
pub fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// The install's substitution, as documented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sed {
    /// kube-proxy in iptables mode (also what every overlay is given):
    /// `s/__PILLAR__LOCAL__DNS__/$localdns/g; s/__PILLAR__DNS__DOMAIN__/$domain/g;
    /// s/__PILLAR__DNS__SERVER__/$kubedns/g`.
    Iptables,
    /// The Kubernetes documentation's line for IPVS mode applied to the base:
    /// `s/,__PILLAR__DNS__SERVER__//g` and `__PILLAR__CLUSTER__DNS__` filled by sed, the
    /// `bind` lines' leftover `__PILLAR__DNS__SERVER__` emptied by shardns.
    Ipvs,
}

impl Sed {
    /// The sed script.
    pub fn script(self) -> String {
        match self {
            Sed::Iptables => format!(
                "s/__PILLAR__LOCAL__DNS__/{LOCAL_DNS}/g; s/__PILLAR__DNS__DOMAIN__/{DNS_DOMAIN}/g; \
                 s/__PILLAR__DNS__SERVER__/{KUBE_DNS}/g"
            ),
            Sed::Ipvs => format!(
                "s/__PILLAR__LOCAL__DNS__/{LOCAL_DNS}/g; s/__PILLAR__DNS__DOMAIN__/{DNS_DOMAIN}/g; \
                 s/,__PILLAR__DNS__SERVER__//g; s/__PILLAR__CLUSTER__DNS__/{KUBE_DNS}/g"
            ),
        }
    }

    /// Runs the real `sed` on `file`.
    pub fn apply(self, file: &Path) -> Result<String> {
        run_with_deadline(
            Command::new("sed").arg("-e").arg(self.script()).arg(file),
            TOOL_TIMEOUT,
            "sed",
        )
    }
}

/// `kubectl kustomize DIR` (kustomize built into kubectl, offline).
pub fn kustomize(kubectl: &Path, dir: &Path) -> Result<String> {
    let rendered = run_with_deadline(
        Command::new(kubectl).arg("kustomize").arg(dir),
        TOOL_TIMEOUT,
        "kubectl kustomize",
    )?;
    if rendered.trim().is_empty() {
        bail!("kubectl kustomize {} rendered nothing", dir.display());
    }
    Ok(rendered)
}

/// One way to install: a source (the base file or an overlay rendered), after a sed.
#[derive(Debug, Clone)]
pub struct Variant {
    /// `base + iptables sed`, `overlay ipvs + iptables sed`, ...
    pub name: String,
    /// The overlay it came from (`None`: the base file as it is).
    pub overlay: Option<&'static str>,
    /// The substitution it went through.
    pub sed: Sed,
    /// What `kubectl apply -f -` would read.
    pub text: String,
}

impl Variant {
    /// Its objects.
    pub fn manifest(&self) -> Result<Manifest> {
        Manifest::parse(&self.name, &self.text)
    }
}

/// Every variant this machine can make: the base file after both seds, and, with kubectl,
/// every overlay rendered then given the iptables sed (the overlays carry their mode). The
/// second value says why the overlays are missing, if they are.
pub fn variants(dir: &Path) -> Result<(Vec<Variant>, Option<String>)> {
    let mut variants = Vec::new();
    for sed in [Sed::Iptables, Sed::Ipvs] {
        variants.push(Variant {
            name: format!("base + {sed:?} sed"),
            overlay: None,
            sed,
            text: sed.apply(&base_manifest())?,
        });
    }
    let Some(kubectl) = find_tool("kubectl") else {
        return Ok((variants, Some("kubectl is not installed".to_string())));
    };
    for overlay in OVERLAYS {
        let rendered = kustomize(
            &kubectl,
            &deploy_dir().join("kubernetes/overlays").join(overlay),
        )?;
        let file = dir.join(format!("{overlay}.yaml"));
        std::fs::write(&file, rendered)?;
        variants.push(Variant {
            name: format!("overlay {overlay} + Iptables sed"),
            overlay: Some(overlay),
            sed: Sed::Iptables,
            text: Sed::Iptables.apply(&file)?,
        });
    }
    Ok((variants, None))
}

/// The objects of one manifest.
#[derive(Debug)]
pub struct Manifest {
    name: String,
    objects: Vec<Value>,
}

impl Manifest {
    /// Parses every YAML document of `text` (empty documents are skipped).
    pub fn parse(name: &str, text: &str) -> Result<Manifest> {
        let mut objects = Vec::new();
        for document in serde_yaml::Deserializer::from_str(text) {
            let value =
                Value::deserialize(document).with_context(|| format!("{name}: not YAML"))?;
            if !value.is_null() {
                objects.push(value);
            }
        }
        Ok(Manifest {
            name: name.to_string(),
            objects,
        })
    }

    /// The object of `kind` named `name`.
    pub fn object(&self, kind: &str, name: &str) -> Result<&Value> {
        self.objects
            .iter()
            .find(|object| object["kind"] == kind && object["metadata"]["name"] == name)
            .with_context(|| format!("{}: no {kind} {name}", self.name))
    }

    /// Every object's kind and name.
    pub fn kinds_and_names(&self) -> Vec<(String, String)> {
        self.objects
            .iter()
            .map(|object| (text(&object["kind"]), text(&object["metadata"]["name"])))
            .collect()
    }

    /// The DaemonSet `node-local-dns`.
    pub fn daemon_set(&self) -> Result<&Value> {
        self.object("DaemonSet", "node-local-dns")
    }

    /// The DaemonSet's pod spec.
    pub fn pod_spec(&self) -> Result<&Value> {
        Ok(&self.daemon_set()?["spec"]["template"]["spec"])
    }

    /// The DaemonSet's one container.
    pub fn container(&self) -> Result<&Value> {
        match self.pod_spec()?["containers"]
            .as_sequence()
            .map(Vec::as_slice)
        {
            Some([container]) => Ok(container),
            other => bail!("{}: expected one container, found {other:?}", self.name),
        }
    }

    /// The container's arguments.
    pub fn args(&self) -> Result<Vec<String>> {
        strings(&self.container()?["args"]).with_context(|| format!("{}: args", self.name))
    }

    /// The value following `flag` in the arguments (`-flag VALUE` or `-flag=VALUE`, one or
    /// two dashes), the last one given.
    pub fn flag(&self, flag: &str) -> Result<Option<String>> {
        Ok(flag_value(&self.args()?, flag))
    }

    /// The `node-local-dns` ConfigMap's Corefile.
    pub fn corefile(&self) -> Result<String> {
        let configmap = self.object("ConfigMap", "node-local-dns")?;
        configmap["data"]["Corefile"]
            .as_str()
            .map(str::to_string)
            .with_context(|| format!("{}: the ConfigMap has no Corefile", self.name))
    }

    /// The manifest's name, for messages.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// The value following `flag` in `args` (Go's syntax: `-flag VALUE`, `-flag=VALUE`, one or
/// two dashes); the last one given wins, as in Go.
pub fn flag_value(args: &[String], flag: &str) -> Option<String> {
    let mut found = None;
    let mut words = args.iter();
    while let Some(word) = words.next() {
        let Some(name) = word.strip_prefix("--").or_else(|| word.strip_prefix('-')) else {
            continue;
        };
        if let Some(value) = name
            .strip_prefix(flag)
            .and_then(|rest| rest.strip_prefix('='))
        {
            found = Some(value.to_string());
        } else if name == flag {
            found = words.next().cloned();
        }
    }
    found
}

/// A YAML scalar as text (`""` for anything else).
pub fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        _ => String::new(),
    }
}

/// A sequence of scalars as text.
pub fn strings(value: &Value) -> Result<Vec<String>> {
    value
        .as_sequence()
        .context("not a list")?
        .iter()
        .map(|item| match item {
            Value::String(s) => Ok(s.clone()),
            other => bail!("not a string: {other:?}"),
        })
        .collect()
}
