#!/usr/bin/env python3
"""The in-kernel fast path's bench mode (issue 14), side by side in one run.

    scripts/bench-fastpath.py [--rounds N] [--seconds S] [--names N] [--output FILE]

Builds the topology of a node in network namespaces: a "node" namespace with the node-local
IP 169.254.20.10 on `lo` and a synthetic upstream (`shardns-bench upstream`, TTL 300) on
127.0.0.1:5300, a "pod" namespace joined to it by a veth pair. The server under test runs in
the node pinned to --server-cpu; the load generator (`shardns-bench load`, plain UDP queries
for --names cached names) runs in the pod pinned to --load-cpu. Three servers, interleaved in
every round (A, B, C, A, B, C, ...):

- `floor`: `shardns-bench reflect`, the recvmmsg/sendmmsg echo (the socket path's floor);
- `socket`: shardns (one shard, epoll) with `cache`, every query a cache hit;
- `fastpath`: the same with `fastpath veth-node`: after a warm-up the program answers.

Each runs `shardns-bench flood` (the lightest closed-loop client: 8 sockets keeping 32
queries each in flight, counting replies and nothing else; no latency), a `load` closed loop
(saturation: -q 256 over 64 sockets), a `load` ping-pong (one query in flight on one socket:
the round trip itself, with nothing queued or paced) and `load` open loops with Poisson
arrivals at 5k, 20k and 80k QPS. Measured per run: answers, QPS, p50/p99 latency (the
generator's HDR histogram), the whole node's CPU (busy jiffies of every CPU in /proc/stat,
the generator included), the generator's own CPU (its rusage: the client's side), the server
process's CPU (/proc/PID/stat), and for the fast path the program's own run time per packet
(the kernel's BPF statistics, `kernel.bpf_stats_enabled=1` during the run, read with
bpftool).
This kernel accounts CPU by ticks without IRQ time accounting: softirq work (where the fast
path runs, on the sending pod's CPU) is charged to whichever task was interrupted, so the
whole node's CPU is the figure that compares the three; "server" shows what the server
process itself spent, "client" what was charged to the generator (the fast path's work
included: it runs in the generator's softirq). For the fast path, the share of answers that came from the kernel is
checked: 1 - (socket-path hits during the run) / answers.

Root only (network namespaces, veths, BPF). Builds the release binaries with the fast path's
program (clang, libbpf-dev). Prints a Markdown table of medians (min-max) and ratios, and
writes every run as JSON next to --output.
"""

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCAL_IP = "169.254.20.10"
NODE, POD = "fpb-node", "fpb-pod"
UPSTREAM = "127.0.0.1:5300"
METRICS = "127.0.0.1:9253"
ZONE = "fastpath.bench."
LOADS = [("flood", "flood"), ("saturation", None), ("pingpong", "pingpong"), ("5k", 5000),
         ("20k", 20000), ("80k", 80000)]
SERVERS = ["floor", "socket", "fastpath"]


def run(*args, **kwargs):
    return subprocess.run(args, check=True, text=True, capture_output=True, **kwargs).stdout


def in_ns(ns, *args):
    return ["ip", "netns", "exec", ns, *args]


def teardown():
    for ns in (NODE, POD):
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def topology():
    teardown()
    run("ip", "netns", "add", NODE)
    run("ip", "netns", "add", POD)
    run("ip", "link", "add", "veth-node", "netns", NODE, "type", "veth", "peer", "name",
        "veth-pod", "netns", POD)
    for ns, commands in [
        (NODE, [["link", "set", "lo", "up"], ["addr", "add", f"{LOCAL_IP}/32", "dev", "lo"],
                ["addr", "add", "10.0.0.1/24", "dev", "veth-node"],
                ["link", "set", "veth-node", "up"]]),
        (POD, [["link", "set", "lo", "up"], ["addr", "add", "10.0.0.2/24", "dev", "veth-pod"],
               ["link", "set", "veth-pod", "up"], ["route", "add", "default", "via", "10.0.0.1"]]),
    ]:
        for command in commands:
            run("ip", "-n", ns, *command)


def cpu_jiffies():
    """(busy, softirq) of every CPU together, and busy per CPU, from /proc/stat."""
    total, per_cpu = None, {}
    for line in Path("/proc/stat").read_text().splitlines():
        fields = line.split()
        if not fields or not fields[0].startswith("cpu"):
            continue
        values = [int(v) for v in fields[1:]]
        idle = values[3] + values[4]
        busy = sum(values[:8]) - idle
        if fields[0] == "cpu":
            total = (busy, values[6])
        else:
            per_cpu[fields[0]] = busy
    return total, per_cpu


def process_jiffies(pid):
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()
    return int(fields[11]) + int(fields[12])


def socket_hits():
    """shardns's socket-path hits (coredns_cache_hits_total less the fast path's)."""
    page = run(*in_ns(NODE, "python3", "-c",
                      f"import urllib.request;print(urllib.request.urlopen("
                      f"'http://{METRICS}/metrics').read().decode())"))
    def total(family):
        return sum(float(m.group(1)) for m in
                   re.finditer(rf"^{family}(?:{{[^}}]*}})? (\S+)$", page, re.M))
    return total("coredns_cache_hits_total") - total("shardns_fastpath_hits_total")


