# Shared by scripts/bench-miss.sh and scripts/bench-inflight.sh (source it after
# scripts/bench-lib.sh and bench_init, with T set to the directory of the release binaries):
# - start_bench_upstream NAME ARGS...: `shardns-bench upstream 127.0.0.1:0 ARGS` on CPU 1,
#   counters in $WORK/upstream-NAME.json; sets UP_PORT and UP_PID;
# - start_unbound_upstream NAME: an Unbound on CPU 1 that answers every name under miss.test.
#   (A 192.0.2.1, TTL 300) and refuses everything else; sets UP_PORT and UP_PID;
# - ready PORT: waits until a server answers `load --unique` queries with NOERROR;
# - conn_sampler PORT SECONDS FILE: the most ESTABLISHED TCP connections to 127.0.0.1:PORT
#   seen in /proc/net/tcp, sampled every 0.2 s, kept in FILE (run it in the background);
# - perf_start PID FILE / perf_stop FILE: `perf stat` of the server's instructions and cycles
#   (user + kernel) while the load runs; perf_stop prints "INSTRUCTIONS CYCLES" (0 0 where perf
#   cannot count, e.g. a VM that hides the PMU);
# - cpu_ticks PID, json FILE EXPR, up_stat NAME FIELD.

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
TICK=$(getconf CLK_TCK)

PERF=""
if command -v perf >/dev/null && perf stat -x, -e instructions -- true >/dev/null 2>&1; then PERF=1; fi
PERF_PID=""
perf_start() { # pid file
  PERF_PID=""
  [ -n "$PERF" ] || return 0
  taskset -c 1 perf stat -x, -e instructions,cycles -p "$1" -o "$2" & PERF_PID=$!
}
perf_stop() { # file
  if [ -z "$PERF_PID" ]; then echo "0 0"; return 0; fi
  kill -INT "$PERF_PID" 2>/dev/null || true
  wait "$PERF_PID" 2>/dev/null || true
  awk -F, '$3 ~ /^instructions/ {i = $1} $3 ~ /^cycles/ {c = $1} END {printf "%.0f %.0f\n", i, c}' "$1"
}

json() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))" "$@"; }

start_bench_upstream() { # name args...
  local name=$1; shift
  local err="$WORK/upstream-$name.err"
  taskset -c 1 "$T/shardns-bench" upstream 127.0.0.1:0 --stats-file "$WORK/upstream-$name.json" "$@" \
    2>"$err" >"$WORK/upstream-$name.out" &
  UP_PID=$!
  PIDS+=("$UP_PID")
  UP_PORT=""
  for _ in $(seq 1 50); do
    UP_PORT=$(awk '/^upstream on/ {n = split($3, a, ":"); print a[n]; exit}' "$err")
    [ -n "$UP_PORT" ] && return 0
    sleep 0.1
  done
  echo "shardns-bench upstream did not start:" >&2; cat "$err" >&2; return 1
}

# A counter of the bench upstream NAME (its stats file is rewritten every 100 ms).
up_stat() { # name field
  json "$WORK/upstream-$1.json" "d['$2']"
}

start_unbound_upstream() { # name
  local name=$1
  UP_PORT=$(free_port)
  {
    unbound_header "$UP_PORT" | sed "s|unbound.pid|unbound-upstream-$name.pid|"
    cat <<UB
  incoming-num-tcp: 1024
  num-queries-per-thread: 4096
  # Every name under miss.test. gets the zone's own data: 17.abc.miss.test. 300 IN A 192.0.2.1.
  local-zone: "miss.test." redirect
  local-data: "miss.test. 300 IN A 192.0.2.1"
UB
  } > "$WORK/unbound-upstream-$name.conf"
  taskset -c 1 unbound -d -c "$WORK/unbound-upstream-$name.conf" >"$WORK/unbound-upstream-$name.log" 2>&1 &
  UP_PID=$!
  PIDS+=("$UP_PID")
  ready "$UP_PORT" || { cat "$WORK/unbound-upstream-$name.log" >&2; return 1; }
}

ready() { # port
  local out="$WORK/ready.json"
  for _ in $(seq 1 40); do
    if taskset -c 1 "$T/shardns-bench" load --unique -p "$1" -l 0.2 -q 4 --timeout-ms 300 --json >"$out" 2>/dev/null &&
       [ "$(json "$out" "int(d['answered'] > 0 and list(d['rcodes']) == ['NOERROR'])")" = 1 ]; then
      return 0
    fi
    sleep 0.25
  done
  echo "nothing on port $1 answered NOERROR" >&2
  return 1
}

conn_sampler() { # port seconds file
  local hex max=0 n
  hex=$(printf '%04X' "$1")
  echo 0 > "$3"
  for _ in $(seq 1 $(( ($2 + 2) * 5 ))); do
    n=$(awk -v p="$hex" 'NR > 1 && $4 == "01" && substr($3, length($3) - 3) == p {n++} END {print n + 0}' /proc/net/tcp)
    if [ "$n" -gt "$max" ]; then max=$n; echo "$max" > "$3"; fi
    sleep 0.2
  done
}
