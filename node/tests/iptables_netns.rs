//! Root only: node-cache's rules applied, re-checked and torn down with real iptables, both
//! `iptables-nft` and `iptables-legacy`, inside a network namespace each test creates and
//! always removes. The host's own tables are never touched. `--iptables=auto` follows
//! kubelet's hint chain to either backend.

mod common;

use std::fs::File;
use std::net::IpAddr;
use std::sync::Arc;

use common::{NetworkNamespace, skip_reason};
use shardns_node::{
    IpFamily, IptablesCommand, IptablesMode, IptablesVariant, RuleDesign, Rules, SetupErrorType,
    SetupErrors, SyncReport, TeardownReport, desired_rules,
};

const SKIP: &str = "NodeLocal DNS Cache: skip conntrack";
const ALLOW: &str = "NodeLocal DNS Cache: allow DNS traffic";
const LINK_LOCAL: &str = "169.254.20.10";
const CLUSTER_IP: &str = "10.96.0.10";
/// A rule of someone else's, in `-S` form, that must survive everything.
const FOREIGN: &str = "-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT";

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

/// node-cache's 12 rules for `x`, as `(table, chain, line printed by iptables -S)`, in
/// node-cache's order. Written out here, independently of the crate's own rendering.
fn node_cache_listing(x: &str, host_prefix: u8) -> Vec<(&'static str, &'static str, String)> {
    let x = format!("{x}/{host_prefix}");
    let line = |chain: &str, side: &str, protocol: &str, port: &str, comment: &str, target| {
        let (address, port_option) = if side == "d" {
            ("-d", "--dport")
        } else {
            ("-s", "--sport")
        };
        format!(
            "-A {chain} {address} {x} -p {protocol} -m {protocol} {port_option} {port} -m comment \
             --comment \"{comment}\" -j {target}"
        )
    };
    vec![
        (
            "raw",
            "PREROUTING",
            line("PREROUTING", "d", "tcp", "53", SKIP, "NOTRACK"),
        ),
        (
            "raw",
            "PREROUTING",
            line("PREROUTING", "d", "udp", "53", SKIP, "NOTRACK"),
        ),
        (
            "filter",
            "INPUT",
            line("INPUT", "d", "tcp", "53", ALLOW, "ACCEPT"),
        ),
        (
            "filter",
            "INPUT",
            line("INPUT", "d", "udp", "53", ALLOW, "ACCEPT"),
        ),
        (
            "raw",
            "OUTPUT",
            line("OUTPUT", "s", "tcp", "53", SKIP, "NOTRACK"),
        ),
        (
            "raw",
            "OUTPUT",
            line("OUTPUT", "s", "udp", "53", SKIP, "NOTRACK"),
        ),
        (
            "filter",
            "OUTPUT",
            line("OUTPUT", "s", "tcp", "53", ALLOW, "ACCEPT"),
        ),
        (
            "filter",
            "OUTPUT",
            line("OUTPUT", "s", "udp", "53", ALLOW, "ACCEPT"),
        ),
        (
            "raw",
            "OUTPUT",
            line("OUTPUT", "d", "tcp", "53", SKIP, "NOTRACK"),
        ),
        (
            "raw",
            "OUTPUT",
            line("OUTPUT", "d", "udp", "53", SKIP, "NOTRACK"),
        ),
        (
            "raw",
            "OUTPUT",
            line("OUTPUT", "d", "tcp", "8080", SKIP, "NOTRACK"),
        ),
        (
            "raw",
            "OUTPUT",
            line("OUTPUT", "s", "tcp", "8080", SKIP, "NOTRACK"),
        ),
    ]
}

/// `iptables -t TABLE -S` after inserting every rule of `ips` at the top, in order: each
/// chain holds them newest first, then whatever was there before (`before`).
fn expected_table(table: &str, ips: &[(&str, u8)], before: &[&str]) -> Vec<String> {
    let chains: &[&str] = if table == "raw" {
        &["PREROUTING", "OUTPUT"]
    } else {
        &["INPUT", "FORWARD", "OUTPUT"]
    };
    let inserted: Vec<(&str, &str, String)> = ips
        .iter()
        .flat_map(|&(x, prefix)| node_cache_listing(x, prefix))
        .collect();
    let mut lines: Vec<String> = chains
        .iter()
        .map(|chain| format!("-P {chain} ACCEPT"))
        .collect();
    for chain in chains {
        let ours = inserted
            .iter()
            .rev()
            .filter(|(t, c, _)| *t == table && c == chain);
        lines.extend(ours.map(|(_, _, line)| line.clone()));
        let theirs = before
            .iter()
            .filter(|line| line.starts_with(&format!("-A {chain} ")));
        lines.extend(theirs.map(|line| line.to_string()));
    }
    lines
}

