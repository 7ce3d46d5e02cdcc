#!/usr/bin/env bash
# Lays out the root file system of the shardns image: the one place that decides what the
# image holds, run by the Dockerfile's build stage and by scripts/image.sh alike.
#
#   scripts/rootfs.sh BINARY DEST
#
# DEST (created; must be missing or empty) receives:
#   /usr/local/bin/shardns      BINARY, its debug information stripped (symbols kept)
#   /usr/sbin/xtables-{nft,legacy}-multi and the iptables/ip6tables names as symlinks:
#     iptables, iptables-save, iptables-restore (and ip6tables*) -> the nft backend,
#     iptables-nft* -> nft, iptables-legacy* -> legacy (node setup runs `iptables -w 5 ...`);
#   /usr/lib/shardns/iptables-legacy/  the plain names -> the legacy backend, for nodes whose
#     kube-proxy uses iptables-legacy (put this directory first in PATH);
#   the xtables extension modules (all of them: `iptables -S` must print whatever rules the
#     node already has in the chains shardns lists);
#   every shared library these link (found with ldd) and the dynamic loader, with Debian's
#     merged-/usr layout (/lib, /lib64, /bin, /sbin are links into /usr);
#   /etc/passwd and /etc/group (root, nobody), empty /tmp, /run/shardns (the hand-off
#     socket), /etc/coredns and /etc/kube-dns (the ConfigMap mounts).
#
# Needs: ldd, strip (binutils) and Debian's iptables package on the machine running it.
set -euo pipefail

if [ "$#" -ne 2 ]; then
    echo "usage: $0 BINARY DEST" >&2
    exit 2
fi
binary=$1
dest=$2

[ -f "$binary" ] && [ -x "$binary" ] || { echo "$binary: not an executable file" >&2; exit 1; }
if [ -e "$dest" ] && [ -n "$(ls -A "$dest")" ]; then
    echo "$dest: exists and is not empty" >&2
    exit 1
fi
for tool in ldd strip; do
    command -v "$tool" >/dev/null || { echo "$tool is missing" >&2; exit 1; }
done
sbin=/usr/sbin
for multi in xtables-nft-multi xtables-legacy-multi; do
    [ -x "$sbin/$multi" ] || { echo "$sbin/$multi is missing (install iptables)" >&2; exit 1; }
done
mkdir -p "$dest"
dest=$(cd "$dest" && pwd)

# Debian's merged /usr: the same top-level links as this machine, so that the paths ldd and
# the binaries' program interpreter name (/lib64/ld-linux-x86-64.so.2) resolve the same way.
for top in bin sbin lib lib64; do
    if [ -L "/$top" ]; then
        ln -s "$(readlink "/$top")" "$dest/$top"
    fi
done

# Copies PATH as it is on this machine: the directory by its real path, then each link of a
# chain of symbolic links, then the file.
copy_path() {
    local path=$1 dir name target
    for _ in 1 2 3 4 5 6 7 8; do
        dir=$(realpath "$(dirname "$path")")
        name=$(basename "$path")
        mkdir -p "$dest$dir"
        if [ -L "$dir/$name" ]; then
            target=$(readlink "$dir/$name")
            [ -e "$dest$dir/$name" ] || [ -L "$dest$dir/$name" ] || ln -s "$target" "$dest$dir/$name"
            case $target in
                /*) path=$target ;;
                *) path=$dir/$target ;;
            esac
        else
            [ -e "$dest$dir/$name" ] || cp -p "$dir/$name" "$dest$dir/$name"
            return 0
        fi
    done
    echo "$1: too many symbolic links" >&2
    exit 1
}

# The libraries ELF file FILE links, and its program interpreter, as absolute paths.
libraries_of() {
    local output
    output=$(ldd "$1") || { echo "ldd $1 failed: $output" >&2; exit 1; }
    if grep -q 'not found' <<<"$output"; then
        echo "$1: missing libraries: $output" >&2
        exit 1
    fi
    # "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" and "/lib64/ld-linux-x86-64.so.2 (0x...)"
    sed -nE 's/^\s*(\S+ => )?(\/\S+) \(0x[0-9a-f]+\)$/\2/p' <<<"$output"
}

# xtables' extension directory: next to libxtables, where xtables-*-multi look for modules.
libxtables=$(ldd "$sbin/xtables-nft-multi" | sed -nE 's/^\s*libxtables\.so\S* => (\S+) .*/\1/p')
[ -n "$libxtables" ] || { echo "xtables-nft-multi does not link libxtables" >&2; exit 1; }
xtables_dir=$(realpath "$(dirname "$libxtables")")/xtables
[ -d "$xtables_dir" ] || { echo "$xtables_dir is missing" >&2; exit 1; }

mkdir -p "$dest/usr/local/bin"
strip --strip-debug -o "$dest/usr/local/bin/shardns" "$binary"

elves=("$binary" "$sbin/xtables-nft-multi" "$sbin/xtables-legacy-multi" "$xtables_dir"/*.so)
copy_path "$sbin/xtables-nft-multi"
copy_path "$sbin/xtables-legacy-multi"
for module in "$xtables_dir"/*.so; do
    copy_path "$module"
done
for elf in "${elves[@]}"; do
    while read -r library; do
        copy_path "$library"
    done < <(libraries_of "$elf")
done

# The iptables names. argv[0] picks the tool inside xtables-*-multi.
for family in iptables ip6tables; do
    for suffix in "" -save -restore; do
        ln -s xtables-nft-multi "$dest$sbin/$family$suffix"
        ln -s xtables-nft-multi "$dest$sbin/$family-nft$suffix"
        ln -s xtables-legacy-multi "$dest$sbin/$family-legacy$suffix"
    done
done
legacy=/usr/lib/shardns/iptables-legacy
mkdir -p "$dest$legacy"
for family in iptables ip6tables; do
    for suffix in "" -save -restore; do
        ln -s "$sbin/xtables-legacy-multi" "$dest$legacy/$family$suffix"
    done
done

mkdir -p "$dest/etc" "$dest/tmp" "$dest/run/shardns" "$dest/etc/coredns" "$dest/etc/kube-dns"
chmod 1777 "$dest/tmp"
printf 'root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n' \
    >"$dest/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$dest/etc/group"

echo "$dest: $(du -sh --apparent-size "$dest" | cut -f1) ($(find "$dest" -type f | wc -l) files)"
