#!/usr/bin/env bash
# A Kubernetes node simulated with network namespaces, to try shardns without a cluster
# (root only; docs/deploy/node-sim.md):
#
#   pod       10.244.1.2, resolv.conf: nameserver 10.96.0.10 (the kube-dns ClusterIP), the
#             cluster's search path, ndots:5
#   node      routes between pod and upstream; kube-proxy's nat rules (KUBE-SERVICES ->
#             KUBE-SVC -> KUBE-SEP DNAT) for the kube-dns ClusterIP 10.96.0.10:53 and the
#             kube-dns-upstream Service 10.96.0.11:53, both to the CoreDNS pod 10.244.2.2;
#             shardns with node-cache's stock arguments and Corefile template
#             (169.254.20.10 and 10.96.0.10)
#   upstream  10.244.2.2: Unbound as "CoreDNS", answering cluster.local, 10.in-addr.arpa and
#             a fake external zone example.org over UDP and TCP; also the node's nameserver
#
# Usage: scripts/node-sim.sh COMMAND
#   up                 create the namespaces, start Unbound and shardns
#   down               stop everything and delete what `up` created
#   status             what runs, the rules, the conntrack entries, the upstream's counts
#   demo               up, a tour (dig, getent, conntrack, counts, a graceful stop under
#                      queries), down
#   pod CMD...         run CMD in the pod namespace (e.g. `pod dig kubernetes.default +search`)
#   node CMD...        run CMD in the node namespace
#   conntrack          the node's conntrack entries for pods' queries to 10.96.0.10:53
#   upstream-stats     the upstream's query counts: `udp=N tcp=N`
#   upstream-pause, upstream-resume
#                      stop (SIGSTOP) or resume (SIGCONT) the upstream: a slow upstream
#   metrics [REGEX]    the lines of shardns's metrics page (:9253) that match REGEX
#   stop-shardns       SIGTERM to shardns, wait for it to exit (≤ 15 s), its stop log
#   start-shardns      start shardns again (after stop-shardns)
#   probe SECONDS [STOP_AT [PORT]]
#                      from the pod, one `dig +tries=1 +timeout=2` after another for SECONDS
#                      (≤ 60); with STOP_AT (seconds, `-` for none), SIGTERM to shardns that
#                      far in; with PORT, every query from that source port (as a resolver
#                      that keeps its socket), else each from a new random one. Prints each
#                      lost query, then `sent=N answered=N lost=N max_ms=N`
#
# Environment: SHARDNS_BIN (else target/release/shardns, else target/debug/shardns);
# NODE_SIM_PREFIX (default shardns-sim: namespaces PREFIX-pod, PREFIX-node,
# PREFIX-upstream); NODE_SIM_DIR (state: configuration, logs, pids; default /run/PREFIX).
#
# Everything lives in the three namespaces, /etc/netns/PREFIX-pod/ and the state directory;
# `down` (also run when `up` or `demo` fails or is interrupted) removes all of it.

set -euo pipefail

PREFIX=${NODE_SIM_PREFIX:-shardns-sim}
STATE=${NODE_SIM_DIR:-/run/$PREFIX}
POD=$PREFIX-pod
NODE=$PREFIX-node
UPSTREAM=$PREFIX-upstream
NAMESPACES=("$POD" "$NODE" "$UPSTREAM")

LOCAL_IP=169.254.20.10
CLUSTER_IP=10.96.0.10
UPSTREAM_SVC_IP=10.96.0.11
POD_IP=10.244.1.2
POD_GW=10.244.1.1
COREDNS_IP=10.244.2.2
COREDNS_GW=10.244.2.1
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
die() {
    echo "node-sim: $*" >&2
    exit 1
}
in_ns() {
    local ns=$1
    shift
    ip netns exec "$ns" "$@"
}

shardns_bin() {
    local candidate
    for candidate in "${SHARDNS_BIN:-}" "$REPO/target/release/shardns" "$REPO/target/debug/shardns"; do
        if [[ -n $candidate && -x $candidate ]]; then
            echo "$candidate"
            return
        fi
    done
    die "no shardns binary: set SHARDNS_BIN or run cargo build -p shardns"
}

