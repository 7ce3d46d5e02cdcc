#!/usr/bin/env bash
# The chaos soak for SECS seconds (default 600): a supervised shardns under a mixed load
# while random faults follow one another every few seconds (worker SIGKILLs, upgrades by a
# new supervisor, the upstream Unbound frozen or killed and restarted, a broken Corefile
# reloaded). Prints one line of figures; fails if a query was lost or answered wrong
# without a fault to account for it. See tests/tests/chaos.rs.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
secs="${1:-600}"
cargo build -q -p shardns
SHARDNS_CHAOS_SECS="$secs" cargo test -q -p shardns-e2e --test chaos -- --nocapture 2>&1 |
    grep -E '^chaos:|test result|panicked|unexplained'
