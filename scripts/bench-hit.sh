#!/usr/bin/env bash
# Cache-hit throughput per server CPU-second, measured side by side in one run:
# shardns on each --io driver (1 shard) and dnsdist with a packet cache, each pinned to CPU 0,
# dnsperf pinned to CPU 1, 8 names, the same Unbound upstream on loopback (static local data,
# never queries the network). q/CPU-s = answered queries / (utime+stime of the server process).
#
# All servers run at once on their own ports; ROUNDS rounds interleave them (server A, B, C,
# A, B, C, ...) so that drift on a shared VM hits every server alike. The table gives the
# median and the range over the rounds.
#
# Usage: scripts/bench-hit.sh [SECONDS] [ROUNDS]   (default 10 s, 5 rounds).
# Needs: dnsperf, dnsdist, unbound, dig (scripts/bench-peers.sh installs them).
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_RUN=${1:-10}
ROUNDS=${2:-5}
source scripts/bench-lib.sh
bench_init bench

scripts/bench-peers.sh
for tool in dnsperf dnsdist unbound dig; do
  command -v "$tool" >/dev/null || { echo "missing $tool: apt-get install dnsperf dnsdist unbound dnsutils" >&2; exit 1; }
done
cargo build --release -p shardns >/dev/null
BIN=${CARGO_TARGET_DIR:-target}/release/shardns

UPSTREAM_PORT=$(free_port)

# 8 names: 5 "external", 3 cluster-internal, served by Unbound from static local data.
NAMES=(www.example.com api.example.org cdn.example.net mail.example.com static.example.org
       kubernetes.default.svc.cluster.local kube-dns.kube-system.svc.cluster.local web.prod.svc.cluster.local)
{
  unbound_header "$UPSTREAM_PORT"
  for zone in example.com example.org example.net svc.cluster.local; do
    echo "  local-zone: \"$zone.\" static"
  done
  i=1
  for n in "${NAMES[@]}"; do echo "  local-data: \"$n. 3600 IN A 192.0.2.$i\""; i=$((i+1)); done
} > "$WORK/unbound.conf"
taskset -c 1 unbound -d -c "$WORK/unbound.conf" >"$WORK/unbound.log" 2>&1 &
PIDS+=($!)

for n in "${NAMES[@]}"; do echo "$n A"; done > "$WORK/queries.txt"

PERF=""
if command -v perf >/dev/null && perf stat -e instructions -- true >/dev/null 2>&1; then PERF=1; fi

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
TICK=$(getconf CLK_TCK)

wait_answer() { # port
  for _ in $(seq 1 50); do
    if dig @127.0.0.1 -p "$1" +time=1 +tries=1 +short "${NAMES[0]}" A 2>/dev/null | grep -q 192.0.2.1; then return 0; fi
    sleep 0.2
  done
  echo "server on port $1 did not answer" >&2; return 1
}

LABELS=() SERVER_PIDS=() PORTS=()
start_shardns() { # io
  local port; port=$(free_port)
  cat > "$WORK/Corefile-$1" <<CF
.:$port {
    bind 127.0.0.1
    cache 30
    forward . 127.0.0.1:$UPSTREAM_PORT {
        force_tcp
    }
}
CF
  taskset -c 0 "$BIN" --conf "$WORK/Corefile-$1" --shards 1 --io "$1" 2>"$WORK/shardns-$1.log" &
  PIDS+=($!); SERVER_PIDS+=($!); PORTS+=("$port"); LABELS+=("shardns --io $1 (1 shard)")
}
start_dnsdist() {
  local port; port=$(free_port)
  cat > "$WORK/dnsdist.conf" <<DD
setLocal("127.0.0.1:$port")
newServer({address="127.0.0.1:$UPSTREAM_PORT", checkName="${NAMES[0]}."})
pc = newPacketCache(10000, {maxTTL=86400, minTTL=0})
getPool(""):setCache(pc)
setSecurityPollSuffix("")
DD
  taskset -c 0 dnsdist --supervised --disable-syslog -C "$WORK/dnsdist.conf" >"$WORK/dnsdist.log" 2>&1 &
  PIDS+=($!); SERVER_PIDS+=($!); PORTS+=("$port"); LABELS+=("dnsdist $(dnsdist --version 2>/dev/null | awk 'NR==1{print $2}') packet cache")
}

start_shardns uring
start_shardns epoll
start_dnsdist
for i in "${!PORTS[@]}"; do
  wait_answer "${PORTS[$i]}"
  for n in "${NAMES[@]}"; do dig @127.0.0.1 -p "${PORTS[$i]}" +short "$n" A >/dev/null; done
done

