//! Node-setup error counters: `coredns_nodecache_setup_errors_total{errortype}`.
//!
//! node-cache counts every failed iptables operation and every failed interface operation
//! under one counter with an `errortype` label, and never stops for them: the next sync
//! interval tries again. [`SetupErrors`] holds one plain atomic per label value; the rule and
//! interface code increments it, the proxy's metrics thread reads it with
//! [`SetupErrors::snapshot`].

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

/// The metric name node-cache exports these counters under.
pub const SETUP_ERRORS_METRIC: &str = "coredns_nodecache_setup_errors_total";

/// What failed, as node-cache's `errortype` label values (`cmd/node-cache/app`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SetupErrorType {
    /// An `iptables`/`ip6tables` command failed for any reason but the lock.
    Iptables,
    /// An `iptables` command could not take the xtables lock within its wait (`-w 5`).
    IptablesLock,
    /// Creating the local interface (or giving a new one its addresses) failed.
    InterfaceAdd,
    /// Looking up the local interface, or restoring an address on it, failed.
    InterfaceCheck,
    /// A kube-dns ConfigMap update was refused, or the Corefile could not be made or written
    /// from it.
    Configmap,
}

impl SetupErrorType {
    /// Every error type, in the order [`SetupErrors::snapshot`] reports them.
    pub const ALL: [SetupErrorType; 5] = [
        SetupErrorType::Iptables,
        SetupErrorType::IptablesLock,
        SetupErrorType::InterfaceAdd,
        SetupErrorType::InterfaceCheck,
        SetupErrorType::Configmap,
    ];

    /// The `errortype` label value, spelled as node-cache spells it.
    pub fn label(self) -> &'static str {
        match self {
            SetupErrorType::Iptables => "iptables",
            SetupErrorType::IptablesLock => "iptables_lock",
            SetupErrorType::InterfaceAdd => "interface_add",
            SetupErrorType::InterfaceCheck => "interface_check",
            SetupErrorType::Configmap => "configmap",
        }
    }

    fn slot(self) -> usize {
        match self {
            SetupErrorType::Iptables => 0,
            SetupErrorType::IptablesLock => 1,
            SetupErrorType::InterfaceAdd => 2,
            SetupErrorType::InterfaceCheck => 3,
            SetupErrorType::Configmap => 4,
        }
    }
}

impl fmt::Display for SetupErrorType {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.label())
    }
}

/// One counter per [`SetupErrorType`]. Shared (behind an `Arc`) between the thread that keeps
/// the node set up and the metrics thread; increments are rare (a failed command), so plain
/// relaxed atomics are enough.
#[derive(Debug, Default)]
pub struct SetupErrors {
    counts: [AtomicU64; 5],
}

impl SetupErrors {
    /// All counters at zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts one error of `error_type`.
    pub fn record(&self, error_type: SetupErrorType) {
        self.counts[error_type.slot()].fetch_add(1, Ordering::Relaxed);
    }

    /// The number of errors of `error_type` counted so far.
    pub fn count(&self, error_type: SetupErrorType) -> u64 {
        self.counts[error_type.slot()].load(Ordering::Relaxed)
    }

    /// Every counter with its type, in [`SetupErrorType::ALL`] order, for export.
    pub fn snapshot(&self) -> [(SetupErrorType, u64); 5] {
        SetupErrorType::ALL.map(|error_type| (error_type, self.count(error_type)))
    }

    /// The sum over every type.
    pub fn total(&self) -> u64 {
        SetupErrorType::ALL
            .iter()
            .map(|&error_type| self.count(error_type))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_node_caches() {
        let labels: Vec<&str> = SetupErrorType::ALL.iter().map(|t| t.label()).collect();
        assert_eq!(
            labels,
            [
                "iptables",
                "iptables_lock",
                "interface_add",
                "interface_check",
                "configmap"
            ]
        );
    }

    #[test]
    fn each_type_counts_on_its_own() {
        let errors = SetupErrors::new();
        errors.record(SetupErrorType::IptablesLock);
        errors.record(SetupErrorType::IptablesLock);
        errors.record(SetupErrorType::InterfaceCheck);
        assert_eq!(
            errors.snapshot(),
            [
                (SetupErrorType::Iptables, 0),
                (SetupErrorType::IptablesLock, 2),
                (SetupErrorType::InterfaceAdd, 0),
                (SetupErrorType::InterfaceCheck, 1),
                (SetupErrorType::Configmap, 0),
            ]
        );
        assert_eq!(errors.total(), 3);
    }
}
