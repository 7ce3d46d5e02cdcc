//! The rules the schemas cannot see, on every variant (base after both seds, each overlay
//! rendered and substituted): a schema accepts any label, port or file name; these check
//! that the objects agree with each other, with the Corefile and with the files shipped.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::Path;

use anyhow::{Context, Result, bail, ensure};
use serde_yaml::Value;
use shardns_e2e::TempDir;

use crate::manifest::{
    KUBE_DNS, LOCAL_DNS, Manifest, Sed, Variant, base_manifest, deploy_dir, strings, text, variants,
};

/// Every variant this machine can make (the overlays need kubectl; without it they are
/// skipped with the reason).
fn all_variants() -> Result<Vec<Variant>> {
    let dir = TempDir::new("rules")?;
    let (variants, missing) = variants(dir.path())?;
    if let Some(why) = missing {
        eprintln!("skipped for the overlays: {why}");
    }
    Ok(variants)
}

/// Runs `rule` on every variant, naming the variant in its error.
pub fn for_each_variant(rule: impl Fn(&Variant, &Manifest) -> Result<()>) -> Result<()> {
    for variant in all_variants()? {
        let manifest = variant.manifest()?;
        rule(&variant, &manifest).with_context(|| variant.name.clone())?;
    }
    Ok(())
}

/// Whether every label of `selector` is among `labels`.
fn selects(selector: &Value, labels: &Value) -> bool {
    selector
        .as_mapping()
        .is_some_and(|selector| selector.iter().all(|(key, value)| &labels[key] == value))
}

/// The arguments of every `DIRECTIVE` line of the Corefile.
fn directive_arguments(corefile: &str, directive: &str) -> Vec<Vec<String>> {
    corefile
        .lines()
        .map(|line| line.split('#').next().unwrap_or("").split_whitespace())
        .filter_map(|mut words| {
            (words.next() == Some(directive)).then(|| words.map(str::to_string).collect())
        })
        .collect()
}

/// A Corefile listening address (`HOST:PORT`, `:PORT`) as host and port.
fn host_and_port(address: &str) -> Result<(String, u16)> {
    let (host, port) = address
        .rsplit_once(':')
        .with_context(|| format!("{address:?} has no port"))?;
    Ok((host.to_string(), port.parse()?))
}

#[test]
fn the_objects_and_the_corefile_are_the_stock_ones() -> Result<()> {
    let file = Manifest::parse("base", &std::fs::read_to_string(base_manifest())?)?;
    let stock = [
        ("ServiceAccount", "node-local-dns"),
        ("Service", "kube-dns-upstream"),
        ("ConfigMap", "node-local-dns"),
        ("DaemonSet", "node-local-dns"),
        ("Service", "node-local-dns"),
    ];
    let stock: Vec<(String, String)> = stock
        .iter()
        .map(|(kind, name)| (kind.to_string(), name.to_string()))
        .collect();
    ensure!(
        file.kinds_and_names() == stock,
        "{:?}",
        file.kinds_and_names()
    );
    // The sed works unchanged: the base holds each of its placeholders.
    let raw = std::fs::read_to_string(base_manifest())?;
    for placeholder in [
        "__PILLAR__LOCAL__DNS__",
        "__PILLAR__DNS__DOMAIN__",
        "__PILLAR__DNS__SERVER__",
    ] {
        ensure!(
            raw.contains(placeholder),
            "no {placeholder} in shardns.yaml"
        );
    }
    // The ConfigMap's Corefile is the stock template: after the sed, the one the node-local
    // tests run (proxy/testdata/Corefile.base, node-cache's template after the same sed).
    let substituted = Manifest::parse("sed", &Sed::Iptables.apply(&base_manifest())?)?;
    let testdata = Path::new(env!("CARGO_MANIFEST_DIR")).join("../proxy/testdata/Corefile.base");
    ensure!(
        substituted.corefile()? == std::fs::read_to_string(&testdata)?,
        "the ConfigMap's Corefile is not the stock one ({})",
        testdata.display()
    );
    // As the stock DaemonSet: a critical pod on the host's network, not using the cluster
    // DNS, on every node whatever its taints.
    let pod = file.pod_spec()?;
    ensure!(pod["priorityClassName"] == "system-node-critical");
    ensure!(pod["hostNetwork"] == true, "hostNetwork");
    ensure!(pod["dnsPolicy"] == "Default", "dnsPolicy");
    let tolerations = pod["tolerations"].as_sequence().context("tolerations")?;
    for effect in ["NoExecute", "NoSchedule"] {
        ensure!(
            tolerations
                .iter()
                .any(|t| t["effect"] == effect && t["operator"] == "Exists" && t["key"].is_null()),
            "no toleration of every {effect} taint"
        );
    }
    // The image built by scripts/image.sh for this version.
    let image = text(&file.container()?["image"]);
    let want = format!("localhost/shardns:{}", env!("CARGO_PKG_VERSION"));
    ensure!(image == want, "image {image:?}, the build makes {want:?}");
    Ok(())
}

