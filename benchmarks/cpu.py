"""CPU time per message, by component, through control groups.

Throughput on a busy 2-core machine moves with whatever else runs; the CPU time the
daemons spend per message moves much less, and it says where the time goes. Each
component's process tree is moved into its own cgroup (v1 ``cpuacct`` or v2), so the
children that exit during a run (postfix's smtpd/cleanup, PostgreSQL backends) are
counted too; the groups are removed and the processes moved back at the end.
Without a writable cgroup hierarchy (an unprivileged container) the figures are
simply absent.
"""
from __future__ import annotations

import statistics
import time
from pathlib import Path

V1 = Path("/sys/fs/cgroup/cpuacct")
V2 = Path("/sys/fs/cgroup")


def _root() -> tuple[Path, str] | None:
    if (V1 / "cpuacct.usage").exists():
        return V1, "v1"
    if (V2 / "cgroup.controllers").exists():
        return V2, "v2"
    return None


def children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            kids.setdefault(ppid, []).append(int(entry.name))
    return kids


def process_tree(root: int, kids: dict[int, list[int]]) -> list[int]:
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(kids.get(pid, []))
    return out


class CpuGroups:
    """Named groups of process trees; ``usage()`` -> CPU seconds per group so far."""

    def __init__(self, prefix: str):
        found = _root()
        self.root, self.kind = found if found else (None, None)
        self.prefix = prefix
        self.groups: dict[str, Path] = {}

    @property
    def available(self) -> bool:
        if self.root is None:
            return False
        try:
            probe = self.root / f"{self.prefix}-probe"
            probe.mkdir(exist_ok=True)
            probe.rmdir()
            return True
        except OSError:
            return False

    def add(self, name: str, pids: list[int]) -> None:
        group = self.groups.get(name)
        if group is None:
            group = self.root / f"{self.prefix}-{name}"
            group.mkdir(exist_ok=True)
            self.groups[name] = group
        kids = children_map()
        for pid in pids:
            for member in process_tree(pid, kids):
                try:
                    (group / "cgroup.procs").write_text(str(member))
                except OSError:  # exited meanwhile, or a kernel thread
                    pass

    def usage(self) -> dict[str, float]:
        out = {}
        for name, group in self.groups.items():
            if self.kind == "v1":
                out[name] = int((group / "cpuacct.usage").read_text()) / 1e9
            else:
                stat = dict(line.split() for line in (group / "cpu.stat").read_text().splitlines())
                out[name] = int(stat["usage_usec"]) / 1e6
        return out

    def close(self) -> None:
        for group in self.groups.values():
            try:
                members = (group / "cgroup.procs").read_text().split()
            except OSError:
                continue
            for pid in members:
                try:
                    (self.root / "cgroup.procs").write_text(pid)
                except OSError:
                    pass
            try:
                group.rmdir()
            except OSError:
                pass
        self.groups.clear()


def per_message_ms(before: dict[str, float], after: dict[str, float], messages: int) -> dict[str, float]:
    return {name: round((after[name] - before[name]) * 1000 / messages, 3) for name in after}


class RoundCpu:
    """CPU ms per message of each round, kept per target ("full" or "bare"): ``start()`` before
    a round, ``stop(target, messages)`` after it. The groups are named ``full-<component>`` and
    ``bare-<component>``; a round counts only its target's groups."""

    def __init__(self, groups: CpuGroups | None):
        self.groups = groups
        self.rounds: dict[str, list[dict]] = {"full": [], "bare": []}
        self._before: dict[str, float] = {}

    def start(self) -> None:
        if self.groups:
            self._before = self.groups.usage()

    def stop(self, target: str, messages: int) -> None:
        if not self.groups or not messages:
            return
        time.sleep(1)  # the last deliveries' bookkeeping (LMTP, qmgr) belongs to this round
        used = per_message_ms(self._before, self.groups.usage(), messages)
        prefix = f"{target}-"
        self.rounds[target].append({k[len(prefix):]: v for k, v in used.items() if k.startswith(prefix)})

    def figures(self, key: str) -> dict:
        """Median CPU ms per message: full path, bare, their ratio (bare / full), and each side
        by component, under ``<key>_cpu_...``."""
        full_runs, bare_runs = self.rounds["full"], self.rounds["bare"]
        if not full_runs or not bare_runs:
            return {}
        full = statistics.median(sum(r.values()) for r in full_runs)
        bare = statistics.median(sum(r.values()) for r in bare_runs)

        def by_component(runs: list[dict]) -> dict:
            parts = {name: round(statistics.median(r.get(name, 0) for r in runs), 3) for name in runs[0]}
            return {k: v for k, v in sorted(parts.items(), key=lambda kv: -kv[1]) if v}

        return {f"{key}_cpu_ms_per_msg_full": round(full, 3), f"{key}_cpu_ms_per_msg_bare": round(bare, 3),
                f"{key}_cpu_ratio": round(bare / full, 3),
                f"{key}_cpu_ms_per_msg_by_component": by_component(full_runs),
                f"{key}_cpu_ms_per_msg_by_component_bare": by_component(bare_runs)}
