//! The real [`Backend`]: runs the `iptables` / `ip6tables` binaries as node-cache does.
//!
//! node-cache goes through Kubernetes' `pkg/util/iptables` runner, which runs
//! `iptables -w 5 -C CHAIN -t TABLE ARGS...` to check, `-I` (no position: the top) to insert and
//! `-D` to delete; `-C` exiting with status 1 means "no such rule". [`IptablesCommand`] builds
//! exactly those command lines, for the program chosen by [`IptablesVariant`] (the system's
//! `iptables`, or explicitly `iptables-nft` / `iptables-legacy`), `ip6tables*` for IPv6 rules.
//! Listing (`-S`) is what this crate adds: it counts copies where `-C` cannot.
//! [`IptablesMode::Auto`] chooses between nft and legacy itself (`super::detect`).

use std::fmt;
use std::io;
use std::process::{Command, Stdio};
use std::str::FromStr;

use thiserror::Error;

use super::Backend;
use super::detect::{Detection, detect};
use super::rule::{Chain, IpFamily, Rule, Table};
use crate::setup_errors::SetupErrorType;

/// What iptables prints when it could not take the xtables lock within `-w` (node-cache's
/// `isLockedErr` looks for the same words).
const LOCK_MESSAGE: &str = "holding the xtables lock";

/// A failed iptables operation.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum IptablesError {
    /// The program could not be started (not installed, not executable).
    #[error("could not run {program}: {source}")]
    Spawn {
        /// The command line's first word.
        program: String,
        /// Why it could not be started.
        source: io::Error,
    },
    /// The program ran and failed.
    #[error("`{command_line}` failed ({status}): {output}")]
    Failed {
        /// The whole command line, for the log.
        command_line: String,
        /// The exit status, or how it ended.
        status: String,
        /// What it printed (stdout and stderr), trimmed.
        output: String,
    },
}

impl IptablesError {
    /// node-cache's classification: `iptables_lock` when iptables says another program holds
    /// the xtables lock, `iptables` for anything else.
    pub fn error_type(&self) -> SetupErrorType {
        match self {
            IptablesError::Failed { output, .. } if output.contains(LOCK_MESSAGE) => {
                SetupErrorType::IptablesLock
            }
            _ => SetupErrorType::Iptables,
        }
    }
}

/// Which iptables programs to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IptablesVariant {
    /// `iptables` / `ip6tables`: whatever the system links them to (node-cache's choice).
    #[default]
    System,
    /// `iptables-nft` / `ip6tables-nft`.
    Nft,
    /// `iptables-legacy` / `ip6tables-legacy`.
    Legacy,
}

impl IptablesVariant {
    /// The program for rules of `family`.
    pub fn program(self, family: IpFamily) -> &'static str {
        match (self, family) {
            (IptablesVariant::System, IpFamily::V4) => "iptables",
            (IptablesVariant::System, IpFamily::V6) => "ip6tables",
            (IptablesVariant::Nft, IpFamily::V4) => "iptables-nft",
            (IptablesVariant::Nft, IpFamily::V6) => "ip6tables-nft",
            (IptablesVariant::Legacy, IpFamily::V4) => "iptables-legacy",
            (IptablesVariant::Legacy, IpFamily::V6) => "ip6tables-legacy",
        }
    }
}

impl fmt::Display for IptablesVariant {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.program(IpFamily::V4))
    }
}

/// An iptables variant name that is none of `iptables`, `iptables-nft`, `iptables-legacy`.
#[derive(Debug, Error)]
#[error("unknown iptables variant {0:?} (expected iptables, iptables-nft or iptables-legacy)")]
pub struct UnknownIptablesVariant(pub String);

impl FromStr for IptablesVariant {
    type Err = UnknownIptablesVariant;

    /// The IPv4 program's name: `iptables`, `iptables-nft` or `iptables-legacy`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "iptables" => Ok(IptablesVariant::System),
            "iptables-nft" => Ok(IptablesVariant::Nft),
            "iptables-legacy" => Ok(IptablesVariant::Legacy),
            other => Err(UnknownIptablesVariant(other.to_string())),
        }
    }
}

