#!/usr/bin/env bash
# Builds the shardns container image here, without any registry, and saves it as an OCI
# archive:
#
#   scripts/image.sh [--binary PATH] [--output FILE] [--name NAME]
#
#   --binary PATH  the shardns binary to put in the image (default: build it with
#                  `cargo build --release --locked -p shardns --features fastpath` (clang,
#                  libbpf-dev) and use target/release/shardns)
#   --output FILE  where to save the image (default: target/image/shardns.oci.tar)
#   --name NAME    the image's name (default: localhost/shardns); tagged NAME:VERSION (the
#                  binary's version) and NAME:latest
#
# The root file system is laid out by scripts/rootfs.sh (as the Dockerfile's build stage
# does), then `podman build` runs deploy/podman/Containerfile (FROM scratch). Podman uses
# deploy/podman/containers.conf unless CONTAINERS_CONF is set. Prints the archive's path last.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

binary=""
output="$root/target/image/shardns.oci.tar"
name="localhost/shardns"
while [ "$#" -gt 0 ]; do
    case $1 in
        --binary) binary=${2:?--binary needs a path}; shift 2 ;;
        --output) output=${2:?--output needs a path}; shift 2 ;;
        --name) name=${2:?--name needs a name}; shift 2 ;;
        -h|--help) sed -n '2,17p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done

export CONTAINERS_CONF="${CONTAINERS_CONF:-$root/deploy/podman/containers.conf}"
command -v podman >/dev/null || { echo "podman is missing (Debian: apt-get install podman buildah runc)" >&2; exit 1; }

if [ -z "$binary" ]; then
    (cd "$root" && cargo build --release --locked -p shardns --features fastpath)
    binary="$root/target/release/shardns"
fi
binary="$(realpath "$binary")"
version="$("$binary" --version | awk '{ print $2 }')"
[ -n "$version" ] || { echo "$binary --version printed no version" >&2; exit 1; }

mkdir -p "$root/target/image"
context="$(mktemp -d "$root/target/image/context.XXXXXX")"
trap 'rm -rf "$context"' EXIT
"$root/scripts/rootfs.sh" "$binary" "$context/rootfs"
cp "$root/deploy/podman/Containerfile" "$context/Containerfile"

# The commit's time as every timestamp in the image, so that the same inputs give the same
# image.
epoch="$(git -C "$root" log -1 --format=%ct 2>/dev/null || echo 0)"
previous="$(podman image inspect --format '{{.Id}}' "$name:$version" 2>/dev/null || true)"
podman build --quiet --timestamp "$epoch" --network none \
    --tag "$name:$version" --tag "$name:latest" \
    --file "$context/Containerfile" "$context" >/dev/null

# The image this one replaces under NAME:VERSION, if nothing else names or uses it.
current="$(podman image inspect --format '{{.Id}}' "$name:$version")"
if [ -n "$previous" ] && [ "$previous" != "$current" ]; then
    podman rmi "$previous" >/dev/null 2>&1 || true
fi

mkdir -p "$(dirname "$output")"
rm -f "$output"
podman save --quiet --format oci-archive --output "$output" "$name:$version"
unpacked="$(podman image inspect --format '{{.Size}}' "$name:$version")"
echo "image $name:$version (also :latest): $((unpacked / 1024)) KiB unpacked, archive $(( $(stat -c %s "$output") / 1024 )) KiB"
echo "$output"
