#!/usr/bin/env bash
# Cache hit ratio and upstream queries per unique name under a Zipf workload (issue 4,
# "Measure"): NAMES distinct names n0.zipf.test ... asked with Zipf's law of exponent S
# (`shardns-bench load --zipf S`, rank k = line k = name n{k-1}, fixed seed), open loop at
# QPS queries per second for SECONDS, against shardns with 1 shard, 2 shards (misses coalesced
# across shards at the key's owner, the default) and 2 shards with `--coalesce within` (each
# shard caches and coalesces only its own misses: an unshared per-shard cache).
#
# The upstream is an Unbound on loopback that answers every name under zipf.test. from local
# data (a redirect zone, TTL 300) and refuses everything else: nothing leaves the machine.
# shardns forwards to it over TCP. Unbound's `total.num.queries` (unbound-control
# stats_noreset, read before and after each run) is the number of upstream queries. Every
# configuration starts with an empty cache; the cache (TTL 300 s, capacity 2 x NAMES, so each
# of 2 shards can hold every name) outlives the run, so the ideal is exactly one upstream
# query per unique name.
#
# shardns is pinned to CPU 0 (1 shard) or CPUs 0-1 (2 shards); the generator and Unbound to
# CPU 1.
#
# Usage: scripts/bench-zipf.sh [NAMES] [SECONDS] [S]   (defaults 100000 30 1.0)
# Environment: ZIPF_QPS (default 20000) offered rate; ZIPF_SEED (default 1) seed of the draws;
# CARGO_TARGET_DIR as for cargo.
# Needs: unbound, unbound-control, dig (scripts/bench-peers.sh installs them).
set -euo pipefail
cd "$(dirname "$0")/.."
NAMES=${1:-100000}
SECONDS_RUN=${2:-30}
S=${3:-1.0}
QPS=${ZIPF_QPS:-20000}
SEED=${ZIPF_SEED:-1}
source scripts/bench-lib.sh
bench_init zipf
scripts/bench-peers.sh
for tool in unbound unbound-control dig python3 taskset; do
  command -v "$tool" >/dev/null || { echo "missing $tool: apt-get install unbound dnsutils python3 util-linux" >&2; exit 1; }
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
  # Every name under zipf.test. gets the zone's own data: n123.zipf.test. 300 IN A 192.0.2.1.
  local-zone: "zipf.test." redirect
  local-data: "zipf.test. 300 IN A 192.0.2.1"
remote-control:
  control-enable: yes
  control-interface: "$WORK/unbound.ctl"
UB
} > "$WORK/unbound.conf"
taskset -c 1 unbound -d -c "$WORK/unbound.conf" >"$WORK/unbound.log" 2>&1 &
PIDS+=($!)

answers() { # port name
  dig @127.0.0.1 -p "$1" +short +time=1 +tries=1 "$2" A 2>/dev/null | grep -qx 192.0.2.1
}
wait_answer() { # port name what
  for _ in $(seq 1 50); do answers "$1" "$2" && return 0; sleep 0.2; done
  echo "$3 on port $1 did not answer $2" >&2
  return 1
}
wait_answer "$UP" n123.zipf.test Unbound || { cat "$WORK/unbound.log" >&2; exit 1; }
if answers "$UP" www.example.com; then
  echo "Unbound answered a name outside zipf.test.: it must refuse everything else" >&2; exit 1
fi

unbound_stat() { # name
  unbound-control -c "$WORK/unbound.conf" stats_noreset | awk -F= -v k="$1" '$1 == k {print $2}'
}

"$T/shardns-bench" names "$NAMES" --zone zipf.test > "$WORK/names.txt"

LABELS=("--shards 1") ARGS=("--shards 1") CPUS=("0")
if "$T/shardns" --help | grep -q -- '--coalesce'; then
  LABELS+=("--shards 2 --coalesce across (default)" "--shards 2 --coalesce within (per-shard cache)")
  ARGS+=("--shards 2 --coalesce across" "--shards 2 --coalesce within")
  CPUS+=("0-1" "0-1")
