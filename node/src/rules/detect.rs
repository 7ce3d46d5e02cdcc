//! `--iptables=auto`: which iptables backend (nft or legacy) the node's rules are in, decided
//! as node-cache's image decides it.
//!
//! node-cache's image runs kubernetes-sigs/iptables-wrappers at its first `iptables` call: a
//! script (later a Go program) that looks at both backends' tables and then runs the matching
//! `iptables-nft` or `iptables-legacy` from then on. Rules in the wrong backend are accepted
//! but do not work as meant: kube-proxy's rules in the other backend still see the packets.
//! shardns's image has no shell to run that script, so the same decision is made here:
//!
//! 1. **kubelet's hint chains.** Since Kubernetes 1.17 the kubelet creates
//!    `KUBE-IPTABLES-HINT` (and, before 1.28 or so, `KUBE-KUBELET-CANARY`) in the `mangle`
//!    table of the backend it uses. The nft backend's `mangle` table is looked at first, then
//!    the legacy backend's.
//! 2. **Otherwise, which backend holds more rules** (lines `-A ...` of `iptables-save`, IPv4
//!    and IPv6 together): legacy when it holds at least [`LEGACY_RULES_ENOUGH`] rules or more
//!    rules than nft, nft otherwise. This is the wrapper's rule before Kubernetes had the
//!    hint (its shell versions); its current Go version stops at step 1 and defaults to nft.
//!
//! [`decide`] is that decision over the four listings as text (`iptables-nft-save`,
//! `ip6tables-nft-save`, `iptables-legacy-save`, `ip6tables-legacy-save`, whole: the legacy
//! ones cannot be asked for `-t mangle` alone without the kernel creating the table);
//! [`list_backends`] runs the programs. A listing that fails counts as empty, as in the
//! wrapper, except one refused for lack of permission ([`Listing::Denied`]): iptables-legacy
//! reads the tables through a raw socket and needs `CAP_NET_RAW`, without which the legacy
//! backend cannot be known, nor written ([`Detection::needs_net_raw`]).

use std::fmt;
use std::process::{Command, Stdio};

use super::iptables::IptablesVariant;
use super::rule::IpFamily;

/// kubelet's chains in the `mangle` table of the backend it uses.
pub const KUBELET_HINT_CHAINS: [&str; 2] = ["KUBE-IPTABLES-HINT", "KUBE-KUBELET-CANARY"];

/// Without a hint chain, this many legacy rules make the node legacy whatever nft holds.
pub const LEGACY_RULES_ENOUGH: usize = 10;

/// The two backends `auto` chooses between.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DetectedBackend {
    /// iptables-nft.
    Nft,
    /// iptables-legacy.
    Legacy,
}

impl DetectedBackend {
    /// The programs that write this backend's rules.
    pub fn variant(self) -> IptablesVariant {
        match self {
            DetectedBackend::Nft => IptablesVariant::Nft,
            DetectedBackend::Legacy => IptablesVariant::Legacy,
        }
    }

    /// The listing program of `family`: `iptables-nft-save`, `ip6tables-legacy-save`, ...
    pub fn save_program(self, family: IpFamily) -> String {
        format!("{}-save", self.variant().program(family))
    }

    fn name(self) -> &'static str {
        match self {
            DetectedBackend::Nft => "nft",
            DetectedBackend::Legacy => "legacy",
        }
    }
}

impl fmt::Display for DetectedBackend {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.name())
    }
}

/// What one `*-save` program gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listing {
    /// It succeeded: its standard output.
    Text(String),
    /// It failed for lack of permission ("Permission denied"): the message.
    Denied(String),
    /// It could not run, or failed otherwise: the message. Counts as empty.
    Failed(String),
}

impl Listing {
    fn text(&self) -> &str {
        match self {
            Listing::Text(text) => text,
            Listing::Denied(_) | Listing::Failed(_) => "",
        }
    }
}

/// Both backends' listings, IPv4 then IPv6.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listings {
    /// `iptables-nft-save`, `ip6tables-nft-save`.
    pub nft: [Listing; 2],
    /// `iptables-legacy-save`, `ip6tables-legacy-save`.
    pub legacy: [Listing; 2],
}

