#!/usr/bin/env bash
# Open-loop latency at a fraction of saturation (issue 3, target 3). For each server
# (shardns --io uring, shardns --io epoll, the reflector as the kernel floor), pinned to
# CPU 0 with the generator on CPU 1:
#   1. saturation: closed-loop `shardns-bench load` for 5 s -> QPS_sat;
#   2. open loop at FRACTION x QPS_sat (even spacing) for SECONDS -> p50/p99/p99.9/max, lost.
# The host's speed drifts, so saturation is re-measured right before each open-loop run.
#
# Usage: scripts/bench-latency.sh [SECONDS] [FRACTION] [REPEATS]   (defaults 30 0.5 1)
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_OPEN=${1:-30}
FRACTION=${2:-0.5}
REPEATS=${3:-1}
source scripts/bench-lib.sh
bench_init latency
scripts/bench-peers.sh
cargo build --release -p shardns -p shardns-bench >/dev/null
T=${CARGO_TARGET_DIR:-target}/release
UP=$(free_port)
{
  unbound_header "$UP"
  echo '  local-zone: "example.com." static'
  echo '  local-data: "www.example.com. 3600 IN A 192.0.2.1"'
} > "$WORK/unbound.conf"
echo "www.example.com A" > "$WORK/queries.txt"
taskset -c 1 unbound -d -c "$WORK/unbound.conf" >"$WORK/unbound.log" 2>&1 &
PIDS+=($!)
sleep 0.5

json() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))" "$@"; }

measure() { # label port
  local label=$1 port=$2
  taskset -c 1 "$T/shardns-bench" load -p "$port" -d "$WORK/queries.txt" -l 5 --json > "$WORK/sat.json" 2>/dev/null
  local sat rate
  sat=$(json "$WORK/sat.json" "int(d['qps'])")
  rate=$(python3 -c "print(int($sat * $FRACTION))")
  taskset -c 1 "$T/shardns-bench" load -p "$port" -d "$WORK/queries.txt" -l "$SECONDS_OPEN" --open -Q "$rate" --json > "$WORK/open.json" 2>/dev/null
  echo "| $label | $sat | $rate | $(json "$WORK/open.json" "d['answered']") | $(json "$WORK/open.json" "d['lost']") | $(json "$WORK/open.json" "'%.0f' % d['latency_us']['p50']") | $(json "$WORK/open.json" "'%.0f' % d['latency_us']['p99']") | $(json "$WORK/open.json" "'%.0f' % d['latency_us']['p999']") | $(json "$WORK/open.json" "'%.0f' % d['latency_us']['max']") |"
}

echo "| server (CPU 0) | saturation QPS (closed loop, 5 s) | offered QPS (open loop, ${SECONDS_OPEN} s) | answered | lost | p50 µs | p99 µs | p99.9 µs | max µs |"
echo "|---|---|---|---|---|---|---|---|---|"
for _ in $(seq 1 "$REPEATS"); do
  for io in uring epoll; do
    port=$(free_port)
    printf '.:%s {\n    bind 127.0.0.1\n    cache 3600\n    forward . 127.0.0.1:%s {\n        force_tcp\n    }\n}\n' "$port" "$UP" > "$WORK/Corefile"
    taskset -c 0 "$T/shardns" --conf "$WORK/Corefile" --shards 1 --io "$io" 2>"$WORK/shardns.log" &
    pid=$!
    for _ in $(seq 1 50); do dig @127.0.0.1 -p "$port" +short +time=1 +tries=1 www.example.com A 2>/dev/null | grep -q 192 && break; sleep 0.2; done
    measure "shardns --io $io" "$port"
    kill "$pid"; wait "$pid" 2>/dev/null || true
  done
  port=$(free_port)
  taskset -c 0 "$T/shardns-bench" reflect "127.0.0.1:$port" 2>"$WORK/reflect.log" &
  pid=$!
  sleep 0.5
  measure "reflector (kernel floor)" "$port"
  kill "$pid"; wait "$pid" 2>/dev/null || true
done
echo
echo "shardns-bench load, 1 name, even spacing; $(nproc) CPUs; kernel $(uname -r); $(date -u +%Y-%m-%d)"
