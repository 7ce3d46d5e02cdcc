#!/usr/bin/env bash
# Miss path (issue 5): every query asks a name never asked before (`shardns-bench load
# --unique`, N.<random>.miss.test), so every query goes upstream over TCP. Answered queries
# per server CPU-second of
#   - shardns (release, --shards 1, a Corefile with no cache: `forward . UP { force_tcp }`),
#   - dnsdist (`newServer({address=UP, tcpOnly=true, maxInFlight=K})`: TCP to the backend,
#     its out-of-order mode with K queries per connection; no packet cache),
#   - Unbound as a forwarder over TCP (`forward-tcp-upstream: yes`; its cache cannot be
#     turned off, but unique names miss anyway),
# for each kind of upstream:
#   - serial: `shardns-bench upstream --serialize --delay-us 0`, which answers each TCP
#     connection's queries one at a time, in order, as CoreDNS does;
#   - unbound: a real Unbound answering every name under miss.test. from local data.
# Every server gets its own upstream instance (so its connections can be told apart), on CPU
# 1 with the generator; the server is pinned to CPU 0. Closed loop, -q OUTSTANDING over 64
# UDP source ports. ROUNDS interleaved rounds (A, B, C, A, B, C, ...) per kind of upstream.
#
# Reported per server: answered QPS, q/CPU-s (utime+stime from /proc/PID/stat), its ratio to
# the best peer's q/CPU-s in the same round, p50/p99 latency, lost queries, and the upstream
# TCP connections: the most ESTABLISHED at once during a run (sampled from /proc/net/tcp
# every 0.2 s) and, with the bench upstream, how many it accepted during the run.
#
# Usage: scripts/bench-miss.sh [SECONDS] [ROUNDS]   (defaults 10 3: about 4 minutes)
# Environment: MISS_OUTSTANDING (256) queries in flight; MISS_DNSDIST_INFLIGHT (8) dnsdist's
# maxInFlight per backend connection; MISS_UPSTREAMS ("serial unbound"); MISS_SERVERS
# ("shardns dnsdist unbound"; `shardns=PATH` runs another shardns binary beside this
# one's); MISS_PROTO (tcp) the servers' transport to the upstream: `udp` drops shardns's
# `force_tcp`, sets Unbound's `forward-tcp-upstream: no` and leaves dnsdist out (its UDP path
# is another design); SHARDNS_ARGS (extra shardns flags); CARGO_TARGET_DIR.
# Peers missing from PATH are skipped (scripts/bench-peers.sh installs dnsdist and unbound).
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_RUN=${1:-10}
ROUNDS=${2:-3}
OUTSTANDING=${MISS_OUTSTANDING:-256}
DNSDIST_INFLIGHT=${MISS_DNSDIST_INFLIGHT:-8}
UPSTREAMS=${MISS_UPSTREAMS:-serial unbound}
SERVERS=${MISS_SERVERS:-shardns dnsdist unbound}
PROTO=${MISS_PROTO:-tcp}
source scripts/bench-lib.sh
bench_init miss
scripts/bench-peers.sh || echo "note: scripts/bench-peers.sh could not install every peer; missing ones are skipped" >&2
for tool in python3 taskset awk; do
  command -v "$tool" >/dev/null || { echo "missing $tool" >&2; exit 1; }
done
cargo build --release -p shardns -p shardns-bench >/dev/null
T=${CARGO_TARGET_DIR:-target}/release
source scripts/bench-miss-lib.sh

have() { command -v "$1" >/dev/null; }
KINDS=()
for kind in $UPSTREAMS; do
  if [ "$kind" = unbound ] && ! have unbound; then echo "note: no unbound on PATH: skipping the Unbound upstream" >&2; continue; fi
  KINDS+=("$kind")