impl Listings {
    fn of(&self, backend: DetectedBackend) -> &[Listing; 2] {
        match backend {
            DetectedBackend::Nft => &self.nft,
            DetectedBackend::Legacy => &self.legacy,
        }
    }
}

/// Why [`decide`] chose its backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// kubelet's chain `chain` is in this backend's `mangle` table of `family`.
    HintChain {
        /// The chain found.
        chain: &'static str,
        /// The listing it was found in.
        family: IpFamily,
    },
    /// No hint chain; the rule counts decided.
    RuleCounts {
        /// `-A` lines of both legacy listings.
        legacy: usize,
        /// `-A` lines of both nft listings.
        nft: usize,
    },
    /// No hint chain in nft, and the legacy tables could not be read: nft, the default.
    LegacyUnreadable,
}

/// The backend `auto` chose, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detection {
    /// The chosen backend.
    pub backend: DetectedBackend,
    /// Why.
    pub reason: Reason,
    /// The failures of the listings, `program: message` each.
    pub failures: Vec<String>,
    /// Whether a legacy listing was refused for lack of permission.
    pub legacy_denied: bool,
}

impl Detection {
    /// Whether the legacy backend is chosen or could not be ruled out while its tables
    /// could not be read: shardns needs `CAP_NET_RAW` (the caller logs an error).
    pub fn needs_net_raw(&self) -> bool {
        self.legacy_denied
            && (self.backend == DetectedBackend::Legacy || self.reason == Reason::LegacyUnreadable)
    }
}

impl fmt::Display for Detection {
    /// The reason, for the log: "kubelet's KUBE-IPTABLES-HINT chain is in iptables-legacy's
    /// mangle table".
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.reason {
            Reason::HintChain { chain, family } => write!(
                formatter,
                "kubelet's {chain} chain is in {}'s mangle table",
                self.backend.variant().program(*family)
            ),
            Reason::RuleCounts { legacy, nft } => write!(
                formatter,
                "no kubelet hint chain ({}) in either backend; legacy holds {legacy} rules, \
                 nft {nft} (legacy when it holds at least {LEGACY_RULES_ENOUGH} or more than nft)",
                KUBELET_HINT_CHAINS.join(", ")
            ),
            Reason::LegacyUnreadable => write!(
                formatter,
                "no kubelet hint chain ({}) in nft, and the legacy tables could not be read",
                KUBELET_HINT_CHAINS.join(", ")
            ),
        }?;
        if !self.failures.is_empty() {
            write!(formatter, " (failed: {})", self.failures.join("; "))?;
        }
        Ok(())
    }
}

/// The backend the node uses, from both backends' `*-save` listings (see the module's text).
pub fn decide(listings: &Listings) -> Detection {
    let legacy_denied = listings
        .legacy
        .iter()
        .any(|listing| matches!(listing, Listing::Denied(_)));
    let mut failures = Vec::new();
    for backend in [DetectedBackend::Nft, DetectedBackend::Legacy] {
        for (family, listing) in FAMILIES.into_iter().zip(listings.of(backend)) {
            if let Listing::Denied(message) | Listing::Failed(message) = listing {
                failures.push(format!("{}: {message}", backend.save_program(family)));
            }
        }
    }
    let detection = |backend, reason| Detection {
        backend,
        reason,
        failures: failures.clone(),
        legacy_denied,
    };
    for backend in [DetectedBackend::Nft, DetectedBackend::Legacy] {
        for (family, listing) in FAMILIES.into_iter().zip(listings.of(backend)) {
            if let Some(chain) = hint_chain(listing.text()) {
                return detection(backend, Reason::HintChain { chain, family });
            }
        }
    }
    let count = |backend| -> usize {
        listings
            .of(backend)
            .iter()
            .map(|listing| rule_lines(listing.text()))
            .sum()
    };
    let (legacy, nft) = (count(DetectedBackend::Legacy), count(DetectedBackend::Nft));
    if legacy >= LEGACY_RULES_ENOUGH || legacy > nft {
        return detection(DetectedBackend::Legacy, Reason::RuleCounts { legacy, nft });
    }
    if legacy_denied {
        return detection(DetectedBackend::Nft, Reason::LegacyUnreadable);
    }
    detection(DetectedBackend::Nft, Reason::RuleCounts { legacy, nft })
}