/// `--iptables`: a fixed [`IptablesVariant`], or `auto`, which chooses nft or legacy once,
/// before the first rule operation, as node-cache's image does (`rules::detect`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IptablesMode {
    /// Look at both backends' tables and use the one the node's kubelet uses.
    Auto,
    /// Always these programs (the default: the system's `iptables`).
    Fixed(IptablesVariant),
}

impl Default for IptablesMode {
    /// The system's `iptables`, as node-cache runs it.
    fn default() -> Self {
        IptablesMode::Fixed(IptablesVariant::System)
    }
}

impl IptablesMode {
    /// Every mode, in the order the help lists them.
    pub const ALL: [IptablesMode; 4] = [
        IptablesMode::Auto,
        IptablesMode::Fixed(IptablesVariant::System),
        IptablesMode::Fixed(IptablesVariant::Nft),
        IptablesMode::Fixed(IptablesVariant::Legacy),
    ];
}

impl fmt::Display for IptablesMode {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IptablesMode::Auto => formatter.write_str("auto"),
            IptablesMode::Fixed(variant) => variant.fmt(formatter),
        }
    }
}

/// An `--iptables` value that is none of `auto`, `iptables`, `iptables-nft`, `iptables-legacy`.
#[derive(Debug, Error)]
#[error("unknown iptables mode {0:?} (expected auto, iptables, iptables-nft or iptables-legacy)")]
pub struct UnknownIptablesMode(pub String);

impl FromStr for IptablesMode {
    type Err = UnknownIptablesMode;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "auto" => Ok(IptablesMode::Auto),
            other => other
                .parse()
                .map(IptablesMode::Fixed)
                .map_err(|_| UnknownIptablesMode(other.to_string())),
        }
    }
}

/// Runs iptables commands, optionally behind a command prefix (for tests:
/// `ip netns exec NAME`, so that only a namespace the test made is touched).
#[derive(Debug, Clone)]
pub struct IptablesCommand {
    variant: IptablesVariant,
    /// `auto` before its detection ran: detect before the next operation.
    detect: bool,
    wait_seconds: u32,
    prefix: Vec<String>,
}

impl IptablesCommand {
    /// node-cache's wait for the xtables lock: `-w 5`.
    pub const DEFAULT_WAIT_SECONDS: u32 = 5;

    /// Runs `variant`'s programs directly, waiting up to 5 s for the xtables lock.
    pub fn new(variant: IptablesVariant) -> Self {
        Self {
            variant,
            detect: false,
            wait_seconds: Self::DEFAULT_WAIT_SECONDS,
            prefix: Vec::new(),
        }
    }

    /// Runs `mode`'s programs. With [`IptablesMode::Auto`] the backend is detected (and the
    /// choice logged) at the first operation, in the namespace the prefix gives; until then
    /// [`variant`](Self::variant) is the system's `iptables`.
    pub fn with_mode(mode: IptablesMode) -> Self {
        match mode {
            IptablesMode::Auto => Self {
                detect: true,
                ..Self::new(IptablesVariant::System)
            },
            IptablesMode::Fixed(variant) => Self::new(variant),
        }
    }

    /// Detects the backend now if `auto` has not yet; returns the detection when it ran.
    pub fn detect_once(&mut self) -> Option<Detection> {
        if !std::mem::replace(&mut self.detect, false) {
            return None;
        }
        let detection = detect(&self.prefix);
        self.variant = detection.backend.variant();
        Some(detection)
    }

    /// Runs every command inside network namespace `name` (`ip netns exec NAME ...`).
    pub fn in_network_namespace(self, name: &str) -> Self {
        self.with_command_prefix(["ip", "netns", "exec", name].map(String::from).to_vec())
    }

    /// Runs every command as `PREFIX... iptables ...` (for example `env
    /// XTABLES_LOCKFILE=... ip netns exec NAME`).
    pub fn with_command_prefix(mut self, prefix: Vec<String>) -> Self {
        self.prefix = prefix;
        self
    }

    /// Waits up to `seconds` for the xtables lock instead of 5.
    pub fn with_wait_seconds(mut self, seconds: u32) -> Self {
        self.wait_seconds = seconds;
        self
    }

    /// The variant this runs.
    pub fn variant(&self) -> IptablesVariant {
        self.variant
    }

