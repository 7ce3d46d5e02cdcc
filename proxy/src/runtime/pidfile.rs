//! The pidfile (`-pidfile`): this process's ID and a newline, written once serving and
//! removed at the end, as CoreDNS does. It is written so that a reader sees a whole file or
//! none (a temporary file beside it, renamed over it): a full disk leaves no empty pidfile
//! behind. A pidfile that cannot be written is logged and the process serves without it.

use std::io;
use std::path::Path;

/// Writes this process's ID to `path` (a temporary file renamed over it, removed on failure:
/// [`shardns_node::replace_file`]).
pub(crate) fn write(path: &Path) -> io::Result<()> {
    shardns_node::replace_file(path, format!("{}\n", std::process::id()).as_bytes())
}

/// Writes the pidfile at `path`; `true` if written. A failure is logged: the process serves
/// without it.
pub(crate) fn write_or_log(path: &Path) -> bool {
    match write(path) {
        Ok(()) => true,
        Err(error) => {
            tracing::error!(
                "cannot write the pidfile {}: {error}; serving without it",
                path.display()
            );
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    #[test]
    fn writes_the_pid_and_leaves_no_temporary_file() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("node-cache.pid");
        fs::write(&path, "stale").unwrap();
        write(&path).unwrap();
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            format!("{}\n", std::process::id())
        );
        let names: Vec<_> = fs::read_dir(directory.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "{names:?}");
        // A directory in the way: an error, and nothing left beside it.
        let blocked = directory.path().join("blocked");
        fs::create_dir(&blocked).unwrap();
        fs::write(blocked.join("x"), "").unwrap();
        assert!(!write_or_log(&blocked));
        assert_eq!(fs::read_dir(directory.path()).unwrap().count(), 2);
    }
}
