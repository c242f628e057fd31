"""Held IMAPS sessions: how many a node establishes, the memory each one costs, and mail
delivered to them meanwhile.

N distinct mailboxes each open one session through the public port 993 (TLS in nginx,
HAProxy in front): LOGIN, SELECT INBOX, IDLE, and hold it. One asyncio process holds every
socket (RLIMIT_NOFILE raised to its hard limit); logins run at most `concurrency` at a
time. Memory is the proportional set size (PSS, /proc/PID/smaps_rollup: shared pages split
between the processes sharing them) summed over every process of dovecot, nginx, HAProxy,
postfix and PostgreSQL, measured before the sessions and while they are all held; the
difference divided by the established sessions is the figure `rupost sizing` uses
(rupost/services/sizing.py, SESSION_MEMORY_KIB). While they are held, SMTP on port 25 sends
`messages` to random ones among them at `rate` a second, and each idling session times its
EXISTS against SMTP's 250 (new mail to IDLE notification); the same number of messages back to
back in one SMTP session, before the sessions and while they are held, gives SMTP's rate
unloaded and under load in the same run. Loopback only, bounded in count and time.
"""
from __future__ import annotations

import asyncio
import os
import random
import resource
import smtplib
import ssl
import time
from pathlib import Path

from .common import percentile

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


def component_pss_kib(mains: dict[str, int]) -> dict[str, int]:
    """PSS in KiB of each component's process tree, by name, and of the processes that carry
    sessions ("session_processes": nginx's and HAProxy's trees, dovecot's imap, imap-login and
    imap-hibernate processes): where a held session's memory goes. The node's other
    processes come and go on their own (LMTP and auth workers end when idle), which would
    blur the memory of sessions held for minutes."""
    out = {name: pss_kib(tree([pid])) for name, pid in mains.items()}
    carriers = [pid for name in ("nginx", "haproxy") if name in mains for pid in tree([mains[name]])]
    if "dovecot" in mains:
        carriers += [pid for pid in tree([mains["dovecot"]]) if _comm(pid) in SESSION_PROCESSES]
    out["session_processes"] = pss_kib(carriers)
    return out


SESSION_PROCESSES = {"imap", "imap-login", "imap-hibernate"}


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


async def _session(port: int, user: str, password: str, context: ssl.SSLContext, gate: asyncio.Semaphore,
                   timeout: float, held: dict, failures: dict, login_s: list[float]) -> None:
    try:
        async with gate:
            start = time.perf_counter()
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", port, ssl=context, server_hostname="localhost"), timeout)
            greeting = await asyncio.wait_for(reader.readline(), timeout)
            if not greeting.startswith(b"* OK"):
                raise ConnectionError(greeting.decode(errors="replace").strip() or "closed without an answer")
            exists = 0
            for tag, command, done in ((b"a", f'LOGIN "{user}" "{password}"', b"a OK"),
                                       (b"b", "SELECT INBOX", b"b OK"), (b"c", "IDLE", b"+ ")):
                writer.write(tag + b" " + command.encode() + b"\r\n")
                while True:
                    line = await asyncio.wait_for(reader.readline(), timeout)
                    if not line:
                        raise ConnectionError(f"closed during {command.split()[0]}")
                    if line.endswith(b" EXISTS\r\n"):
                        exists = int(line.split()[1])
                    if line.startswith(done):
                        break
                    if line.startswith(tag + b" "):
                        raise ConnectionError(line.decode(errors="replace").strip())
            login_s.append(time.perf_counter() - start)
            held[user] = (reader, writer, exists)
    except (TimeoutError, OSError, ConnectionError) as exc:
        reason = str(exc).split(":")[0][:60] or exc.__class__.__name__
        failures[reason] = failures.get(reason, 0) + 1


async def _watch(reader: asyncio.StreamReader, arrivals: list[tuple[float, int]]) -> None:
    """(time, message count) of every EXISTS an idling session is told about."""
    while True:
        line = await reader.readline()
        if not line:
            return
        if line.endswith(b" EXISTS\r\n"):
            arrivals.append((time.perf_counter(), int(line.split()[1])))


def smtp_burst(port: int, recipients: list[str], count: int) -> float:
    """Messages a second one SMTP session delivers to port 25, `count` of them back to back."""
    start = time.perf_counter()
    with smtplib.SMTP("127.0.0.1", port, timeout=60) as smtp:
        for i in range(count):
            smtp.sendmail("load@example.org", [recipients[i % len(recipients)]],
                          f"From: load@example.org\r\nSubject: burst {i}\r\n\r\nburst\r\n")
    return count / (time.perf_counter() - start)


