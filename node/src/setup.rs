//! The node's setup as one value the proxy's lifecycle drives: the local interface and the
//! NOTRACK rules, each optional (`-setupinterface`, `-setupiptables`), through four calls in
//! the order of a run:
//!
//! 1. [`NodeSetup::prepare`], before the listeners are bound: the interface holding the local
//!    IPs, so they can be bound;
//! 2. [`NodeSetup::install`], once every listener serves: the rules, so traffic is redirected
//!    only to a cache that answers;
//! 3. [`NodeSetup::check`], every `-syncinterval`: both again (a deleted rule or address comes
//!    back, duplicates go);
//! 4. at the stop, [`NodeSetup::withdraw`] first (the rules go, so new queries reach the
//!    cluster DNS again while the queries already here are answered), then
//!    [`NodeSetup::remove_interface`] once the shards have stopped.
//!
//! Nothing here is fatal: failures are logged and counted in [`SetupErrors`], as node-cache
//! does, and the next check tries again. [`NodeSetup::rules_in_place`] is what readiness
//! reads. The same value can later be handed to a supervisor that keeps the rules across a
//! restart of the worker.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use crate::interface::{InterfaceError, LocalInterface};
use crate::rules::{
    Backend, IptablesCommand, IptablesMode, RuleDesign, Rules, SyncReport, desired_rules,
};
use crate::setup_errors::SetupErrors;

/// What to set up, from node-cache's flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodePlan {
    /// `-localip`: the addresses, all of one family.
    pub local_ips: Vec<IpAddr>,
    /// `-interfacename` when `-setupinterface` (the default); `None` when the operator
    /// provides the addresses.
    pub interface: Option<String>,
    /// Whether to keep node-cache's rules in place (`-setupiptables`, the default).
    pub iptables: bool,
    /// The DNS port the rules match (`-dns.port`).
    pub dns_port: u16,
    /// The health port the rules match (`-health-port`).
    pub health_port: u16,
    /// node-cache's rules, or the fail-open ones.
    pub design: RuleDesign,
}

/// The interface and the rules of a [`NodePlan`], and whether the rules are in place.
#[derive(Debug)]
pub struct NodeSetup<B = IptablesCommand> {
    interface: Option<LocalInterface>,
    rules: Option<Rules<B>>,
    rules_in_place: Arc<AtomicBool>,
}

impl NodeSetup<IptablesCommand> {
    /// The setup of `plan` with `mode`'s iptables programs (`--iptables`; the default is the
    /// system's `iptables`/`ip6tables`), counting failures in `errors`. With
    /// [`IptablesMode::Auto`] the backend is detected at the first rule operation (the
    /// install), not here, so that building the setup runs nothing.
    pub fn new(plan: &NodePlan, mode: IptablesMode, errors: Arc<SetupErrors>) -> Self {
        Self::with_backend(plan, IptablesCommand::with_mode(mode), errors)
    }
}

