#!/usr/bin/env bash
# Resident memory of shardns with N cached names (default 20,000) on S shards (default 2).
# An Unbound on loopback serves N names from static local data (nothing leaves the machine);
# dnsperf asks for every name 3 times over, so that each shard that sees a name caches it;
# the success capacity is NAMES x SHARDS, so every shard can hold every name (each shard holds
# 1/SHARDS of the configured capacity). Then VmRSS and VmHWM are read from /proc.
#
# Usage: scripts/bench-rss.sh [NAMES] [SHARDS] [IO]   (defaults 20000 2 auto)
set -euo pipefail
cd "$(dirname "$0")/.."
NAMES=${1:-20000}
SHARDS=${2:-2}
IO=${3:-auto}
source scripts/bench-lib.sh
bench_init rss
scripts/bench-peers.sh
cargo build --release -p shardns >/dev/null
BIN=${CARGO_TARGET_DIR:-target}/release/shardns
UP=$(free_port)
PORT=$(free_port)
{
  unbound_header "$UP"
  echo "  local-zone: \"bench.test.\" static"
  awk -v n="$NAMES" 'BEGIN {for (i = 0; i < n; i++) printf "  local-data: \"host-%d.bench.test. 3600 IN A 198.51.%d.%d\"\n", i, int(i / 250) % 250, i % 250 + 1}'
} > "$WORK/unbound.conf"
awk -v n="$NAMES" 'BEGIN {for (i = 0; i < n; i++) printf "host-%d.bench.test A\n", i}' > "$WORK/queries.txt"
unbound -d -c "$WORK/unbound.conf" >"$WORK/unbound.log" 2>&1 &
PIDS+=($!)
cat > "$WORK/Corefile" <<CF
.:$PORT {
    bind 127.0.0.1
    cache 3600 {
        success $((NAMES * SHARDS))
    }
    forward . 127.0.0.1:$UP {
        force_tcp
    }
}
CF
"$BIN" --conf "$WORK/Corefile" --shards "$SHARDS" --io "$IO" 2>"$WORK/shardns.log" &
pid=$!
PIDS+=($pid)
for _ in $(seq 1 50); do
  dig @127.0.0.1 -p "$UP" +short +time=1 +tries=1 host-0.bench.test A 2>/dev/null | grep -q 198 && break; sleep 0.2
done
rss() { awk '/VmRSS/ {print $2}' "/proc/$pid/status"; }
echo "idle: VmRSS $(rss) kB"
for round in 1 2 3; do
  dnsperf -s 127.0.0.1 -p "$PORT" -d "$WORK/queries.txt" -n 1 -c 8 -q 200 2>&1 | awk -v r="$round" '/Queries completed|Response codes/ {print "round " r ": " $0}'
done
echo "after $NAMES names x 3 over $SHARDS shards (--io $IO): VmRSS $(rss) kB, VmHWM $(awk '/VmHWM/ {print $2}' "/proc/$pid/status") kB"