# results/<server index> holds one line per round: qps q_per_cpu_s avg_latency_s
mkdir -p "$WORK/results"
for round in $(seq 1 "$ROUNDS"); do
  for i in "${!PORTS[@]}"; do
    pid=${SERVER_PIDS[$i]}
    before=$(cpu_ticks "$pid")
    # Hardware counters of the server process (user + kernel), where perf can read them:
    # instructions per query do not depend on how fast the shared host runs at the moment.
    perf_pid=""
    if [ -n "$PERF" ]; then
      perf stat -x, -e instructions,cycles -p "$pid" -o "$WORK/perf.csv" & perf_pid=$!
    fi
    out=$(taskset -c 1 dnsperf -s 127.0.0.1 -p "${PORTS[$i]}" -d "$WORK/queries.txt" -l "$SECONDS_PER_RUN" -c 8 -q 500 2>&1)
    after=$(cpu_ticks "$pid")
    insns=0 cycles=0
    if [ -n "$perf_pid" ]; then
      kill -INT "$perf_pid"; wait "$perf_pid" 2>/dev/null || true
      insns=$(awk -F, '$3 ~ /^instructions/ {print $1}' "$WORK/perf.csv")
      cycles=$(awk -F, '$3 ~ /^cycles/ {print $1}' "$WORK/perf.csv")
    fi
    answered=$(echo "$out" | awk '/Queries completed:/ {print $3}')
    qps=$(echo "$out" | awk '/Queries per second:/ {printf "%.0f", $4}')
    lat=$(echo "$out" | awk '/Average Latency/ {print $4}')
    noerror=$(echo "$out" | awk '/Response codes:/ {print ($3 == "NOERROR" && $5 == "(100.00%)") ? "ok" : "NOT-ALL-NOERROR"}')
    per_cpu=$(awk -v n="$answered" -v a="$after" -v b="$before" -v t="$TICK" 'BEGIN {c=(a-b)/t; if (c>0) printf "%.0f", n/c; else print 0}')
    per_query=$(awk -v i="${insns:-0}" -v c="${cycles:-0}" -v n="$answered" 'BEGIN {printf "%.0f %.0f", i/n, c/n}')
    echo "$qps $per_cpu $lat $per_query" >> "$WORK/results/$i"
    echo "round $round ${LABELS[$i]}: qps=$qps q/cpu_s=$per_cpu avg_latency_s=$lat insns/q cycles/q=$per_query rcodes=$noerror" >&2
  done
done

median_range() { # file column -> "median (min-max)"
  awk -v c="$2" '{print $c}' "$1" | sort -n | awk '{v[NR]=$1} END {m=(NR%2)?v[(NR+1)/2]:(v[NR/2]+v[NR/2+1])/2; printf "%.0f (%.0f-%.0f)", m, v[1], v[NR]}'
}
median_latency() {
  awk '{print $3*1e6}' "$1" | sort -n | awk '{v[NR]=$1} END {m=(NR%2)?v[(NR+1)/2]:(v[NR/2]+v[NR/2+1])/2; printf "%.0f", m}'
}
# Ratio of q/CPU-s to the last server (the peer) in the same round, then the median: the
# rounds of one server run seconds apart from the peer's, so this cancels slow drift.
ratio_to_peer() { # index
  local peer=$(( ${#PORTS[@]} - 1 ))
  paste "$WORK/results/$1" "$WORK/results/$peer" | awk -v n="$(awk '{print NF; exit}' "$WORK/results/$1")" '{print $2/$(n + 2)}' | sort -n |
    awk '{v[NR]=$1} END {m=(NR%2)?v[(NR+1)/2]:(v[NR/2]+v[NR/2+1])/2; printf "%.2f (%.2f-%.2f)", m, v[1], v[NR]}'
}
echo
echo "| server (pinned to CPU 0) | answered QPS, median (range) | q/CPU-s, median (range) | q/CPU-s ÷ ${LABELS[-1]} in the same round, median (range) | server instructions / query | server cycles / query | avg latency µs (median) |"
echo "|---|---|---|---|---|---|---|"
for i in "${!PORTS[@]}"; do
  echo "| ${LABELS[$i]} | $(median_range "$WORK/results/$i" 1) | $(median_range "$WORK/results/$i" 2) | $(ratio_to_peer "$i") | $(median_range "$WORK/results/$i" 4) | $(median_range "$WORK/results/$i" 5) | $(median_latency "$WORK/results/$i") |"
done
echo
echo "dnsperf $(dnsperf -h 2>&1 | awk '/Version/ {print $2; exit}') on CPU 1: -c 8 -q 500 -l $SECONDS_PER_RUN, ${#NAMES[@]} names, $ROUNDS interleaved rounds; $(nproc) CPUs; kernel $(uname -r); $(date -u +%Y-%m-%d)"