fn listing(namespace: &NetworkNamespace, program: &str, table: &str) -> Vec<String> {
    let output = namespace.run_ok(program, &["-w", "5", "-t", table, "-S"]);
    output.lines().map(str::to_string).collect()
}

fn sorted(mut lines: Vec<String>) -> Vec<String> {
    lines.sort();
    lines
}

/// The namespace for a test, or `None` (with the reason printed) when it cannot run here.
fn namespace_for(programs: &[&str], label: &str) -> Option<NetworkNamespace> {
    if let Some(reason) = skip_reason(programs) {
        println!("skipping: {reason}");
        return None;
    }
    Some(NetworkNamespace::create(label).unwrap())
}

fn apply_check_teardown(variant: IptablesVariant, label: &str) {
    let program = variant.program(IpFamily::V4);
    let Some(namespace) = namespace_for(&[program], label) else {
        return;
    };
    namespace.run_ok(
        program,
        &[
            "-w", "5", "-A", "INPUT", "-p", "tcp", "--dport", "22", "-j", "ACCEPT",
        ],
    );
    let errors = Arc::new(SetupErrors::new());
    let command = IptablesCommand::new(variant).in_network_namespace(namespace.name());
    let desired = desired_rules(
        &[ip(LINK_LOCAL), ip(CLUSTER_IP)],
        53,
        8080,
        RuleDesign::NodeCache,
    );
    let mut rules = Rules::new(command, desired, Arc::clone(&errors));
    let ips = [(LINK_LOCAL, 32), (CLUSTER_IP, 32)];
    let expected_filter = expected_table("filter", &ips, &[FOREIGN]);
    let expected_raw = expected_table("raw", &ips, &[]);

    // Apply: all 24 rules, with their comments, at the top of their chains.
    assert_eq!(
        rules.apply(),
        SyncReport {
            inserted: 24,
            ..SyncReport::default()
        }
    );
    assert_eq!(listing(&namespace, program, "filter"), expected_filter);
    assert_eq!(listing(&namespace, program, "raw"), expected_raw);
    assert_eq!(
        rules.check(),
        SyncReport {
            present: 24,
            ..SyncReport::default()
        }
    );

    // A rule deleted by hand comes back, at the top of its chain.
    let args_9 = [
        "-p", "tcp", "-d", LINK_LOCAL, "--dport", "53", "-j", "NOTRACK",
    ];
    let comment_a = ["-m", "comment", "--comment", SKIP];
    let mut delete = vec!["-w", "5", "-D", "OUTPUT", "-t", "raw"];
    delete.extend(args_9.iter().chain(&comment_a));
    namespace.run_ok(program, &delete);
    assert_eq!(
        listing(&namespace, program, "raw").len(),
        expected_raw.len() - 1
    );
    assert_eq!(
        rules.check(),
        SyncReport {
            present: 23,
            inserted: 1,
            ..SyncReport::default()
        }
    );
    let raw = listing(&namespace, program, "raw");
    assert_eq!(sorted(raw.clone()), sorted(expected_raw.clone()));
    let restored = &node_cache_listing(LINK_LOCAL, 32)[8].2;
    let first_output = raw
        .iter()
        .find(|line| line.starts_with("-A OUTPUT "))
        .unwrap();
    assert_eq!(first_output, restored);

    // Copies added by hand (one at the bottom, one at the top) are removed.
    let args_4 = [
        "-p", "udp", "-d", CLUSTER_IP, "--dport", "53", "-j", "ACCEPT",
    ];
    let comment_b = ["-m", "comment", "--comment", ALLOW];
    for position in ["-A", "-I"] {
        let mut add = vec!["-w", "5", position, "INPUT", "-t", "filter"];
        add.extend(args_4.iter().chain(&comment_b));
        namespace.run_ok(program, &add);
    }
    assert_eq!(
        listing(&namespace, program, "filter").len(),
        expected_filter.len() + 2
    );
    let report = rules.check();
    assert_eq!(
        report,
        SyncReport {
            present: 24,
            duplicates_removed: 2,
            ..SyncReport::default()
        }
    );
    let filter = listing(&namespace, program, "filter");
    assert_eq!(sorted(filter), sorted(expected_filter.clone()));

    // Teardown removes every copy, duplicates included, and leaves the foreign rule.
    for _ in 0..3 {
        let mut add = vec!["-w", "5", "-A", "OUTPUT", "-t", "raw"];
        add.extend(args_9.iter().chain(&comment_a));
        namespace.run_ok(program, &add);
    }
    assert_eq!(
        rules.teardown(),
        TeardownReport {
            deleted: 27,
            failed: 0
        }
    );
    assert_eq!(
        listing(&namespace, program, "filter"),
        expected_table("filter", &[], &[FOREIGN])
    );
    assert_eq!(
        listing(&namespace, program, "raw"),
        expected_table("raw", &[], &[])
    );
    assert_eq!(errors.total(), 0);
}

