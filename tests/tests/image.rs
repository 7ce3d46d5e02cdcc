//! The container image, run for real with podman (root only; skipped with the reason where
//! podman cannot run): built once per test binary by scripts/image.sh from the debug binary,
//! saved as an OCI archive and loaded back from it, then run as the DaemonSet runs it —
//! `--network host`, `--read-only`, `--cap-drop ALL` plus NET_ADMIN and NET_BIND_SERVICE, a
//! memory limit — serving a read-only Corefile on port 53 of its own loopback address
//! (127.0.53.x), forwarding to a loopback Unbound.
//!
//! Under podman's default seccomp profile io_uring_setup fails with ENOSYS: `--io auto`
//! falls back to epoll, says so in its log and in `shardns_shard_info`, and answers. Under
//! deploy/seccomp/shardns.json it runs io_uring. `podman stop` (SIGTERM) ends it with
//! status 0 within the grace period. The shipped profile is checked to be this machine's
//! default plus io_uring (scripts/seccomp-profile.py), and the Dockerfile's runtime stage
//! to be deploy/podman/Containerfile's.
//!
//! Containers are removed (`podman rm -f`) when a test ends, also when it fails.

#![forbid(unsafe_code)]

use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use shardns_e2e::metrics::{family_sum, scrape, value};
use shardns_e2e::netns::skip_reason;
use shardns_e2e::{TempDir, UdpClient, Unbound, shardns_binary, wait_for, zone};

/// The name the tests give the image (scripts/image.sh tags NAME:VERSION and NAME:latest).
const IMAGE: &str = "localhost/shardns-e2e";
/// podman's default seccomp profile here (containers-common's), which the shipped one extends.
const DEFAULT_PROFILE: &str = "/usr/share/containers/seccomp.json";
/// How long the container gets to answer its first query after `podman run`.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// `podman stop`'s grace period before SIGKILL (the DaemonSet's is longer).
const STOP_GRACE_SECONDS: u64 = 10;

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// `podman ARGS` with the repository's containers.conf unless CONTAINERS_CONF is set.
fn podman(args: &[&str]) -> Command {
    let mut command = Command::new("podman");
    command.args(args);
    if std::env::var_os("CONTAINERS_CONF").is_none() {
        command.env(
            "CONTAINERS_CONF",
            repository().join("deploy/podman/containers.conf"),
        );
    }
    command
}

/// Runs `command`; its stdout when it succeeds, else an error with everything it printed.
fn output_of(command: &mut Command) -> Result<String> {
    let Output {
        status,
        stdout,
        stderr,
    } = command
        .output()
        .with_context(|| format!("running {command:?}"))?;
    let stdout = String::from_utf8_lossy(&stdout).into_owned();
    ensure!(
        status.success(),
        "{command:?}: {status}\n{stdout}{}",
        String::from_utf8_lossy(&stderr)
    );
    Ok(stdout)
}

/// Why the image tests cannot run here, or `None`.
fn podman_skip_reason() -> Option<String> {
    if let Some(reason) = skip_reason(&["podman", "runc", "python3", DEFAULT_PROFILE]) {
        return Some(reason);
    }
    output_of(&mut podman(&[
        "info",
        "--format",
        "{{.Host.OCIRuntime.Name}}",
    ]))
    .err()
    .map(|error| format!("podman cannot run here: {error:#}"))
}

/// The image, built once per test binary: scripts/image.sh with the debug binary, the
/// result saved as an OCI archive, removed from podman's store and loaded back from the
/// archive (so the archive is what runs). Returns its reference.
fn image() -> &'static str {
    static IMAGE_REF: OnceLock<Result<String, String>> = OnceLock::new();
    let built = IMAGE_REF.get_or_init(|| build_image().map_err(|error| format!("{error:#}")));
    match built {
        Ok(reference) => reference,
        Err(error) => panic!("building the image: {error}"),
    }
}

fn build_image() -> Result<String> {
    let binary = shardns_binary()?;
    let dir = TempDir::new("img")?;
    let archive = dir.join("shardns.oci.tar");
    let started = Instant::now();
    let mut script = Command::new(repository().join("scripts/image.sh"));
    script.args([
        "--binary",
        &binary.display().to_string(),
        "--output",
        &archive.display().to_string(),
        "--name",
        IMAGE,
    ]);
    let printed = output_of(&mut script)?;
    eprintln!(
        "image built in {} ms: {}",
        started.elapsed().as_millis(),
        printed.trim()
    );
    ensure!(
        printed.trim_end().ends_with(&archive.display().to_string()),
        "scripts/image.sh did not print the archive's path last: {printed}"
    );
    let version = output_of(Command::new(&binary).arg("--version"))?;
    let version = version.split_whitespace().nth(1).context("no version")?;
    let reference = format!("{IMAGE}:{version}");
    output_of(&mut podman(&[
        "rmi",
        "--force",
        &reference,
        &format!("{IMAGE}:latest"),
    ]))?;
    let loaded = output_of(&mut podman(&[
        "load",
        "--quiet",
        "--input",
        &archive.display().to_string(),
    ]))?;
    ensure!(loaded.contains(&reference), "podman load: {loaded}");
    Ok(reference)
}