done
WANT=()
for server in $SERVERS; do
  case $server in
    shardns|shardns=*) ;;
    dnsdist) if [ "$PROTO" = udp ]; then echo "note: MISS_PROTO=udp: dnsdist left out" >&2; continue; fi
             have dnsdist || { echo "note: no dnsdist on PATH: skipped" >&2; continue; } ;;
    *) have "$server" || { echo "note: no $server on PATH: skipped" >&2; continue; } ;;
  esac
  WANT+=("$server")
done

# Starts server $1 (shardns|dnsdist|unbound) forwarding to 127.0.0.1:$UP_PORT, pinned to
# CPU 0; sets SERVER_PID, SERVER_PORT, LABEL.
start_server() { # server tag
  local server=$1 tag=$2
  SERVER_PORT=$(free_port)
  case $server in
    shardns|shardns=*)
      local bin="$T/shardns" which=""
      if [ "$server" != shardns ]; then bin=${server#shardns=}; which=" $(basename "$bin")"; fi
      local options="force_tcp"
      [ "$PROTO" = udp ] && options=""
      cat > "$WORK/Corefile-$tag" <<CF
.:$SERVER_PORT {
    bind 127.0.0.1
    forward . 127.0.0.1:$UP_PORT {
        $options
    }
}
CF
      # shellcheck disable=SC2086 # SHARDNS_ARGS is an option list
      taskset -c 0 "$bin" --conf "$WORK/Corefile-$tag" --shards 1 ${SHARDNS_ARGS:-} 2>"$WORK/shardns-$tag.log" &
      LABEL="shardns$which (1 shard, no cache, $PROTO upstream)"
      ;;
    dnsdist)
      cat > "$WORK/dnsdist-$tag.conf" <<DD
setLocal("127.0.0.1:$SERVER_PORT")
newServer({address="127.0.0.1:$UP_PORT", tcpOnly=true, maxInFlight=$DNSDIST_INFLIGHT, checkName="check.miss.test."})
setSecurityPollSuffix("")
DD
      taskset -c 0 dnsdist --supervised --disable-syslog -C "$WORK/dnsdist-$tag.conf" >"$WORK/dnsdist-$tag.log" 2>&1 &
      LABEL="dnsdist $(dnsdist --version 2>/dev/null | awk 'NR==1{print $2}') (tcpOnly, maxInFlight=$DNSDIST_INFLIGHT, no cache)"
      ;;
    unbound)
      {
        unbound_header "$SERVER_PORT" | sed "s|unbound.pid|unbound-forwarder-$tag.pid|"
        cat <<UB
  # The header refuses everything; names under miss.test. are forwarded.
  local-zone: "miss.test." transparent
  num-queries-per-thread: 4096
  outgoing-num-tcp: 16
forward-zone:
  name: "."
  forward-addr: 127.0.0.1@$UP_PORT
  forward-tcp-upstream: $([ "$PROTO" = udp ] && echo no || echo yes)
UB
      } > "$WORK/unbound-forwarder-$tag.conf"
      taskset -c 0 unbound -d -c "$WORK/unbound-forwarder-$tag.conf" >"$WORK/unbound-forwarder-$tag.log" 2>&1 &
      LABEL="Unbound $(unbound -V 2>/dev/null | awk 'NR==1{print $2}') (forwarder, $PROTO upstream)"
      ;;
  esac
  SERVER_PID=$!
  PIDS+=("$SERVER_PID")
}

