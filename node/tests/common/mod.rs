//! Shared by the root-only tests: a network namespace that is always removed, and the reason
//! to skip when this machine cannot run them.

use std::fs;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Why the root-only tests cannot run here (not root, or `ip` or one of `programs` is
/// missing), or `None` when they can.
pub fn skip_reason(programs: &[&str]) -> Option<String> {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    let effective_uid = status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .unwrap_or("unknown");
    if effective_uid != "0" {
        return Some(format!("not root (effective uid {effective_uid})"));
    }
    for program in std::iter::once(&"ip").chain(programs) {
        let runs = Command::new(program)
            .arg(if *program == "ip" { "-V" } else { "--version" })
            .stdin(Stdio::null())
            .output()
            .is_ok_and(|output| output.status.success());
        if !runs {
            return Some(format!("{program} is missing"));
        }
    }
    None
}

/// A network namespace made for one test and deleted when dropped, also when the test fails.
#[derive(Debug)]
pub struct NetworkNamespace {
    name: String,
}

impl NetworkNamespace {
    /// `ip netns add shardns-test-PID-N-LABEL`.
    pub fn create(label: &str) -> Result<Self, String> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "shardns-test-{}-{}-{label}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let output = run("ip", &["netns", "add", &name]);
        if !output.status.success() {
            return Err(format!(
                "ip netns add {name}: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        Ok(Self { name })
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `program arguments...` inside the namespace; panics if it fails.
    pub fn run_ok(&self, program: &str, arguments: &[&str]) -> String {
        let output = self.run(program, arguments);
        assert!(
            output.status.success(),
            "{program} {arguments:?} in {}: {}{}",
            self.name,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Runs `program arguments...` inside the namespace.
    pub fn run(&self, program: &str, arguments: &[&str]) -> Output {
        let mut line = vec!["netns", "exec", &self.name, program];
        line.extend_from_slice(arguments);
        run("ip", &line)
    }
}

impl Drop for NetworkNamespace {
    fn drop(&mut self) {
        let output = run("ip", &["netns", "del", &self.name]);
        if !output.status.success() {
            eprintln!(
                "could not delete network namespace {}: {}",
                self.name,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
    }
}

fn run(program: &str, arguments: &[&str]) -> Output {
    Command::new(program)
        .args(arguments)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|error| panic!("running {program}: {error}"))
}