/// A container of the image, removed (`podman rm -f`) when dropped.
#[derive(Debug)]
struct Container {
    name: String,
    /// shardns's DNS address: port 53 of a loopback address of this test's own.
    dns: SocketAddr,
    metrics: SocketAddr,
    /// How long it took from `podman run` to the first answer.
    first_answer: Duration,
    /// Holds the Corefile (mounted read-only).
    _dir: TempDir,
}

/// The seccomp profile a container runs under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Profile {
    /// podman's default (no `--security-opt seccomp`).
    Default,
    /// deploy/seccomp/shardns.json.
    Shardns,
}

impl Container {
    /// Runs the image with `--io auto --shards 2`, serving 127.0.53.`host`:53 (which must be
    /// free) and metrics on 127.0.53.`host`:9153, forwarding to `unbound`; returns once it
    /// has answered a query.
    fn start(label: &str, host: u8, profile: Profile, unbound: &Unbound) -> Result<Container> {
        let address = Ipv4Addr::new(127, 0, 53, host);
        let dns = SocketAddr::from((address, 53));
        let metrics = SocketAddr::from((address, 9153));
        for addr in [dns, metrics] {
            UdpSocket::bind(addr).with_context(|| format!("{addr} (udp) is in use"))?;
            TcpListener::bind(addr).with_context(|| format!("{addr} (tcp) is in use"))?;
        }
        let dir = TempDir::new("ctr")?;
        let corefile = dir.join("Corefile");
        std::fs::write(
            &corefile,
            format!(
                ".:53 {{\n    bind {address}\n    cache 30\n    forward . {}\n    errors\n    \
                 prometheus {metrics}\n}}\n",
                unbound.addr()
            ),
        )?;
        let name = format!("shardns-e2e-{label}-{}", std::process::id());
        let volume = format!("{}:/etc/coredns/Corefile:ro", corefile.display());
        let seccomp = format!(
            "seccomp={}",
            repository().join("deploy/seccomp/shardns.json").display()
        );
        let mut args = vec![
            "run",
            "--detach",
            "--name",
            &name,
            "--pull",
            "never",
            // The DaemonSet's settings: the node's network, a read-only root file system,
            // no capability but NET_ADMIN (node setup) and NET_BIND_SERVICE (port 53), and
            // a memory limit.
            "--network",
            "host",
            "--read-only",
            "--cap-drop",
            "ALL",
            "--cap-add",
            "NET_ADMIN",
            "--cap-add",
            "NET_BIND_SERVICE",
            "--memory",
            "256m",
            "--volume",
            &volume,
        ];
        if profile == Profile::Shardns {
            args.extend(["--security-opt", &seccomp]);
        }
        let image = image();
        args.extend([
            image,
            "--conf",
            "/etc/coredns/Corefile",
            "--io",
            "auto",
            "--shards",
            "2",
        ]);
        let mut run = podman(&args);
        // Removed on drop from here on, whatever happens next.
        let mut container = Container {
            name,
            dns,
            metrics,
            first_answer: Duration::ZERO,
            _dir: dir,
        };
        let started = Instant::now();
        output_of(&mut run)?;
        let client = UdpClient::new(dns)?;
        let answered = wait_for(START_TIMEOUT, || {
            let reply = client.query(zone::DUAL, RecordType::AAAA).ok()?;
            (reply.response_code() == ResponseCode::NoError).then_some(())
        });
        if answered.is_none() {
            bail!(
                "no answer from {dns} within {START_TIMEOUT:?} of podman run; its log:\n{}",
                container.logs()
            );
        }
        container.first_answer = started.elapsed();
        eprintln!(
            "{}: first answer {} ms after podman run",
            container.name,
            container.first_answer.as_millis()
        );
        Ok(container)
    }

    /// What the container printed (stdout and stderr).
    fn logs(&self) -> String {
        let mut command = podman(&["logs", &self.name]);
        match command.output() {
            Ok(output) => format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ),
            Err(error) => format!("(podman logs failed: {error})"),
        }
    }

    /// `podman inspect --format FORMAT`.
    fn inspect(&self, format: &str) -> Result<String> {
        Ok(
            output_of(&mut podman(&["inspect", "--format", format, &self.name]))?
                .trim()
                .to_string(),
        )
    }

    /// Its resident memory in KiB, from inside: the cgroup's view through `podman stats`.
    fn memory_usage(&self) -> Result<String> {
        Ok(output_of(&mut podman(&[
            "stats",
            "--no-stream",
            "--format",
            "{{.MemUsage}}",
            &self.name,
        ]))?
        .trim()
        .to_string())
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = podman(&["rm", "--force", "--time", "0", &self.name]).output();
    }
}