else
  echo "note: this shardns has no --coalesce option (shardns --help); skipping --shards 2 --coalesce within" >&2
  LABELS+=("--shards 2")
  ARGS+=("--shards 2")
  CPUS+=("0-1")
fi

# One row per configuration: label answered unique upstream upstream_tcp lost p50 p99
ROWS=()
for i in "${!ARGS[@]}"; do
  port=$(free_port)
  cat > "$WORK/Corefile" <<CF
.:$port {
    bind 127.0.0.1
    cache 300 {
        success $((NAMES * 2))
    }
    forward . 127.0.0.1:$UP {
        force_tcp
    }
}
CF
  # shellcheck disable=SC2086 # ARGS entries are option lists
  taskset -c "${CPUS[$i]}" "$T/shardns" --conf "$WORK/Corefile" ${ARGS[$i]} 2>"$WORK/shardns-$i.log" &
  pid=$!
  PIDS+=("$pid")
  # A name outside the query file, so that the cache starts empty of the measured names.
  wait_answer "$port" ready.zipf.test "shardns ${ARGS[$i]}" || { cat "$WORK/shardns-$i.log" >&2; exit 1; }
  before=$(unbound_stat total.num.queries)
  before_tcp=$(unbound_stat num.query.tcp)
  echo "running shardns ${ARGS[$i]}: ${SECONDS_RUN}s at $QPS QPS, Zipf s = $S over $NAMES names" >&2
  taskset -c 1 "$T/shardns-bench" load -p "$port" -d "$WORK/names.txt" -l "$SECONDS_RUN" \
    --open -Q "$QPS" --zipf "$S" --seed "$SEED" --json > "$WORK/load-$i.json"
  after=$(unbound_stat total.num.queries)
  after_tcp=$(unbound_stat num.query.tcp)
  kill "$pid"; wait "$pid" 2>/dev/null || true
  ROWS+=("$(python3 - "$WORK/load-$i.json" "$((after - before))" "$((after_tcp - before_tcp))" "${LABELS[$i]}" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
print("\t".join(str(x) for x in [sys.argv[4], d["answered"], d["unique_names"], sys.argv[2], sys.argv[3],
                                  d["lost"], round(d["latency_us"]["p50"]), round(d["latency_us"]["p99"])]))
PY
)")
done

printf '%s\n' "${ROWS[@]}" | python3 -c '
import sys
rows = [line.rstrip("\n").split("\t") for line in sys.stdin if line.strip()]
print("| shardns | queries answered | unique names | upstream queries (Unbound) | upstream per unique name | hit ratio (1 - upstream/answered) | lost | p50 / p99 µs |")
print("|---|---|---|---|---|---|---|---|")
for label, answered, unique, upstream, tcp, lost, p50, p99 in rows:
    answered, unique, upstream = int(answered), int(unique), int(upstream)
    per = upstream / unique if unique else float("nan")
    hit = 1 - upstream / answered if answered else float("nan")
    print(f"| {label} | {answered:,} | {unique:,} | {upstream:,} | {per:.3f} | {hit:.4f} | {int(lost):,} | {p50} / {p99} |")
label, answered, unique = rows[0][0], int(rows[0][1]), int(rows[0][2])
print(f"| ideal (1 upstream query per unique name within one TTL; the {label} run'"'"'s names) | {answered:,} | {unique:,} | {unique:,} | 1.000 | {1 - unique / answered:.4f} | 0 | |")
for label, _, _, upstream, tcp, *_ in rows:
    if upstream != tcp:
        print(f"\nnote: {label}: {int(upstream) - int(tcp)} of {upstream} upstream queries did not arrive over TCP")
'
echo
echo "shardns-bench load --open -Q $QPS -l $SECONDS_RUN --zipf $S --seed $SEED over $NAMES names (one A query each, rank k = n{k-1}.zipf.test); cache 300 { success $((NAMES * 2)) }, forward over TCP to Unbound $(unbound -V 2>/dev/null | awk 'NR==1 {print $2}') (local data, TTL 300); $(nproc) CPUs; kernel $(uname -r); $(date -u +%Y-%m-%d)"
