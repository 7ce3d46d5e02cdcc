//! Node setup for shardns as a drop-in for NodeLocal DNSCache (`k8s-dns-node-cache`).
//!
//! Everything node-cache does to a node beside serving DNS lives here, behind a narrow
//! interface, so that the proxy's lifecycle (its node-setup and teardown phases) and, later, a
//! supervisor that keeps the rules in place across a worker restart drive the same code. Its
//! only outputs are:
//!
//! - **Corefile text**: node-cache's template (`-basecorefile`) with its `__PILLAR__`
//!   placeholders filled, plus the kube-dns ConfigMap's stub domains;
//! - **rule operations**: the desired NOTRACK/ACCEPT rules for the local IPs, checked and
//!   inserted, re-checked, and removed at teardown; the local interface holding the IPs;
//! - **a reload trigger**: a change of the watched template or ConfigMap directory.
//!
//! Modules:
//!
//! - [`template`]: the base Corefile's placeholders filled as node-cache fills them;
//! - [`kubedns`]: the kube-dns ConfigMap directory, its checks and its stub-domain blocks;
//! - [`corefile`]: the Corefile from node-cache's inputs, and writing it atomically;
//! - [`watch`]: the two directories polled and the Corefile regenerated when they change;
//! - `setup` ([`NodeSetup`]): the interface and the rules as one value, driven by the
//!   proxy's lifecycle: prepare, install, check, withdraw, remove the interface.
#![forbid(unsafe_code)]

pub mod corefile;
mod interface;
pub mod kubedns;
mod rules;
mod setup;
mod setup_errors;
pub mod template;
pub mod watch;

pub use corefile::{
    CorefileError, CorefileGenerator, CorefileSettings, WriteError, replace_file, write_atomically,
};
pub use interface::{DEFAULT_INTERFACE_NAME, InterfaceError, InterfaceState, LocalInterface};
pub use kubedns::{ConfigMapCheck, ConfigMapError, ConfigMapProblem, KubeDnsConfig};
pub use rules::detect::{DetectedBackend, Detection};
pub use rules::{
    Backend, COMMENT_ALLOW_TRAFFIC, COMMENT_SKIP_CONNTRACK, Chain, IpFamily, IptablesCommand,
    IptablesError, IptablesMode, IptablesVariant, Protocol, Rule, RuleDesign, RuleOperation, Rules,
    Side, SyncReport, Table, Target, TeardownReport, UnknownIptablesMode, UnknownIptablesVariant,
    desired_rules,
};
pub use setup::{NodePlan, NodeSetup};
pub use setup_errors::{SETUP_ERRORS_METRIC, SetupErrorType, SetupErrors};
pub use template::{TemplateError, TemplateValues, fill_template};
pub use watch::{
    CorefileSync, StartError, Startup, SyncError, SyncOutcome, WatchEvent, spawn_watch,
};
