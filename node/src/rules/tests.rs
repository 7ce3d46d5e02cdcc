//! Unit tests of apply / check / teardown against the in-memory iptables (no root needed).

use crate::rules::RuleDesign;
use std::net::IpAddr;
use std::sync::Arc;

use super::fake::{FakeIptables, Fault, Hit, Operation};
use super::*;
use crate::setup_errors::SetupErrorType;

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

/// Two local IPs, as the stock DaemonSet passes them (link-local IP, kube-dns ClusterIP).
fn two_ip_rules() -> Vec<Rule> {
    desired_rules(
        &[ip("169.254.20.10"), ip("10.96.0.10")],
        53,
        8080,
        RuleDesign::NodeCache,
    )
}

fn rules_with(fake: FakeIptables, desired: Vec<Rule>) -> (Rules<FakeIptables>, Arc<SetupErrors>) {
    let errors = Arc::new(SetupErrors::new());
    (Rules::new(fake, desired, Arc::clone(&errors)), errors)
}

fn inserts(operation: &Operation) -> bool {
    matches!(operation, Operation::Insert(_))
}

fn deletes(operation: &Operation) -> bool {
    matches!(operation, Operation::Delete(_))
}

fn lists(operation: &Operation) -> bool {
    matches!(operation, Operation::List(_))
}

#[test]
fn apply_inserts_every_rule_once_in_node_caches_order() {
    let desired = two_ip_rules();
    let (mut rules, errors) = rules_with(FakeIptables::default(), desired.clone());
    let report = rules.apply();
    assert_eq!(
        report,
        SyncReport {
            inserted: 24,
            ..SyncReport::default()
        }
    );
    let inserted: Vec<Rule> = rules
        .backend()
        .operations
        .iter()
        .filter_map(|operation| match operation {
            Operation::Insert(rule) => Some(*rule),
            _ => None,
        })
        .collect();
    assert_eq!(inserted, desired, "inserted in node-cache's order");
    for rule in &desired {
        assert_eq!(rules.backend().copies(rule), 1, "{rule}");
    }
    assert_eq!(rules.backend().all_rules().len(), 24);
    // Each insert goes to the top, so a chain holds its rules newest first, as with node-cache.
    let raw_prerouting = rules
        .backend()
        .chain(IpFamily::V4, Table::Raw, Chain::Prerouting);
    assert_eq!(
        raw_prerouting,
        [desired[13], desired[12], desired[1], desired[0]]
    );
    // One listing per chain: raw/PREROUTING, filter/INPUT, raw/OUTPUT, filter/OUTPUT.
    assert_eq!(rules.backend().count_operations(lists), 4);
    assert_eq!(errors.total(), 0);
}

#[test]
fn apply_again_changes_nothing() {
    let (mut rules, _) = rules_with(FakeIptables::default(), two_ip_rules());
    rules.apply();
    let before = rules.backend().all_rules();
    let report = rules.apply();
    assert_eq!(
        report,
        SyncReport {
            present: 24,
            ..SyncReport::default()
        }
    );
    assert_eq!(rules.backend().all_rules(), before);
    assert_eq!(rules.backend().count_operations(inserts), 24);
}

#[test]
fn check_restores_a_rule_deleted_by_hand_at_the_top() {
    let desired = two_ip_rules();
    let (mut rules, _) = rules_with(FakeIptables::default(), desired.clone());
    rules.apply();
    let deleted = desired[18]; // filter/OUTPUT tcp from 10.96.0.10:53
    rules.backend.delete_by_hand(&deleted);
    let report = rules.check();
    assert_eq!(
        report,
        SyncReport {
            present: 23,
            inserted: 1,
            ..SyncReport::default()
        }
    );
    assert_eq!(rules.backend().copies(&deleted), 1);
    assert_eq!(
        rules
            .backend()
            .chain(IpFamily::V4, Table::Filter, Chain::Output)[0],
        deleted
    );
}

#[test]
fn check_removes_duplicates_leaving_one_copy() {
    let desired = two_ip_rules();
    let (mut rules, errors) = rules_with(FakeIptables::default(), desired.clone());
    rules.apply();
    rules.backend.append_by_hand(desired[0]);
    rules.backend.append_by_hand(desired[0]);
    rules.backend.append_by_hand(desired[23]);
    let report = rules.check();
    assert_eq!(
        report,
        SyncReport {
            present: 24,
            duplicates_removed: 3,
            ..SyncReport::default()
        }
    );
    for rule in &desired {
        assert_eq!(rules.backend().copies(rule), 1, "{rule}");
    }
    assert_eq!(rules.backend().count_operations(deletes), 3);
    assert_eq!(errors.total(), 0);
}

/// iptables < 1.8.8 sometimes answers `-C` with "absent" for a present rule; node-cache then
/// inserts it again every interval (kubernetes/dns#568). Counting from the listing does not.
#[test]
fn an_unreliable_check_adds_no_copies() {
    let desired = two_ip_rules();
    let mut fake = FakeIptables::default();
    fake.unreliable_check = true;
    let (mut rules, _) = rules_with(fake, desired.clone());
    rules.apply();
    for _ in 0..3 {
        assert_eq!(
            rules.check(),
            SyncReport {
                present: 24,
                ..SyncReport::default()
            }
        );
    }
    for rule in &desired {
        assert_eq!(rules.backend().copies(rule), 1, "{rule}");
    }
    assert_eq!(rules.backend().count_operations(inserts), 24);
}

