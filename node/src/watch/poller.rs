//! A directory polled for changes as node-cache polls its two config directories, without a
//! clock of its own: the caller passes `now`.
//!
//! node-cache (kubernetes/dns `pkg/dns/config/sync_dir.go`, `Periodic` and `load`;
//! `sync.go`, `processUpdate`) reads the whole directory every period (10 s:
//! `DefaultConfigSyncPeriod` for the base Corefile's directory in `cmd/node-cache/app/
//! configmap.go`, and kube-dns's `ConfigPeriod` default in `cmd/kube-dns/app/options`), hashes
//! every file's name and contents (SHA-256 over `name NUL contents NUL`), and reports a change
//! when that version differs from the last one it saw. A directory that cannot be read is
//! logged and changes nothing (the last version stays). The snapshot itself is kept here in
//! place of its hash: the same files and contents compare equal exactly when the hashes do.
//!
//! The first successful read is always a change (node-cache's `Once` at start-up). Unlike
//! node-cache, which never watches a directory whose first read failed, a poller keeps trying.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::source::{DirectorySnapshot, FileSource, SourceError};

/// How often node-cache reads its config directories.
pub const POLL_PERIOD: Duration = Duration::from_secs(10);

/// A directory read every period, reporting when its files change.
#[derive(Debug)]
pub struct DirectoryPoller {
    directory: PathBuf,
    period: Duration,
    next_poll: Instant,
    last: Option<DirectorySnapshot>,
}

/// What one [`DirectoryPoller::poll`] found.
#[derive(Debug)]
pub enum PollOutcome {
    /// Not time to read yet.
    NotDue,
    /// Read, and the same as last time.
    Unchanged,
    /// Read, and different from last time (or read for the first time).
    Changed(DirectorySnapshot),
    /// Could not be read; what was last read stays the reference.
    Failed(SourceError),
}

impl DirectoryPoller {
    /// A poller of `directory` every `period`, its first read due at `now`.
    pub fn new(directory: impl Into<PathBuf>, period: Duration, now: Instant) -> Self {
        DirectoryPoller {
            directory: directory.into(),
            period,
            next_poll: now,
            last: None,
        }
    }

    /// The directory polled.
    pub fn directory(&self) -> &Path {
        &self.directory
    }

    /// When the next read is due.
    pub fn next_poll(&self) -> Instant {
        self.next_poll
    }

    /// What was last read, if anything was.
    pub fn last_snapshot(&self) -> Option<&DirectorySnapshot> {
        self.last.as_ref()
    }