/// Queries answered from the cache and from the upstream: a name twice (a miss, then a hit)
/// and a missing name twice (NXDOMAIN, then the cached denial); the misses reach `unbound`
/// once each, the hits do not, and the cache's counters say so.
fn answers_hits_and_misses(container: &Container, unbound: &Unbound) {
    let before = scrape(container.metrics);
    let client = UdpClient::new(container.dns).expect("UDP client");
    let name = zone::host(7);
    for (query, rcode) in [
        (name.as_str(), ResponseCode::NoError),
        (name.as_str(), ResponseCode::NoError),
        (zone::MISSING, ResponseCode::NXDomain),
        (zone::MISSING, ResponseCode::NXDomain),
    ] {
        let reply = client.query(query, RecordType::A).expect("a reply");
        assert_eq!(reply.response_code(), rcode, "{query}: {reply}");
    }
    let a = reply_addresses(&client, &name);
    assert_eq!(a, vec![zone::host_a(7)]);
    assert_eq!(unbound.queries_for(&name, Some(RecordType::A)), 1);
    assert_eq!(unbound.queries_for(zone::MISSING, Some(RecordType::A)), 1);
    let counted = |page: &str| {
        (
            family_sum(page, "coredns_cache_hits_total"),
            family_sum(page, "coredns_cache_misses_total"),
        )
    };
    let (hits, misses) = counted(&before);
    // 3 hits (the repeated name, the cached denial, the address check) and 2 misses.
    let expected = (hits + 3, misses + 2);
    let page = wait_for(Duration::from_secs(3), || {
        let page = scrape(container.metrics);
        (counted(&page) == expected).then_some(page)
    });
    assert!(
        page.is_some(),
        "hits and misses not {expected:?}:\n{}",
        scrape(container.metrics)
    );
}