#[test]
fn selectors_match_the_pods_and_names_their_objects() -> Result<()> {
    for_each_variant(|_, manifest| {
        let daemon_set = manifest.daemon_set()?;
        let pod_labels = &daemon_set["spec"]["template"]["metadata"]["labels"];
        let selector = &daemon_set["spec"]["selector"]["matchLabels"];
        ensure!(
            selector.as_mapping().is_some_and(|s| !s.is_empty()) && selects(selector, pod_labels),
            "the DaemonSet's selector {selector:?} does not match its pods' labels {pod_labels:?}"
        );
        let metrics = manifest.object("Service", "node-local-dns")?;
        let metrics_selector = &metrics["spec"]["selector"];
        ensure!(
            metrics_selector.as_mapping().is_some_and(|s| !s.is_empty())
                && selects(metrics_selector, pod_labels),
            "the metrics Service selects {metrics_selector:?}, the pods are {pod_labels:?}"
        );
        // -upstreamsvc names the Service of the cluster DNS, which must not select shardns
        // itself (its misses would come back to it).
        let upstream_name = manifest
            .flag("upstreamsvc")?
            .unwrap_or_else(|| "kube-dns".to_string());
        let upstream = manifest.object("Service", &upstream_name)?;
        let upstream_selector = &upstream["spec"]["selector"];
        ensure!(
            upstream_selector["k8s-app"] == "kube-dns",
            "-upstreamsvc {upstream_name} selects {upstream_selector:?}, not kube-dns"
        );
        ensure!(
            !selects(upstream_selector, pod_labels),
            "-upstreamsvc {upstream_name} selects shardns's own pods"
        );
        let pod = manifest.pod_spec()?;
        manifest.object("ServiceAccount", &text(&pod["serviceAccountName"]))?;
        Ok(())
    })
}

#[test]
fn probes_and_scrapes_reach_what_the_corefile_serves() -> Result<()> {
    for_each_variant(|_, manifest| {
        let corefile = manifest.corefile()?;
        let container = manifest.container()?;
        let local_ips: Vec<IpAddr> = manifest
            .flag("localip")?
            .context("no -localip")?
            .split(',')
            .map(|ip| ip.parse().with_context(|| format!("-localip {ip:?}")))
            .collect::<Result<_>>()?;
        // With hostNetwork every declared port is a host port: the surge pod of an upgrade
        // could not be scheduled beside the old one. Nothing is declared; the Corefile says
        // what is served.
        ensure!(
            container["ports"].is_null(),
            "the container declares ports {:?}: with hostNetwork they are host ports, and the \
             surge pod would not fit beside the old one",
            container["ports"]
        );
        let health = directive_arguments(&corefile, "health");
        let [health] = health.as_slice() else {
            bail!("expected one `health` in the Corefile, found {health:?}");
        };
        let (health_host, health_port) =
            host_and_port(health.first().context("`health` without an address")?)?;
        let health_flag = manifest.flag("health-port")?.unwrap_or("8080".to_string());
        ensure!(
            health_flag == health_port.to_string(),
            "-health-port {health_flag} (its NOTRACK rules), health on {health_port}"
        );
        for (probe, path) in [("livenessProbe", "/health"), ("readinessProbe", "/ready")] {
            let get = &container[probe]["httpGet"];
            ensure!(
                get["path"] == path,
                "{probe} asks {:?}, not {path}",
                get["path"]
            );
            ensure!(
                text(&get["port"]) == health_port.to_string(),
                "{probe} port {:?}, health is served on {health_port}",
                get["port"]
            );
            let host = text(&get["host"]);
            ensure!(
                host == health_host,
                "{probe} host {host:?}, health on {health_host:?}"
            );
            let ip: IpAddr = host
                .parse()
                .with_context(|| format!("{probe} host {host:?}"))?;
            ensure!(
                local_ips.contains(&ip),
                "{probe} host {ip} is not in -localip"
            );
        }
        let prometheus: BTreeSet<u16> = directive_arguments(&corefile, "prometheus")
            .iter()
            .map(|args| {
                Ok(host_and_port(args.first().context("`prometheus` without an address")?)?.1)
            })
            .collect::<Result<_>>()?;
        let [metrics_port] = prometheus.iter().copied().collect::<Vec<_>>()[..] else {
            bail!("the Corefile's prometheus ports: {prometheus:?}");
        };
        // node-cache's own page: -metrics-listen-address (default 0.0.0.0:9353).
        let node_port = match manifest.flag("metrics-listen-address")? {
            Some(address) => host_and_port(&address)?.1,
            None => 9353,
        };
        let service = manifest.object("Service", "node-local-dns")?;
        let ports = service["spec"]["ports"].as_sequence().context("ports")?;
        let targets: Vec<String> = ports.iter().map(|port| text(&port["targetPort"])).collect();
        ensure!(
            targets.first() == Some(&metrics_port.to_string()),
            "the metrics Service's first port targets {:?}, metrics are on {metrics_port}",
            targets.first()
        );
        for target in &targets {
            ensure!(
                [metrics_port, node_port]
                    .iter()
                    .any(|port| *target == port.to_string()),
                "the metrics Service targets {target}, metrics are on {metrics_port} and \
                 {node_port}"
            );
        }
        let pod_annotations =
            &manifest.daemon_set()?["spec"]["template"]["metadata"]["annotations"];
        for annotations in [pod_annotations, &service["metadata"]["annotations"]] {
            ensure!(
                text(&annotations["prometheus.io/port"]) == metrics_port.to_string(),
                "prometheus.io/port {:?}, metrics are on {metrics_port}",
                annotations["prometheus.io/port"]
            );
        }
        Ok(())
    })
}