class Server:
    def __init__(self, kind, args, workdir):
        self.kind, self.args, self.workdir = kind, args, workdir
        log = open(workdir / f"{kind}.log", "w")
        if kind == "floor":
            command = [str(args.bench), "reflect", f"{LOCAL_IP}:53"]
        else:
            corefile = workdir / f"Corefile.{kind}"
            fastpath = "    fastpath veth-node\n" if kind == "fastpath" else ""
            corefile.write_text(
                f"{ZONE}:53 {{\n    bind {LOCAL_IP}\n    cache 3600\n"
                f"    forward . {UPSTREAM}\n{fastpath}    prometheus {METRICS}\n}}\n")
            command = [str(args.shardns), "--conf", str(corefile), "--shards", "1",
                       "--io", "epoll"]
        self.process = subprocess.Popen(
            ["taskset", "-c", str(args.server_cpu), *in_ns(NODE, *command)],
            stdout=log, stderr=subprocess.STDOUT)
        self.log = workdir / f"{kind}.log"
        deadline = time.time() + 10
        ready = "started in" if kind != "floor" else "reflect"
        while ready not in self.log.read_text():
            if self.process.poll() is not None or time.time() > deadline:
                raise SystemExit(f"{kind} did not start:\n{self.log.read_text()}")
            time.sleep(0.05)
        if kind == "fastpath" and "attached to veth-node" not in self.log.read_text():
            raise SystemExit(f"the fast path did not attach:\n{self.log.read_text()}")

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=15)


def load(args, names, rate, seconds, warmup):
    if rate == "flood":
        report = json.loads(run(*in_ns(POD, str(args.bench), "flood", f"{LOCAL_IP}:53", "-d",
                                       str(names), "-l", str(seconds), "-c", "8", "-q", "32",
                                       "--cpu", str(args.load_cpu))))
        report["latency_us"] = {"p50": 0.0, "p99": 0.0}
        return report
    if rate == "pingpong":
        return json.loads(run(*in_ns(POD, str(args.bench), "load", "-s", LOCAL_IP, "-d",
                                     str(names), "-l", str(seconds), "--cpu",
                                     str(args.load_cpu), "--json", "-c", "1", "-q", "1")))
    command = [str(args.bench), "load", "-s", LOCAL_IP, "-d", str(names), "-l", str(seconds),
               "--warmup", str(warmup), "--cpu", str(args.load_cpu), "--json", "-c", "64"]
    if rate is None:
        command += ["-q", "256"]
    else:
        command += ["-Q", str(rate), "--open", "--spacing", "poisson"]
    return json.loads(run(*in_ns(POD, *command)))


def children_cpu_s():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def program_stats():
    """(run_time_ns, run_cnt) of the fast path's program (kernel.bpf_stats_enabled=1)."""
    try:
        programs = json.loads(run("bpftool", "--json", "prog", "show"))
    except (subprocess.CalledProcessError, FileNotFoundError):
        return (0, 0)
    for program in programs:
        if program.get("name", "").startswith("shardns_fastpat"):
            return (program.get("run_time_ns", 0), program.get("run_cnt", 0))
    return (0, 0)


def measure(args, names, server, rate):
    # Counters are read around the measured window only: the warm-up runs first, apart.
    load(args, names, rate, 1, 0)
    before_program = program_stats()
    before_children = children_cpu_s()
    before_total, _ = cpu_jiffies()
    before_server = process_jiffies(server.process.pid) if server.kind == "floor" else \
        process_jiffies(shardns_pid(server))
    hits_before = socket_hits() if server.kind != "floor" else 0
    report = load(args, names, rate, args.seconds, 0)
    after_total, _ = cpu_jiffies()
    after_children = children_cpu_s()
    after_program = program_stats()
    after_server = process_jiffies(server.process.pid) if server.kind == "floor" else \
        process_jiffies(shardns_pid(server))
    hits_after = socket_hits() if server.kind != "floor" else 0
    answered = max(report["answered"], 1)
    tick_us = 1e6 / os.sysconf("SC_CLK_TCK")
    return {
        "server": server.kind,
        "load": "saturation" if rate is None else rate if isinstance(rate, str)
        else f"{rate // 1000}k",
        "answered": report["answered"],
        "lost": report["lost"],
        "qps": report["qps"],
        "p50_us": report["latency_us"]["p50"],
        "p99_us": report["latency_us"]["p99"],
        "node_us": (after_total[0] - before_total[0]) * tick_us / answered,
        "softirq_us": (after_total[1] - before_total[1]) * tick_us / answered,
        "server_us": (after_server - before_server) * tick_us / answered,
        "client_us": (after_children - before_children) * 1e6 / answered,
        "program_ns": (after_program[0] - before_program[0])
        / max(after_program[1] - before_program[1], 1),
        "kernel_share": (1 - (hits_after - hits_before) / answered)
        if server.kind == "fastpath" else None,
    }