def smtp_steady(port: int, recipients: list[str], count: int, rate: float, seed: int = 25) -> list[tuple[str, float]]:
    """`count` messages to random recipients at `rate` a second; (recipient, time accepted) each."""
    rng = random.Random(seed)
    sent = []
    start = time.perf_counter()
    with smtplib.SMTP("127.0.0.1", port, timeout=60) as smtp:
        for i in range(count):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            rcpt = rng.choice(recipients)
            smtp.sendmail("load@example.org", [rcpt], f"From: load@example.org\r\nSubject: steady {i}\r\n\r\nx\r\n")
            sent.append((rcpt, time.perf_counter()))
    return sent


def notification_ms(sent: list[tuple[str, float]], arrivals: dict[str, list[tuple[float, int]]],
                    baseline: dict[str, int]) -> tuple[list[float], int]:
    """Milliseconds from SMTP's 250 to the IDLE session's EXISTS, per message; and how many
    were never announced. A user's k-th message arrived when an EXISTS first counted it."""
    per_user: dict[str, int] = {}
    out, missing = [], 0
    for rcpt, accepted in sent:
        per_user[rcpt] = per_user.get(rcpt, 0) + 1
        wanted = baseline.get(rcpt, 0) + per_user[rcpt]
        seen = next((t for t, n in arrivals.get(rcpt, []) if n >= wanted), None)
        if seen is None:
            missing += 1
        else:
            out.append(max(0.0, (seen - accepted) * 1000))
    return sorted(out), missing


async def _hold(port: int, smtp_port: int, users: list[tuple[str, str]], concurrency: int, timeout: float,
                measure, messages: int, rate: float, hold_s: float):
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    gate = asyncio.Semaphore(concurrency)
    held: dict = {}
    failures: dict[str, int] = {}
    login_s: list[float] = []
    start = time.perf_counter()
    await asyncio.gather(*(_session(port, u, p, context, gate, timeout, held, failures, login_s) for u, p in users))
    elapsed = time.perf_counter() - start
    await asyncio.sleep(1)  # the last processes finish starting
    during = measure()
    arrivals: dict[str, list[tuple[float, int]]] = {user: [] for user in held}
    watchers = [asyncio.create_task(_watch(reader, arrivals[user])) for user, (reader, _, _) in held.items()]
    recipients = sorted(held)
    loaded_rate = await asyncio.to_thread(smtp_burst, smtp_port, recipients, messages)
    # held for hold_s from the last login: the memory of sessions that have idled that long
    # (hibernated ones included), then the notifications reach sessions in that state
    await asyncio.sleep(max(2.0, hold_s - (time.perf_counter() - start - elapsed)))
    steady = measure()
    closed = sum(1 for task in watchers if task.done())
    baseline = {user: max([held[user][2], *(n for _, n in arrivals[user])]) for user in held}
    sent = await asyncio.to_thread(smtp_steady, smtp_port, recipients, messages, rate)
    for _ in range(100):  # bounded: up to 10 s for the last deliveries to be announced
        if not notification_ms(sent, arrivals, baseline)[1]:
            break
        await asyncio.sleep(0.1)
    latencies, missing = notification_ms(sent, arrivals, baseline)
    for task in watchers:
        task.cancel()
    for _, writer, _ in held.values():
        writer.close()
    return (len(held), failures, elapsed, sorted(login_s), during, loaded_rate, latencies, missing, steady,
            time.perf_counter() - start - elapsed, closed)


def _p(values: list[float], q: float) -> float | None:
    """The q-quantile (0..1) of `values`, nearest rank over every sample (common.percentile:
    p99 of 100 samples is the 99th, not the largest)."""
    return round(percentile(values, q * 100), 1) if values else None


# a notification later than this (the p99 target) counts as late, as does a missing one
LATE_MS = 2000.0


