//! Watching node-cache's two config directories (the base Corefile's and the kube-dns
//! ConfigMap's) and regenerating the Corefile when they change:
//!
//! - [`source`]: reading directories and files, as node-cache reads them, behind a trait;
//! - [`poller`]: one directory polled every period, sans clock (`poll(now)`);
//! - [`sync`]: both directories and the Corefile regenerated from them, sans clock;
//! - [`driver`]: the thread that runs the sync over the real filesystem and writes `-conf`.

pub mod driver;
pub mod poller;
pub mod source;
pub mod sync;

pub use driver::{WatchEvent, spawn_watch};
pub use poller::{DirectoryPoller, POLL_PERIOD, PollOutcome};
pub use source::{DirectorySnapshot, FileSource, FileSystem, SourceError};
pub use sync::{CorefileSync, StartError, Startup, SyncError, SyncOutcome};
