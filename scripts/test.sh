#!/usr/bin/env bash
# Runs the whole test suite: unit tests of every crate and the end-to-end tests
# (tests/, package shardns-e2e), which drive the real shardns binary against a real
# Unbound and use dig, check the metrics page with Prometheus's promtool, and set up nodes
# in network namespaces with ip and iptables (both iptables-nft and iptables-legacy), see
# conntrack tables with conntrack, build the fast path's BPF program with clang (libbpf-dev's
# headers), run the image with podman and check the deploy files with
# yamllint, kubectl kustomize, kubernetes-validate (PyPI) and @grafana/schema (npm).
# Installs them first when they are missing (as root, from Debian's packages, PyPI and npm).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]; }

# kubectl comes from Debian's kubernetes-client where the machine has none of its own; its
# built-in kustomize renders the overlays offline.
packages="unbound dnsutils prometheus iproute2 iptables conntrack podman buildah runc containernetworking-plugins fuse-overlayfs slirp4netns uidmap yamllint clang libbpf-dev"
command -v kubectl >/dev/null 2>&1 || packages="$packages kubernetes-client"

missing=()
for tool in unbound unbound-control dig promtool ip iptables-nft iptables-legacy conntrack podman buildah runc yamllint kubectl clang; do
    have "$tool" || missing+=("$tool")
done

if [ "${#missing[@]}" -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "missing: ${missing[*]}" >&2
        echo "install them with: sudo apt-get install -y --no-install-recommends $packages" >&2
        exit 1
    fi
    echo "installing $packages (missing: ${missing[*]})"
    # Debian's postinst would start a system-wide Unbound on port 53; forbid service
    # start-ups for the duration of the install (policy-rc.d exit 101 = "denied").
    policy_created=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        policy_created=1
    fi
    status=0
    {
        apt-get update -qq &&
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $packages
    } || status=$?
    if [ "$policy_created" -eq 1 ]; then
        rm -f /usr/sbin/policy-rc.d
    fi
    [ "$status" -eq 0 ] || { echo "apt-get failed ($status)" >&2; exit "$status"; }
    # Should a system Unbound or Prometheus be running anyway, stop it: the tests never use
    # their ports, but nothing else should answer there either.
    for service in unbound prometheus; do
        if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$service" 2>/dev/null; then
            systemctl stop "$service" || true
        fi
    done
fi

# kubernetes-validate checks the manifests against the Kubernetes schemas it carries.
if ! command -v kubernetes-validate >/dev/null 2>&1; then
    echo "installing kubernetes-validate (PyPI)"
    python3 -m pip install --quiet --disable-pip-version-check kubernetes-validate
fi

# The dashboard's type check (deploy/grafana/check) needs node and the npm packages pinned in
# its package-lock.json (@grafana/schema, typescript).
if ! { command -v node && command -v npm; } >/dev/null 2>&1 && [ "$(id -u)" -eq 0 ]; then
    echo "installing nodejs npm"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nodejs npm
fi
if [ ! -x deploy/grafana/check/node_modules/.bin/tsc ] && command -v npm >/dev/null 2>&1; then
    echo "installing deploy/grafana/check's packages (npm ci)"
    npm ci --no-audit --no-fund --prefix deploy/grafana/check
fi

# The end-to-end tests run target/<profile>/shardns: build it (and everything) first. The fast
# path's BPF program (fastpath/, feature `bpf`) is built with clang and tested on veths.
features="shardns-fastpath/bpf"
cargo build --workspace --locked --features "$features"

log="$(mktemp)"
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace --locked --no-fail-fast --features "$features" 2>&1 | tee "$log" || status=$?

# cargo's last block is a doc-test run that may hold no test: close on the overall count.
sum() { sed -nE "s/^test result: .* ([0-9]+) $1.*/\1/p" "$log" | awk '{ s += $1 } END { print s + 0 }'; }
echo
echo "total: $(sum passed) passed, $(sum failed) failed, $(sum ignored) skipped"
exit "$status"
