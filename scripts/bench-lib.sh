# Shared by the scripts/bench-*.sh scripts (source it from the repository root):
# - bench_init NAME: a work directory in $WORK, removed on exit, and every pid added to the
#   PIDS array killed on exit;
# - free_port: a free TCP port on 127.0.0.1;
# - unbound_header PORT: the `server:` clause of an Unbound on 127.0.0.1@PORT that answers
#   only from the local data the caller appends and never recurses (nothing leaves the machine).

bench_cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}

bench_init() {
  WORK=$(mktemp -d "/tmp/shardns-$1.XXXXXX")
  PIDS=()
  trap bench_cleanup EXIT
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

unbound_header() {
  cat <<UB
server:
  interface: 127.0.0.1@$1
  do-not-query-localhost: no
  chroot: ""
  username: ""
  pidfile: "$WORK/unbound.pid"
  use-syslog: no
  verbosity: 0
  num-threads: 1
  access-control: 127.0.0.0/8 allow
  module-config: "iterator"
  # Never recurse: every name outside the static zones is refused locally.
  local-zone: "." refuse
UB
}
