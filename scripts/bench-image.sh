#!/usr/bin/env bash
# The image under its two seccomp profiles, side by side: podman's default (io_uring blocked:
# `--io auto` runs epoll) and deploy/seccomp/shardns.json (io_uring). Both containers run at
# once as the DaemonSet runs them (host network, read-only, NET_ADMIN + NET_BIND_SERVICE,
# 256 MiB), one shard each, pinned to CPU 0 (`--cpuset-cpus 0`), each on its own loopback
# address; the generator (`shardns-bench load`) and the upstream (`shardns-bench upstream`,
# which answers every name) share CPU 1. Per round and container:
#   hits:   8 names over and over (a warm cache), closed loop, -q 256 over 64 UDP ports;
#   misses: a name never asked before every time (`--unique`), forwarded over TCP;
# each for SECONDS after 1 s of warm-up, the containers taking turns. Reported: answered
# QPS, q/CPU-s (the shardns process's utime+stime from /proc), p50/p99 latency, lost, and each
# container's memory (podman stats) at the end.
#
# Usage: scripts/bench-image.sh [SECONDS] [ROUNDS]   (defaults 5 2: about a minute)
# Needs the image (scripts/image.sh; IMAGE, default localhost/shardns:latest) and
# shardns-bench (SHARDNS_BENCH, default target/release/shardns-bench, built when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_RUN=${1:-5}
ROUNDS=${2:-2}
IMAGE=${IMAGE:-localhost/shardns:latest}
BENCH=${SHARDNS_BENCH:-target/release/shardns-bench}
export CONTAINERS_CONF="${CONTAINERS_CONF:-$PWD/deploy/podman/containers.conf}"
for tool in podman python3 taskset; do
    command -v "$tool" >/dev/null || { echo "missing $tool" >&2; exit 1; }
done
[ -x "$BENCH" ] || cargo build --release --locked -p shardns-bench
podman image exists "$IMAGE" || { echo "no image $IMAGE: run scripts/image.sh" >&2; exit 1; }

UPSTREAM=127.0.54.1:5399
work=$(mktemp -d)
names=()
cleanup() {
    for name in "${names[@]}"; do podman rm --force --time 0 "$name" >/dev/null 2>&1 || true; done
    [ -n "${upstream_pid:-}" ] && kill "$upstream_pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

"$BENCH" upstream --cpu 1 "$UPSTREAM" 2>"$work/upstream.log" &
upstream_pid=$!
for i in 1 2 3 4 5 6 7 8; do echo "name$i.example.test A"; done >"$work/hits.txt"

# start LABEL ADDRESS [PODMAN OPTIONS...]: a container serving ADDRESS:53, metrics on :9153.
start() {
    local label=$1 address=$2
    shift 2
    mkdir -p "$work/$label"
    printf '.:53 {\n    bind %s\n    cache 30\n    forward . %s {\n        force_tcp\n    }\n    prometheus %s:9153\n}\n' \
        "$address" "$UPSTREAM" "$address" >"$work/$label/Corefile"
    local name="shardns-bench-$label-$$"
    names+=("$name")
    podman run --detach --name "$name" --pull never --network host --read-only \
        --cap-drop ALL --cap-add NET_ADMIN --cap-add NET_BIND_SERVICE --memory 256m \
        --cpuset-cpus 0 --volume "$work/$label/Corefile:/etc/coredns/Corefile:ro" "$@" \
        "$IMAGE" --conf /etc/coredns/Corefile --io auto --shards 1 >/dev/null
    for _ in $(seq 100); do
        podman logs "$name" 2>&1 | grep -q "started in" && break
        sleep 0.1
    done
    podman logs "$name" 2>&1 | grep -E "listening on udp|io_uring unavailable" >&2
}
start epoll 127.0.54.2
start uring 127.0.54.3 --security-opt "seccomp=$PWD/deploy/seccomp/shardns.json"

cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
pid_of() { podman inspect --format '{{.State.Pid}}' "shardns-bench-$1-$$"; }
echo "| round | container | load | answered QPS | q/CPU-s | p50 µs | p99 µs | lost |"
echo "|---|---|---|---|---|---|---|---|"
hz=$(getconf CLK_TCK)
for round in $(seq "$ROUNDS"); do
    for load in hits misses; do
        for label in epoll uring; do
            address=127.0.54.2
            [ "$label" = uring ] && address=127.0.54.3
            if [ "$load" = hits ]; then
                args=(-d "$work/hits.txt")
            else
                args=(--unique)
            fi
            pid=$(pid_of "$label")
            before=$(cpu_ticks "$pid")
            "$BENCH" load -s "$address" -p 53 -l "$SECONDS_PER_RUN" --warmup 1 -q 256 --cpu 1 \
                --json "${args[@]}" >"$work/out.json"
            after=$(cpu_ticks "$pid")
            python3 - "$work/out.json" "$round" "$label" "$load" "$((after - before))" "$hz" \
                "$SECONDS_PER_RUN" <<'EOF'
import json, sys
path, round_, label, load, ticks, hz, seconds = sys.argv[1:]
r = json.load(open(path))
# The CPU time covers the warm-up second too: scale the answered count the same way.
cpu = int(ticks) / int(hz)
answered_all = r["qps"] * (r["duration_s"] + 1)
per_cpu = answered_all / cpu if cpu else float("nan")
driver = "io_uring" if label == "uring" else "epoll"
print(f"| {round_} | {driver} | {load} | {r['qps']:,.0f} | {per_cpu:,.0f} | "
      f"{r['latency_us']['p50']:.0f} | {r['latency_us']['p99']:.0f} | {r['lost']} |")
EOF
        done
    done
done
for label in epoll uring; do
    echo "memory ($label): $(podman stats --no-stream --format '{{.MemUsage}}' "shardns-bench-$label-$$")"
done