const FAMILIES: [IpFamily; 2] = [IpFamily::V4, IpFamily::V6];

/// The first of kubelet's hint chains declared in the `*mangle` section of `-save` output
/// (a line `:KUBE-IPTABLES-HINT - [0:0]`).
fn hint_chain(save_output: &str) -> Option<&'static str> {
    let mut in_mangle = false;
    for line in save_output.lines() {
        let line = line.trim_end();
        if let Some(table) = line.strip_prefix('*') {
            in_mangle = table == "mangle";
        } else if line == "COMMIT" {
            in_mangle = false;
        } else if in_mangle && let Some(declared) = line.strip_prefix(':') {
            let name = declared.split_whitespace().next().unwrap_or_default();
            if let Some(chain) = KUBELET_HINT_CHAINS.into_iter().find(|hint| *hint == name) {
                return Some(chain);
            }
        }
    }
    None
}

/// The rules in `-save` output: its lines that start with `-` (`-A CHAIN ...`), as the
/// wrapper counts them.
fn rule_lines(save_output: &str) -> usize {
    save_output
        .lines()
        .filter(|line| line.starts_with('-'))
        .count()
}

/// Runs the four listings, each as `[PREFIX...] PROGRAM` (the prefix as
/// [`super::IptablesCommand::with_command_prefix`] takes it).
pub fn list_backends(prefix: &[String]) -> Listings {
    let list =
        |backend: DetectedBackend| FAMILIES.map(|family| run_listing(prefix, backend, family));
    Listings {
        nft: list(DetectedBackend::Nft),
        legacy: list(DetectedBackend::Legacy),
    }
}

/// What iptables prints when the kernel refused it (no `CAP_NET_ADMIN`, or for legacy no
/// `CAP_NET_RAW`): "Cannot initialize: Permission denied (you must be root)".
const DENIED_MESSAGE: &str = "Permission denied";

fn run_listing(prefix: &[String], backend: DetectedBackend, family: IpFamily) -> Listing {
    let mut line = prefix.to_vec();
    line.push(backend.save_program(family));
    let program = line[0].clone();
    tracing::debug!(command = %line.join(" "), "running");
    let output = match Command::new(&program)
        .args(&line[1..])
        .stdin(Stdio::null())
        .output()
    {
        Ok(output) => output,
        Err(error) => return Listing::Failed(format!("could not run {program}: {error}")),
    };
    if output.status.success() {
        return Listing::Text(String::from_utf8_lossy(&output.stdout).into_owned());
    }
    let message = format!(
        "{} ({})",
        String::from_utf8_lossy(&output.stderr).trim(),
        output.status
    );
    if message.contains(DENIED_MESSAGE) {
        Listing::Denied(message)
    } else {
        Listing::Failed(message)
    }
}

/// Detects the backend in the network namespace `prefix` runs in, and logs the choice: one
/// info line with the reason, and an error naming `NET_RAW` when the legacy tables could not
/// be read and legacy is chosen or could not be ruled out.
pub fn detect(prefix: &[String]) -> Detection {
    let detection = decide(&list_backends(prefix));
    tracing::info!(
        "--iptables=auto: using iptables-{} because {detection}",
        detection.backend
    );
    if detection.needs_net_raw() {
        tracing::error!(
            "--iptables=auto: iptables-legacy was refused (Permission denied): it needs the \
             NET_RAW capability (add it to the container's securityContext.capabilities, or \
             use the iptables-legacy overlay); {}",
            match detection.backend {
                DetectedBackend::Legacy => "the rules cannot be written until it is given",
                DetectedBackend::Nft =>
                    "whether the node uses legacy could not be told, so nft is used",
            }
        );
    }
    detection
}

#[cfg(test)]
#[path = "detect_tests.rs"]
mod tests;
