//! Watching node-cache's two config directories (the base Corefile's and the kube-dns
//! ConfigMap's):
//!
//! - [`source`]: reading directories and files, as node-cache reads them, behind a trait;
//! - [`poller`]: one directory polled every period, sans clock (`poll(now)`);

pub mod poller;
pub mod source;

pub use poller::{DirectoryPoller, POLL_PERIOD, PollOutcome};
pub use source::{DirectorySnapshot, FileSource, FileSystem, SourceError};