/// If iptables ever prints a rule in a form the listing parser does not know, `-C` keeps
/// apply from inserting copies, and teardown still deletes the rule.
#[test]
fn an_unrecognised_listing_falls_back_to_check() {
    let desired = two_ip_rules();
    let mut fake = FakeIptables::default();
    fake.unrecognised_listing = true;
    let (mut rules, errors) = rules_with(fake, desired.clone());
    assert_eq!(rules.apply().inserted, 24);
    // The NOTRACK rules are now listed as `-j CT --notrack`: not seen, but -C finds them.
    let report = rules.check();
    assert_eq!(
        report,
        SyncReport {
            present: 24,
            ..SyncReport::default()
        }
    );
    for rule in &desired {
        assert_eq!(rules.backend().copies(rule), 1, "{rule}");
    }
    rules.backend.append_by_hand(desired[0]);
    let report = rules.teardown();
    assert_eq!(
        report,
        TeardownReport {
            deleted: 25,
            failed: 0
        }
    );
    assert!(rules.backend().all_rules().is_empty());
    assert_eq!(errors.total(), 0);
}

#[test]
fn teardown_removes_every_copy_and_nothing_else() {
    let desired = two_ip_rules();
    let (mut rules, errors) = rules_with(FakeIptables::default(), desired.clone());
    rules.apply();
    for _ in 0..5 {
        rules.backend.append_by_hand(desired[9]);
    }
    rules.backend.append_by_hand(desired[20]);
    let foreign = desired_rules(&[ip("10.0.0.1")], 53, 8080, RuleDesign::NodeCache)[2];
    rules.backend.append_by_hand(foreign);
    let report = rules.teardown();
    assert_eq!(
        report,
        TeardownReport {
            deleted: 30,
            failed: 0
        }
    );
    assert_eq!(rules.backend().all_rules(), [foreign]);
    assert_eq!(errors.total(), 0);
    // Nothing left: a second teardown deletes nothing.
    assert_eq!(rules.teardown(), TeardownReport::default());
}

#[test]
fn ipv6_rules_go_to_ip6tables() {
    let desired = desired_rules(
        &[ip("fd00::10"), ip("fd00::a")],
        53,
        8080,
        RuleDesign::NodeCache,
    );
    let (mut rules, _) = rules_with(FakeIptables::default(), desired.clone());
    assert_eq!(rules.apply().inserted, 24);
    let families: Vec<IpFamily> = rules
        .backend()
        .operations
        .iter()
        .map(|operation| match operation {
            Operation::List((family, _, _)) => *family,
            Operation::Check(rule) | Operation::Insert(rule) | Operation::Delete(rule) => {
                rule.family()
            }
        })
        .collect();
    assert!(
        families.iter().all(|family| *family == IpFamily::V6),
        "{families:?}"
    );
    assert!(
        rules
            .backend()
            .chain(IpFamily::V4, Table::Raw, Chain::Output)
            .is_empty()
    );
    assert_eq!(
        rules
            .backend()
            .chain(IpFamily::V6, Table::Raw, Chain::Output)
            .len(),
        12
    );
    assert_eq!(rules.teardown().deleted, 24);
}

#[test]
fn a_held_lock_is_counted_as_iptables_lock_and_not_fatal() {
    let desired = two_ip_rules();
    let mut fake = FakeIptables::default();
    fake.fail(Hit::Every, Fault::Lock);
    let (mut rules, errors) = rules_with(fake, desired.clone());
    let report = rules.apply();
    assert_eq!(
        report,
        SyncReport {
            failed: 24,
            ..SyncReport::default()
        }
    );
    // The four chain listings failed; no rule was touched blindly.
    assert_eq!(errors.count(SetupErrorType::IptablesLock), 4);
    assert_eq!(errors.count(SetupErrorType::Iptables), 0);
    assert_eq!(rules.backend().count_operations(inserts), 0);
    // The next interval, with the lock free, installs everything.
    rules.backend.heal();
    assert_eq!(rules.check().inserted, 24);
}

#[test]
fn failing_inserts_are_counted_as_iptables_per_rule() {
    let desired = two_ip_rules();
    let mut fake = FakeIptables::default();
    fake.fail(Hit::Insert, Fault::Other);
    let (mut rules, errors) = rules_with(fake, desired.clone());
    let report = rules.apply();
    assert_eq!(
        report,
        SyncReport {
            failed: 24,
            ..SyncReport::default()
        }
    );
    assert_eq!(errors.count(SetupErrorType::Iptables), 24);
    assert_eq!(errors.count(SetupErrorType::IptablesLock), 0);
    rules.backend.fail(Hit::Check, Fault::Lock);
    let report = rules.check();
    assert_eq!(report.failed, 24);
    assert_eq!(errors.count(SetupErrorType::IptablesLock), 24);
}

#[test]
fn failing_deletes_are_counted_and_reported_by_teardown() {
    let desired = two_ip_rules();
    let (mut rules, errors) = rules_with(FakeIptables::default(), desired.clone());
    rules.apply();
    rules.backend.fail(Hit::Delete, Fault::Other);
    let report = rules.teardown();
    assert_eq!(
        report,
        TeardownReport {
            deleted: 0,
            failed: 24
        }
    );
    assert_eq!(errors.count(SetupErrorType::Iptables), 24);
    assert_eq!(rules.backend().all_rules().len(), 24);
    // Tried again once the fault is gone, teardown finishes the job.
    rules.backend.heal();
    assert_eq!(
        rules.teardown(),
        TeardownReport {
            deleted: 24,
            failed: 0
        }
    );
}

#[test]
fn a_duplicated_local_ip_gives_each_rule_once() {
    let desired = desired_rules(
        &[ip("169.254.20.10"), ip("169.254.20.10")],
        53,
        8080,
        RuleDesign::NodeCache,
    );
    let (mut rules, _) = rules_with(FakeIptables::default(), desired.clone());
    assert_eq!(rules.desired(), &desired[..12]);
    assert_eq!(rules.apply().inserted, 12);
    assert_eq!(rules.backend().all_rules().len(), 12);
}
