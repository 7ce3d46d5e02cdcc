//! The thread that drives a [`CorefileSync`] over the real filesystem: it polls when a poll is
//! due, writes each new Corefile to `-conf` ([`write_atomically`]) and tells the caller what
//! happened ([`WatchEvent`]): a Corefile written is the caller's reload trigger (the same path
//! as SIGUSR1), a failure is to be counted under its
//! [`setup_error_type`](WatchEvent::setup_error_type). A Corefile that could not be written
//! (a full disk, say) is written again at every poll until it is, or until a newer one takes
//! its place; meanwhile the caller may serve it from memory ([`WatchEvent::WriteFailed`]
//! carries it). It checks its stop flag at least every [`STOP_CHECK_INTERVAL`].

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::source::{FileSource, FileSystem};
use super::sync::{CorefileSync, SyncError};
use crate::corefile::{WriteError, write_atomically};
use crate::setup_errors::SetupErrorType;

/// Longest the thread sleeps before looking at its stop flag.
pub const STOP_CHECK_INTERVAL: Duration = Duration::from_millis(100);

/// What the watch thread did.
#[derive(Debug)]
#[non_exhaustive]
pub enum WatchEvent {
    /// A new Corefile was written: reload it.
    Written {
        /// Where (`-conf`).
        path: PathBuf,
    },
    /// A poll went wrong (the Corefile, if any, is unchanged).
    Failed(SyncError),
    /// A new Corefile could not be written; it is tried again at the next poll.
    WriteFailed {
        /// Why.
        error: WriteError,
        /// The Corefile that `-conf` does not hold.
        corefile: String,
    },
}

impl WatchEvent {
    /// The `errortype` label node-cache counts this under in
    /// `coredns_nodecache_setup_errors_total`, or `None`.
    pub fn setup_error_type(&self) -> Option<SetupErrorType> {
        match self {
            WatchEvent::Written { .. } => None,
            WatchEvent::Failed(error) => error.setup_error_type(),
            WatchEvent::WriteFailed { error, .. } => Some(error.setup_error_type()),
        }
    }
}

/// Starts the thread `corefile-watch`, which polls `sync` and writes new Corefiles to `conf`
/// until `stop` is set, calling `on_event` with what it did. `unwritten` is a Corefile that
/// `conf` should hold and does not (the start-up one could not be written): written at the
/// first poll.
pub fn spawn_watch(
    sync: CorefileSync,
    conf: PathBuf,
    unwritten: Option<String>,
    stop: Arc<AtomicBool>,
    on_event: impl FnMut(WatchEvent) + Send + 'static,
) -> io::Result<JoinHandle<()>> {
    thread::Builder::new()
        .name("corefile-watch".to_owned())
        .spawn(move || run(sync, &conf, unwritten, &stop, &FileSystem, on_event))
}

/// The thread's loop over `source`.
fn run(
    mut sync: CorefileSync,
    conf: &Path,
    mut unwritten: Option<String>,
    stop: &AtomicBool,
    source: &impl FileSource,
    mut on_event: impl FnMut(WatchEvent),
) {
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now >= sync.next_poll() {
            let outcome = sync.poll(now, source);
            for error in outcome.errors {
                tracing::warn!(%error, "Corefile sync");
                on_event(WatchEvent::Failed(error));
            }
            if let Some(corefile) = outcome.corefile {
                unwritten = Some(corefile);
            }
            if let Some(corefile) = unwritten.take() {
                let event = write(&sync, conf, corefile);
                if let WatchEvent::WriteFailed { corefile, .. } = &event {
                    unwritten = Some(corefile.clone());
                }
                on_event(event);
            }
        }
        let until_due = sync.next_poll().saturating_duration_since(Instant::now());
        thread::sleep(until_due.min(STOP_CHECK_INTERVAL));
    }
}