# rows: kind, server index, round, label, qps, q/cpu-s, p50, p99, lost, peak conns, opened conns,
# mismatched, instructions/query, cycles/query (tab-separated)
ROWS="$WORK/rows.tsv"
: > "$ROWS"
for kind in "${KINDS[@]}"; do
  PIDS_OF=() PORTS_OF=() UPPORTS_OF=() LABELS_OF=() UPPIDS_OF=()
  for i in "${!WANT[@]}"; do
    tag="$kind-$i"
    case $kind in
      serial) start_bench_upstream "$tag" --serialize --delay-us 0 ;;
      unbound) start_unbound_upstream "$tag" ;;
      *) echo "unknown upstream kind $kind" >&2; exit 1 ;;
    esac
    start_server "${WANT[$i]}" "$tag"
    ready "$SERVER_PORT" || { echo "${WANT[$i]} did not answer; its log:" >&2; cat "$WORK"/*"$tag"*.log >&2 || true; exit 1; }
    # Unmeasured warm-up: connections opened, code paths warm.
    taskset -c 1 "$T/shardns-bench" load --unique -p "$SERVER_PORT" -l 2 -q "$OUTSTANDING" --json >/dev/null
    PIDS_OF+=("$SERVER_PID") PORTS_OF+=("$SERVER_PORT") UPPORTS_OF+=("$UP_PORT") LABELS_OF+=("$LABEL") UPPIDS_OF+=("$UP_PID")
  done
  for round in $(seq 1 "$ROUNDS"); do
    for i in "${!WANT[@]}"; do
      tag="$kind-$i" pid=${PIDS_OF[$i]}
      kill -0 "$pid" 2>/dev/null || { echo "${LABELS_OF[$i]} exited" >&2; exit 1; }
      opened_before=""
      [ "$kind" = serial ] && opened_before=$(up_stat "$tag" tcp_connections)
      conn_sampler "${UPPORTS_OF[$i]}" "$SECONDS_PER_RUN" "$WORK/conns" & sampler=$!
      perf_start "$pid" "$WORK/perf.csv"
      before=$(cpu_ticks "$pid")
      taskset -c 1 "$T/shardns-bench" load --unique -p "${PORTS_OF[$i]}" -l "$SECONDS_PER_RUN" -q "$OUTSTANDING" --json > "$WORK/run.json"
      after=$(cpu_ticks "$pid")
      read -r insns cycles <<<"$(perf_stop "$WORK/perf.csv")"
      kill "$sampler" 2>/dev/null || true; wait "$sampler" 2>/dev/null || true
      opened="-"
      if [ -n "$opened_before" ]; then
        sleep 0.3 # the stats file is rewritten every 100 ms
        opened=$(( $(up_stat "$tag" tcp_connections) - opened_before ))
      fi
      line=$(python3 - "$WORK/run.json" "$((after - before))" "$TICK" "$insns" "$cycles" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
cpu = int(sys.argv[2]) / int(sys.argv[3])
n = d["answered"]
per_cpu = n / cpu if cpu > 0 else 0
insns = int(sys.argv[4]) / n if n else 0
cycles = int(sys.argv[5]) / n if n else 0
l = d["latency_us"]
print("\t".join(str(x) for x in [round(d["qps"]), round(per_cpu), round(l["p50"]), round(l["p99"]), d["lost"], d["mismatched"],
                                  round(insns), round(cycles)]))
PY
)
      IFS=$'\t' read -r qps per_cpu p50 p99 lost mismatched insns_q cycles_q <<<"$line"
      peak=$(cat "$WORK/conns")
      printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$kind" "$i" "$round" "${LABELS_OF[$i]}" "$qps" "$per_cpu" "$p50" "$p99" "$lost" "$peak" "$opened" "$mismatched" "$insns_q" "$cycles_q" >> "$ROWS"
      echo "[$kind upstream] round $round ${LABELS_OF[$i]}: qps=$qps q/cpu_s=$per_cpu insns/q=$insns_q cycles/q=$cycles_q p50=${p50}us p99=${p99}us lost=$lost upstream conns peak=$peak opened=$opened" >&2
    done
  done
  # Totals of each bench upstream, then stop this kind's servers and upstreams.
  for i in "${!WANT[@]}"; do
    kill "${PIDS_OF[$i]}" 2>/dev/null || true; wait "${PIDS_OF[$i]}" 2>/dev/null || true
    kill "${UPPIDS_OF[$i]}" 2>/dev/null || true; wait "${UPPIDS_OF[$i]}" 2>/dev/null || true
  done
done

python3 - "$ROWS" "$OUTSTANDING" <<'PY'
import statistics, sys
from collections import defaultdict
rows = [line.rstrip("\n").split("\t") for line in open(sys.argv[1]) if line.strip()]
outstanding = sys.argv[2]
names = {"serial": "`shardns-bench upstream --serialize --delay-us 0` (answers each connection's queries one at a time, like CoreDNS)",
         "unbound": "Unbound, local data for miss.test."}
def med(xs):
    return statistics.median(xs)
def rng(xs, fmt="{:,.0f}"):
    return f"{fmt.format(med(xs))} ({fmt.format(min(xs))}-{fmt.format(max(xs))})"
for kind in dict.fromkeys(r[0] for r in rows):
    kr = [r for r in rows if r[0] == kind]
    servers = list(dict.fromkeys(r[1] for r in kr))
    label = {r[1]: r[3] for r in kr}
    by = defaultdict(list)  # (server, round) -> row
    for r in kr:
        by[(r[1], r[2])] = r
    rounds = sorted(set(r[2] for r in kr), key=int)
    peers = [s for s in servers if not label[s].startswith("shardns")]
    print(f"\n### Upstream: {names.get(kind, kind)}\n")
    print("| server (CPU 0) | answered QPS | q/CPU-s | q/CPU-s ÷ best peer, same round | server instructions / query | best peer's instructions ÷ these | cycles / query | p50 µs | p99 µs | lost | mismatched | upstream TCP conns: most open at once | opened during the run |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    # perf sometimes counts nothing on this VM (0): such runs are left out of these columns.
    counted = lambda rs, i: [float(r[i]) for r in rs if float(r[i]) > 0]
    insns_med = {s: med(counted([r for r in kr if r[1] == s], 12) or [0]) for s in servers}
    for s in servers:
        mine = [by[(s, r)] for r in rounds if (s, r) in by]
        qps = [float(r[4]) for r in mine]
        cpu = [float(r[5]) for r in mine]
        ratios = []
        for r in rounds:
            best = max((float(by[(p, r)][5]) for p in peers if (p, r) in by and p != s), default=None)
            if best and (s, r) in by:
                ratios.append(float(by[(s, r)][5]) / best)
        ratio = rng(ratios, "{:.2f}") if ratios else "n/a"
        p50 = med([float(r[6]) for r in mine]); p99 = med([float(r[7]) for r in mine])
        lost = sum(int(r[8]) for r in mine); mism = sum(int(r[11]) for r in mine)
        peak = max(int(r[9]) for r in mine)
        opened = [r[10] for r in mine]
        opened = "-" if "-" in opened else ", ".join(opened)
        insns = counted(mine, 12)
        cycles = counted(mine, 13)
        best_insns = min((insns_med[p] for p in peers if p != s and insns_med[p]), default=0)
        insns_ratio = f"{best_insns / med(insns):.2f}" if best_insns and insns else "n/a"
        insns_cell = rng(insns) if insns else "n/a"
        cycles_cell = rng(cycles) if cycles else "n/a"
        print(f"| {label[s]} | {rng(qps)} | {rng(cpu)} | {ratio} | {insns_cell} | {insns_ratio} | {cycles_cell} | {p50:,.0f} | {p99:,.0f} | {lost:,} | {mism:,} | {peak} | {opened} |")
    print(f"\nMedian (range) over {len(rounds)} rounds; p50/p99 are medians of the per-run percentiles; lost and mismatched are totals. "
          "For each peer the ratios are to the best *other* peer. Instructions and cycles are the server's "
          "(user + kernel, `perf stat -p`) per answered query, over the runs perf counted: instructions stay steady when the "
          "shared host's speed does not.")
PY
echo
echo "shardns-bench load --unique -q $OUTSTANDING -l $SECONDS_PER_RUN (closed loop, UDP, 64 source ports) on CPU 1 with the upstream; server on CPU 0; $ROUNDS interleaved rounds; $(nproc) CPUs; kernel $(uname -r); $(date -u +%Y-%m-%d)"
