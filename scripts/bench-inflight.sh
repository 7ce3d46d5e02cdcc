#!/usr/bin/env bash
# Queries in flight per upstream TCP connection (issue 5: the default of shardns's
# `--upstream-inflight K`), measured against an upstream that serialises like CoreDNS
# (`shardns-bench upstream --serialize`: each connection's queries answered one at a time,
# in order, each after --delay-us). shardns alone, release, --shards 1, no cache (every
# query of `load --unique` is a miss), `--upstream-conns 64`, pinned to CPU 0; the generator
# and the upstream on CPU 1. For each K in KS and two upstreams:
#   - fast (--delay-us 0): closed loop, -q FAST_Q (256) in flight: what K costs or saves in
#     shardns CPU per query (q/CPU-s), and the connections it needs;
#   - slow (--delay-us 1000, 1 ms per query and connection): open loop at SLOW_QPS (20,000)
#     queries per second, well under what 64 connections can carry (64,000): latency shows
#     how long queries wait behind others on the same connection (head-of-line blocking).
# Every run starts a fresh upstream and a fresh shardns, so the connection counts are the
# run's own: "opened" = TCP connections the upstream accepted, "most open" = the most open at
# once (both from the upstream's counters). ROUNDS rounds, K interleaved within each.
#
# Usage: scripts/bench-inflight.sh [SECONDS] [ROUNDS]   (defaults 6 2: about 3 minutes)
# Environment: INFLIGHT_KS ("1 2 4 8 16"), INFLIGHT_CONNS (64), INFLIGHT_FAST_Q (256),
# INFLIGHT_SLOW_QPS (20000), INFLIGHT_SLOW_DELAY_US (1000), INFLIGHT_SPEEDS ("fast slow"),
# CARGO_TARGET_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_RUN=${1:-6}
ROUNDS=${2:-2}
KS=${INFLIGHT_KS:-1 2 4 8 16}
CONNS=${INFLIGHT_CONNS:-64}
FAST_Q=${INFLIGHT_FAST_Q:-256}
SLOW_QPS=${INFLIGHT_SLOW_QPS:-20000}
SLOW_DELAY=${INFLIGHT_SLOW_DELAY_US:-1000}
SPEEDS=${INFLIGHT_SPEEDS:-fast slow}
source scripts/bench-lib.sh
bench_init inflight
for tool in python3 taskset awk; do
  command -v "$tool" >/dev/null || { echo "missing $tool" >&2; exit 1; }
done
cargo build --release -p shardns -p shardns-bench >/dev/null
T=${CARGO_TARGET_DIR:-target}/release
source scripts/bench-miss-lib.sh

# rows: upstream, K, round, qps, q/cpu-s, p50, p99, p999, lost, opened conns, most open, upstream queries,
# instructions/query, cycles/query (tab-separated)
ROWS="$WORK/rows.tsv"
: > "$ROWS"
for round in $(seq 1 "$ROUNDS"); do
  for speed in $SPEEDS; do
    for k in $KS; do
      tag="$speed-$k-$round"
      if [ "$speed" = fast ]; then delay=0; else delay=$SLOW_DELAY; fi
      start_bench_upstream "$tag" --serialize --delay-us "$delay"
      up_pid=$UP_PID
      port=$(free_port)
      cat > "$WORK/Corefile" <<CF