def raise_open_files(needed: int) -> tuple[int, int]:
    """Raise this process's RLIMIT_NOFILE (soft and hard; root may raise the hard limit up to
    fs.nr_open) to at least `needed`: the node's daemons, started by the direct backend,
    inherit it, and this process holds one socket a session. Returns the limits now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < needed and os.geteuid() == 0:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (needed, min(needed, int(
                Path("/proc/sys/fs/nr_open").read_text()))))
        except (ValueError, OSError):  # no CAP_SYS_RESOURCE (a container): the hard limit stays
            pass
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


class PackageKernelLimits:
    """The package's sysctl drop-in (systemd/sysctl.d/60-rupost.conf) for the run: each value
    only raised, never lowered, and put back afterwards unless someone changed it meanwhile
    (the machine is shared). The measured node then has what a packaged node has."""

    def __init__(self, dropin: Path) -> None:
        self.wanted = {}
        for line in dropin.read_text().splitlines():
            if line.strip() and not line.lstrip().startswith(("#", ";")):
                key, _, value = line.partition("=")
                self.wanted[Path("/proc/sys") / key.strip().replace(".", "/")] = int(value)
        self.restore: dict[Path, tuple[int, int]] = {}

    def __enter__(self) -> dict[str, int]:
        for path, value in self.wanted.items():
            before = int(path.read_text())
            if before < value:
                path.write_text(str(value))
                self.restore[path] = (before, value)
        return {str(path): int(path.read_text()) for path in self.wanted}

    def __exit__(self, *exc) -> None:
        for path, (before, set_to) in self.restore.items():
            if int(path.read_text()) == set_to:
                path.write_text(str(before))


def held_sessions(inst, pg, users: list[tuple[str, str]], concurrency: int = 50, timeout: float = 60.0,
                  messages: int = 100, rate: float = 10.0, hold_s: float = 0.0) -> dict:
    """Hold one IMAPS session per user at once, deliver mail to them at a steady rate; the figures."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    by_name = {name: pid for name, pid in ((name, inst.app.backend.pid(name)) for name in COMPONENTS) if pid}
    by_name["postgresql"] = int((pg.data / "postmaster.pid").read_text().split()[0])
    mains = list(by_name.values())
    smtp_port = inst.ports["smtp"]
    smtp_burst(smtp_port, [u for u, _ in users], 20)  # warm-up: postfix's processes and lookups start
    unloaded_rate = smtp_burst(smtp_port, [u for u, _ in users], messages)
    time.sleep(2)  # the burst's deliveries are through before the baseline
    before, procs_before = node_pss_kib(mains)
    components_before = component_pss_kib(by_name)
    samples: list[dict[str, int]] = []

    def measure_held() -> tuple[int, int]:
        samples.append(component_pss_kib(by_name))
        return node_pss_kib(mains)

    (established, failures, elapsed, login_s, (during, procs_during), loaded_rate, latencies, missing,
     (steady, procs_steady), held_s, closed) = asyncio.run(
        _hold(inst.ports["imaps"], smtp_port, users, concurrency, timeout, measure_held, messages, rate, hold_s))

    def per_session(after: float, before: float) -> float:
        return round((after - before) / established, 1) if established else 0.0

    by_component = {name: per_session(samples[0].get(name, 0), kib) for name, kib in components_before.items()}
    by_component_steady = {name: per_session(samples[-1].get(name, 0), kib)
                           for name, kib in components_before.items()}
    dovecot_log = (inst.layout.logs / "dovecot.log").read_text(errors="replace")
    return {
        "capacity_sessions": len(users),
        "capacity_established": established,
        "capacity_failed": sum(failures.values()),
        "capacity_failures": failures,
        "capacity_login_rate_s": round(established / elapsed, 1) if elapsed else 0.0,
        "capacity_login_p50_ms": _p([s * 1000 for s in login_s], 0.5),
        "capacity_login_p99_ms": _p([s * 1000 for s in login_s], 0.99),
        "capacity_node_pss_idle_mib": round(before / 1024, 1),
        "capacity_node_pss_held_mib": round(during / 1024, 1),
        "capacity_processes_idle": procs_before,
        "capacity_processes_held": procs_during,
        "capacity_kib_per_session": per_session(during, before),
        **{f"capacity_kib_per_session_{name}": kib for name, kib in by_component.items()},
        # after the hold: what sessions idling that long cost (hibernated ones, with hibernation on)
        "capacity_held_s": round(held_s),
        "capacity_closed_during_hold": closed,
        "capacity_node_pss_steady_mib": round(steady / 1024, 1),
        "capacity_processes_steady": procs_steady,
        "capacity_kib_per_session_steady": by_component_steady.pop("session_processes"),
        **{f"capacity_kib_per_session_steady_{name}": kib for name, kib in by_component_steady.items()},
        "capacity_smtp_unloaded_msgs_s": round(unloaded_rate, 1),
        "capacity_smtp_loaded_msgs_s": round(loaded_rate, 1),
        "capacity_smtp_loaded_ratio": round(loaded_rate / unloaded_rate, 3) if unloaded_rate else None,
        "capacity_idle_notify_p50_ms": _p(latencies, 0.5),
        "capacity_idle_notify_p99_ms": _p(latencies, 0.99),
        "capacity_idle_notify_missing": missing,
        "capacity_idle_notify_late": missing + sum(1 for ms in latencies if ms > LATE_MS),
        # dovecot stopped watching mailboxes (fs.inotify.max_user_instances): IDLE polls every 30 s
        "capacity_dovecot_inotify_exceeded": dovecot_log.count("Inotify instance limit for user"),
        # what the kernel granted the run (the package's sysctl drop-in raises both)
        "capacity_kernel_inotify_instances": int(Path("/proc/sys/fs/inotify/max_user_instances").read_text()),
        "capacity_kernel_inotify_watches": int(Path("/proc/sys/fs/inotify/max_user_watches").read_text()),
        "capacity_steady_messages": messages,
        "capacity_steady_rate_s": rate,
    }


