#!/usr/bin/env python3
"""Writes deploy/seccomp/shardns.json: the container runtime's default seccomp profile plus the
three io_uring system calls, which every current default blocks.

    scripts/seccomp-profile.py [--source PATH] [--arch amd64] [--cap CAP ...] [--output PATH]

The source is containers-common's default (/usr/share/containers/seccomp.json: what podman
and CRI-O apply when no profile is named). That file is in the Docker/moby format: entries
are conditional on the architecture and on the container's capabilities ("includes" /
"excludes"). containerd reads a Localhost profile as a plain OCI runtime-spec
LinuxSeccomp and would ignore those conditions (applying every entry, the capability-gated
allows included), so the profile is resolved here the way podman resolves it for one
container: for the architecture ARCH (Go's name) and the capabilities CAPs (the DaemonSet's:
NET_ADMIN and NET_BIND_SERVICE). The result is in the runtime-spec form that containerd,
CRI-O and podman all read, and behaves, io_uring apart, exactly as podman's default does for
such a container. Output is deterministic: rerunning on the same source gives the same bytes
(tests/tests/image.rs checks the shipped file against this machine's default).
"""

import argparse
import json
import sys

IO_URING = ["io_uring_enter", "io_uring_register", "io_uring_setup"]
DEFAULT_CAPS = ["CAP_NET_ADMIN", "CAP_NET_BIND_SERVICE"]

# containers-common's archMap keys per Go architecture name.
NATIVE = {
    "amd64": "SCMP_ARCH_X86_64",
    "arm64": "SCMP_ARCH_AARCH64",
    "ppc64le": "SCMP_ARCH_PPC64LE",
    "s390x": "SCMP_ARCH_S390X",
}


def applies(condition, arch, caps, negate):
    """Whether an entry's includes (negate=False) or excludes (negate=True) let it apply."""
    unknown = set(condition) - {"arches", "caps"}
    if unknown:
        sys.exit(f"unsupported condition {sorted(unknown)} in the source profile")
    hits = []
    if condition.get("arches"):
        hits.append(arch in condition["arches"])
    if condition.get("caps"):
        hits.append(any(cap in caps for cap in condition["caps"]))
    if not hits:
        return True
    return not any(hits) if negate else all(hits)


def resolve(source, arch, caps):
    native = NATIVE.get(arch)
    if native is None:
        sys.exit(f"unknown architecture {arch} (known: {', '.join(NATIVE)})")
    architectures = []
    for entry in source.get("archMap") or []:
        if entry["architecture"] == native:
            architectures = [native] + entry.get("subArchitectures", [])
    if not architectures:
        sys.exit(f"{native} is not in the source profile's archMap")
    syscalls = []
    for entry in source["syscalls"]:
        if not applies(entry.get("includes") or {}, arch, caps, negate=False):
            continue
        if not applies(entry.get("excludes") or {}, arch, caps, negate=True):
            continue
        rule = {"names": entry["names"], "action": entry["action"]}
        if entry.get("args"):
            rule["args"] = entry["args"]
        if "errnoRet" in entry:
            rule["errnoRet"] = entry["errnoRet"]
        if entry.get("comment"):
            rule["comment"] = entry["comment"]
        syscalls.append(rule)
    allowed = {name for rule in syscalls if rule["action"] == "SCMP_ACT_ALLOW" for name in rule["names"]}
    present = sorted(set(IO_URING) & allowed)
    if present:
        sys.exit(f"the source profile already allows {present}: nothing to add")
    syscalls.append(
        {
            "names": IO_URING,
            "action": "SCMP_ACT_ALLOW",
            "comment": "shardns: io_uring (--io auto/uring); the only change to the default",
        }
    )
    profile = {"defaultAction": source["defaultAction"]}
    if "defaultErrnoRet" in source:
        profile["defaultErrnoRet"] = source["defaultErrnoRet"]
    profile["architectures"] = architectures
    profile["syscalls"] = syscalls
    return profile


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", default="/usr/share/containers/seccomp.json")
    parser.add_argument("--arch", default="amd64")
    parser.add_argument("--cap", action="append", dest="caps", help="repeatable; default: " + " ".join(DEFAULT_CAPS))
    parser.add_argument("--output", default="-", help="default: standard output")
    options = parser.parse_args()
    with open(options.source, encoding="utf-8") as file:
        source = json.load(file)
    text = json.dumps(resolve(source, options.arch, options.caps or DEFAULT_CAPS), indent=2) + "\n"
    if options.output == "-":
        sys.stdout.write(text)
    else:
        with open(options.output, "w", encoding="utf-8") as file:
            file.write(text)


if __name__ == "__main__":
    main()
