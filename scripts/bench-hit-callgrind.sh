#!/usr/bin/env bash
# User-space instructions per cache hit, counted exactly by Valgrind's callgrind, for one or
# more shardns binaries side by side: for machines whose hardware counters `perf` cannot read
# (a VM without a virtual PMU), where the hit benchmark's instructions column stays empty.
#
# Each binary runs alone under callgrind (`--shards 1 --io epoll`, `cache 30`, forwarding to
# `shardns-bench upstream` on loopback). 8 names are asked once to fill the cache, then
# counting is switched on and `shardns-bench load` offers RATE queries per second (open
# loop, even spacing, 64 sockets) for SECONDS, or with RATE 0 keeps 1024 queries in flight
# (closed loop: the server saturated, so replies go out in full batches, as in the hit
# benchmark); counting is switched off and the instructions
# executed by the whole process (every thread: driver, engine, logging) are divided by the
# queries answered. Kernel instructions are not counted; both binaries make the same system
# calls per batch, so the difference is all user space. The binaries are run in turn, ROUNDS
# times (A B A B ...), so drift hits them alike.
#
# Usage: scripts/bench-hit-callgrind.sh [SECONDS] [RATE] [ROUNDS] BINARY[+DIRECTIVE]...
#   (defaults 10 s, RATE 0 = saturated, 2 rounds; BINARY defaults to target/release/shardns)
#   `BINARY+DIRECTIVE` adds one directive to the server block (`target/release/shardns+log`,
#   `"target/release/shardns+log other.example."`): the cost of a directive, side by side.
# Needs: valgrind (Debian package), a release build of shardns-bench.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_RUN=${1:-10}
RATE=${2:-0}
if [ "$RATE" -gt 0 ]; then PACE=(-Q "$RATE" --open); WARM=(-Q "$RATE" --open); else PACE=(); WARM=(-Q 1000 --open); fi
ROUNDS=${3:-2}
shift $(( $# < 3 ? $# : 3 ))
BINARIES=("$@")
[ "${#BINARIES[@]}" -gt 0 ] || BINARIES=("${CARGO_TARGET_DIR:-target}/release/shardns")
source scripts/bench-lib.sh
bench_init hit-callgrind
command -v valgrind >/dev/null || { echo "missing valgrind: apt-get install valgrind" >&2; exit 1; }
cargo build --release -p shardns-bench >/dev/null
BENCH=${CARGO_TARGET_DIR:-target}/release/shardns-bench

UP_PORT=$(free_port)
"$BENCH" upstream "127.0.0.1:$UP_PORT" 2>"$WORK/upstream.err" &
PIDS+=($!)
NAMES=(www.example.com api.example.org cdn.example.net mail.example.com static.example.org
       kubernetes.default.svc.cluster.local kube-dns.kube-system.svc.cluster.local web.prod.svc.cluster.local)
for n in "${NAMES[@]}"; do echo "$n A"; done > "$WORK/queries.txt"

# measure BINARY -> "instructions answered"
measure() {
  local port; port=$(free_port)
  local binary=${1%%+*} directive=""
  [ "$binary" = "$1" ] || directive=${1#*+}
  cat > "$WORK/Corefile" <<CF
.:$port {
    bind 127.0.0.1
    cache 30
    forward . 127.0.0.1:$UP_PORT
    $directive
}
CF
  valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$WORK/cg.out" \
    "$binary" --conf "$WORK/Corefile" --shards 1 --io epoll 2>"$WORK/shardns.log" &
  local pid=$!
  PIDS+=("$pid")
  for _ in $(seq 1 100); do
    grep -q "listening on udp" "$WORK/shardns.log" && break
    sleep 0.2
  done
  # Fill the cache (and warm the code) with a short uncounted run.
  "$BENCH" load -p "$port" -d "$WORK/queries.txt" -l 2 "${WARM[@]}" --json >/dev/null
  callgrind_control --instr=on "$pid" >/dev/null
  "$BENCH" load -p "$port" -d "$WORK/queries.txt" -l "$SECONDS_PER_RUN" "${PACE[@]}" \
    --timeout-ms 3000 --json > "$WORK/load.json"
  callgrind_control --instr=off "$pid" >/dev/null
  kill -TERM "$pid"
  wait "$pid" 2>/dev/null || true
  local answered instructions
  answered=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["answered"])' "$WORK/load.json")
  instructions=$(awk '/^totals:/ {print $2}' "$WORK/cg.out"* | awk '{s += $1} END {print s}')
  rm -f "$WORK/cg.out"*
  echo "$instructions $answered"
}

for round in $(seq 1 "$ROUNDS"); do
  for i in "${!BINARIES[@]}"; do
    read -r instructions answered < <(measure "${BINARIES[$i]}")
    per=$(awk -v i="$instructions" -v n="$answered" 'BEGIN {printf "%.0f", i/n}')
    echo "$per" >> "$WORK/per.$i"
    echo "round $round ${BINARIES[$i]}: $answered answered, $instructions instructions, $per per query" >&2
  done
done

echo
echo "| binary | user instructions / query (callgrind), per round | median |"
echo "|---|---|---|"
for i in "${!BINARIES[@]}"; do
  rounds=$(paste -sd' ' "$WORK/per.$i")
  median=$(sort -n "$WORK/per.$i" | awk '{v[NR]=$1} END {m=(NR%2)?v[(NR+1)/2]:(v[NR/2]+v[NR/2+1])/2; printf "%.0f", m}')
  echo "| ${BINARIES[$i]} | $rounds | $median |"
done
echo
load=$([ "$RATE" -gt 0 ] && echo "$RATE q/s (open loop)" || echo "1024 in flight (closed loop)")
echo "$SECONDS_PER_RUN s at $load per run, ${#NAMES[@]} names, $ROUNDS rounds; valgrind $(valgrind --version); kernel $(uname -r); $(date -u +%Y-%m-%d)"