/// The A records of a (cached) reply for `name`.
fn reply_addresses(client: &UdpClient, name: &str) -> Vec<Ipv4Addr> {
    let reply = client.query(name, RecordType::A).expect("a reply");
    reply
        .answers()
        .iter()
        .filter_map(|record| match record.data() {
            hickory_proto::rr::RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect()
}

/// Both shards run `driver` (and no shard another one), per `shardns_shard_info`.
fn assert_driver(container: &Container, driver: &str) {
    let page = scrape(container.metrics);
    for shard in 0..2 {
        let series = format!("shardns_shard_info{{io=\"{driver}\",shard=\"{shard}\"}}");
        assert_eq!(value(&page, &series), Some(1), "{series}:\n{page}");
    }
    assert_eq!(family_sum(&page, "shardns_shard_info"), 2, "{page}");
}

#[test]
fn default_profile_falls_back_to_epoll() {
    if let Some(reason) = podman_skip_reason() {
        eprintln!("skipped: {reason}");
        return;
    }
    let unbound = Unbound::start().expect("starting Unbound");
    let container =
        Container::start("epoll", 1, Profile::Default, &unbound).expect("starting the container");
    let logs = container.logs();
    for shard in 0..2 {
        // podman's default answers io_uring_setup with ENOSYS (its defaultErrnoRet, 38).
        let line = format!(
            "shard {shard}: io_uring unavailable (io_uring_setup: Function not implemented \
             (os error 38)); using epoll"
        );
        assert!(logs.contains(&line), "no {line:?} in:\n{logs}");
        let listening = format!("listening on udp {} (shard {shard}, epoll)", container.dns);
        assert!(logs.contains(&listening), "no {listening:?} in:\n{logs}");
    }
    assert_driver(&container, "epoll");
    answers_hits_and_misses(&container, &unbound);
    eprintln!(
        "memory (epoll): {}",
        container.memory_usage().expect("podman stats")
    );
}

#[test]
fn shardns_profile_runs_io_uring() {
    if let Some(reason) = podman_skip_reason() {
        eprintln!("skipped: {reason}");
        return;
    }
    let unbound = Unbound::start().expect("starting Unbound");
    let container =
        Container::start("uring", 2, Profile::Shardns, &unbound).expect("starting the container");
    let logs = container.logs();
    assert!(!logs.contains("io_uring unavailable"), "{logs}");
    for shard in 0..2 {
        let listening = format!(
            "listening on udp {} (shard {shard}, io_uring)",
            container.dns
        );
        assert!(logs.contains(&listening), "no {listening:?} in:\n{logs}");
    }
    assert_driver(&container, "io_uring");
    answers_hits_and_misses(&container, &unbound);
    eprintln!(
        "memory (io_uring): {}",
        container.memory_usage().expect("podman stats")
    );
}

#[test]
fn podman_stop_ends_it_cleanly() {
    if let Some(reason) = podman_skip_reason() {
        eprintln!("skipped: {reason}");
        return;
    }
    let unbound = Unbound::start().expect("starting Unbound");
    let container =
        Container::start("stop", 3, Profile::Default, &unbound).expect("starting the container");
    let stopping = Instant::now();
    output_of(&mut podman(&[
        "stop",
        "--time",
        &STOP_GRACE_SECONDS.to_string(),
        &container.name,
    ]))
    .expect("podman stop");
    let took = stopping.elapsed();
    let logs = container.logs();
    assert_eq!(
        container.inspect("{{.State.ExitCode}}").expect("inspect"),
        "0",
        "{logs}"
    );
    assert!(
        took < Duration::from_secs(STOP_GRACE_SECONDS),
        "podman stop took {took:?}:\n{logs}"
    );
    assert!(logs.contains("stopped in "), "{logs}");
    eprintln!("podman stop took {} ms", took.as_millis());
}

/// deploy/seccomp/shardns.json is what scripts/seccomp-profile.py makes of this machine's
/// default profile: that default, resolved for the DaemonSet's capabilities, plus io_uring.
#[test]
fn seccomp_profile_is_the_default_plus_io_uring() {
    if !Path::new(DEFAULT_PROFILE).exists() {
        eprintln!(
            "skipped: {DEFAULT_PROFILE} is missing (Debian: golang-github-containers-common)"
        );
        return;
    }
    let root = repository();
    let mut generate = Command::new("python3");
    generate
        .arg(root.join("scripts/seccomp-profile.py"))
        .args(["--source", DEFAULT_PROFILE]);
    let generated = output_of(&mut generate).expect("scripts/seccomp-profile.py");
    let shipped = std::fs::read_to_string(root.join("deploy/seccomp/shardns.json"))
        .expect("deploy/seccomp/shardns.json");
    assert!(
        generated == shipped,
        "deploy/seccomp/shardns.json differs from scripts/seccomp-profile.py's output for \
         {DEFAULT_PROFILE}: regenerate it with `scripts/seccomp-profile.py --output \
         deploy/seccomp/shardns.json` and review the change"
    );
    // The io_uring calls are allowed, and the default does not allow them.
    let allowed = |text: &str| -> Vec<String> {
        let profile: serde_json::Value = serde_json::from_str(text).expect("JSON");
        let mut names: Vec<String> = profile["syscalls"]
            .as_array()
            .expect("syscalls")
            .iter()
            .filter(|rule| rule["action"] == "SCMP_ACT_ALLOW")
            .flat_map(|rule| rule["names"].as_array().expect("names").clone())
            .filter_map(|name| name.as_str().map(str::to_string))
            .filter(|name| name.starts_with("io_uring"))
            .collect();
        names.sort();
        names
    };
    assert_eq!(
        allowed(&shipped),
        ["io_uring_enter", "io_uring_register", "io_uring_setup"]
    );
    let default = std::fs::read_to_string(DEFAULT_PROFILE).expect(DEFAULT_PROFILE);
    assert!(allowed(&default).is_empty());
}

/// The Dockerfile's runtime stage and deploy/podman/Containerfile (scripts/image.sh) say
/// the same after `FROM scratch`, but for where the root file system comes from; both lay
/// it out with scripts/rootfs.sh.
#[test]
fn dockerfile_runtime_stage_matches_containerfile() {
    let root = repository();
    let runtime = |path: &str| -> Vec<String> {
        let text = std::fs::read_to_string(root.join(path)).expect(path);
        let stage = text
            .split("\nFROM scratch\n")
            .nth(1)
            .unwrap_or_else(|| panic!("{path} has no FROM scratch stage"));
        stage
            .lines()
            .filter(|line| !line.trim().is_empty() && !line.starts_with('#'))
            .filter(|line| !line.starts_with("COPY "))
            .map(str::to_string)
            .collect()
    };
    assert_eq!(
        runtime("Dockerfile"),
        runtime("deploy/podman/Containerfile")
    );
    let dockerfile = std::fs::read_to_string(root.join("Dockerfile")).expect("Dockerfile");
    assert!(dockerfile.contains("scripts/rootfs.sh target/release/shardns /rootfs"));
    assert!(dockerfile.contains("COPY --from=build /rootfs /"));
    let image_script =
        std::fs::read_to_string(root.join("scripts/image.sh")).expect("scripts/image.sh");
    assert!(image_script.contains("scripts/rootfs.sh\" \"$binary\" \"$context/rootfs\""));
}