impl<B: Backend> NodeSetup<B> {
    /// The setup of `plan`, its rules kept through `backend`.
    pub fn with_backend(plan: &NodePlan, backend: B, errors: Arc<SetupErrors>) -> Self {
        let interface = plan
            .interface
            .as_deref()
            .map(|name| LocalInterface::new(name, plan.local_ips.clone(), Arc::clone(&errors)));
        let rules = plan.iptables.then(|| {
            let desired = desired_rules(
                &plan.local_ips,
                plan.dns_port,
                plan.health_port,
                plan.design,
            );
            Rules::new(backend, desired, errors)
        });
        NodeSetup {
            interface,
            rules,
            rules_in_place: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Whether this setup manages rules (`-setupiptables`).
    pub fn manages_rules(&self) -> bool {
        self.rules.is_some()
    }

    /// Set while every rule is in place: after an [`install`](Self::install) or
    /// [`check`](Self::check) pass in which nothing failed, until a pass fails or
    /// [`withdraw`](Self::withdraw). Stays false when no rules are managed.
    pub fn rules_in_place(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.rules_in_place)
    }

    /// Before binding: the interface with every local IP. An error is logged and counted
    /// already; the caller decides whether to go on (binding will tell).
    pub fn prepare(&self) -> Result<(), InterfaceError> {
        match &self.interface {
            Some(interface) => interface.ensure().map(drop),
            None => Ok(()),
        }
    }

    /// Once every listener serves: the rules, checked and inserted. `None` when no rules are
    /// managed.
    pub fn install(&mut self) -> Option<SyncReport> {
        let started = Instant::now();
        let report = self.rules.as_mut()?.apply();
        self.rules_in_place
            .store(report.failed == 0, Ordering::SeqCst);
        tracing::info!(
            inserted = report.inserted,
            present = report.present,
            duplicates_removed = report.duplicates_removed,
            failed = report.failed,
            "iptables rules installed in {} ms",
            started.elapsed().as_millis()
        );
        Some(report)
    }

    /// The periodic re-check: the interface and its addresses, then the rules.
    pub fn check(&mut self) -> Option<SyncReport> {
        if let Some(interface) = &self.interface {
            // Logged and counted inside.
            let _ = interface.ensure();
        }
        let report = self.rules.as_mut()?.check();
        self.rules_in_place
            .store(report.failed == 0, Ordering::SeqCst);
        Some(report)
    }

    /// The interface alone (while the rules are out on purpose: the node failed open).
    pub fn check_interface(&self) {
        if let Some(interface) = &self.interface {
            // Logged and counted inside.
            let _ = interface.ensure();
        }
    }

    /// The first step of the stop: every rule removed, so that new queries go to the cluster
    /// DNS again. Returns how many copies were deleted and failed, `None` with no rules.
    pub fn withdraw(&mut self) -> Option<(usize, usize)> {
        let rules = self.rules.as_mut()?;
        self.rules_in_place.store(false, Ordering::SeqCst);
        let started = Instant::now();
        let report = rules.teardown();
        tracing::info!(
            deleted = report.deleted,
            failed = report.failed,
            "iptables rules removed in {} ms",
            started.elapsed().as_millis()
        );
        Some((report.deleted, report.failed))
    }

    /// The last step of the stop: the interface deleted (with its addresses).
    pub fn remove_interface(&self) {
        let Some(interface) = &self.interface else {
            return;
        };
        match interface.remove() {
            Ok(true) => tracing::info!(interface = interface.name(), "removed interface"),
            Ok(false) => {}
            Err(error) => tracing::warn!(%error, "removing the local interface failed"),
        }
    }

    /// The rules' backend (for tests).
    #[cfg(test)]
    pub(crate) fn rules(&self) -> Option<&Rules<B>> {
        self.rules.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::fake::{FakeIptables, Fault, Hit};
    use crate::setup_errors::SetupErrorType;

    fn plan(iptables: bool) -> NodePlan {
        NodePlan {
            local_ips: vec![
                "169.254.20.10".parse().unwrap(),
                "10.96.0.10".parse().unwrap(),
            ],
            interface: None,
            iptables,
            dns_port: 53,
            health_port: 8080,
            design: RuleDesign::NodeCache,
        }
    }

    #[test]
    fn rules_in_place_follows_the_passes() {
        let errors = Arc::new(SetupErrors::new());
        let mut setup = NodeSetup::with_backend(&plan(true), FakeIptables::default(), errors);
        let in_place = setup.rules_in_place();
        assert!(setup.manages_rules());
        assert!(!in_place.load(Ordering::SeqCst), "nothing installed yet");
        let report = setup.install().unwrap();
        assert_eq!(report.inserted, 24);
        assert!(in_place.load(Ordering::SeqCst));
        assert_eq!(setup.rules().unwrap().backend().all_rules().len(), 24);
        let report = setup.check().unwrap();
        assert_eq!(report.present, 24);
        assert_eq!(setup.withdraw(), Some((24, 0)));
        assert!(!in_place.load(Ordering::SeqCst), "withdrawn");
        assert_eq!(setup.rules().unwrap().backend().all_rules().len(), 0);
    }

    #[test]
    fn a_failed_pass_is_not_in_place_and_is_counted() {
        let errors = Arc::new(SetupErrors::new());
        let mut backend = FakeIptables::default();
        backend.fail(Hit::Insert, Fault::Lock);
        let mut setup = NodeSetup::with_backend(&plan(true), backend, Arc::clone(&errors));
        let report = setup.install().unwrap();
        assert_eq!(report.failed, 24);
        assert!(!setup.rules_in_place().load(Ordering::SeqCst));
        assert_eq!(errors.count(SetupErrorType::IptablesLock), 24);
    }

    #[test]
    fn without_iptables_nothing_is_installed() {
        let errors = Arc::new(SetupErrors::new());
        let mut setup = NodeSetup::with_backend(&plan(false), FakeIptables::default(), errors);
        assert!(!setup.manages_rules());
        assert_eq!(setup.install(), None);
        assert_eq!(setup.check(), None);
        assert_eq!(setup.withdraw(), None);
        assert!(setup.prepare().is_ok(), "no interface to make");
    }
}
