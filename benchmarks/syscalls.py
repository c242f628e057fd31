"""System calls, context switches and CPU time per delivered message, by process: full vs bare.

    python3 -m benchmarks.syscalls [--messages N] [--json FILE]

Throughput and CPU time on a shared 2-core machine move by ±30 % from one round to the
next; how many system calls and context switches each process makes per message hardly
moves at all, so a change to the template (one lookup less, one plugin less) shows here
when it is lost in the noise of `benchmarks/run`. Each stack gets a warm-up of 300
messages, then `perf record -a` counts every `raw_syscalls:sys_enter` and
`sched:sched_switch` while N messages (default 1,000, 20 sessions, 10 KiB) go through it;
the counts, and the CPU time between each thread's switches in and out, are divided by N
and grouped by process name (postfix's `master` includes its
children between fork and exec). Only the stack's own processes count (the daemons' process
trees and what they fork during the run, plus the smtp-source clients): other tenants of a
shared machine run processes with the same names. perf drops events when every system call
is recorded, and an interval between two switches counts only when both were recorded, so
the CPU figures are a lower bound (compare full and bare of one run). Needs `perf` (Debian package linux-perf) and root; it
talks only to loopback.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from . import cpu, smtp, suite
from .common import bulk_mailboxes, node_instance

WARM_UP = 300
_EVENT = re.compile(r"\s*(.+?)\s+(\d+)\s+\[(\d+)\]\s+([\d.]+):\s+"
                    r"(raw_syscalls:sys_enter|sched:sched_switch|sched:sched_process_fork):\s*(.*)")
_PREV = re.compile(r"prev_comm=(.+?) prev_pid=(\d+) .*next_pid=(\d+)")
_FORK = re.compile(r"pid=(\d+) child_comm=.* child_pid=(\d+)")


def descendants(roots: set[int]) -> set[int]:
    """The processes (and their threads) running now under `roots`, roots included."""
    kids = cpu.children_map()
    found = {pid for root in roots for pid in cpu.process_tree(root, kids)}
    threads = set()  # a context switch names the thread (HAProxy runs one per core)
    for pid in found:
        try:
            threads.update(int(task.name) for task in Path(f"/proc/{pid}/task").iterdir())
        except OSError:
            pass
    return found | threads


def count_events(perf_data: Path, members: set[int]) -> tuple[collections.Counter, collections.Counter,
                                                              collections.Counter]:
    """(system calls, context switches, CPU seconds) by process name in a `perf record` file,
    counting only `members` and whatever they fork during the recording: this machine is
    shared, and other tenants' postfix and dovecot processes have the same names. A thread's
    CPU time is the time between the switch that put it on a CPU and the switch that took it
    off (kernel work on its behalf included), so it needs no sampling; an interval counts only
    when both switches were recorded (perf drops events now and then, and a gap would
    charge a second of idle CPU to whichever thread the next recorded switch names)."""
    out = subprocess.run(["perf", "script", "-i", str(perf_data), "-F", "comm,pid,cpu,time,event,trace"],
                         capture_output=True, text=True, check=True).stdout
    members = set(members)
    calls, switches, cpu_s = collections.Counter(), collections.Counter(), collections.Counter()
    on_cpu: dict[int, tuple[float, int]] = {}  # CPU -> (when, which thread) was switched in
    for line in out.splitlines():
        match = _EVENT.match(line)
        if not match:
            continue
        comm, pid, cpu_no, stamp, event, rest = match.groups()
        if event == "sched:sched_process_fork":
            fork = _FORK.search(rest)
            if fork and int(fork.group(1)) in members:
                members.add(int(fork.group(2)))
        elif event == "sched:sched_switch":
            prev = _PREV.search(rest)
            if not prev:
                continue
            prev_comm, prev_pid, next_pid = prev.group(1), int(prev.group(2)), int(prev.group(3))
            since = on_cpu.get(int(cpu_no))
            on_cpu[int(cpu_no)] = (float(stamp), next_pid)
            if prev_pid in members:
                switches[prev_comm] += 1
                if since is not None and since[1] == prev_pid:
                    cpu_s[prev_comm] += float(stamp) - since[0]
        elif int(pid) in members:
            calls[comm] += 1
    return calls, switches, cpu_s


def record(send, messages: int, roots: set[int], work: Path, label: str) -> dict[str, dict[str, float]]:
    data = work / f"{label}.perf"
    # the harness's own pid only as a parent: the smtp-source clients it forks count, the other
    # stack's daemons (also its children under the direct backend) do not
    members = descendants(roots) | {os.getpid()}
    recorder = subprocess.Popen(["perf", "record", "-q", "-a", "-c", "1", "-e", "raw_syscalls:sys_enter",
                                 "-e", "sched:sched_switch", "-e", "sched:sched_process_fork", "-o", str(data)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(1)  # perf is attached to every CPU before the first message
        send(messages)
        time.sleep(1)  # the last deliveries' clean-up (LMTP session end, status updates)
    finally:
        recorder.send_signal(signal.SIGINT)
        recorder.wait(timeout=60)
    calls, switches, cpu_s = count_events(data, members)
    for harness in ("python3", "perf"):
        for counter in (calls, switches, cpu_s):
            counter.pop(harness, None)
    return {name: {"syscalls": round(calls[name] / messages, 1), "switches": round(switches[name] / messages, 1),
                   "cpu_ms": round(cpu_s[name] * 1000 / messages, 3)}
            for name in sorted(set(calls) | set(switches), key=lambda n: -cpu_s[n])}


def run(messages: int) -> dict:
    if shutil.which("perf") is None:
        raise SystemExit("perf is not installed (apt-get install linux-perf)")
    with node_instance("syscalls") as (inst, pg):
        inst.deploy()
        work = Path(tempfile.mkdtemp(prefix="rpsys", dir="/tmp"))
        os.chmod(work, 0o755)
        ctx = suite.Ctx(inst, work, True, dict(suite.QUICK))
        bulk_mailboxes(inst, 100, suite.DOMAIN)
        local = [u.split("@")[0] for u in ctx.users(suite.DOMAIN)]
        bare = suite.bare_stack(inst, work, local).start()
        try:
            stacks = {
                "full": (inst.ports["smtp"], ctx.users(suite.DOMAIN),
                         [inst.layout.mail_storage / suite.DOMAIN / u / "Maildir" for u in local]),
                "bare": (bare.smtp_port, ctx.users(bare.domain), [bare.maildir(u) for u in local]),
            }
            roots = {"full": set(suite.full_path_pids(inst, pg).values()),
                     "bare": {bare.pid("postfix"), bare.pid("dovecot")}}
            result = {}
            for label, (port, users, maildirs) in stacks.items():
                def send(n, port=port, users=users, maildirs=maildirs):
                    return smtp.send_and_count(port, users, maildirs, messages=n, size=10240)
                send(WARM_UP)
                result[label] = record(send, messages, roots[label], work, label)
            return result
        finally:
            bare.stop()
            shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    result = run(max(100, min(args.messages, 5000)))
    for label, procs in result.items():
        total_calls = sum(p["syscalls"] for p in procs.values())
        total_switches = sum(p["switches"] for p in procs.values())
        total_cpu = sum(p["cpu_ms"] for p in procs.values())
        print(f"== {label}: {total_calls:.0f} system calls, {total_switches:.0f} context switches, "
              f"{total_cpu:.2f} ms CPU per message")
        print("  syscalls  switches  CPU ms  process")
        for name, figures in list(procs.items())[:16]:
            print(f"  {figures['syscalls']:8.1f}  {figures['switches']:8.1f}  {figures['cpu_ms']:6.3f}  {name}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