    /// The whole command line of `operation` (`-C`, `-I`, `-D`) on `rule`, as node-cache's
    /// runner builds it: `[PREFIX...] iptables -w 5 OPERATION CHAIN -t TABLE ARGS...`.
    pub fn rule_command_line(&self, operation: RuleOperation, rule: &Rule) -> Vec<String> {
        let mut line = self.command_start(rule.family());
        line.extend(
            [operation.flag(), rule.chain.name(), "-t", rule.table.name()].map(String::from),
        );
        line.extend(rule.arguments());
        line
    }

    /// The command line that lists a chain: `[PREFIX...] iptables -w 5 -S CHAIN -t TABLE`.
    pub fn list_command_line(&self, family: IpFamily, table: Table, chain: Chain) -> Vec<String> {
        let mut line = self.command_start(family);
        line.extend(["-S", chain.name(), "-t", table.name()].map(String::from));
        line
    }

    fn command_start(&self, family: IpFamily) -> Vec<String> {
        let mut line = self.prefix.clone();
        line.push(self.variant.program(family).to_string());
        line.push("-w".to_string());
        line.push(self.wait_seconds.to_string());
        line
    }

    /// Runs `line`; `Ok(Ok(stdout))` on success, `Ok(Err((status, error)))` when it ran and
    /// failed.
    fn run(
        &self,
        line: &[String],
    ) -> Result<Result<String, (Option<i32>, IptablesError)>, IptablesError> {
        let Some((program, arguments)) = line.split_first() else {
            let source = io::Error::new(io::ErrorKind::InvalidInput, "empty command line");
            return Err(IptablesError::Spawn {
                program: String::new(),
                source,
            });
        };
        tracing::debug!(command = %line.join(" "), "running");
        let output = Command::new(program)
            .args(arguments)
            .stdin(Stdio::null())
            .output()
            .map_err(|source| IptablesError::Spawn {
                program: program.clone(),
                source,
            })?;
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        if output.status.success() {
            return Ok(Ok(stdout));
        }
        let combined = format!("{stdout}{}", String::from_utf8_lossy(&output.stderr));
        let error = IptablesError::Failed {
            command_line: quote_command_line(line),
            status: output.status.to_string(),
            output: combined.trim().to_string(),
        };
        Ok(Err((output.status.code(), error)))
    }

    fn run_expecting_success(&self, line: &[String]) -> Result<String, IptablesError> {
        self.run(line)?.map_err(|(_, error)| error)
    }
}

/// The three rule operations, by their iptables flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleOperation {
    /// `-C`: is the rule there?
    Check,
    /// `-I`: insert at the top.
    Insert,
    /// `-D`: delete one copy.
    Delete,
}

impl RuleOperation {
    fn flag(self) -> &'static str {
        match self {
            RuleOperation::Check => "-C",
            RuleOperation::Insert => "-I",
            RuleOperation::Delete => "-D",
        }
    }
}

impl Backend for IptablesCommand {
    fn list(
        &mut self,
        family: IpFamily,
        table: Table,
        chain: Chain,
    ) -> Result<Vec<String>, IptablesError> {
        self.detect_once();
        let output = self.run_expecting_success(&self.list_command_line(family, table, chain))?;
        Ok(output.lines().map(str::to_string).collect())
    }

    /// Exit status 0: present; 1: absent (as Kubernetes' runner reads it); anything else, or a
    /// lock failure, is an error.
    fn check(&mut self, rule: &Rule) -> Result<bool, IptablesError> {
        self.detect_once();
        match self.run(&self.rule_command_line(RuleOperation::Check, rule))? {
            Ok(_) => Ok(true),
            Err((Some(1), error)) if error.error_type() == SetupErrorType::Iptables => Ok(false),
            Err((_, error)) => Err(error),
        }
    }

    fn insert(&mut self, rule: &Rule) -> Result<(), IptablesError> {
        self.detect_once();
        self.run_expecting_success(&self.rule_command_line(RuleOperation::Insert, rule))
            .map(drop)
    }

    fn delete(&mut self, rule: &Rule) -> Result<(), IptablesError> {
        self.detect_once();
        self.run_expecting_success(&self.rule_command_line(RuleOperation::Delete, rule))
            .map(drop)
    }
}