#[test]
fn the_io_uring_overlay_names_the_shipped_seccomp_profile() -> Result<()> {
    let profile_file = deploy_dir().join("seccomp/shardns.json");
    let profile: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(&profile_file)
            .with_context(|| format!("reading {}", profile_file.display()))?,
    )
    .with_context(|| format!("{} is not JSON", profile_file.display()))?;
    let allowed: BTreeSet<&str> = profile["syscalls"]
        .as_array()
        .context("the profile has no syscalls")?
        .iter()
        .filter(|rule| rule["action"] == "SCMP_ACT_ALLOW")
        .flat_map(|rule| rule["names"].as_array().into_iter().flatten())
        .filter_map(|name| name.as_str())
        .collect();
    for syscall in ["io_uring_setup", "io_uring_enter", "io_uring_register"] {
        ensure!(
            allowed.contains(syscall),
            "{} does not allow {syscall}",
            profile_file.display()
        );
    }
    for_each_variant(|variant, manifest| {
        let seccomp = &manifest.pod_spec()?["securityContext"]["seccompProfile"];
        ensure!(
            manifest.container()?["securityContext"]["seccompProfile"].is_null(),
            "a container-level seccompProfile would override the pod's"
        );
        let io = manifest.flag("io")?;
        if variant.overlay != Some("io-uring") {
            ensure!(
                seccomp["type"] == "RuntimeDefault",
                "seccompProfile {seccomp:?}"
            );
            ensure!(
                io.is_none(),
                "--io {io:?} under RuntimeDefault (io_uring is blocked)"
            );
            return Ok(());
        }
        ensure!(seccomp["type"] == "Localhost", "seccompProfile {seccomp:?}");
        let name = text(&seccomp["localhostProfile"]);
        let shipped = profile_file
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("");
        ensure!(
            name == shipped,
            "localhostProfile {name:?}, the shipped profile is deploy/seccomp/{shipped}"
        );
        ensure!(
            matches!(io.as_deref(), Some("auto" | "uring")),
            "the io_uring profile without --io auto or uring: shardns stays on epoll"
        );
        Ok(())
    })
}