def shardns_pid(server):
    # taskset execs ip, which execs the program: the child's pid is shardns's.
    return server.process.pid


def median_range(values, digits=2):
    return (f"{statistics.median(values):.{digits}f} "
            f"({min(values):.{digits}f}-{max(values):.{digits}f})")


def table(runs):
    lines = ["| load | server | QPS | whole node CPU/answer (µs) | client (µs) | "
             "server process (µs) | program (ns/packet) | p50 (µs) | p99 (µs) | "
             "answered in the kernel |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for load_name, _ in LOADS:
        for kind in SERVERS:
            rows = [r for r in runs if r["server"] == kind and r["load"] == load_name]
            if not rows:
                continue
            share = [r["kernel_share"] for r in rows if r["kernel_share"] is not None]
            lines.append(
                f"| {load_name} | {kind} | {median_range([r['qps'] for r in rows], 0)} | "
                f"{median_range([r['node_us'] for r in rows])} | "
                f"{median_range([r['client_us'] for r in rows])} | "
                f"{median_range([r['server_us'] for r in rows])} | "
                f"{median_range([r['program_ns'] for r in rows], 0) if kind == 'fastpath' else '-'} | "
                f"{median_range([r['p50_us'] for r in rows], 0)} | "
                f"{median_range([r['p99_us'] for r in rows], 0)} | "
                f"{median_range([s * 100 for s in share], 1) + ' %' if share else '-'} |")
    lines += ["", "Ratios (medians of per-round ratios):", "",
              "| load | fastpath / floor (whole node) | fastpath / socket (whole node) | "
              "socket / floor | p50 fastpath / socket |", "|---|---|---|---|---|"]
    for load_name, _ in LOADS:
        by_round = {}
        for r in runs:
            if r["load"] == load_name:
                by_round.setdefault(r["round"], {})[r["server"]] = r
        ratios = [[], [], [], []]
        for row in by_round.values():
            if len(row) != 3:
                continue
            ratios[0].append(row["fastpath"]["node_us"] / row["floor"]["node_us"])
            ratios[1].append(row["fastpath"]["node_us"] / row["socket"]["node_us"])
            ratios[2].append(row["socket"]["node_us"] / row["floor"]["node_us"])
            if row["socket"]["p50_us"] > 0:
                ratios[3].append(row["fastpath"]["p50_us"] / row["socket"]["p50_us"])
        if ratios[0]:
            lines.append(f"| {load_name} | " + " | ".join(
                median_range(r) if r else "-" for r in ratios) + " |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--names", type=int, default=8)
    parser.add_argument("--server-cpu", type=int, default=1)
    parser.add_argument("--load-cpu", type=int, default=0)
    parser.add_argument("--output", type=Path, default=ROOT / "target/bench-fastpath.md")
    parser.add_argument("--no-build", action="store_true")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("root only: network namespaces, veths and BPF")
    if not args.no_build:
        subprocess.run(["cargo", "build", "--release", "--locked", "-p", "shardns",
                        "--features", "fastpath", "-p", "shardns-bench"],
                       cwd=ROOT, check=True)
    args.shardns = ROOT / "target/release/shardns"
    args.bench = ROOT / "target/release/shardns-bench"
    workdir = Path(tempfile.mkdtemp(prefix="bench-fastpath-"))
    names = workdir / "names"
    names.write_text(run(str(args.bench), "names", str(args.names), "--zone", ZONE))
    topology()
    # The kernel times every BPF program run (bpftool's run_time_ns) while this is 1.
    stats_before = Path("/proc/sys/kernel/bpf_stats_enabled").read_text().strip()
    Path("/proc/sys/kernel/bpf_stats_enabled").write_text("1")
    upstream = subprocess.Popen(
        in_ns(NODE, str(args.bench), "upstream", UPSTREAM, "--cpu", str(args.load_cpu)),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    runs = []
    try:
        time.sleep(0.5)
        for round_index in range(args.rounds):
            for kind in SERVERS:
                server = Server(kind, args, workdir)
                try:
                    for _, rate in LOADS:
                        result = measure(args, names, server, rate)
                        result["round"] = round_index
                        runs.append(result)
                        print(json.dumps(result), file=sys.stderr)
                finally:
                    server.stop()
    finally:
        upstream.terminate()
        upstream.wait()
        teardown()
        Path("/proc/sys/kernel/bpf_stats_enabled").write_text(stats_before)
    kernel = run("uname", "-r").strip()
    cpus = os.cpu_count()
    text = (f"Kernel {kernel}, {cpus} CPUs; server on CPU {args.server_cpu}, load on CPU "
            f"{args.load_cpu}; {args.rounds} rounds of {args.seconds:g} s per load, "
            f"{args.names} names.\n\n" + table(runs) + "\n")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    args.output.with_suffix(".json").write_text(json.dumps(runs, indent=1))
    print(text)


if __name__ == "__main__":
    main()