/// A command line for a log line, words with spaces in double quotes.
fn quote_command_line(line: &[String]) -> String {
    let words: Vec<String> = line
        .iter()
        .map(|word| {
            if word.contains(' ') {
                format!("\"{word}\"")
            } else {
                word.clone()
            }
        })
        .collect();
    words.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::RuleDesign;
    use crate::rules::rule::desired_rules;

    #[test]
    fn command_lines_are_node_caches() {
        let rules = desired_rules(
            &["169.254.20.10".parse().unwrap()],
            53,
            8080,
            RuleDesign::NodeCache,
        );
        let command = IptablesCommand::new(IptablesVariant::System);
        assert_eq!(
            quote_command_line(&command.rule_command_line(RuleOperation::Check, &rules[0])),
            "iptables -w 5 -C PREROUTING -t raw -p tcp -d 169.254.20.10 --dport 53 -j NOTRACK \
             -m comment --comment \"NodeLocal DNS Cache: skip conntrack\""
        );
        assert_eq!(
            quote_command_line(&command.rule_command_line(RuleOperation::Insert, &rules[3])),
            "iptables -w 5 -I INPUT -t filter -p udp -d 169.254.20.10 --dport 53 -j ACCEPT \
             -m comment --comment \"NodeLocal DNS Cache: allow DNS traffic\""
        );
        assert_eq!(
            quote_command_line(&command.rule_command_line(RuleOperation::Delete, &rules[11])),
            "iptables -w 5 -D OUTPUT -t raw -p tcp -s 169.254.20.10 --sport 8080 -j NOTRACK \
             -m comment --comment \"NodeLocal DNS Cache: skip conntrack\""
        );
    }

    #[test]
    fn ipv6_rules_use_ip6tables_of_the_chosen_variant() {
        let rule = desired_rules(
            &["fd00::a".parse().unwrap()],
            53,
            8080,
            RuleDesign::NodeCache,
        )[0];
        for (variant, program) in [
            (IptablesVariant::System, "ip6tables"),
            (IptablesVariant::Nft, "ip6tables-nft"),
            (IptablesVariant::Legacy, "ip6tables-legacy"),
        ] {
            let line = IptablesCommand::new(variant)
                .in_network_namespace("test-ns")
                .rule_command_line(RuleOperation::Check, &rule);
            assert_eq!(line[..5], ["ip", "netns", "exec", "test-ns", program]);
        }
    }

    #[test]
    fn list_command_line() {
        let command = IptablesCommand::new(IptablesVariant::Legacy).with_wait_seconds(1);
        assert_eq!(
            command.list_command_line(IpFamily::V4, Table::Raw, Chain::Output),
            ["iptables-legacy", "-w", "1", "-S", "OUTPUT", "-t", "raw"]
        );
    }

    #[test]
    fn variants_parse_from_program_names() {
        for variant in [
            IptablesVariant::System,
            IptablesVariant::Nft,
            IptablesVariant::Legacy,
        ] {
            assert_eq!(
                variant.to_string().parse::<IptablesVariant>().unwrap(),
                variant
            );
        }
        assert!("nftables".parse::<IptablesVariant>().is_err());
    }

    #[test]
    fn lock_failures_are_classified_by_iptables_message() {
        let locked = IptablesError::Failed {
            command_line: "iptables -w 5 -C INPUT".to_string(),
            status: "exit status: 4".to_string(),
            output: "Another app is currently holding the xtables lock. Stopped waiting after 5s."
                .to_string(),
        };
        assert_eq!(locked.error_type(), SetupErrorType::IptablesLock);
        let other = IptablesError::Failed {
            command_line: "iptables -w 5 -I INPUT".to_string(),
            status: "exit status: 2".to_string(),
            output: "iptables v1.8.9: unknown option".to_string(),
        };
        assert_eq!(other.error_type(), SetupErrorType::Iptables);
    }

    #[test]
    fn a_missing_program_is_an_iptables_error() {
        let rule = desired_rules(
            &["169.254.20.10".parse().unwrap()],
            53,
            8080,
            RuleDesign::NodeCache,
        )[0];
        let mut command = IptablesCommand::new(IptablesVariant::Nft)
            .with_command_prefix(vec!["/nonexistent/shardns-test-program".to_string()]);
        let error = command.check(&rule).unwrap_err();
        assert!(matches!(error, IptablesError::Spawn { .. }), "{error}");
        assert_eq!(error.error_type(), SetupErrorType::Iptables);
    }
}
