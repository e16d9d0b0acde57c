#!/usr/bin/env python3
"""What podwatch costs the node, measured against no agent and against bpftrace
doing the equivalent work on the same hooks, in one run.

Every figure is a ratio or a rate measured in this run: configurations are
alternated round by round (none, podwatch, bpftrace, ...) so drift on a shared,
noisy machine hits all of them alike; each cell is the median of the rounds,
with the spread (min-max) beside it.

Needs root (loads BPF programs). Run through scripts/bench.sh, which builds the
release agent, the static workload and installs bpftrace.
"""

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
AGENT = os.path.join(ROOT, "target", "release", "podwatch")
UNMATCHED = "/etc/hostname"  # no rule of the built-in policy matches it
PACED_RATE = 300_000  # the target: matched events/s end to end without loss
FLEET_PODS, FLEET_PER_POD = 500, 20  # the node: 10k live processes in 500 pods
MATCHED = "/etc/shadow"  # the built-in policy's `credential-files` rule logs it (host and pods)
# The built-in policy plus a kill rule on a file the loops never touch: with a
# kill rule guarding a file, every read through a descriptor is checked.
KILL_RULE = """apiVersion: podwatch.dev/v1alpha1
kind: Policy
metadata:
  name: bench-kill
spec:
  selector: {host: true}
  rules:
  - name: gshadow-readers
    action: kill
    file: {exact: [/etc/gshadow], operations: [read]}
"""


def armed_policy_dir():
    d = tempfile.mkdtemp(prefix="podwatch-bench-policies-")
    with open(os.path.join(ROOT, "policies", "builtin", "default.yaml")) as f:
        default = f.read()
    with open(os.path.join(d, "default.yaml"), "w") as f:
        f.write(default)
    with open(os.path.join(d, "kill.yaml"), "w") as f:
        f.write(KILL_RULE)
    return d