#[test]
fn the_ipvs_variants_serve_the_link_local_ip_only() -> Result<()> {
    let iptables_corefile =
        Manifest::parse("base", &Sed::Iptables.apply(&base_manifest())?)?.corefile()?;
    let both = format!("bind {LOCAL_DNS} {KUBE_DNS}");
    ensure!(iptables_corefile.contains(&both), "the base binds {both:?}");
    for_each_variant(|variant, manifest| {
        let local_ips = manifest.flag("localip")?.context("no -localip")?;
        let corefile = manifest.corefile()?;
        let binds = directive_arguments(&corefile, "bind");
        let ipvs = variant.overlay == Some("ipvs") || variant.sed == Sed::Ipvs;
        if !ipvs {
            ensure!(
                local_ips == format!("{LOCAL_DNS},{KUBE_DNS}"),
                "-localip {local_ips}"
            );
            return Ok(());
        }
        ensure!(
            local_ips == LOCAL_DNS,
            "-localip {local_ips}: IPVS mode takes {LOCAL_DNS} only"
        );
        if variant.overlay == Some("ipvs") {
            // Every block bound to the link-local IP only, and otherwise the base's Corefile
            // (the overlay carries a copy: it must not drift).
            ensure!(
                binds.iter().all(|args| args == &[LOCAL_DNS]),
                "binds {binds:?}"
            );
            ensure!(
                corefile == iptables_corefile.replace(&both, &format!("bind {LOCAL_DNS}")),
                "the IPVS overlay's Corefile is not the base's with the link-local IP only"
            );
        } else {
            // The documented IPVS sed leaves __PILLAR__DNS__SERVER__ in `bind`, which
            // shardns (as node-cache) empties.
            ensure!(
                binds
                    .iter()
                    .all(|args| args[..] == [LOCAL_DNS, "__PILLAR__DNS__SERVER__"]),
                "binds {binds:?}"
            );
        }
        Ok(())
    })
}

#[test]
fn upgrades_surge_one_pod_that_takes_the_old_ones_sockets() -> Result<()> {
    for_each_variant(|_, manifest| {
        let daemon_set = manifest.daemon_set()?;
        let strategy = &daemon_set["spec"]["updateStrategy"];
        ensure!(
            strategy["type"] == "RollingUpdate",
            "updateStrategy {strategy:?}"
        );
        let rolling = &strategy["rollingUpdate"];
        ensure!(
            text(&rolling["maxSurge"]) == "1" && text(&rolling["maxUnavailable"]) == "0",
            "rollingUpdate {rolling:?}: the new pod must start beside the old one"
        );
        ensure!(
            daemon_set["spec"]["minReadySeconds"].as_u64().unwrap_or(0) > 0,
            "minReadySeconds: the old pod's probes answer for the new one until it has taken over"
        );
        let args = manifest.args()?;
        ensure!(
            args.iter().any(|arg| arg == "--handoff-linger"),
            "no --handoff-linger: the old pod would exit after the hand-off and be restarted"
        );
        ensure!(
            !args.iter().any(|arg| arg == "--no-handoff"),
            "--no-handoff"
        );
        // Crashes: a supervisor restarts a dead worker on the same sockets, and the rules
        // fail open when every shardns process is gone.
        for flag in ["--supervise", "--fail-open-rules"] {
            ensure!(
                args.iter().any(|arg| arg == flag),
                "no {flag}: a crash would black-hole the node's DNS until the kubelet restarts \
                 the pod"
            );
        }
        // The hand-off socket's directory is the same host directory in both pods.
        let socket = manifest
            .flag("handoff-socket")?
            .unwrap_or("/run/shardns/handoff.sock".to_string());
        let directory = Path::new(&socket).parent().context("socket path")?;
        let (mount, volume) = mount_of(manifest, directory)?;
        ensure!(
            mount["readOnly"] != true,
            "the hand-off directory is read-only"
        );
        let host_path = &volume["hostPath"];
        ensure!(
            host_path["type"] == "DirectoryOrCreate",
            "the hand-off directory {} is not a hostPath DirectoryOrCreate: {volume:?}",
            directory.display()
        );
        // The stop: the drain after a hand-off waits at most the query timeout (5 s) and
        // 2 s more; the rules' removal may wait 5 s for the xtables lock.
        let grace = manifest.pod_spec()?["terminationGracePeriodSeconds"]
            .as_u64()
            .unwrap_or(30);
        ensure!(grace >= 12, "terminationGracePeriodSeconds {grace} < 12");
        Ok(())
    })
}