def section(ctx, password: str) -> dict:
    """The suite's held_imap_sessions: `capacity_sessions` mailboxes (capacity.test), the node
    sized for them, each holding a session."""
    from .common import bulk_mailboxes

    n, inst = ctx.cfg["capacity_sessions"], ctx.inst
    domain = "capacity.test"
    bulk_mailboxes(inst, n, domain)
    wanted = load(ctx.cfg)
    sized = {**inst.parameters, **wanted}
    if wanted:  # beyond the builtin template's default load: the node sized for it, as rupost sizing would
        result = inst.app.deploys.deploy(inst.app.deploys.plan(sized))
        if result.result not in ("applied", "unchanged"):
            raise RuntimeError(f"the node was not sized for {n} sessions: {result.result}")
    try:
        r = held_sessions(inst, ctx.pg, [(f"u{i}@{domain}", password) for i in range(n)],
                          hold_s=ctx.cfg.get("capacity_hold_s", 0))
    finally:
        if wanted:
            inst.app.deploys.deploy(inst.app.deploys.plan(dict(inst.parameters)))
    ctx.details["capacity"] = r
    return {**{k: v for k, v in r.items() if k != "capacity_failures"},
            "capacity_imap_sessions_per_process": sized.get("imap_sessions_per_process", 1),
            "capacity_imap_hibernate_after": sized.get("imap_hibernate_after", 0),
            "capacity_max_imap_sessions": sized.get("max_imap_sessions", 2000),
            "capacity_max_smtp_sessions": sized.get("max_smtp_sessions", 200),
            "capacity_max_web_sessions": sized.get("max_web_sessions", 1000),
            "capacity_open_files": ctx.cfg.get("capacity_open_files")}


def load(cfg: dict) -> dict:
    """The template parameters held_imap_sessions deploys: max_imap_sessions with a fiftieth to
    spare when the sessions exceed nine tenths of the default load, and the sessions a process
    asked for. Where the daemons' open-file limit (`capacity_open_files`: the hard limit this
    process could get) cannot carry the default SMTP and web loads beside them, those shrink to
    rupost sizing's minimums (20 and 50: the benchmark holds IMAP sessions); beyond that the
    run stops naming the limit."""
    from rupost.templating.limits import derive_limits

    out: dict = {}
    n = cfg["capacity_sessions"]
    if n > derive_limits({}).imap_sessions * 9 // 10:
        out["max_imap_sessions"] = n + max(10, n // 50)
    if cfg.get("capacity_per_process", 1) > 1:
        out["imap_sessions_per_process"] = cfg["capacity_per_process"]
    if cfg.get("capacity_hibernate", 0) > 0:
        out["imap_hibernate_after"] = cfg["capacity_hibernate"]
    granted = cfg.get("capacity_open_files")
    if granted and derive_limits(out).open_files > granted:
        out.update(max_smtp_sessions=20, max_web_sessions=50)
        if derive_limits(out).open_files > granted:
            raise RuntimeError(f"{n} held sessions need limits.open_files = {derive_limits(out).open_files} in HAProxy "
                               f"(two descriptors a session), and this machine grants {granted} (the hard "
                               "RLIMIT_NOFILE, which this process cannot raise): use fewer --capacity-sessions")
    return out
