#!/usr/bin/env bash
# Memory of the miss path at its limits (issue 5): shardns (release, --shards 1, no cache,
# `forward . UP { force_tcp }`) forwards to `shardns-bench upstream --serialize --delay-us
# 10000000`, which takes 10 s per query and connection, so nothing is answered during the run
# (attempt and query timeouts are raised to 60 s). After 100 warm-up queries, QUERIES unique
# names of NAMELEN bytes are sent, each from COPIES client sockets (so each pending query has
# COPIES waiting clients). The shard keeps at most 8,192 queries pending and 16,384 clients
# waiting (the rest get REFUSED). RSS (VmRSS) is read before and after.
#
# Usage: scripts/bench-pending-rss.sh [NAMELEN] [COPIES] [QUERIES]   (defaults 250 2 8092)
# SHARDNS_BIN=PATH measures that shardns binary instead of the tree's release build.
set -euo pipefail
cd "$(dirname "$0")/.."
NAMELEN=${1:-250}
COPIES=${2:-2}
QUERIES=${3:-8092}
source scripts/bench-lib.sh
bench_init pending-rss
command -v python3 >/dev/null || { echo "missing python3" >&2; exit 1; }
cargo build --release -p shardns -p shardns-bench >/dev/null
T=${CARGO_TARGET_DIR:-target}/release

UP_PORT=$(free_port)
"$T/shardns-bench" upstream "127.0.0.1:$UP_PORT" --serialize --delay-us 10000000 2>"$WORK/upstream.err" &
PIDS+=($!)
PORT=$(free_port)
cat > "$WORK/Corefile" <<CF
.:$PORT {
    bind 127.0.0.1
    forward . 127.0.0.1:$UP_PORT {
        force_tcp
    }
}
CF
"${SHARDNS_BIN:-$T/shardns}" --conf "$WORK/Corefile" --shards 1 --upstream-timeout 60s --query-timeout 60s 2>"$WORK/shardns.log" &
SHARDNS=$!
PIDS+=("$SHARDNS")
sleep 0.5

# flood PORT COUNT NAMELEN COPIES: COUNT unique A queries (EDNS 1232) for names of about
# NAMELEN bytes (a unique first label, 63-byte labels, then miss.test.), each sent from COPIES
# sockets; paced (2 ms every 200 names) so no datagram is lost on the way.
flood() {
  python3 - "$@" <<'PY'
import random, socket, struct, sys, time
port, count, namelen, copies = (int(a) for a in sys.argv[1:5])
socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(copies)]
def labels(i):
    out = [f"q{i}-{random.getrandbits(32):08x}"]
    total = len(out[0]) + 1
    while total < namelen - 12:
        n = min(63, namelen - 12 - total - 1)
        out.append("x" * n)
        total += n + 1
    return out + ["miss", "test"]
for i in range(count):
    name = b"".join(bytes([len(l)]) + l.encode() for l in labels(i)) + b"\0"
    query = (struct.pack(">HHHHHH", i & 0xFFFF, 0x0100, 1, 0, 0, 1) + name
             + struct.pack(">HH", 1, 1) + b"\0" + struct.pack(">HHIH", 41, 1232, 0, 0))
    for s in socks:
        s.sendto(query, ("127.0.0.1", port))
    if i % 200 == 0:
        time.sleep(0.002)
print(f"{count} names of {len(name)} bytes, each from {copies} sockets")
PY
}

rss() { awk '/VmRSS/ {print $2}' "/proc/$SHARDNS/status"; }
flood "$PORT" 100 "$NAMELEN" 1 >/dev/null
sleep 1
BEFORE=$(rss)
flood "$PORT" "$QUERIES" "$NAMELEN" "$COPIES"
sleep 2
AFTER=$(rss)
kill -0 "$SHARDNS" || { echo "shardns died:" >&2; cat "$WORK/shardns.log" >&2; exit 1; }
echo "RSS before: $BEFORE KiB; after: $AFTER KiB; growth: $((AFTER - BEFORE)) KiB ($(awk -v k=$((AFTER - BEFORE)) 'BEGIN {printf "%.1f", k / 1024}') MiB)"