preflight() {
    [[ $(id -u) == 0 ]] || die "needs root (network namespaces, iptables)"
    local tool
    for tool in ip iptables unbound unbound-control dig getent conntrack setsid timeout; do
        command -v "$tool" >/dev/null || die "$tool is missing"
    done
}

# Whether process $1 runs (a zombie does not: its parent, once `up` has exited, is init,
# which may take a while to reap it).
alive() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [[ ${stat%% *} != Z ]]
}

# The process in pidfile $1 if it runs in namespace $2 (so never anything else's).
ours() {
    local pid
    pid=$(cat "$1" 2>/dev/null) || return 1
    [[ -n $pid ]] && alive "$pid" || return 1
    [[ $(ip netns identify "$pid" 2>/dev/null) == "$2" ]] || return 1
    echo "$pid"
}

# GET http://$1:$2$3 in the node namespace (≤ 5 s; bash's /dev/tcp, no HTTP client needed):
# the body on stdout; fails unless the status is 200.
http_get() {
    local response status
    response=$(in_ns "$NODE" timeout 5 bash -c \
        'exec 3<>"/dev/tcp/$0/$1" && printf "GET %s HTTP/1.0\r\nHost: %s\r\n\r\n" "$2" "$0" >&3 && cat <&3' \
        "$1" "$2" "$3" 2>/dev/null) || return 1
    status=${response%%$'\r'*}
    printf '%s\n' "${response#*$'\r\n\r\n'}"
    [[ $status == "HTTP/1."?" 200 "* ]]
}

# Waits ≤ $2 seconds for process $1 to exit.
wait_exit() {
    local pid=$1 tenths=$(($2 * 10))
    while alive "$pid"; do
        ((tenths-- > 0)) || return 1
        sleep 0.1
    done
}

