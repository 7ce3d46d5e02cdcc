//! Reading the watched directories and the base Corefile, behind a small trait
//! ([`FileSource`]) so that the poller and the sync are tested over contents in memory, and
//! [`FileSystem`], which reads them as node-cache does (kubernetes/dns
//! `pkg/dns/config/sync_dir.go`, `kubeFileSyncSource.load`):
//!
//! - the path itself must be a directory, not a symbolic link to one (`filepath.Walk` looks
//!   at it with `lstat`);
//! - entries are taken in name order; directories are skipped (not descended into), and so
//!   are names starting with `.` (a mounted ConfigMap's `..data` and `..2024_...` entries);
//! - every other entry is read, following symbolic links (a mounted ConfigMap's
//!   `stubDomains -> ..data/stubDomains`); one that cannot be read, or that is not UTF-8,
//!   fails the whole directory.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use thiserror::Error;

/// A directory's files as node-cache reads them: name → contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectorySnapshot {
    directory: PathBuf,
    files: BTreeMap<String, String>,
}

impl DirectorySnapshot {
    /// The snapshot of `directory` holding `files` (name → contents).
    pub fn new(directory: impl Into<PathBuf>, files: BTreeMap<String, String>) -> Self {
        DirectorySnapshot {
            directory: directory.into(),
            files,
        }
    }

    /// The directory read.
    pub fn directory(&self) -> &Path {
        &self.directory
    }

    /// Its files, name → contents, in name order.
    pub fn files(&self) -> &BTreeMap<String, String> {
        &self.files
    }
}

/// A watched directory or file that cannot be read.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum SourceError {
    /// The operating system refused.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// What was being read.
        path: PathBuf,
        /// Why it could not be.
        #[source]
        source: io::Error,
    },
    /// A watched path that is not a directory.
    #[error("{} is not a directory (expected the directory to watch)", path.display())]
    NotADirectory {
        /// The path.
        path: PathBuf,
    },
    /// A file that is not UTF-8 text.
    #[error("{} is not UTF-8 text", path.display())]
    NotUtf8 {
        /// The file.
        path: PathBuf,
    },
}

impl SourceError {
    /// An I/O error reading `path`.
    pub fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        SourceError::Io {
            path: path.into(),
            source,
        }
    }
}

/// Where the watched directories and the base Corefile are read from.
pub trait FileSource {
    /// The files of `directory`, as node-cache reads them (see the module).
    fn directory(&self, directory: &Path) -> Result<DirectorySnapshot, SourceError>;

    /// The text of the file at `path`.
    fn file(&self, path: &Path) -> Result<String, SourceError>;
}

/// The real filesystem.
#[derive(Debug, Clone, Copy, Default)]
pub struct FileSystem;

impl FileSource for FileSystem {
    fn directory(&self, directory: &Path) -> Result<DirectorySnapshot, SourceError> {
        let metadata =
            fs::symlink_metadata(directory).map_err(|error| SourceError::io(directory, error))?;
        if !metadata.is_dir() {
            return Err(SourceError::NotADirectory {
                path: directory.to_path_buf(),
            });
        }
        let mut names = Vec::new();
        for entry in fs::read_dir(directory).map_err(|error| SourceError::io(directory, error))? {
            names.push(
                entry
                    .map_err(|error| SourceError::io(directory, error))?
                    .file_name(),
            );
        }
        names.sort();
        let mut files = BTreeMap::new();
        for name in names {
            let path = directory.join(&name);
            let metadata =
                fs::symlink_metadata(&path).map_err(|error| SourceError::io(&path, error))?;
            let name = name.to_string_lossy();
            if metadata.is_dir() || name.starts_with('.') {
                continue;
            }
            let text = self.file(&path)?;
            files.insert(name.into_owned(), text);
        }
        Ok(DirectorySnapshot::new(directory, files))
    }

    fn file(&self, path: &Path) -> Result<String, SourceError> {
        let bytes = fs::read(path).map_err(|error| SourceError::io(path, error))?;
        String::from_utf8(bytes).map_err(|_| SourceError::NotUtf8 {
            path: path.to_path_buf(),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    #[test]
    fn reads_a_mounted_configmap_as_node_cache() {
        let root = tempfile::tempdir().unwrap();
        let directory = root.path().join("kube-dns");
        // The layout kubelet gives a ConfigMap volume.
        let data = directory.join("..2026_01_01_00_00_00.000000001");
        fs::create_dir_all(&data).unwrap();
        fs::write(data.join("stubDomains"), "{}").unwrap();
        symlink("..2026_01_01_00_00_00.000000001", directory.join("..data")).unwrap();
        symlink("..data/stubDomains", directory.join("stubDomains")).unwrap();
        fs::write(directory.join(".hidden"), "ignored").unwrap();
        fs::create_dir(directory.join("subdirectory")).unwrap();
        fs::write(
            directory.join("subdirectory/upstreamNameservers"),
            "ignored",
        )
        .unwrap();
        fs::write(directory.join("upstreamNameservers"), "[\"8.8.8.8\"]").unwrap();

        let snapshot = FileSystem.directory(&directory).unwrap();
        assert_eq!(snapshot.directory(), directory);
        let files: Vec<_> = snapshot
            .files()
            .iter()
            .map(|(n, t)| (n.as_str(), t.as_str()))
            .collect();
        assert_eq!(
            files,
            [
                ("stubDomains", "{}"),
                ("upstreamNameservers", "[\"8.8.8.8\"]")
            ]
        );
    }

    #[test]
    fn what_fails_a_directory() {
        let root = tempfile::tempdir().unwrap();
        let missing = root.path().join("missing");
        let error = FileSystem.directory(&missing).unwrap_err();
        assert!(
            matches!(&error, SourceError::Io { path, .. } if *path == missing),
            "{error}"
        );

        let file = root.path().join("file");
        fs::write(&file, "").unwrap();
        let error = FileSystem.directory(&file).unwrap_err();
        assert!(
            matches!(error, SourceError::NotADirectory { .. }),
            "{error}"
        );

        let link = root.path().join("link");
        symlink(root.path(), &link).unwrap();
        assert!(matches!(
            FileSystem.directory(&link),
            Err(SourceError::NotADirectory { .. })
        ));

        let binary = root.path().join("binary");
        fs::create_dir(&binary).unwrap();
        fs::write(binary.join("stubDomains"), [0xff, 0xfe]).unwrap();
        let error = FileSystem.directory(&binary).unwrap_err();
        assert_eq!(
            error.to_string(),
            format!("{}/stubDomains is not UTF-8 text", binary.display())
        );

        let dangling = root.path().join("dangling");
        fs::create_dir(&dangling).unwrap();
        symlink("nowhere", dangling.join("stubDomains")).unwrap();
        assert!(matches!(
            FileSystem.directory(&dangling),
            Err(SourceError::Io { .. })
        ));
    }

    #[test]
    fn an_empty_directory_has_no_files() {
        let root = tempfile::tempdir().unwrap();
        assert!(
            FileSystem
                .directory(root.path())
                .unwrap()
                .files()
                .is_empty()
        );
    }
}
