#!/usr/bin/env bash
# Cache-hit throughput per server CPU-second, measured side by side in one run:
# shardns on each --io driver (1 shard) and dnsdist with a packet cache, each pinned to CPU 0,
# dnsperf pinned to CPU 1, 8 names, the same Unbound upstream on loopback (static local data,
# never queries the network). q/CPU-s = answered queries / (utime+stime of the server process).
#
# Usage: scripts/bench-hit.sh [SECONDS]   (default 10). Needs: dnsperf, dnsdist, unbound, dig.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_RUN=${1:-10}
WORK=$(mktemp -d /tmp/shardns-bench.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

for tool in dnsperf dnsdist unbound dig; do
  command -v "$tool" >/dev/null || { echo "missing $tool: apt-get install dnsperf dnsdist unbound dnsutils" >&2; exit 1; }
done
cargo build --release -p shardns >/dev/null
BIN=${CARGO_TARGET_DIR:-target}/release/shardns

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
UPSTREAM_PORT=$(free_port)

# 8 names: 5 "external", 3 cluster-internal, served by Unbound from static local data.
NAMES=(www.example.com api.example.org cdn.example.net mail.example.com static.example.org
       kubernetes.default.svc.cluster.local kube-dns.kube-system.svc.cluster.local web.prod.svc.cluster.local)
{
  echo "server:"
  echo "  interface: 127.0.0.1@$UPSTREAM_PORT"
  echo "  do-not-query-localhost: no"
  echo "  chroot: \"\""
  echo "  username: \"\""
  echo "  pidfile: \"$WORK/unbound.pid\""
  echo "  use-syslog: no"
  echo "  verbosity: 0"
  echo "  num-threads: 1"
  echo "  access-control: 127.0.0.0/8 allow"
  for zone in example.com example.org example.net svc.cluster.local; do
    echo "  local-zone: \"$zone.\" static"
  done
  i=1
  for n in "${NAMES[@]}"; do echo "  local-data: \"$n. 3600 IN A 192.0.2.$i\""; i=$((i+1)); done
} > "$WORK/unbound.conf"
taskset -c 1 unbound -d -c "$WORK/unbound.conf" >"$WORK/unbound.log" 2>&1 &
PIDS+=($!)

for n in "${NAMES[@]}"; do echo "$n A"; done > "$WORK/queries.txt"

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
TICK=$(getconf CLK_TCK)

wait_answer() { # port
  for _ in $(seq 1 50); do
    if dig @127.0.0.1 -p "$1" +time=1 +tries=1 +short "${NAMES[0]}" A 2>/dev/null | grep -q 192.0.2.1; then return 0; fi
    sleep 0.2
  done
  echo "server on port $1 did not answer" >&2; return 1
}

RESULTS=()
run_one() { # label pid port
  local label=$1 pid=$2 port=$3
  wait_answer "$port"
  for n in "${NAMES[@]}"; do dig @127.0.0.1 -p "$port" +short "$n" A >/dev/null; done
  local before after out answered qps lat
  before=$(cpu_ticks "$pid")
  out=$(taskset -c 1 dnsperf -s 127.0.0.1 -p "$port" -d "$WORK/queries.txt" -l "$SECONDS_PER_RUN" -c 8 -q 500 2>&1)
  after=$(cpu_ticks "$pid")
  answered=$(echo "$out" | awk '/Queries completed:/ {print $3}')
  qps=$(echo "$out" | awk '/Queries per second:/ {print $4}')
  lat=$(echo "$out" | awk '/Average Latency/ {print $4}')
  local cpu
  cpu=$(awk -v a="$after" -v b="$before" -v t="$TICK" 'BEGIN {printf "%.2f", (a-b)/t}')
  local per_cpu
  per_cpu=$(awk -v n="$answered" -v c="$cpu" 'BEGIN {if (c>0) printf "%.0f", n/c; else print "inf"}')
  RESULTS+=("| $label | $qps | $cpu | $per_cpu | $lat |")
  echo "$label: answered=$answered qps=$qps cpu_s=$cpu q/cpu_s=$per_cpu avg_latency_s=$lat" >&2
}

for io in uring epoll; do
  PORT=$(free_port)
  cat > "$WORK/Corefile" <<CF
.:$PORT {
    bind 127.0.0.1
    cache 30
    forward . 127.0.0.1:$UPSTREAM_PORT {
        force_tcp
    }
}
CF
  taskset -c 0 "$BIN" --conf "$WORK/Corefile" --shards 1 --io "$io" 2>"$WORK/shardns-$io.log" &
  pid=$!
  PIDS+=($pid)
  run_one "shardns --io $io" "$pid" "$PORT"
  kill "$pid"; wait "$pid" 2>/dev/null || true
done

PORT=$(free_port)
cat > "$WORK/dnsdist.conf" <<DD
setLocal("127.0.0.1:$PORT")
newServer({address="127.0.0.1:$UPSTREAM_PORT"})
pc = newPacketCache(10000, {maxTTL=86400, minTTL=0})
getPool(""):setCache(pc)
setSecurityPollSuffix("")
DD
taskset -c 0 dnsdist --supervised --disable-syslog -C "$WORK/dnsdist.conf" >"$WORK/dnsdist.log" 2>&1 &
pid=$!
PIDS+=($pid)
run_one "dnsdist 1.7 packet cache" "$pid" "$PORT"

echo
echo "| server (1 core, CPU 0) | answered QPS | server CPU s | q/CPU-s | avg latency s |"
echo "|---|---|---|---|---|"
printf '%s\n' "${RESULTS[@]}"
echo
echo "dnsperf 2.x on CPU 1: -c 8 -q 500 -l $SECONDS_PER_RUN, ${#NAMES[@]} names; $(nproc) CPUs; $(uname -r)"