    /// Reads the directory through `source` if a read is due at `now`. The next read is one
    /// period after this one was due; reads missed while the caller was late are skipped, as
    /// Go's ticker drops ticks.
    pub fn poll(&mut self, now: Instant, source: &(impl FileSource + ?Sized)) -> PollOutcome {
        if now < self.next_poll {
            return PollOutcome::NotDue;
        }
        self.next_poll += self.period;
        if self.next_poll <= now {
            self.next_poll = now + self.period;
        }
        match source.directory(&self.directory) {
            Err(error) => PollOutcome::Failed(error),
            Ok(snapshot) if self.last.as_ref() == Some(&snapshot) => PollOutcome::Unchanged,
            Ok(snapshot) => {
                self.last = Some(snapshot.clone());
                PollOutcome::Changed(snapshot)
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::cell::{Cell, RefCell};
    use std::collections::{BTreeMap, HashMap};
    use std::io;

    use super::*;

    /// Directories and files in memory; a directory or file not set reads as not found.
    #[derive(Debug, Default)]
    pub(crate) struct MemorySource {
        directories: RefCell<HashMap<PathBuf, BTreeMap<String, String>>>,
        reads: Cell<usize>,
    }

    impl MemorySource {
        /// Sets `directory`'s file `name` to `text`, creating the directory.
        pub(crate) fn write(&self, directory: &str, name: &str, text: &str) {
            let mut directories = self.directories.borrow_mut();
            let files = directories.entry(PathBuf::from(directory)).or_default();
            files.insert(name.to_owned(), text.to_owned());
        }

        /// Removes `directory`'s file `name`.
        pub(crate) fn remove(&self, directory: &str, name: &str) {
            if let Some(files) = self.directories.borrow_mut().get_mut(Path::new(directory)) {
                files.remove(name);
            }
        }

        /// Makes `directory` exist, empty if it did not.
        pub(crate) fn create_directory(&self, directory: &str) {
            self.directories
                .borrow_mut()
                .entry(PathBuf::from(directory))
                .or_default();
        }

        /// Removes `directory` and its files.
        pub(crate) fn remove_directory(&self, directory: &str) {
            self.directories.borrow_mut().remove(Path::new(directory));
        }

        /// How many directory reads there were.
        pub(crate) fn reads(&self) -> usize {
            self.reads.get()
        }
    }

    impl FileSource for MemorySource {
        fn directory(&self, directory: &Path) -> Result<DirectorySnapshot, SourceError> {
            self.reads.set(self.reads.get() + 1);
            match self.directories.borrow().get(directory) {
                Some(files) => Ok(DirectorySnapshot::new(directory, files.clone())),
                None => Err(SourceError::io(directory, io::ErrorKind::NotFound.into())),
            }
        }

        fn file(&self, path: &Path) -> Result<String, SourceError> {
            let not_found = || SourceError::io(path, io::ErrorKind::NotFound.into());
            let (directory, name) = (path.parent().ok_or_else(not_found)?, path.file_name());
            let name = name.ok_or_else(not_found)?.to_string_lossy();
            let directories = self.directories.borrow();
            let files = directories.get(directory).ok_or_else(not_found)?;
            files.get(name.as_ref()).cloned().ok_or_else(not_found)
        }
    }

    const DIRECTORY: &str = "/etc/kube-dns";

    fn changed_files(outcome: PollOutcome) -> BTreeMap<String, String> {
        match outcome {
            PollOutcome::Changed(snapshot) => snapshot.files().clone(),
            other => panic!("expected a change, got {other:?}"),
        }
    }

    #[test]
    fn change_and_no_change() {
        let source = MemorySource::default();
        source.write(DIRECTORY, "stubDomains", "{}");
        let start = Instant::now();
        let mut poller = DirectoryPoller::new(DIRECTORY, POLL_PERIOD, start);
        assert_eq!(poller.next_poll(), start);

        let files = changed_files(poller.poll(start, &source));
        assert_eq!(files["stubDomains"], "{}", "the first read is a change");
        assert_eq!(poller.next_poll(), start + POLL_PERIOD);

        source.write(DIRECTORY, "stubDomains", "{\"a\": [\"1.2.3.4\"]}");
        let early = start + POLL_PERIOD - Duration::from_millis(1);
        assert!(matches!(poller.poll(early, &source), PollOutcome::NotDue));
        assert_eq!(source.reads(), 1, "not read before it is due");

        let files = changed_files(poller.poll(start + POLL_PERIOD, &source));
        assert_eq!(files["stubDomains"], "{\"a\": [\"1.2.3.4\"]}");
        let later = start + 2 * POLL_PERIOD;
        assert!(matches!(
            poller.poll(later, &source),
            PollOutcome::Unchanged
        ));
        assert_eq!(
            poller.last_snapshot().unwrap().files()["stubDomains"],
            "{\"a\": [\"1.2.3.4\"]}"
        );
    }

    #[test]
    fn files_appearing_and_disappearing() {
        let source = MemorySource::default();
        source.create_directory(DIRECTORY);
        let start = Instant::now();
        let mut poller = DirectoryPoller::new(DIRECTORY, POLL_PERIOD, start);
        assert!(changed_files(poller.poll(start, &source)).is_empty());

        source.write(DIRECTORY, "upstreamNameservers", "[\"8.8.8.8\"]");
        let files = changed_files(poller.poll(start + POLL_PERIOD, &source));
        assert_eq!(files.len(), 1);

        source.remove(DIRECTORY, "upstreamNameservers");
        assert!(changed_files(poller.poll(start + 2 * POLL_PERIOD, &source)).is_empty());

        // A file renamed, same contents: a change, as the name is part of the version.
        source.write(DIRECTORY, "a", "x");
        changed_files(poller.poll(start + 3 * POLL_PERIOD, &source));
        source.remove(DIRECTORY, "a");
        source.write(DIRECTORY, "b", "x");
        changed_files(poller.poll(start + 4 * POLL_PERIOD, &source));
    }

    #[test]
    fn a_directory_disappearing_changes_nothing_until_it_differs() {
        let source = MemorySource::default();
        source.write(DIRECTORY, "stubDomains", "{}");
        let start = Instant::now();
        let mut poller = DirectoryPoller::new(DIRECTORY, POLL_PERIOD, start);
        changed_files(poller.poll(start, &source));

        source.remove_directory(DIRECTORY);
        let outcome = poller.poll(start + POLL_PERIOD, &source);
        assert!(
            matches!(outcome, PollOutcome::Failed(SourceError::Io { .. })),
            "{outcome:?}"
        );

        // Back with the same files: no change; with others: a change.
        source.write(DIRECTORY, "stubDomains", "{}");
        assert!(matches!(
            poller.poll(start + 2 * POLL_PERIOD, &source),
            PollOutcome::Unchanged
        ));
        source.remove_directory(DIRECTORY);
        source.create_directory(DIRECTORY);
        assert!(changed_files(poller.poll(start + 3 * POLL_PERIOD, &source)).is_empty());
    }

    #[test]
    fn a_first_read_that_fails_is_retried() {
        let source = MemorySource::default();
        let start = Instant::now();
        let mut poller = DirectoryPoller::new(DIRECTORY, POLL_PERIOD, start);
        assert!(matches!(
            poller.poll(start, &source),
            PollOutcome::Failed(_)
        ));
        source.create_directory(DIRECTORY);
        assert!(changed_files(poller.poll(start + POLL_PERIOD, &source)).is_empty());
    }

    #[test]
    fn late_polls_skip_missed_periods() {
        let source = MemorySource::default();
        source.create_directory(DIRECTORY);
        let start = Instant::now();
        let mut poller = DirectoryPoller::new(DIRECTORY, POLL_PERIOD, start);
        poller.poll(start, &source);
        // On time, a little late: the next one stays on the grid.
        poller.poll(start + POLL_PERIOD + Duration::from_secs(3), &source);
        assert_eq!(poller.next_poll(), start + 2 * POLL_PERIOD);
        // Late by more than a period: one period from now.
        let late = start + 5 * POLL_PERIOD + Duration::from_secs(1);
        poller.poll(late, &source);
        assert_eq!(poller.next_poll(), late + POLL_PERIOD);
        assert_eq!(source.reads(), 3);
    }
}
