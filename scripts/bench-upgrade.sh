#!/usr/bin/env bash
# Upgrades under load (issue 12, "Measure"): shardns is replaced UPGRADES times by a new
# process started with the same --handoff-socket while a Zipf load runs at about 30 % of
# saturation. Reports every query answered or lost, the latency percentiles of the run with
# upgrades beside the same run without, and the upstream queries in the 10 s after each
# upgrade beside those of a cold start's first 10 s under the same load.
#
# The upstream is an Unbound on loopback answering every name under zipf.test. from local
# data (TTL 300) and refusing the rest; its `total.num.queries` is read every second, so
# upstream queries can be counted over any window. shardns (2 shards) is pinned to CPU 0, the
# generator and Unbound to CPU 1. Saturation is measured first (closed loop, 1024 in flight,
# every name cached), and the load offers 30 % of it.
#
# Usage: scripts/bench-upgrade.sh [UPGRADES] [NAMES] [S]   (defaults 5 10000 1.0)
# Environment: UPGRADE_EVERY (default 10) seconds between upgrades; UPGRADE_QPS to fix the
# offered rate instead of 30 % of the measured saturation.
# Needs: unbound, unbound-control, dig (scripts/bench-peers.sh installs them).
set -euo pipefail
cd "$(dirname "$0")/.."
UPGRADES=${1:-5}
NAMES=${2:-10000}
S=${3:-1.0}
EVERY=${UPGRADE_EVERY:-10}
source scripts/bench-lib.sh
bench_init upgrade
scripts/bench-peers.sh
for tool in unbound unbound-control dig python3 taskset; do
  command -v "$tool" >/dev/null || { echo "missing $tool" >&2; exit 1; }
done
cargo build --release -p shardns -p shardns-bench >/dev/null
T=${CARGO_TARGET_DIR:-target}/release

UP=$(free_port)
{
  unbound_header "$UP"
  cat <<UB
  extended-statistics: yes
  statistics-cumulative: yes
  statistics-interval: 0
  incoming-num-tcp: 256
  num-queries-per-thread: 4096
  local-zone: "zipf.test." redirect
  local-data: "zipf.test. 300 IN A 192.0.2.1"
remote-control:
  control-enable: yes
  control-interface: "$WORK/unbound.ctl"
UB
} > "$WORK/unbound.conf"
taskset -c 1 unbound -d -c "$WORK/unbound.conf" >"$WORK/unbound.log" 2>&1 &
PIDS+=($!)
answers() { dig @127.0.0.1 -p "$1" +short +time=1 +tries=1 "$2" A 2>/dev/null | grep -qx 192.0.2.1; }
wait_answer() { for _ in $(seq 1 50); do answers "$1" "$2" && return 0; sleep 0.2; done; echo "no answer on $1" >&2; return 1; }
wait_answer "$UP" n1.zipf.test
upstream() { unbound-control -c "$WORK/unbound.conf" stats_noreset | awk -F= '$1 == "total.num.queries" {print $2}'; }

"$T/shardns-bench" names "$NAMES" --zone zipf.test > "$WORK/names.txt"
PORT=$(free_port)
cat > "$WORK/Corefile" <<CF
.:$PORT {
    bind 127.0.0.1
    cache 300 {
        success $((NAMES * 2))
    }
    forward . 127.0.0.1:$UP {
        force_tcp
    }
}
CF
SOCKET="$WORK/handoff.sock"
N=0
start_shardns() { # sets pid; logs to $WORK/shardns-N.log
  N=$((N + 1))
  taskset -c 0 "$T/shardns" --conf "$WORK/Corefile" --shards 2 --handoff-socket "$SOCKET" \
    >"$WORK/shardns-$N.log" 2>&1 &
  pid=$!
  PIDS+=("$pid")
}
wait_exit() { # pid
  for _ in $(seq 1 200); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done
  echo "process $1 did not exit" >&2; return 1
}
load() { # seconds qps json [extra...]
  local seconds=$1 qps=$2 json=$3; shift 3
  taskset -c 1 "$T/shardns-bench" load -p "$PORT" -d "$WORK/names.txt" -l "$seconds" "$@" \
    --timeout-ms 3000 --json ${qps:+--open -Q "$qps"} --zipf "$S" --seed 7 > "$json"
}
# Samples Unbound's query count every second into FILE until killed: "unix_seconds count".
sample_upstream() { while true; do echo "$(date +%s.%N) $(upstream)"; sleep 1; done > "$1"; }

