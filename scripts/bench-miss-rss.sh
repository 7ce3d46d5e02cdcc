#!/usr/bin/env bash
# Memory of the miss path under a steady flood of answered misses, for one or more shardns
# binaries in turn: each runs alone (`--shards 1 --io epoll`, no cache, `forward . UP
# { force_tcp }`, pinned to CPU 0) against `shardns-bench upstream` (pipelined TCP, CPU 1),
# and `shardns-bench load --unique` (every name new, so every query is a miss that is answered)
# keeps 1024 queries in flight for SECONDS. The peak RSS (VmHWM) and the RSS at the end (VmRSS)
# are read, with the queries answered. This is where per-query bookkeeping that outlives its
# query (timers of answered attempts) shows: it grows with the rate times the deadlines.
#
# Usage: scripts/bench-miss-rss.sh [SECONDS] [ROUNDS] BINARY...
#   (defaults 10 s, 2 rounds; BINARY defaults to target/release/shardns)
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_RUN=${1:-10}
ROUNDS=${2:-2}
shift $(( $# < 2 ? $# : 2 ))
T=${CARGO_TARGET_DIR:-target}/release
BINARIES=("$@")
[ "${#BINARIES[@]}" -gt 0 ] || BINARIES=("$T/shardns")
source scripts/bench-lib.sh
bench_init miss-rss
cargo build --release -p shardns-bench >/dev/null
source scripts/bench-miss-lib.sh

start_bench_upstream fast
measure() { # binary
  local port; port=$(free_port)
  cat > "$WORK/Corefile" <<CF
.:$port {
    bind 127.0.0.1
    forward . 127.0.0.1:$UP_PORT {
        force_tcp
    }
}
CF
  taskset -c 0 "$1" --conf "$WORK/Corefile" --shards 1 --io epoll 2>"$WORK/shardns.log" &
  local pid=$!
  PIDS+=("$pid")
  ready "$port"
  taskset -c 1 "$T/shardns-bench" load -p "$port" --unique -l "$SECONDS_PER_RUN" --json \
    > "$WORK/load.json"
  local peak end answered
  peak=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
  end=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
  answered=$(json "$WORK/load.json" "d['answered']")
  kill -TERM "$pid"
  wait "$pid" 2>/dev/null || true
  echo "$answered $peak $end"
}

echo "| binary | round | misses answered | per second | peak RSS (VmHWM) | RSS at the end |"
echo "|---|---|---|---|---|---|"
for round in $(seq 1 "$ROUNDS"); do
  for binary in "${BINARIES[@]}"; do
    read -r answered peak end < <(measure "$binary")
    rate=$(awk -v n="$answered" -v s="$SECONDS_PER_RUN" 'BEGIN {printf "%.0f", n / s}')
    echo "| $binary | $round | $answered | $rate | $(awk -v k="$peak" 'BEGIN {printf "%.1f MiB", k/1024}') | $(awk -v k="$end" 'BEGIN {printf "%.1f MiB", k/1024}') |"
  done
done
echo
echo "$SECONDS_PER_RUN s per run, closed loop (1024 in flight), $ROUNDS rounds; $(nproc) CPUs; kernel $(uname -r); $(date -u +%Y-%m-%d)"