.:$port {
    bind 127.0.0.1
    forward . 127.0.0.1:$UP_PORT {
        force_tcp
    }
}
CF
      taskset -c 0 "$T/shardns" --conf "$WORK/Corefile" --shards 1 --upstream-inflight "$k" --upstream-conns "$CONNS" \
        2>"$WORK/shardns-$tag.log" &
      pid=$!
      PIDS+=("$pid")
      ready "$port" || { cat "$WORK/shardns-$tag.log" >&2; exit 1; }
      if [ "$speed" = fast ]; then
        load=(-q "$FAST_Q")
      else
        load=(--open -Q "$SLOW_QPS")
      fi
      perf_start "$pid" "$WORK/perf.csv"
      before=$(cpu_ticks "$pid")
      taskset -c 1 "$T/shardns-bench" load --unique -p "$port" -l "$SECONDS_PER_RUN" "${load[@]}" --json > "$WORK/run.json"
      after=$(cpu_ticks "$pid")
      read -r insns cycles <<<"$(perf_stop "$WORK/perf.csv")"
      kill "$pid"; wait "$pid" 2>/dev/null || true
      kill "$up_pid"; wait "$up_pid" 2>/dev/null || true
      line=$(python3 - "$WORK/run.json" "$((after - before))" "$TICK" "$WORK/upstream-$tag.json" "$insns" "$cycles" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
up = json.load(open(sys.argv[4]))
cpu = int(sys.argv[2]) / int(sys.argv[3])
n = d["answered"]
per_cpu = n / cpu if cpu > 0 else 0
insns = int(sys.argv[5]) / n if n else 0
cycles = int(sys.argv[6]) / n if n else 0
l = d["latency_us"]
print("\t".join(str(x) for x in [round(d["qps"]), round(per_cpu), round(l["p50"]), round(l["p99"]), round(l["p999"]),
                                  d["lost"], up["tcp_connections"], up["tcp_peak_open"], up["tcp_queries"], round(insns), round(cycles)]))
PY
)
      printf '%s\t%s\t%s\t%s\n' "$speed" "$k" "$round" "$line" >> "$ROWS"
      IFS=$'\t' read -r qps per_cpu p50 p99 p999 lost opened peak _ insns_q cycles_q <<<"$line"
      echo "round $round, $speed upstream (delay ${delay}us), K=$k: qps=$qps q/cpu_s=$per_cpu insns/q=$insns_q cycles/q=$cycles_q p50=${p50}us p99=${p99}us p99.9=${p999}us lost=$lost conns opened=$opened most open=$peak" >&2
    done
  done
done

python3 - "$ROWS" "$CONNS" "$FAST_Q" "$SLOW_QPS" "$SLOW_DELAY" <<'PY'
import statistics, sys
rows = [line.rstrip("\n").split("\t") for line in open(sys.argv[1]) if line.strip()]
conns, fast_q, slow_qps, slow_delay = sys.argv[2:6]
def med(xs):
    return statistics.median(xs)
def rng(xs):
    return f"{med(xs):,.0f} ({min(xs):,.0f}-{max(xs):,.0f})" if len(xs) > 1 else f"{xs[0]:,.0f}"
titles = {
    "fast": f"serialising upstream, no delay; closed loop, {fast_q} queries in flight",
    "slow": f"serialising upstream, {slow_delay} µs per query; open loop at {int(slow_qps):,} QPS",
}
for speed in ("fast", "slow"):
    sr = [r for r in rows if r[0] == speed]
    if not sr:
        continue
    print(f"\n### {titles[speed]} (`--upstream-conns {conns}`)\n")
    print("| --upstream-inflight K | answered QPS | shardns q/CPU-s | shardns instructions / query | cycles / query | p50 µs | p99 µs | p99.9 µs | lost | upstream conns opened | most open at once |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for k in dict.fromkeys(r[1] for r in sr):
        kr = [r for r in sr if r[1] == k]
        col = lambda i: [float(r[i]) for r in kr]
        # perf sometimes counts nothing on this VM (0): such runs are left out.
        counted = lambda i: [x for x in col(i) if x > 0]
        insns = rng(counted(12)) if counted(12) else "n/a"
        cycles = rng(counted(13)) if counted(13) else "n/a"
        print(f"| {k} | {rng(col(3))} | {rng(col(4))} | {insns} | {cycles} | {med(col(5)):,.0f} | {med(col(6)):,.0f} | {med(col(7)):,.0f} | "
              f"{sum(int(r[8]) for r in kr):,} | {rng(col(9))} | {rng(col(10))} |")
rounds = len(set(r[2] for r in rows))
print(f"\nMedian (range) over {rounds} rounds; percentiles are medians of the per-run figures; lost is the total. "
      "Instructions and cycles: shardns's, user + kernel (`perf stat -p`), per answered query, over the runs perf counted.")
PY
echo
echo "shardns --shards 1 --upstream-conns $CONNS, no cache, on CPU 0; shardns-bench load --unique -l $SECONDS_PER_RUN and shardns-bench upstream --serialize on CPU 1; $ROUNDS rounds; $(nproc) CPUs; kernel $(uname -r); $(date -u +%Y-%m-%d)"
