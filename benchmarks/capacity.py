"""Held IMAPS sessions: how many a node establishes, and the memory each one costs.

N distinct mailboxes each open one session through the public port 993 (TLS in nginx,
HAProxy in front): LOGIN, SELECT INBOX, IDLE, and hold it. One asyncio process holds every
socket (RLIMIT_NOFILE raised to its hard limit); logins run at most `concurrency` at a
time. Memory is the proportional set size (PSS, /proc/PID/smaps_rollup: shared pages split
between the processes sharing them) summed over every process of dovecot, nginx, HAProxy,
postfix and PostgreSQL, measured before the sessions and while they are all held; the
difference divided by the established sessions is the figure `rupost sizing` uses
(rupost/services/sizing.py, SESSION_MEMORY_KIB). Loopback only, bounded in count and time.
"""
from __future__ import annotations

import asyncio
import resource
import ssl
import time
from pathlib import Path

COMPONENTS = ("dovecot", "nginx", "haproxy", "postfix")


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    return children


def tree(pids: list[int]) -> list[int]:
    children, out, todo = _children_map(), [], list(pids)
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def pss_kib(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
                    break
        except OSError:
            continue  # the process ended
    return total


def node_pss_kib(main_pids: list[int]) -> tuple[int, int]:
    """(PSS in KiB, process count) of these processes and all their descendants."""
    pids = tree(main_pids)
    return pss_kib(pids), len(pids)


async def _session(port: int, user: str, password: str, context: ssl.SSLContext, gate: asyncio.Semaphore,
                   timeout: float, held: list, failures: dict, login_s: list[float]) -> None:
    try:
        async with gate:
            start = time.perf_counter()
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", port, ssl=context, server_hostname="localhost"), timeout)
            greeting = await asyncio.wait_for(reader.readline(), timeout)
            if not greeting.startswith(b"* OK"):
                raise ConnectionError(greeting.decode(errors="replace").strip() or "closed without an answer")
            for tag, command, done in ((b"a", f'LOGIN "{user}" "{password}"', b"a OK"),
                                       (b"b", "SELECT INBOX", b"b OK"), (b"c", "IDLE", b"+ ")):
                writer.write(tag + b" " + command.encode() + b"\r\n")
                while True:
                    line = await asyncio.wait_for(reader.readline(), timeout)
                    if not line:
                        raise ConnectionError(f"closed during {command.split()[0]}")
                    if line.startswith(done):
                        break
                    if line.startswith(tag + b" "):
                        raise ConnectionError(line.decode(errors="replace").strip())
            login_s.append(time.perf_counter() - start)
            held.append(writer)
    except (TimeoutError, OSError, ConnectionError) as exc:
        reason = str(exc).split(":")[0][:60] or exc.__class__.__name__
        failures[reason] = failures.get(reason, 0) + 1


async def _hold(port: int, users: list[tuple[str, str]], concurrency: int, timeout: float, measure):
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    gate = asyncio.Semaphore(concurrency)
    held: list = []
    failures: dict[str, int] = {}
    login_s: list[float] = []
    start = time.perf_counter()
    await asyncio.gather(*(_session(port, u, p, context, gate, timeout, held, failures, login_s) for u, p in users))
    elapsed = time.perf_counter() - start
    await asyncio.sleep(1)  # the last processes finish starting
    during = measure()
    for writer in held:
        writer.close()
    return len(held), failures, elapsed, sorted(login_s), during


def held_sessions(inst, pg, users: list[tuple[str, str]], concurrency: int = 50, timeout: float = 60.0) -> dict:
    """Hold one IMAPS session per user at once; the figures."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    mains = [pid for pid in (inst.app.backend.pid(name) for name in COMPONENTS) if pid]
    mains.append(int((pg.data / "postmaster.pid").read_text().split()[0]))
    before, procs_before = node_pss_kib(mains)
    established, failures, elapsed, login_s, (during, procs_during) = asyncio.run(
        _hold(inst.ports["imaps"], users, concurrency, timeout, lambda: node_pss_kib(mains)))
    per_session = (during - before) / established if established else 0.0
    return {
        "capacity_sessions": len(users),
        "capacity_established": established,
        "capacity_failed": sum(failures.values()),
        "capacity_failures": failures,
        "capacity_login_rate_s": round(established / elapsed, 1) if elapsed else 0.0,
        "capacity_login_p50_ms": round(1000 * login_s[len(login_s) // 2], 1) if login_s else None,
        "capacity_login_p99_ms": round(1000 * login_s[min(len(login_s) - 1, int(len(login_s) * 0.99))], 1)
        if login_s else None,
        "capacity_node_pss_idle_mib": round(before / 1024, 1),
        "capacity_node_pss_held_mib": round(during / 1024, 1),
        "capacity_processes_idle": procs_before,
        "capacity_processes_held": procs_during,
        "capacity_kib_per_session": round(per_session, 1),
    }