/// Writes `corefile` to `conf`, logging it as node-cache does.
fn write(sync: &CorefileSync, conf: &Path, corefile: String) -> WatchEvent {
    match write_atomically(conf, &corefile) {
        Ok(()) => {
            let kube_dns = sync.generator().kube_dns();
            tracing::info!(
                path = %conf.display(),
                stub_domains = kube_dns.stub_domains().len(),
                upstream_servers = %kube_dns.upstream_nameservers().join(" "),
                "Corefile updated"
            );
            tracing::debug!("Corefile:\n{corefile}");
            WatchEvent::Written {
                path: conf.to_path_buf(),
            }
        }
        Err(error) => {
            tracing::warn!(%error, "Corefile not updated; trying again at the next poll");
            WatchEvent::WriteFailed { error, corefile }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::net::{IpAddr, Ipv4Addr};
    use std::sync::mpsc;

    use super::*;
    use crate::corefile::CorefileSettings;
    use crate::watch::sync::Startup;

    const WAIT: Duration = Duration::from_secs(10);

    /// Replaces `path`'s contents at once, as kubelet updates a mounted ConfigMap (the
    /// watcher must never see a half-written file).
    fn replace(path: &Path, text: &str) -> io::Result<()> {
        let temporary = path.with_extension("tmp-write");
        fs::write(&temporary, text)?;
        fs::rename(&temporary, path)
    }

    #[test]
    fn the_thread_writes_changes_and_reports_failures() {
        let root = tempfile::tempdir().unwrap();
        let base_directory = root.path().join("coredns");
        let kube_dns = root.path().join("kube-dns");
        fs::create_dir_all(&base_directory).unwrap();
        fs::create_dir_all(&kube_dns).unwrap();
        let base = "__PILLAR__DNS__DOMAIN__:53 {\n    forward . __PILLAR__CLUSTER__DNS__\n}\n";
        fs::write(base_directory.join("Corefile.base"), base).unwrap();
        let settings = CorefileSettings {
            base_corefile: base_directory.join("Corefile.base"),
            kube_dns_directory: Some(kube_dns.clone()),
            ..CorefileSettings::new(vec![IpAddr::V4(Ipv4Addr::new(169, 254, 20, 10))])
        };
        let environment = |_: &str| Some("10.96.0.10".to_owned());
        let period = Duration::from_millis(20);
        let Startup { sync, corefile, .. } =
            CorefileSync::start(settings, environment, period, Instant::now(), &FileSystem)
                .unwrap();
        let conf = root.path().join("Corefile");
        write_atomically(&conf, &corefile).unwrap();

        let stop = Arc::new(AtomicBool::new(false));
        let (events, received) = mpsc::channel();
        let handle = spawn_watch(sync, conf.clone(), None, Arc::clone(&stop), move |event| {
            let _ = events.send(event);
        })
        .unwrap();

        replace(
            &kube_dns.join("stubDomains"),
            "{\"acme.local\": [\"1.2.3.4\"]}",
        )
        .unwrap();
        let event = received.recv_timeout(WAIT).unwrap();
        assert!(
            matches!(&event, WatchEvent::Written { path } if *path == conf),
            "{event:?}"
        );
        let written = fs::read_to_string(&conf).unwrap();
        assert!(written.starts_with("__PILLAR__DNS__DOMAIN__:53 {\n    forward . 10.96.0.10\n}\n"));
        assert!(written.contains("\nacme.local:53 {\n"), "{written}");

        replace(&kube_dns.join("stubDomains"), "{").unwrap();
        let event = received.recv_timeout(WAIT).unwrap();
        assert!(
            matches!(event, WatchEvent::Failed(SyncError::ConfigMap(_))),
            "{event:?}"
        );
        assert_eq!(event.setup_error_type(), Some(SetupErrorType::Configmap));
        assert_eq!(
            fs::read_to_string(&conf).unwrap(),
            written,
            "the Corefile is kept"
        );

        // -conf cannot be written: counted as a configmap setup error.
        fs::remove_file(&conf).unwrap();
        fs::create_dir(&conf).unwrap();
        fs::write(conf.join("occupied"), "").unwrap();
        replace(&kube_dns.join("stubDomains"), "{}").unwrap();
        let event = received.recv_timeout(WAIT).unwrap();
        assert_eq!(event.setup_error_type(), Some(SetupErrorType::Configmap));
        let WatchEvent::WriteFailed { corefile, .. } = event else {
            panic!("{event:?}");
        };
        assert!(!corefile.contains("acme.local"), "{corefile}");
        // Tried again at the next poll, and once it can be written, written.
        let event = received.recv_timeout(WAIT).unwrap();
        assert!(
            matches!(&event, WatchEvent::WriteFailed { corefile: again, .. } if *again == corefile),
            "{event:?}"
        );
        fs::remove_dir_all(&conf).unwrap();
        let event = loop {
            let event = received.recv_timeout(WAIT).unwrap();
            if !matches!(event, WatchEvent::WriteFailed { .. }) {
                break event;
            }
        };
        assert!(matches!(&event, WatchEvent::Written { .. }), "{event:?}");
        assert_eq!(fs::read_to_string(&conf).unwrap(), corefile);
        thread::sleep(Duration::from_millis(100));

        stop.store(true, Ordering::Relaxed);
        handle.join().unwrap();
        assert!(received.try_recv().is_err(), "nothing more changed");
    }
}
