//! The shardns container image run with podman (root only): built once per test binary by
//! scripts/image.sh from the debug binary, saved as an OCI archive and loaded back from it,
//! then run as the DaemonSet runs it ([`Container::run`]). Podman uses the repository's
//! deploy/podman/containers.conf unless `CONTAINERS_CONF` is set. Containers are removed
//! (`podman rm -f`) when dropped, also when a test fails.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

use crate::{TempDir, shardns_binary, wait_for};

/// The name the tests give the image, followed by `-PID` of the test process, so that test
/// runs from several checkouts at once never run or remove each other's image
/// (scripts/image.sh tags NAME:VERSION and NAME:latest).
pub const IMAGE: &str = "localhost/shardns-e2e";
/// podman's default seccomp profile here (containers-common's), which the shipped one extends.
pub const DEFAULT_PROFILE: &str = "/usr/share/containers/seccomp.json";
/// How long a container gets to answer after `podman run`.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);

/// The repository's root.
pub fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// `podman ARGS` with the repository's containers.conf unless CONTAINERS_CONF is set.
pub fn podman(args: &[&str]) -> Command {
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
pub fn output_of(command: &mut Command) -> Result<String> {
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

/// Why the image cannot be built and run here (not root, podman, runc or python3 missing,
/// podman failing), or `None`.
pub fn skip_reason() -> Option<String> {
    if let Some(reason) = crate::netns::skip_reason(&["podman", "runc", "python3", DEFAULT_PROFILE])
    {
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

/// The image's reference, built on first use (panics if that fails): scripts/image.sh with
/// the debug binary, removed from podman's store and loaded back from the OCI archive the
/// script saved, so that the archive is what runs.
pub fn image() -> &'static str {
    static IMAGE_REF: OnceLock<Result<String, String>> = OnceLock::new();
    let built = IMAGE_REF.get_or_init(|| build_image().map_err(|error| format!("{error:#}")));
    match built {
        Ok(reference) => reference,
        Err(error) => panic!("building the image: {error}"),
    }
}

/// Removes the images earlier test processes left (`IMAGE-PID` of a PID no longer running);
/// an image a container still uses stays.
fn remove_stale_images() -> Result<()> {
    let listed = output_of(&mut podman(&[
        "images",
        "--format",
        "{{.Repository}}:{{.Tag}}",
    ]))?;
    let prefix = format!("{IMAGE}-");
    for reference in listed.lines() {
        let Some(pid) = reference
            .strip_prefix(&prefix)
            .and_then(|rest| rest.split(':').next())
        else {
            continue;
        };
        let stale = pid.parse::<u32>().is_ok_and(|pid| {
            pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists()
        });
        if stale {
            let _ = podman(&["rmi", reference]).output();
        }
    }
    Ok(())
}

fn build_image() -> Result<String> {
    remove_stale_images()?;
    let name = format!("{IMAGE}-{}", std::process::id());
    let binary = shardns_binary()?;
    let dir = TempDir::new("img")?;
    let archive = dir.join("shardns.oci.tar");
    let started = Instant::now();
    let printed = output_of(Command::new(repository().join("scripts/image.sh")).args([
        "--binary",
        &binary.display().to_string(),
        "--output",
        &archive.display().to_string(),
        "--name",
        &name,
    ]))?;
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
    let reference = format!("{name}:{version}");
    output_of(&mut podman(&["rmi", &reference, &format!("{name}:latest")]))?;
    let loaded = output_of(&mut podman(&[
        "load",
        "--quiet",
        "--input",
        &archive.display().to_string(),
    ]))?;
    ensure!(loaded.contains(&reference), "podman load: {loaded}");
    Ok(reference)
}

/// The seccomp profile a container runs under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// podman's default (no `--security-opt seccomp`).
    Default,
    /// deploy/seccomp/shardns.json.
    Shardns,
}

/// How to run a container of the image, beyond what every run has.
#[derive(Debug)]
pub struct Run<'a> {
    /// Part of the container's name.
    pub label: &'a str,
    pub profile: Profile,
    /// `--network`: `host`, or `ns:/run/netns/NAME`.
    pub network: String,
    /// `--volume` and `--env` arguments, each already `--flag=value`.
    pub options: Vec<String>,
    /// shardns's arguments.
    pub args: Vec<String>,
}

/// A container of the image, removed (`podman rm -f`) when dropped.
#[derive(Debug)]
pub struct Container {
    name: String,
    started: Instant,
    /// What the container mounts (removed after the container).
    _dir: TempDir,
}

/// How a container stopped: its exit code and how long `podman stop` took.
#[derive(Debug)]
pub struct Stopped {
    pub exit_code: String,
    pub took: Duration,
}

impl Container {
    /// `podman run --detach` the image as the DaemonSet runs it: `--read-only`,
    /// `--cap-drop ALL --cap-add NET_ADMIN` (node setup) `--cap-add NET_BIND_SERVICE` (port
    /// 53), `--memory 256m`, never pulling, plus `run`'s network, profile and options.
    /// `dir` holds what the options mount; it lives as long as the container.
    pub fn run(run: Run<'_>, dir: TempDir) -> Result<Container> {
        let name = format!("shardns-e2e-{}-{}", run.label, std::process::id());
        let mut args: Vec<String> = [
            "run",
            "--detach",
            "--name",
            &name,
            "--pull",
            "never",
            "--network",
            &run.network,
            "--read-only",
            "--cap-drop",
            "ALL",
            "--cap-add",
            "NET_ADMIN",
            "--cap-add",
            "NET_BIND_SERVICE",
            "--memory",
            "256m",
        ]
        .map(str::to_string)
        .to_vec();
        if run.profile == Profile::Shardns {
            args.push(format!(
                "--security-opt=seccomp={}",
                repository().join("deploy/seccomp/shardns.json").display()
            ));
        }
        args.extend(run.options);
        args.push(image().to_string());
        args.extend(run.args);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut command = podman(&args);
        // Removed on drop from here on, whatever happens next.
        let container = Container {
            name,
            started: Instant::now(),
            _dir: dir,
        };
        output_of(&mut command)?;
        Ok(container)
    }

    /// The container's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Waits (≤ [`START_TIMEOUT`] after `podman run`) until `answered` says yes; returns the
    /// time since `podman run`.
    pub fn wait_until(&self, what: &str, mut answered: impl FnMut() -> bool) -> Result<Duration> {
        let left = START_TIMEOUT.saturating_sub(self.started.elapsed());
        if wait_for(left, || answered().then_some(())).is_none() {
            bail!(
                "{}: no {what} within {START_TIMEOUT:?} of podman run; its log:\n{}",
                self.name,
                self.logs()
            );
        }
        let took = self.started.elapsed();
        eprintln!(
            "{}: {what} {} ms after podman run",
            self.name,
            took.as_millis()
        );
        Ok(took)
    }

    /// What the container printed (stdout and stderr).
    pub fn logs(&self) -> String {
        match podman(&["logs", &self.name]).output() {
            Ok(output) => format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ),
            Err(error) => format!("(podman logs failed: {error})"),
        }
    }

    /// `podman inspect --format FORMAT`.
    pub fn inspect(&self, format: &str) -> Result<String> {
        let printed = output_of(&mut podman(&["inspect", "--format", format, &self.name]))?;
        Ok(printed.trim().to_string())
    }

    /// The container's memory use as `podman stats` shows it (its cgroup's).
    pub fn memory_usage(&self) -> Result<String> {
        let printed = output_of(&mut podman(&[
            "stats",
            "--no-stream",
            "--format",
            "{{.MemUsage}}",
            &self.name,
        ]))?;
        Ok(printed.trim().to_string())
    }

    /// `podman stop --time GRACE` (SIGTERM, SIGKILL after GRACE seconds).
    pub fn stop(&self, grace_seconds: u64) -> Result<Stopped> {
        let started = Instant::now();
        output_of(&mut podman(&[
            "stop",
            "--time",
            &grace_seconds.to_string(),
            &self.name,
        ]))?;
        let took = started.elapsed();
        let exit_code = self.inspect("{{.State.ExitCode}}")?;
        Ok(Stopped { exit_code, took })
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = podman(&["rm", "--force", "--time", "0", &self.name]).output();
    }
}