#[test]
fn the_container_gets_only_what_it_needs() -> Result<()> {
    for_each_variant(|variant, manifest| {
        let container = manifest.container()?;
        let security = &container["securityContext"];
        ensure!(security["privileged"] != true, "privileged");
        ensure!(
            security["allowPrivilegeEscalation"] == false,
            "allowPrivilegeEscalation"
        );
        ensure!(
            security["readOnlyRootFilesystem"] == true,
            "readOnlyRootFilesystem"
        );
        let drop = strings(&security["capabilities"]["drop"]).context("capabilities.drop")?;
        ensure!(drop == ["ALL"], "drop {drop:?}");
        let add: BTreeSet<String> = strings(&security["capabilities"]["add"])
            .context("capabilities.add")?
            .into_iter()
            .collect();
        // iptables-legacy reads and writes the tables through a raw socket; the fast path
        // loads a BPF program and its maps.
        let legacy = variant.overlay == Some("iptables-legacy");
        let fastpath = variant.overlay == Some("fastpath");
        let needed: BTreeSet<String> = ["NET_ADMIN", "NET_BIND_SERVICE"]
            .into_iter()
            .chain(legacy.then_some("NET_RAW"))
            .chain(fastpath.then_some("BPF"))
            .chain(fastpath.then_some("PERFMON"))
            .map(|c| c.to_string())
            .collect();
        ensure!(
            add == needed,
            "capabilities {add:?}, shardns needs {needed:?}"
        );
        ensure!(
            manifest.pod_spec()?["automountServiceAccountToken"] == false,
            "shardns never calls the API server: no token"
        );
        // The root file system is read-only: what shardns writes goes to writable volumes.
        for flag in ["conf", "pidfile"] {
            let path = manifest
                .flag(flag)?
                .with_context(|| format!("no -{flag}"))?;
            let directory = Path::new(&path).parent().context("no directory")?;
            let (mount, volume) = mount_of(manifest, directory)?;
            ensure!(
                mount["readOnly"] != true && !volume["emptyDir"].is_null(),
                "-{flag} {path}: {} is not a writable emptyDir",
                directory.display()
            );
        }
        // iptables's lock is the host's.
        let (_, lock) = mount_of(manifest, Path::new("/run/xtables.lock"))?;
        ensure!(
            lock["hostPath"]["path"] == "/run/xtables.lock"
                && lock["hostPath"]["type"] == "FileOrCreate",
            "the xtables lock {lock:?}"
        );
        Ok(())
    })
}

#[test]
fn every_variant_chooses_the_iptables_backend_as_node_caches_image() -> Result<()> {
    for_each_variant(|_, manifest| {
        // The image's plain `iptables` is nft: on a legacy node its rules would sit beside
        // kube-proxy's instead of before them. auto looks for kubelet's hint chain.
        let iptables = manifest.flag("iptables")?;
        ensure!(
            iptables.as_deref() == Some("auto"),
            "--iptables {iptables:?}: not auto"
        );
        Ok(())
    })
}

/// The volume mount whose path is `path` and its volume.
pub fn mount_of<'m>(manifest: &'m Manifest, path: &Path) -> Result<(&'m Value, &'m Value)> {
    let mounts = manifest.container()?["volumeMounts"]
        .as_sequence()
        .context("no volumeMounts")?;
    let mount = mounts
        .iter()
        .find(|mount| Path::new(&text(&mount["mountPath"])) == path)
        .with_context(|| format!("nothing is mounted at {}", path.display()))?;
    let volume = manifest.pod_spec()?["volumes"]
        .as_sequence()
        .context("no volumes")?
        .iter()
        .find(|volume| volume["name"] == mount["name"])
        .with_context(|| format!("no volume {:?}", mount["name"]))?;
    Ok((mount, volume))
}

#[test]
fn the_fastpath_overlay_adds_fastpath_to_the_stock_corefile_and_nothing_else() -> Result<()> {
    for_each_variant(|variant, manifest| {
        let corefile = manifest.corefile()?;
        let fastpath = directive_arguments(&corefile, "fastpath");
        if variant.overlay != Some("fastpath") {
            ensure!(
                fastpath.is_empty(),
                "fastpath outside its overlay: {fastpath:?}"
            );
            return Ok(());
        }
        // The cluster zone's block and the root's, with the host-side veth patterns.
        let patterns = ["veth*", "cali*", "eni*", "gke*"]
            .map(String::from)
            .to_vec();
        ensure!(
            fastpath == [patterns.clone(), patterns],
            "fastpath lines {fastpath:?}"
        );
        let stock = Manifest::parse("base", &variant.sed.apply(&base_manifest())?)?.corefile()?;
        let without: Vec<&str> = corefile
            .lines()
            .filter(|line| !line.trim_start().starts_with("fastpath "))
            .collect();
        ensure!(
            without == stock.lines().collect::<Vec<_>>(),
            "the overlay's Corefile is not the stock one plus fastpath"
        );
        Ok(())
    })
}