#[test]
fn apply_check_teardown_with_iptables_nft() {
    apply_check_teardown(IptablesVariant::Nft, "nft");
}

#[test]
fn apply_check_teardown_with_iptables_legacy() {
    apply_check_teardown(IptablesVariant::Legacy, "legacy");
}

fn ipv6_rules_use_ip6tables(variant: IptablesVariant, label: &str) {
    let (program, program_v4) = (variant.program(IpFamily::V6), variant.program(IpFamily::V4));
    let Some(namespace) = namespace_for(&[program, program_v4], label) else {
        return;
    };
    let errors = Arc::new(SetupErrors::new());
    let command = IptablesCommand::new(variant).in_network_namespace(namespace.name());
    let mut rules = Rules::new(
        command,
        desired_rules(&[ip("fd00::a")], 53, 8080, RuleDesign::NodeCache),
        errors,
    );
    assert_eq!(
        rules.apply(),
        SyncReport {
            inserted: 12,
            ..SyncReport::default()
        }
    );
    let ips = [("fd00::a", 128)];
    assert_eq!(
        listing(&namespace, program, "filter"),
        expected_table("filter", &ips, &[])
    );
    assert_eq!(
        listing(&namespace, program, "raw"),
        expected_table("raw", &ips, &[])
    );
    assert_eq!(
        listing(&namespace, program_v4, "raw"),
        expected_table("raw", &[], &[])
    );
    assert_eq!(
        rules.teardown(),
        TeardownReport {
            deleted: 12,
            failed: 0
        }
    );
    assert_eq!(
        listing(&namespace, program, "filter"),
        expected_table("filter", &[], &[])
    );
    assert_eq!(
        listing(&namespace, program, "raw"),
        expected_table("raw", &[], &[])
    );
}

#[test]
fn ipv6_rules_use_ip6tables_nft() {
    ipv6_rules_use_ip6tables(IptablesVariant::Nft, "nft6");
}

#[test]
fn ipv6_rules_use_ip6tables_legacy() {
    ipv6_rules_use_ip6tables(IptablesVariant::Legacy, "legacy6");
}

/// A lock file of the test's own, removed when dropped.
struct LockFile(std::path::PathBuf);

impl Drop for LockFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// iptables-legacy waits for the xtables lock (`-w`), then fails: counted as `iptables_lock`,
/// not fatal, and the next check installs the rules. The lock is a file of the test's own
/// (`XTABLES_LOCKFILE`), never the host's `/run/xtables.lock`. (iptables-nft takes no lock.)
#[test]
fn a_held_xtables_lock_is_counted_with_iptables_legacy() {
    let Some(namespace) = namespace_for(&["iptables-legacy", "env"], "lock") else {
        return;
    };
    let path =
        std::env::temp_dir().join(format!("shardns-test-xtables-{}.lock", std::process::id()));
    let lock_file = LockFile(path.clone());
    let holder = File::create(&lock_file.0).unwrap();
    holder.lock().unwrap();
    let prefix = [
        "env",
        &format!("XTABLES_LOCKFILE={}", path.display()),
        "ip",
        "netns",
        "exec",
    ]
    .iter()
    .map(|word| word.to_string())
    .chain([namespace.name().to_string()])
    .collect();
    let command = IptablesCommand::new(IptablesVariant::Legacy)
        .with_command_prefix(prefix)
        .with_wait_seconds(1);
    let errors = Arc::new(SetupErrors::new());
    let mut rules = Rules::new(
        command,
        desired_rules(&[ip(LINK_LOCAL)], 53, 8080, RuleDesign::NodeCache),
        Arc::clone(&errors),
    );

    assert_eq!(
        rules.apply(),
        SyncReport {
            failed: 12,
            ..SyncReport::default()
        }
    );
    // One failure per chain listing (raw/PREROUTING, filter/INPUT, raw/OUTPUT, filter/OUTPUT).
    assert_eq!(errors.count(SetupErrorType::IptablesLock), 4);
    assert_eq!(errors.count(SetupErrorType::Iptables), 0);

    holder.unlock().unwrap();
    assert_eq!(
        rules.check(),
        SyncReport {
            inserted: 12,
            ..SyncReport::default()
        }
    );
    let ips = [(LINK_LOCAL, 32)];
    assert_eq!(
        listing(&namespace, "iptables-legacy", "raw"),
        expected_table("raw", &ips, &[])
    );
    assert_eq!(
        rules.teardown(),
        TeardownReport {
            deleted: 12,
            failed: 0
        }
    );
    assert_eq!(errors.count(SetupErrorType::IptablesLock), 4);
}