down() {
    local pid ns
    for pair in "shardns.pid:$NODE" "unbound.pid:$UPSTREAM"; do
        if pid=$(ours "$STATE/${pair%%:*}" "${pair#*:}"); then
            kill -CONT "$pid" 2>/dev/null || true
            kill -TERM "$pid" 2>/dev/null || true
            wait_exit "$pid" 10 || kill -KILL "$pid" 2>/dev/null || true
        fi
    done
    for ns in "${NAMESPACES[@]}"; do
        [[ -e /var/run/netns/$ns ]] || continue
        # Anything else still in our namespaces was started in them by this script.
        for pid in $(ip netns pids "$ns" 2>/dev/null); do
            kill -KILL "$pid" 2>/dev/null || true
        done
        ip netns del "$ns" 2>/dev/null || true
        rm -rf "/etc/netns/$ns"
    done
    # /etc/netns itself only if `up` made it (and nothing else is in it now).
    [[ ! -e $STATE/made-etc-netns ]] || rmdir /etc/netns 2>/dev/null || true
    # Only the files this script writes, then the directory if that empties it.
    rm -rf "$STATE/upstream" "$STATE/node" "$STATE/pod"
    rm -f "$STATE"/*.pid "$STATE"/*.log "$STATE/made-etc-netns"
    rmdir "$STATE" 2>/dev/null || true
}

write_unbound_conf() {
    local dir=$STATE/upstream
    mkdir -p "$dir"
    cat >"$dir/unbound.conf" <<EOF
server:
    interface: $COREDNS_IP@53
    port: 53
    do-daemonize: no
    chroot: ""
    username: ""
    directory: "$dir"
    pidfile: "$dir/unbound.pid"
    logfile: "$dir/unbound.log"
    use-syslog: no
    verbosity: 1
    log-queries: yes
    num-threads: 1
    do-ip4: yes
    do-ip6: no
    do-udp: yes
    do-tcp: yes
    access-control: 0.0.0.0/0 allow
    module-config: "iterator"
    extended-statistics: yes
    minimal-responses: yes
    local-zone: "." static
    local-zone: "cluster.local." static
    local-data: "cluster.local. 30 IN SOA ns.dns.cluster.local. hostmaster.cluster.local. 1 7200 1800 86400 30"
    local-data: "kubernetes.default.svc.cluster.local. 30 IN A 10.96.0.1"
    local-data: "kube-dns.kube-system.svc.cluster.local. 30 IN A $CLUSTER_IP"
    local-data: "web.default.svc.cluster.local. 30 IN A 10.96.0.80"
    local-zone: "10.in-addr.arpa." static
    local-data: "10.in-addr.arpa. 30 IN SOA ns.dns.cluster.local. hostmaster.cluster.local. 1 7200 1800 86400 30"
    local-data-ptr: "10.96.0.1 kubernetes.default.svc.cluster.local."
    local-zone: "example.org." static
    local-data: "example.org. 300 IN SOA ns.example.org. hostmaster.example.org. 1 7200 1800 86400 300"
    local-data: "example.org. 300 IN A 192.0.2.1"
    local-data: "www.example.org. 300 IN A 192.0.2.80"
remote-control:
    control-enable: yes
    control-interface: "$dir/unbound.ctl"
EOF
}

# The node-cache inputs as the DaemonSet mounts them: the stock template (the
# node-local-dns ConfigMap, from proxy/testdata) and an empty kube-dns ConfigMap directory.
write_node_inputs() {
    local dir=$STATE/node
    mkdir -p "$dir/coredns" "$dir/kube-dns"
    cp "$REPO/proxy/testdata/Corefile.base" "$dir/coredns/Corefile.base"
    # The node's own resolv.conf: what `forward . __PILLAR__UPSTREAM__SERVERS__` names.
    echo "nameserver $COREDNS_IP" >"$dir/resolv.conf"
}

# kube-proxy's iptables mode for one Service port: KUBE-SERVICES -> KUBE-SVC -> KUBE-SEP.
service_rules() {
    local name=$1 ip=$2 protocol=$3 svc=$4 sep=$5
    in_ns "$NODE" iptables -t nat -N "$svc"
    in_ns "$NODE" iptables -t nat -N "$sep"
    in_ns "$NODE" iptables -t nat -A KUBE-SERVICES -d "$ip/32" -p "$protocol" --dport 53 \
        -m comment --comment "$name cluster IP" -j "$svc"
    in_ns "$NODE" iptables -t nat -A "$svc" -m comment --comment "$name -> $COREDNS_IP:53" -j "$sep"
    in_ns "$NODE" iptables -t nat -A "$sep" -p "$protocol" -m comment --comment "$name" \
        -j DNAT --to-destination "$COREDNS_IP:53"
}

up() {
    preflight
    shardns_bin >/dev/null
    for ns in "${NAMESPACES[@]}"; do
        [[ ! -e /var/run/netns/$ns ]] || die "namespace $ns exists: run '$0 down' first"
    done
    trap 'echo "node-sim: up failed; cleaning up" >&2; down' EXIT
    mkdir -p "$STATE"
    for ns in "${NAMESPACES[@]}"; do
        ip netns add "$ns"
        in_ns "$ns" ip link set lo up
    done
    # Created inside the namespaces: no name ever appears in the host's namespace.
    ip link add eth0 netns "$POD" type veth peer name veth-pod netns "$NODE"
    ip link add eth0 netns "$UPSTREAM" type veth peer name veth-coredns netns "$NODE"
    in_ns "$POD" ip addr add "$POD_IP/24" dev eth0
    in_ns "$POD" ip link set eth0 up
    in_ns "$POD" ip route add default via "$POD_GW"
    in_ns "$UPSTREAM" ip addr add "$COREDNS_IP/24" dev eth0
    in_ns "$UPSTREAM" ip link set eth0 up
    in_ns "$UPSTREAM" ip route add default via "$COREDNS_GW"
    in_ns "$NODE" ip addr add "$POD_GW/24" dev veth-pod
    in_ns "$NODE" ip addr add "$COREDNS_GW/24" dev veth-coredns
    in_ns "$NODE" ip link set veth-pod up
    in_ns "$NODE" ip link set veth-coredns up
    in_ns "$NODE" sysctl -qw net.ipv4.ip_forward=1
    # The node's default route, for the Service CIDR only: a connect() to a Service IP needs a
    # route before kube-proxy's DNAT rewrites the destination.
    in_ns "$NODE" ip route add 10.96.0.0/12 via "$COREDNS_IP"

    # The pod's resolver, as kubelet writes it (ip netns exec mounts it on /etc/resolv.conf).
    [[ -d /etc/netns ]] || touch "$STATE/made-etc-netns"
    mkdir -p "/etc/netns/$POD"
    cat >"/etc/netns/$POD/resolv.conf" <<EOF
search default.svc.cluster.local svc.cluster.local cluster.local
nameserver $CLUSTER_IP
options ndots:5
EOF

    # kube-proxy (iptables mode); KUBE-SVC names as kube-proxy hashes kube-system/kube-dns.
    in_ns "$NODE" iptables -t nat -N KUBE-SERVICES
    in_ns "$NODE" iptables -t nat -A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
    in_ns "$NODE" iptables -t nat -A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
    service_rules "kube-system/kube-dns:dns" "$CLUSTER_IP" udp KUBE-SVC-TCOU7JCQXEZGVUNU KUBE-SEP-SIMKUBEDNSUDP
    service_rules "kube-system/kube-dns:dns-tcp" "$CLUSTER_IP" tcp KUBE-SVC-ERIFXISQEP7F7OF4 KUBE-SEP-SIMKUBEDNSTCP
    service_rules "kube-system/kube-dns-upstream:dns" "$UPSTREAM_SVC_IP" udp KUBE-SVC-SIMUPSTREAMUDP KUBE-SEP-SIMUPSTREAMUDP
    service_rules "kube-system/kube-dns-upstream:dns-tcp" "$UPSTREAM_SVC_IP" tcp KUBE-SVC-SIMUPSTREAMTCP KUBE-SEP-SIMUPSTREAMTCP

    write_unbound_conf
    setsid ip netns exec "$UPSTREAM" unbound -d -c "$STATE/upstream/unbound.conf" \
        </dev/null >"$STATE/unbound.log" 2>&1 &
    echo $! >"$STATE/unbound.pid"
    local tries=50
    until in_ns "$UPSTREAM" dig +short +tries=1 +timeout=1 "@$COREDNS_IP" cluster.local SOA >/dev/null 2>&1; do
        ((tries-- > 0)) || {
            cat "$STATE/unbound.log" "$STATE/upstream/unbound.log" >&2 || true
            die "unbound did not answer within 5 s"
        }
        sleep 0.1
    done

    start_shardns
    trap - EXIT
    echo "node-sim up: namespaces ${NAMESPACES[*]}; shardns pid $(cat "$STATE/shardns.pid") ($(shardns_bin)); state in $STATE"
}

# shardns as the node-local-dns DaemonSet runs it: the stock arguments (-localip, -conf,
# -upstreamsvc) and the ConfigMap mounts; the local IPs on a dummy interface as node-cache
# makes it, or on lo where the kernel has no dummy link type. Waits until /ready says 200.
start_shardns() {
    local bin dir=$STATE/node interface=() tries=100
    bin=$(shardns_bin)
    ! ours "$STATE/shardns.pid" "$NODE" >/dev/null || die "shardns runs already"
    write_node_inputs
    if in_ns "$NODE" ip link add shardns-probe type dummy 2>/dev/null; then
        in_ns "$NODE" ip link del shardns-probe
    else
        interface=(-setupinterface=false)
        in_ns "$NODE" ip addr replace "$LOCAL_IP/32" dev lo
        in_ns "$NODE" ip addr replace "$CLUSTER_IP/32" dev lo
    fi
    setsid ip netns exec "$NODE" env -u RUST_LOG KUBE_DNS_UPSTREAM_SERVICE_HOST="$UPSTREAM_SVC_IP" \
        "$bin" -localip "$LOCAL_IP,$CLUSTER_IP" -conf "$dir/Corefile" -upstreamsvc kube-dns-upstream \
        -basecorefile "$dir/coredns/Corefile.base" -kubednscm "$dir/kube-dns" "${interface[@]}" \
        --resolv-conf "$dir/resolv.conf" --handoff-socket "$dir/handoff.sock" \
        </dev/null >>"$STATE/shardns.log" 2>&1 &
    local pid=$!
    echo "$pid" >"$STATE/shardns.pid"
    until http_get "$LOCAL_IP" 8080 /ready >/dev/null 2>&1; do
        if ! alive "$pid" || ((tries-- <= 0)); then
            tail -30 "$STATE/shardns.log" >&2
            die "shardns (pid $pid) not ready within 10 s"
        fi
        sleep 0.1
    done
    echo "shardns ready (pid $pid)"
}

conntrack_entries() {
    # -L prints the entries on stdout and the count on stderr.
    in_ns "$NODE" conntrack -L -s "$POD_IP" -d "$CLUSTER_IP" 2>/dev/null | grep -E 'dport=53( |$)' || true
}

upstream_stats() {
    local stats total tcp
    stats=$(unbound-control -c "$STATE/upstream/unbound.conf" stats_noreset)
    total=$(sed -n 's/^total.num.queries=//p' <<<"$stats")
    tcp=$(sed -n 's/^num.query.tcp=//p' <<<"$stats")
    echo "udp=$((total - tcp)) tcp=$tcp"
}

stop_shardns() {
    local pid started
    pid=$(ours "$STATE/shardns.pid" "$NODE") || die "shardns is not running"
    local logged
    logged=$(wc -l <"$STATE/shardns.log")
    started=$(date +%s%N)
    kill -TERM "$pid"
    wait_exit "$pid" 15 || die "shardns did not exit within 15 s after SIGTERM"
    echo "shardns (pid $pid) exited $((($(date +%s%N) - started) / 1000000)) ms after SIGTERM"
    tail -n +$((logged + 1)) "$STATE/shardns.log" | grep -E "iptables rules removed|stopped in" || true
}

# One dig after another from the pod for $1 seconds; SIGTERM to shardns $2 seconds in; from
# source port $3.
probe() {
    local seconds=${1:-5} stop_at=${2:--} port=${3:-} name=kubernetes.default.svc.cluster.local.
    ((seconds >= 1 && seconds <= 60)) || die "probe: SECONDS must be 1..60"
    [[ $stop_at == - ]] && stop_at=""
    local source=()
    [[ -z $port ]] || source=(-b "$POD_IP#$port")
    local sent=0 answered=0 lost=0 max=0 now start end stopper=""
    start=$(date +%s%N)
    end=$((start + seconds * 1000000000))
    if [[ -n $stop_at ]]; then
        (sleep "$stop_at" && stop_shardns >"$STATE/probe-stop.log" 2>&1) &
        stopper=$!
    fi
    while now=$(date +%s%N) && ((now < end)); do
        local out ms
        sent=$((sent + 1))
        if out=$(in_ns "$POD" dig "${source[@]}" +tries=1 +timeout=2 "$name" A 2>&1) &&
            grep -q "status: NOERROR" <<<"$out" && grep -q "10\.96\.0\.1$" <<<"$out"; then
            answered=$((answered + 1))
            ms=$(sed -n 's/^;; Query time: \([0-9]*\) msec/\1/p' <<<"$out")
            ((ms > max)) && max=$ms
        else
            lost=$((lost + 1))
            echo "lost query $sent at +$(((now - start) / 1000000)) ms: $(grep -E 'status:|timed out|refused|SERVER' <<<"$out" | tr '\n' ' ')"
        fi
    done
    if [[ -n $stopper ]]; then
        wait "$stopper" || true
        cat "$STATE/probe-stop.log"
    fi
    echo "sent=$sent answered=$answered lost=$lost max_ms=$max"
}

status() {
    local ns pid
    for ns in "${NAMESPACES[@]}"; do
        if [[ -e /var/run/netns/$ns ]]; then echo "namespace $ns: present"; else echo "namespace $ns: absent"; fi
    done
    if pid=$(ours "$STATE/unbound.pid" "$UPSTREAM"); then echo "unbound: pid $pid"; else echo "unbound: not running"; fi
    if pid=$(ours "$STATE/shardns.pid" "$NODE"); then
        echo "shardns: pid $pid, /ready: $(http_get "$LOCAL_IP" 8080 /ready || true)"
    else
        echo "shardns: not running"
    fi
    [[ -e /var/run/netns/$NODE ]] || return 0
    echo "node-cache rules: $(in_ns "$NODE" iptables-save | grep -c 'NodeLocal DNS Cache' || true)"
    echo "conntrack entries for $POD_IP -> $CLUSTER_IP:53: $(conntrack_entries | grep -c . || true)"
    [[ -S $STATE/upstream/unbound.ctl ]] && echo "upstream queries: $(upstream_stats)"
    return 0
}

metrics() {
    http_get 127.0.0.1 9253 /metrics | grep -E "${1:-.}" || true
}

# Runs CMD in namespace $1 (pod or node), showing it as a prompt there.
shown() {
    local where=$1 ns
    shift
    [[ $where == pod ]] && ns=$POD || ns=$NODE
    echo "$where\$ $*"
    in_ns "$ns" "$@" 2>&1 | sed 's/^/  /'
}

demo() {
    say "up: three namespaces, kube-proxy's DNAT, Unbound upstream, shardns with node-cache's arguments"
    up
    trap 'echo "node-sim: cleaning up" >&2; down' EXIT
    shown node iptables -t nat -S KUBE-SERVICES
    echo "node-cache's rules, installed by shardns: $(in_ns "$NODE" iptables-save | grep -c 'NodeLocal DNS Cache'); those for pods' queries:"
    in_ns "$NODE" iptables-save -t raw | grep -- "-A PREROUTING -d $CLUSTER_IP" | sed 's/^/  /'

    say "pod: dig and getaddrinfo through resolv.conf (nameserver $CLUSTER_IP)"
    shown pod cat /etc/resolv.conf
    local before
    before=$(upstream_stats)
    shown pod dig +noall +answer +stats kubernetes.default.svc.cluster.local
    shown pod dig +noall +answer +search kubernetes.default
    shown pod getent ahosts kubernetes.default
    shown pod getent ahosts www.example.org
    shown pod getent hosts 10.96.0.1
    shown pod dig +tcp +noall +answer www.example.org

    say "answered by shardns: its counters at $CLUSTER_IP:53; conntrack in the node has no entry (NOTRACK)"
    metrics "^coredns_dns_requests_total.*server=\"dns://$CLUSTER_IP:53\"" | sed 's/^/  /'
    echo "node\$ conntrack -L -s $POD_IP -d $CLUSTER_IP | grep -c dport=53"
    echo "  $(conntrack_entries | grep -c . || true)"

    say "the upstream (Unbound) counts: cluster.local misses arrive over TCP (the template's force_tcp)"
    echo "  before the pod's queries: $before"
    echo "  after them:               $(upstream_stats)"
    shown pod dig +short kubernetes.default.svc.cluster.local
    echo "  after one more (a hit):   $(upstream_stats)"

    say "graceful stop: SIGTERM to shardns 1 s into 4 s of back-to-back pod queries (dig +tries=1)"
    probe 4 1 | sed 's/^/  /'

    say "after the stop: the pod resolves through kube-proxy's DNAT to $COREDNS_IP"
    shown pod dig +noall +answer kubernetes.default.svc.cluster.local
    shown pod getent ahosts www.example.org
    local entries
    entries=$(conntrack_entries)
    echo "node\$ conntrack -L -s $POD_IP -d $CLUSTER_IP | grep dport=53"
    echo "  $(grep -c . <<<"$entries") entries, the first 3:"
    head -3 <<<"$entries" | sed 's/^/  /'
    echo "  upstream counts: $(upstream_stats)"

    say "down"
    down
    trap - EXIT
    echo "node-sim down"
}

command=${1:-}
shift || true
case $command in
up) up ;;
down) preflight && down && echo "node-sim down" ;;
status) status ;;
demo) preflight && demo ;;
pod) in_ns "$POD" "$@" ;;
node) in_ns "$NODE" "$@" ;;
conntrack) conntrack_entries ;;
upstream-stats) upstream_stats ;;
metrics) metrics "$@" ;;
upstream-pause | upstream-resume)
    pid=$(ours "$STATE/unbound.pid" "$UPSTREAM") || die "unbound is not running"
    if [[ $command == upstream-pause ]]; then kill -STOP "$pid"; else kill -CONT "$pid"; fi
    ;;
stop-shardns) stop_shardns ;;
start-shardns) start_shardns ;;
probe) probe "$@" ;;
*)
    sed -n '2,/^$/s/^# \{0,1\}//p' "$0" >&2
    exit 2
    ;;
esac
