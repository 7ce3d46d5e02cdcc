//! The hand-off's messages (JSON in their frames) and its versions.
//!
//! Version 1: sockets and cache. A later version adds what it needs; the old process picks
//! the highest version both speak, so a newer process can still take the sockets of an older
//! one, and two that share no version refuse cleanly.

use serde::{Deserialize, Serialize};

use super::SocketInfo;

/// The versions this build speaks, oldest first.
pub(crate) const VERSIONS: &[u32] = &[1];

/// New → old.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Hello {
    pub versions: Vec<u32>,
    pub pid: u32,
}

/// Old → new: the hand-off goes ahead.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Welcome {
    pub version: u32,
    pub pid: u32,
    /// The old process's shard count.
    pub shards: usize,
    /// The sockets, in the order of the descriptors that follow.
    pub sockets: Vec<SocketInfo>,
}

/// Old → new: no hand-off.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Refuse {
    pub reason: String,
    pub pid: u32,
}

/// The version to speak with a process that speaks `theirs`: the highest both speak.
pub(crate) fn choose(theirs: &[u32]) -> Option<u32> {
    VERSIONS
        .iter()
        .rev()
        .copied()
        .find(|version| theirs.contains(version))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_highest_common_version_or_none() {
        assert_eq!(choose(&[1]), Some(1));
        assert_eq!(choose(&[1, 2, 3]), Some(1), "a newer peer speaking 1 too");
        assert_eq!(choose(&[2]), None, "nothing in common: refused");
        assert_eq!(choose(&[]), None);
    }
}
