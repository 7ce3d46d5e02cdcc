//! `dig` (Debian package `dnsutils`) against a loopback server.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use anyhow::{Result, ensure};

use crate::process::run_with_deadline;

/// Runs `dig @IP -p PORT [+tcp] NAME TYPE` (one try, 3 s timeout, no ~/.digrc) and returns
/// its standard output. Fails if dig fails (e.g. no reply: exit status 9).
pub fn dig(server: SocketAddr, name: &str, rtype: &str, tcp: bool) -> Result<String> {
    ensure!(
        server.ip().is_loopback(),
        "test traffic must stay on loopback, not {server}"
    );
    let mut cmd = Command::new("dig");
    cmd.arg("-r")
        .arg(format!("@{}", server.ip()))
        .arg("-p")
        .arg(server.port().to_string())
        .args(["+tries=1", "+time=3", "+nosearch"]);
    if tcp {
        cmd.arg("+tcp");
    }
    cmd.arg(name).arg(rtype);
    run_with_deadline(
        &mut cmd,
        Duration::from_secs(10),
        "dig (install the Debian package `dnsutils`, or run ./scripts/test.sh)",
    )
}

/// The `status:` of dig's `->>HEADER<<-` line (NOERROR, NXDOMAIN, ...).
pub fn dig_status(output: &str) -> Option<&str> {
    let rest = &output[output.find("status: ")? + "status: ".len()..];
    rest.split([',', ' ', '\n']).next()
}

/// The records of dig's ANSWER SECTION, whitespace-normalised (`name ttl class type data`).
pub fn dig_answers(output: &str) -> Vec<Vec<String>> {
    let Some(start) = output.find(";; ANSWER SECTION:") else {
        return Vec::new();
    };
    output[start..]
        .lines()
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect()
}