# bpftrace doing what a per-cgroup counting agent minimally does on the same
# hooks: stash at syscall entry, one map update at exit; one map update per
# exec/fork/exit and per TCP state change.
BPFTRACE = r"""
tracepoint:syscalls:sys_enter_openat { @inflight[tid] = args->filename; }
tracepoint:syscalls:sys_exit_openat /@inflight[tid]/ { @files[cgroup, args->ret < 0] = count(); delete(@inflight[tid]); }
tracepoint:sched:sched_process_exec { @execs[cgroup] = count(); }
tracepoint:sched:sched_process_fork { @forks[cgroup] = count(); }
tracepoint:sched:sched_process_exit { @exits[cgroup] = count(); }
tracepoint:sock:inet_sock_set_state { @tcp[cgroup, args->newstate] = count(); }
BEGIN { printf("ready\n"); }
"""


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def http_json(addr, path):
    with urllib.request.urlopen(f"http://{addr}{path}", timeout=5) as r:
        return json.loads(r.read())


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Podwatch:
    def __init__(self, name="podwatch", binary=AGENT, extra=()):
        self.name = name
        self.addr = f"127.0.0.1:{free_port()}"
        self.proc = subprocess.Popen(
            [binary, "run", "--listen", self.addr, "--log-level", "warn", *extra],
            stdout=subprocess.DEVNULL,
        )
        deadline = time.time() + 120
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"podwatch exited: {self.proc.returncode}")
            try:
                with urllib.request.urlopen(f"http://{self.addr}/readyz", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise SystemExit("podwatch not ready in 120 s")

    def cpu_seconds(self):
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_mib(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return float("nan")

    def stats(self):
        return http_json(self.addr, "/stats")["stats"]

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=30)


class Bpftrace:
    def __init__(self):
        self.name = "bpftrace"
        self.proc = subprocess.Popen(
            ["bpftrace", "-e", BPFTRACE], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        for line in self.proc.stdout:
            if "ready" in line:
                return
        raise SystemExit("bpftrace did not start")

    def stop(self):
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


class Nothing:
    def __init__(self):
        self.name = "none"

    def stop(self):
        pass


def timed(workload, *args):
    start = time.perf_counter()
    subprocess.run([workload, *args], check=True)
    return time.perf_counter() - start


def bpf_prog_stats():
    """name -> (run_time_ns, run_cnt) for podwatch's programs."""
    out = subprocess.run(["bpftool", "-j", "prog", "show"], capture_output=True, text=True, check=True)
    stats = {}
    for p in json.loads(out.stdout):
        name = p.get("name", "")
        if "run_cnt" in p:
            t, c = stats.get(name, (0, 0))
            stats[name] = (t + p.get("run_time_ns", 0), c + p["run_cnt"])
    return stats


def fmt_ratio(values):
    med = statistics.median(values)
    return f"{med:5.2f} ({min(values):.2f}-{max(values):.2f})"


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--workload", required=True, help="the static workload binary")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--opens", type=int, default=200_000)
    ap.add_argument("--execs", type=int, default=2_000)
    ap.add_argument("--connects", type=int, default=20_000)
    ap.add_argument("--reads", type=int, default=200_000)
    ap.add_argument("--baseline-agent", help="another podwatch binary (e.g. the previous commit's) measured in the same rounds")
    a = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench/system.py loads BPF programs: run it as root (scripts/bench.sh does)")

    server = subprocess.Popen([a.workload, "serve", "0"], stdout=subprocess.PIPE, text=True)
    port = server.stdout.readline().strip()
    loops = {
        "openat+close, path no rule matches": ("open", str(a.opens), UNMATCHED),
        "openat+close, path a `log` rule matches": ("open", str(a.opens), MATCHED),
        "fork + exec (static noop)": ("exec", str(a.execs)),
        "TCP connect+close on loopback": ("connect", str(a.connects), port),
        "pread of an open file": ("read", str(a.reads), UNMATCHED),
    }
    # name -> constructor; alternated round by round, so drift hits all alike.
    armed = armed_policy_dir()
    configs = {
        "none": Nothing,
        "podwatch": Podwatch,
        "podwatch, a kill rule armed": lambda: Podwatch("podwatch, a kill rule armed", extra=("--policy-dir", armed)),
        "bpftrace": Bpftrace,
    }
    if a.baseline_agent:
        configs["podwatch before"] = lambda: Podwatch("podwatch before", a.baseline_agent)
    agents = [n for n in configs if n.startswith("podwatch")]
    times = {c: {l: [] for l in loops} for c in configs}
    prog = {}  # (agent, loop, program) -> [ns per run]
    agent_cpu = {n: [] for n in agents}  # µs of agent CPU per delivered event (matched opens)
    rss = {}
    subprocess.run(["sysctl", "-q", "kernel.bpf_stats_enabled=1"], check=True)
    try:
        for r in range(a.rounds):
            names = list(configs) if r % 2 == 0 else list(reversed(configs))
            for name in names:
                log(f"round {r + 1}/{a.rounds}: {name}")
                inst = configs[name]()
                agent = name in agents
                if agent and r == 0:
                    # At rest: the agent hands what start-up freed back to
                    # the system once a second.
                    time.sleep(2)
                    rss[(name, "at rest")] = inst.rss_mib()
                for label, args in loops.items():
                    before = bpf_prog_stats() if agent else None
                    cpu0 = inst.cpu_seconds() if agent else 0
                    ev0 = inst.stats()["events_emitted"] if agent else 0
                    times[name][label].append(timed(a.workload, *args))
                    if agent:
                        after = bpf_prog_stats()
                        for prog_name, (t, c) in after.items():
                            t0, c0 = before.get(prog_name, (0, 0))
                            if c - c0 > 0:
                                prog.setdefault((name, label, prog_name), []).append((t - t0) / (c - c0))
                        if "log" in label:
                            # Let the reader catch up before counting what it delivered.
                            deadline = time.time() + 30
                            want = ev0 + a.opens
                            while inst.stats()["events_emitted"] < want and time.time() < deadline:
                                time.sleep(0.05)
                            delivered = inst.stats()["events_emitted"] - ev0
                            if delivered:
                                agent_cpu[name].append((inst.cpu_seconds() - cpu0) * 1e6 / delivered)
                if agent and r == 0:
                    rss[(name, "after the loops")] = inst.rss_mib()
                inst.stop()
    finally:
        subprocess.run(["sysctl", "-q", "kernel.bpf_stats_enabled=0"])
        server.terminate()

    others = [n for n in configs if n != "none"]
    print(f"\n## Syscall loops: wall time ratio against no agent (median of {a.rounds}, min-max)\n")
    print("| loop | no agent | " + " | ".join(others) + " |")
    print("|---|---|" + "---|" * len(others))
    for label in loops:
        base = times["none"][label]
        cells = [fmt_ratio([t / b for t, b in zip(times[c][label], base)]) for c in others]
        print(f"| {label} | 1.00 | " + " | ".join(cells) + " |")
    print("\nbpftrace does the same hooks with one map update each. Baseline per iteration (no agent): " + ", ".join(
        f"{label.split(',')[0]} {statistics.median(times['none'][label]) / int(args[1]) * 1e9:.0f} ns"
        for label, args in loops.items()))

    print("\n## podwatch kernel programs: average run time per invocation (bpf stats)\n")
    print("| loop | program | " + " | ".join(f"{n} ns/run" for n in agents) + " |")
    print("|---|---|" + "---|" * len(agents))
    rows = sorted({(label, p) for (_, label, p) in prog})
    for label, p in rows:
        cells = []
        for n in agents:
            v = prog.get((n, label, p))
            cells.append(f"{statistics.median(v):.0f}" if v else "-")
        if any(c not in ("-", "0") for c in cells):
            print(f"| {label} | {p} | " + " | ".join(cells) + " |")

    print("\n## podwatch user space\n")
    for n in agents:
        v = agent_cpu[n]
        if v:
            med = statistics.median(v)
            print(f"- {n}: agent CPU per delivered event {med:.2f} µs (median; {min(v):.2f}-{max(v):.2f});"
                  f" {med * 1e4 / 1e6 * 100:.1f}% of a core at 10k events/s")
    for (n, k), v in rss.items():
        print(f"- {n}: RSS {k} {v:.1f} MiB")

    for n in ("podwatch", "podwatch before"):
        if n in agents:
            rate_test(a, n, a.baseline_agent if n == "podwatch before" else AGENT)
    for n in ("podwatch", "podwatch before"):
        if n in agents:
            fleet_test(a, n, a.baseline_agent if n == "podwatch before" else AGENT)


def cgroup2_root():
    with open("/proc/mounts") as f:
        for line in f:
            fields = line.split()
            if len(fields) > 2 and fields[2] == "cgroup2":
                return fields[1]
    raise SystemExit("no cgroup2 hierarchy mounted")


def scrape_ms(inst):
    """Time of one GET /metrics, and the samples it returned."""
    start = time.perf_counter()
    with urllib.request.urlopen(f"http://{inst.addr}/metrics", timeout=30) as r:
        body = r.read().decode()
    ms = (time.perf_counter() - start) * 1e3
    return ms, sum(1 for line in body.splitlines() if line and not line.startswith("#"))


def fleet_test(a, name, binary):
    """A node's worth of pods: FLEET_PODS kubelet-shaped (cgroupfs) pod cgroups,
    FLEET_PER_POD live processes in each, each having opened a file a `log`
    rule matches (so every pod has exec, file and rule series). Agent RSS and
    /metrics scrape time (median of five) at rest and with them all alive."""
    root = cgroup2_root()
    inst = Podwatch(name, binary)
    created, procs = [], []
    try:
        time.sleep(2)  # at rest: start-up's freed memory handed back (once a second)
        rest_rss = inst.rss_mib()
        rest = [scrape_ms(inst) for _ in range(5)]
        base = inst.stats()["process_cache_size"]
        for _ in range(FLEET_PODS):
            d = root
            for part in ("kubepods", "burstable", f"pod{uuid.uuid4()}", os.urandom(32).hex()):
                d = os.path.join(d, part)
                if not os.path.isdir(d):
                    os.mkdir(d)
                    created.append(d)
            procs.append(subprocess.Popen(
                [a.workload, "hold", str(FLEET_PER_POD), MATCHED], stdout=subprocess.PIPE, text=True,
                preexec_fn=lambda d=d: open(os.path.join(d, "cgroup.procs"), "w").write(str(os.getpid()))))
        for p in procs:
            if p.stdout.readline().strip() != "held":
                raise SystemExit("a fleet pod did not start")
        want = base + FLEET_PODS * FLEET_PER_POD
        deadline = time.time() + 60
        # The cache size is published once a second; wait until it holds them all.
        while inst.stats()["process_cache_size"] < want and time.time() < deadline:
            time.sleep(0.2)
        cached = inst.stats()["process_cache_size"]
        rss = inst.rss_mib()
        busy = [scrape_ms(inst) for _ in range(5)]
    finally:
        for p in procs:
            p.kill()  # its children die with it (PR_SET_PDEATHSIG)
            p.wait()
        inst.stop()
        for d in reversed(created):
            # The children's exit may still be under way: the directory empties shortly.
            for _ in range(100):
                try:
                    os.rmdir(d)
                    break
                except OSError:
                    time.sleep(0.05)
    med = lambda xs, i: statistics.median(x[i] for x in xs)
    print(f"\n## {FLEET_PODS} pods, {FLEET_PODS * FLEET_PER_POD} live processes: {name}\n")
    print(f"- at rest: RSS {rest_rss:.1f} MiB; /metrics {med(rest, 0):.1f} ms ({med(rest, 1):.0f} samples)")
    print(f"- with them: RSS {rss:.1f} MiB; process cache {cached} entries;"
          f" /metrics {med(busy, 0):.1f} ms ({med(busy, 1):.0f} samples; median of 5)")


def rate_test(a, name, binary):
    """Matched events end to end (kernel → ring buffer → decode → enrich → JSON →
    /dev/null), two producers: first paced at the issue's target rate
    (PACED_RATE events/s in all, for about three seconds: is anything lost?),
    then flat out (the most the machine delivers, and where the excess goes).
    Delivered = events written by the output: emitted minus those its queue
    dropped."""
    inst = Podwatch(name, binary)
    try:
        for label, rate in ((f"paced at {PACED_RATE // 1000}k/s", PACED_RATE), ("flat out", None)):
            s0 = inst.stats()
            cpu0 = inst.cpu_seconds()
            start = time.perf_counter()
            n = PACED_RATE * 3 // 2 if rate else a.opens
            args = ["open-rate", str(n), MATCHED, str(rate // 2)] if rate else ["open", str(n), MATCHED]
            procs = [subprocess.Popen([a.workload, *args]) for _ in range(2)]
            for p in procs:
                p.wait()
            produced_s = time.perf_counter() - start
            # Until every open is accounted for (emitted, or lost in the ring).
            deadline = time.time() + 60
            while time.time() < deadline:
                s = inst.stats()
                seen = s["events_emitted"] - s0["events_emitted"] + s["kernel_ringbuf_lost"] - s0["kernel_ringbuf_lost"]
                if seen >= 2 * n and inst.stats()["output_queue_drops"] == s["output_queue_drops"]:
                    break
                time.sleep(0.1)
            s = inst.stats()
            total_s = time.perf_counter() - start
            emitted = s["events_emitted"] - s0["events_emitted"]
            lost = s["kernel_ringbuf_lost"] - s0["kernel_ringbuf_lost"]
            dropped = s["output_queue_drops"] - s0["output_queue_drops"]
            delivered = emitted - dropped
            print(f"\n## End to end, matched events, 2 producers {label}: {name}\n")
            print(f"- produced {2 * n} opens in {produced_s:.2f} s ({2 * n / produced_s / 1e3:.0f}k/s offered)")
            print(f"- delivered {delivered} events ({delivered / produced_s / 1e3:.0f}k/s over the producers' time,"
                  f" all written {total_s - produced_s:.2f} s after they ended);"
                  f" lost in the ring buffer {lost}, dropped at the output queue {dropped}")
            print(f"- agent CPU {(inst.cpu_seconds() - cpu0) * 1e6 / max(emitted, 1):.2f} µs per event;"
                  f" RSS {inst.rss_mib():.1f} MiB")
    finally:
        inst.stop()


if __name__ == "__main__":
    main()
