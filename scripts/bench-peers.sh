#!/usr/bin/env bash
# Installs the Debian packages the benchmarks use: dnsperf (load), dnsdist (peer with a packet
# cache), unbound (upstream and peer), dnsmasq-base (peer), dnsutils (dig). Run as root.
set -euo pipefail
missing=()
for pair in dnsperf:dnsperf dnsdist:dnsdist unbound:unbound dnsmasq:dnsmasq-base dig:dnsutils; do
  command -v "${pair%%:*}" >/dev/null || missing+=("${pair#*:}")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "missing: ${missing[*]}; run as root or: apt-get install ${missing[*]}" >&2
  exit 1
fi
apt-get update
DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