# 1. Saturation, every name cached (two passes over the names, then a closed loop).
start_shardns; wait_answer "$PORT" ready.zipf.test
taskset -c 1 "$T/shardns-bench" load -p "$PORT" -d "$WORK/names.txt" -l 3 --json >/dev/null
load 5 "" "$WORK/saturation.json"
SATURATED=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(int(d["answered"]/5))' "$WORK/saturation.json")
QPS=${UPGRADE_QPS:-$((SATURATED * 3 / 10))}
kill "$pid"; wait_exit "$pid"
echo "saturation $SATURATED q/s; offering $QPS q/s" >&2

# 2. Cold start: the upstream queries of a new process's first 10 s under the load.
start_shardns; wait_answer "$PORT" ready.zipf.test
before=$(upstream)
load 10 "$QPS" "$WORK/cold.json"
COLD=$(( $(upstream) - before ))
echo "cold start: $COLD upstream queries in 10 s" >&2

# 3. The same load for as long as the upgrades take, without upgrades (the baseline).
RUN=$(( UPGRADES * EVERY + EVERY ))
load "$RUN" "$QPS" "$WORK/steady.json"

# 4. With an upgrade every EVERY seconds.
sample_upstream "$WORK/upstream.txt" &
SAMPLER=$!
PIDS+=($SAMPLER)
load "$RUN" "$QPS" "$WORK/upgrades.json" &
LOAD=$!
: > "$WORK/switches.txt"
for i in $(seq 1 "$UPGRADES"); do
  sleep "$EVERY"
  old=$pid
  at=$(date +%s.%N)
  start_shardns
  wait_exit "$old"
  echo "$at $(date +%s.%N) $pid" >> "$WORK/switches.txt"
  grep -h "cache taken over\|serving alone" "$WORK/shardns-$N.log" | sed -E 's/^[0-9T:.-]+Z +//' >&2 || true
done
wait "$LOAD"
sleep 1
kill "$SAMPLER" 2>/dev/null || true
kill "$pid"; wait_exit "$pid"

python3 - "$WORK" "$COLD" "$QPS" "$SATURATED" "$S" "$NAMES" "$EVERY" <<'PY'
import json, sys
work, cold, qps, saturated, s, names, every = sys.argv[1], int(sys.argv[2]), *sys.argv[3:]
every = float(every)
samples = [tuple(map(float, line.split())) for line in open(f"{work}/upstream.txt") if len(line.split()) == 2]
def count_at(t):  # the last sample at or before t (or the first)
    best = samples[0][1]
    for when, count in samples:
        if when <= t: best = count
    return best
print("| run | sent | answered | lost | p50 µs | p99 µs | p99.9 µs | max µs |")
print("|---|---|---|---|---|---|---|---|")
for label, name in [("steady load, no upgrade", "steady"), (f"the same, upgraded every {every:.0f} s", "upgrades")]:
    d = json.load(open(f"{work}/{name}.json"))
    l = d["latency_us"]
    print(f"| {label} | {d['sent']:,} | {d['answered']:,} | {d['lost']:,} | {l['p50']} | {l['p99']} | {l['p999']} | {l['max']} |")
print()
print(f"| upgrade | switch took (start of the new process to the old one's exit) | upstream queries in the next 10 s | ÷ cold start ({cold:,}) |")
print("|---|---|---|---|")
for i, line in enumerate(open(f"{work}/switches.txt"), 1):
    start, end, pid = line.split()
    start, end = float(start), float(end)
    n = count_at(start + 10) - count_at(start)
    print(f"| {i} | {end - start:.2f} s | {n:,.0f} | {n / cold if cold else float('nan'):.3f} |")
print()
print(f"Zipf s = {s} over {names} names, {qps} q/s offered (30 % of {saturated} q/s measured saturated), shardns --shards 2 on CPU 0.")
PY