/// The fail-open rules (`-m socket --nowildcard` on the raw PREROUTING pair) go in, are
/// recognised on the next check (no copy added) and come out, with both back-ends.
fn fail_open_rules_round_trip(variant: IptablesVariant, label: &str) {
    let program = variant.program(IpFamily::V4);
    let Some(namespace) = namespace_for(&[program], label) else {
        return;
    };
    let errors = Arc::new(SetupErrors::new());
    let command = IptablesCommand::new(variant).in_network_namespace(namespace.name());
    let desired = desired_rules(&[ip(CLUSTER_IP)], 53, 8080, RuleDesign::FailOpen);
    let mut rules = Rules::new(command, desired, Arc::clone(&errors));
    assert_eq!(rules.apply().inserted, 12);
    let raw = listing(&namespace, program, "raw");
    assert_eq!(
        raw.iter()
            .filter(|line| line.contains("-m socket --nowildcard"))
            .count(),
        2,
        "{raw:#?}"
    );
    assert_eq!(
        rules.check(),
        SyncReport {
            present: 12,
            ..SyncReport::default()
        }
    );
    assert_eq!(rules.teardown().deleted, 12);
    assert!(
        listing(&namespace, program, "raw")
            .iter()
            .all(|line| !line.contains("NodeLocal"))
    );
    assert_eq!(errors.total(), 0);
}

#[test]
fn fail_open_rules_round_trip_with_iptables_nft() {
    fail_open_rules_round_trip(IptablesVariant::Nft, "failopen-nft");
}

#[test]
fn fail_open_rules_round_trip_with_iptables_legacy() {
    fail_open_rules_round_trip(IptablesVariant::Legacy, "failopen-legacy");
}

/// `--iptables=auto` in a namespace whose `hinted` backend holds kubelet's hint chain, while
/// the other holds more rules: the detection names `hinted`, and the rules land there only.
fn auto_follows_kubelets_hint(hinted: IptablesVariant, other: IptablesVariant, label: &str) {
    let programs = [hinted.program(IpFamily::V4), other.program(IpFamily::V4)];
    let Some(namespace) = namespace_for(&programs, label) else {
        return;
    };
    namespace.run_ok(
        programs[0],
        &["-w", "5", "-t", "mangle", "-N", "KUBE-IPTABLES-HINT"],
    );
    for index in 0..12 {
        let source = format!("10.255.0.{index}/32");
        namespace.run_ok(
            programs[1],
            &["-w", "5", "-A", "INPUT", "-s", &source, "-j", "ACCEPT"],
        );
    }
    let mut command =
        IptablesCommand::with_mode(IptablesMode::Auto).in_network_namespace(namespace.name());
    let detection = command.detect_once().expect("auto detects");
    assert_eq!(detection.backend.variant(), hinted, "{detection}");
    let desired = desired_rules(&[ip(LINK_LOCAL)], 53, 8080, RuleDesign::NodeCache);
    let mut rules = Rules::new(command, desired, Arc::new(SetupErrors::new()));
    assert_eq!(rules.apply().inserted, 12);
    let ours = |program| {
        listing(&namespace, program, "raw")
            .into_iter()
            .filter(|line| line.contains(SKIP))
            .count()
    };
    assert_eq!(ours(programs[0]), 8);
    assert_eq!(ours(programs[1]), 0);
    assert_eq!(rules.teardown().deleted, 12);
}

#[test]
fn auto_follows_kubelets_hint_to_iptables_legacy() {
    auto_follows_kubelets_hint(IptablesVariant::Legacy, IptablesVariant::Nft, "autolegacy");
}

#[test]
fn auto_follows_kubelets_hint_to_iptables_nft() {
    auto_follows_kubelets_hint(IptablesVariant::Nft, IptablesVariant::Legacy, "autonft");
}
