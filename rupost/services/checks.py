"""Self-diagnosis: every check of a node, once, and the state changes written to the monitor log.

A check is a function ``fn(app) -> list[CheckResult]`` in a registry (``register_check``), so
other parts of the core add theirs (the user directory, for instance) without touching this
module. ``CheckService.run`` runs them all; with ``record=True`` (``rupost check`` and the
scheduler) every result whose status differs from the last recorded one is written as one line
to the monitor log (``/var/log/rupost/monitor.log`` under the node root, the same format as the
node agent's) and as a ``monitor_events`` row in ``rupost_logs``. The last states live in
``/var/lib/rupost/monitor-checks.json`` so the CLI and the scheduler share them.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import itertools
import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from ..errors import RuPostError

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from . import Services

OK, WARNING, CRITICAL = "ok", "warning", "critical"
SEVERITY = {OK: 0, WARNING: 1, CRITICAL: 2}

# thresholds, overridable by cluster settings of the same name (rupost settings in the rupost DB)
DEFAULTS = {
    "monitor_disk_warning_percent": 90,
    "monitor_disk_critical_percent": 95,
    "monitor_queue_warning": 500,
    "monitor_queue_critical": 5000,
    # the queue "grows" when it rose at each of this many consecutive checks, by at least this much in all
    "monitor_queue_growth_samples": 4,
    "monitor_queue_growth_min": 50,
    # live sessions against each listener's max_sessions (template parameters max_*_sessions)
    "monitor_capacity_warning_percent": 80,
    # a highly available database's replica further behind than this is reported (bytes of WAL)
    "monitor_database_lag_bytes": 16 * 1024 * 1024,
    # the age of clamd's newest signature database (freshclam updates them several times a day)
    "monitor_antivirus_db_warning_hours": 48,
    "monitor_antivirus_db_critical_hours": 168,
}


@dataclass
class CheckResult:
    check: str   # the check's name: component, probe, disk, database, certificate, queue, ...
    target: str  # what it looked at: dovecot, imaps, /var/vmail, rupost_logs, ...
    status: str  # ok | warning | critical
    detail: str

    @property
    def key(self) -> str:
        return f"{self.check}:{self.target}"

    def as_dict(self) -> dict:
        return asdict(self)


CheckFn = Callable[["Services"], list[CheckResult]]
CHECKS: dict[str, CheckFn] = {}


def register_check(name: str, fn: CheckFn) -> None:
    """Add (or replace) a check; it is run by `rupost check` and by the scheduler."""
    CHECKS[name] = fn


def setting(app: Services, key: str) -> Any:
    try:
        value = app.settings.get(key)
    except RuPostError:
        value = None
    return DEFAULTS[key] if value is None else value


# ------------------------------------------------------------------------- the checks
def check_components(app: Services) -> list[CheckResult]:
    if not app.layout.current.exists():
        return [CheckResult("component", "node", CRITICAL, "nothing is deployed on this node: run rupost deploy")]
    out = []
    states = app.components.states()  # the components the live generation runs
    for name, adapter in app.adapters.items():
        state = states.get(name)
        if state is None:
            if not adapter.switchable:  # a switchable one is simply switched off
                out.append(CheckResult("component", name, WARNING,
                                       f"{name} is not in the live generation (installed after the last deploy): "
                                       "run rupost deploy"))
        elif state["running"]:
            out.append(CheckResult("component", name, OK, f"running (pid {state['pid']})"))
        else:
            out.append(CheckResult("component", name, CRITICAL,
                                   f"{name} is not running (`rupost components start`; log: "
                                   f"{app.layout.log_file(name)})"))
    return out


def check_probes(app: Services) -> list[CheckResult]:
    if not app.layout.current.exists():
        return []
    return [CheckResult("probe", p.name, OK if p.ok else CRITICAL, p.detail)
            for p in app.component_runtime.run_probes(patience=0)]


def check_disks(app: Services) -> list[CheckResult]:
    """Space and inodes of the file systems holding mail storage, queue, logs and state
    (one result per file system, naming what it holds)."""
    layout = app.layout
    warn, crit = setting(app, "monitor_disk_warning_percent"), setting(app, "monitor_disk_critical_percent")
    paths = [("mail storage", layout.mail_storage), ("mail queue", layout.postfix_queue),
             ("logs", layout.logs), ("state", layout.state)]
    out: list[CheckResult] = []
    by_dev: dict[int, tuple[list[str], CheckResult, float, float, int]] = {}
    for label, path in paths:
        probe = path
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        try:
            st = os.statvfs(probe)
            dev = os.stat(probe).st_dev
        except OSError as exc:
            out.append(CheckResult("disk", str(path), CRITICAL, f"{label}: cannot be read: {exc}"))
            continue
        if dev in by_dev:
            by_dev[dev][0].append(label)
            continue
        used = 100.0 * (st.f_blocks - st.f_bfree) / st.f_blocks if st.f_blocks else 0.0
        inodes = 100.0 * (st.f_files - st.f_ffree) / st.f_files if st.f_files else 0.0
        free_mib = st.f_bavail * st.f_frsize // 2**20
        worst = max(used, inodes)
        status = CRITICAL if worst >= crit else WARNING if worst >= warn else OK
        by_dev[dev] = ([label], CheckResult("disk", str(path), status, ""), used, inodes, free_mib)
    for labels, result, used, inodes, free_mib in by_dev.values():
        result.detail = (f"{' + '.join(labels)}: {used:.0f}% used, {free_mib} MiB free, inodes {inodes:.0f}% used "
                         f"(warning at {warn}%, critical at {crit}%)")
        out.append(result)
    return out


def check_databases(app: Services) -> list[CheckResult]:
    out = []
    for kind in ("main", "data", "logs"):
        name = app.dbs.name(kind)
        start = time.monotonic()
        try:
            app.dbs.check(kind)
            out.append(CheckResult("database", name, OK,
                                   f"answers ({(time.monotonic() - start) * 1000:.0f} ms)"))
        except RuPostError as exc:
            out.append(CheckResult("database", name, CRITICAL, str(exc)))
    return out


def check_lookups(app: Services) -> list[CheckResult]:
    """postfix's and dovecot's own database lookups, asked as the daemons ask them
    (services/lookup_probe.py): a database that answers a ping can still leave them failing
    (postfix's proxymap holding its connections dead after a restart), and every message to
    an uncached recipient then gets a 451."""
    from .lookup_probe import dovecot_problems, postfix_problems

    if not app.layout.current.exists():
        return []
    out = []
    for daemon, probe, what in (("postfix", postfix_problems, "every proxy:pgsql table answers through proxymap"),
                                ("dovecot", dovecot_problems, "the userdb answers through the auth service")):
        problems = probe(app)
        out.append(CheckResult("lookup", daemon, CRITICAL if problems else OK,
                               f"failing: {'; '.join(problems)} (mail to recipients it has not cached is "
                               "deferred or refused with 4xx; logins fail)" if problems else what))
    return out


def check_certificates(app: Services) -> list[CheckResult]:

    warnings = app.certificates.expiry_warnings()
    if not warnings:
        return [CheckResult("certificate", "all", OK, "no certificate expires within 30 days")]
    return [CheckResult("certificate", w["name"], WARNING if w["level"] == "warning" else CRITICAL, w["message"])
            for w in warnings]


def check_queue(app: Services, state: dict | None = None) -> list[CheckResult]:
    if not app.layout.current.exists():
        return []
    counts = app.mailqueues.summary()
    total = counts["total"]
    warn, crit = setting(app, "monitor_queue_warning"), setting(app, "monitor_queue_critical")
    detail = (f"{total} queued ({counts['active']} active, {counts['deferred']} deferred, "
              f"{counts['hold']} on hold, {counts['incoming'] + counts['maildrop']} incoming)")
    status = CRITICAL if total >= crit else WARNING if total >= warn else OK
    if state is not None:
        samples = state.setdefault("queue_samples", [])
        samples.append([int(time.time()), total])
        n = int(setting(app, "monitor_queue_growth_samples"))
        del samples[:-max(n, 2)]
        rising = len(samples) >= n and all(b[1] > a[1] for a, b in itertools.pairwise(samples))
        growth = samples[-1][1] - samples[0][1]
        if rising and growth >= setting(app, "monitor_queue_growth_min"):
            status = max(status, WARNING, key=SEVERITY.__getitem__)
            minutes = max(1, (samples[-1][0] - samples[0][0]) // 60)
            detail += f"; growing: +{growth} over the last {len(samples)} checks ({minutes} min)"
    else:
        detail += " (growth is tracked by the scheduler and rupost check)"
    return [CheckResult("queue", app.config.node_name, status, detail + f" (warning at {warn}, critical at {crit})")]


def check_directories(app: Services) -> list[CheckResult]:
    """Each enabled external user directory (LDAP/AD domains) answers: server, bind, base DN."""
    service = getattr(app, "directories", None)
    if service is None:
        return []
    out = []
    for d in service.list():
        if not d.get("enabled", True):
            continue
        report = service.test(d["name"], sample=1)
        if report.get("ok"):
            out.append(CheckResult("directory", d["name"], OK, f"answers ({report.get('server_used', '')})"))
        else:
            down = [s["uri"] for s in report.get("servers", []) if not s.get("reachable")]
            detail = report.get("error") or "not reachable"
            if down:
                detail += f" (unreachable: {', '.join(down)})"
            # one server of several down is a warning while another one answers
            status = WARNING if report.get("bind") and report.get("base_dn") else CRITICAL
            out.append(CheckResult("directory", d["name"], status, detail))
    return out


# the public listeners and the parameter that sizes each (rupost.templating.limits)
_LISTENER_PARAMETER = {"imaps": "max_imap_sessions", "smtp": "max_smtp_sessions",
                       "submissions": "max_smtp_sessions", "https": "max_web_sessions",
                       "http": "max_web_sessions", "sieve": "max_imap_sessions (a tenth)"}


def check_capacity(app: Services, state: dict | None = None) -> list[CheckResult]:
    """Live sessions of each public listener against the sessions it admits (HAProxy's
    counters; the limits are read from the live haproxy.cfg): a warning from
    monitor_capacity_warning_percent, critical at the limit (the next clients are refused
    with an answer) and whenever clients were refused since the last recorded check."""
    from adapters import haproxy

    if not app.layout.current.exists():
        return []
    cfg = app.layout.component_config("haproxy") / "haproxy.cfg"
    try:
        limits = haproxy.session_limits(cfg.read_text())
    except OSError as exc:
        return [CheckResult("capacity", "haproxy", CRITICAL, f"cannot read {cfg}: {exc.strerror}")]
    if not limits:
        return [CheckResult("capacity", "haproxy", WARNING,
                            "no listener has a session limit (the template sets no max_sessions): clients over "
                            "a daemon's limit are dropped without an answer")]
    try:
        stats = haproxy.proxy_stats(app.layout)
    except (OSError, ValueError) as exc:
        return [CheckResult("capacity", "haproxy", CRITICAL, f"HAProxy's counters cannot be read: {exc}")]
    warn = int(setting(app, "monitor_capacity_warning_percent"))
    from .kernel_limits import kernel_limits

    out = kernel_limits(app)
    refused_before = state.setdefault("capacity_refused", {}) if state is not None else {}
    for listener, limit in limits.items():
        sessions = int(stats.get((f"fe_{listener}", "FRONTEND"), {}).get("scur") or 0)
        refused = int(stats.get((f"be_refuse_{listener}", "BACKEND"), {}).get("stot") or 0)
        percent = 100 * sessions // limit
        new_refusals = refused - int(refused_before.get(listener, 0)) if state is not None else 0
        if new_refusals < 0:  # HAProxy restarted: its counters did too
            new_refusals = refused
        refused_before[listener] = refused
        detail = (f"{sessions} of {limit} sessions ({percent} %), {refused} refused since HAProxy started"
                  f" (parameter {_LISTENER_PARAMETER.get(listener, '-')}; warning at {warn} %)")
        if sessions >= limit or new_refusals > 0:
            status = CRITICAL
            detail = (f"limit reached: {detail}"
                      + (f"; {new_refusals} clients refused since the last check" if new_refusals > 0 else "")
                      + "; raise the parameter (rupost sizing) and deploy")
        else:
            status = WARNING if percent >= warn else OK
        out.append(CheckResult("capacity", listener, status, detail))
    return out


# A daemon's own limit reached (issue 25): each is a client dropped or kept waiting without an
# answer, because HAProxy's refusal should have answered it first. (log, pattern, what it means)
LIMIT_LOG_LINES: tuple[tuple[str, str, str], ...] = (
    # "service(stats): client_limit (1000) reached", "service(imap-login): client_limit/service_count
    # (1) reached", "... process_limit (1024) reached, client connections are being dropped"
    # and "Inotify instance limit for user vmail exceeded": IDLE then polls every 30 s
    ("dovecot.log", r"service\(\S+\): [\w/]+ \(\d+\) reached|Inotify instance limit for user \S+ exceeded",
     "dovecot drops connections or stops watching mailboxes"),
    ("postfix.log", r'service "[^"]+" \([^)]*\) has reached its process limit "\d+"',
     "postfix keeps clients waiting"),
    ("nginx-error.log", r"worker_connections are not enough|Too many open files", "nginx drops connections"),
    ("haproxy.log", r"Proxy \S+ reached (the configured maximum connection limit|process FD limit|system FD limit)",
     "HAProxy stops accepting"),
)
LIMIT_LOG_TAIL = 1 << 20  # bytes read back on the first scan (no offset recorded yet)


def check_limit_logs(app: Services, state: dict | None = None) -> list[CheckResult]:
    """New lines since the last recorded check in which a daemon says it reached a limit:
    critical (with the last such line) until a check finds none. Without a recorded state,
    the last MiB of each log."""
    import re

    offsets = state.setdefault("limit_logs", {}) if state is not None else {}
    out = []
    for log_name, pattern, meaning in LIMIT_LOG_LINES:
        path = app.layout.logs / log_name
        try:
            with open(path, "rb") as fh:
                inode, size = os.fstat(fh.fileno()).st_ino, os.fstat(fh.fileno()).st_size
                last = offsets.get(log_name)
                start = last[1] if last and last[0] == inode and last[1] <= size else max(0, size - LIMIT_LOG_TAIL)
                fh.seek(start)
                text = fh.read(size - start).decode(errors="replace")
        except FileNotFoundError:
            continue
        except OSError as exc:
            out.append(CheckResult("limit", log_name, WARNING, f"cannot read {path}: {exc.strerror}"))
            continue
        offsets[log_name] = [inode, size]
        hits = [line for line in text.splitlines() if re.search(pattern, line)]
        if hits:
            out.append(CheckResult("limit", log_name, CRITICAL,
                                   f"{len(hits)} new line(s): {meaning} ({hits[-1].strip()[:300]}); raise the "
                                   "max_*_sessions parameters (rupost sizing) and deploy"))
        else:
            out.append(CheckResult("limit", log_name, OK, "no limit reached"))
    return out


def check_mail_host(app: Services) -> list[CheckResult]:
    """The mail host name resolves, here, to an address of this node. Warnings, not critical:
    mail on the node keeps flowing, and a name that is right in the public DNS may resolve
    otherwise inside (split DNS) or to the address of a NAT or a load balancer in front."""
    from .. import netinfo, validation

    host = app.settings.mail_host()
    problem = validation.mail_host_problem(host)
    found = netinfo.resolve(host)
    mine = {a for a in netinfo.local_addresses() | {app.config.address} if not netinfo.is_loopback(a)}
    if problem:
        status, detail = WARNING, f"mail host name {host} {problem}"
    elif not found:
        status, detail = WARNING, (f"mail host name {host} does not resolve on this node: mail clients and other "
                                   "servers cannot find it by that name (publish an A record, or set the mail "
                                   "host name: rupost settings mail-host NAME)")
    elif all(netinfo.is_loopback(a) for a in found):
        status, detail = WARNING, (f"mail host name {host} resolves only to loopback ({', '.join(found)}): every "
                                   "other machine that looks it up finds itself (/etc/hosts?)")
    elif not set(found) & mine:
        others = ", ".join(sorted(mine)) or "none but loopback"
        status, detail = WARNING, (f"mail host name {host} resolves to {', '.join(found)}, none of this node's "
                                   f"addresses ({others}): right only behind a NAT or a load balancer")
    else:
        status, detail = OK, f"mail host name {host} resolves to {', '.join(found)} (this node)"
    return [CheckResult("mail-host", host, status, detail)]


register_check("component", check_components)
register_check("probe", check_probes)
register_check("disk", check_disks)
register_check("database", check_databases)
register_check("lookup", check_lookups)
register_check("certificate", check_certificates)
register_check("mail-host", check_mail_host)
register_check("directory", check_directories)
register_check("queue", check_queue)
register_check("capacity", check_capacity)
register_check("limit", check_limit_logs)

# registering their checks: the inbound filter (rspamd, Redis), a highly available database
from . import antispam, database_ha  # noqa: E402,F401

# checks that keep something between runs (a counter, an offset) in the recorded state
_STATEFUL = {check_queue, check_capacity, check_limit_logs}


# ------------------------------------------------------------------------- the service
class CheckService:
    def __init__(self, app: Services) -> None:
        self.app = app

    @property
    def state_file(self) -> Path:
        return self.app.layout.state / "monitor-checks.json"

    @contextlib.contextmanager
    def _state(self) -> Iterator[dict[str, Any]]:
        """The last recorded states, locked against a concurrent run (scheduler and CLI)."""
        path = self.state_file
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            lock = open(path.with_suffix(".lock"), "a")
        except OSError as exc:
            raise RuPostError(f"cannot record check states in {path.parent}: {exc.strerror} "
                              "(run as root, or use --no-record)") from None
        with lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                state = json.loads(path.read_text())
                if not isinstance(state, dict):
                    raise ValueError
            except (OSError, ValueError):
                state = {}
            yield state
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(state, indent=1, sort_keys=True))
            os.replace(tmp, path)

    def run(self, record: bool = True, only: list[str] | None = None) -> list[CheckResult]:
        unknown = [n for n in (only or []) if n not in CHECKS]
        if unknown:
            from ..errors import ValidationError

            raise ValidationError(f"unknown check(s): {', '.join(unknown)} (checks: {', '.join(CHECKS)})")
        names = only or list(CHECKS)
        if not record:
            return self._run_checks(names, None)
        with self._state() as state:
            results = self._run_checks(names, state)
            self._record_changes(results, state)
        return results

    def _run_checks(self, names: list[str], state: dict | None) -> list[CheckResult]:
        results = []
        for name in names:
            fn = CHECKS[name]
            try:
                if fn in _STATEFUL:
                    results.extend(fn(self.app, state))
                else:
                    results.extend(fn(self.app))
            except RuPostError as exc:
                results.append(CheckResult(name, "-", CRITICAL, f"the check could not run: {exc}"))
            except Exception as exc:  # a broken check must not hide the others
                results.append(CheckResult(name, "-", CRITICAL,
                                           f"the check failed: {exc.__class__.__name__}: {exc}"))
        return results

    def _record_changes(self, results: list[CheckResult], state: dict) -> None:
        last = state.setdefault("states", {})
        now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        for r in results:
            before = last.get(r.key, {}).get("status")
            if before == r.status or (before is None and r.status == OK):
                last.setdefault(r.key, {"status": r.status, "since": now})
                continue
            message = r.detail if r.status != OK else f"recovered ({before} before): {r.detail}"
            self.log(f"{r.check}:{r.target}" if r.check != "component" else r.target, r.status, message)
            last[r.key] = {"status": r.status, "since": now}

    def log(self, component: str, state: str, message: str) -> None:
        """One line in the monitor log (the node agent's format) and a monitor_events row."""
        from ..db.models import MonitorEvent

        node = self.app.config.node_name
        line = f"{dt.datetime.now().isoformat(timespec='seconds')} {node} {component} {state}: {message}\n"
        self.app.layout.logs.mkdir(parents=True, exist_ok=True)
        with open(self.app.layout.monitor_log, "a") as fh:
            fh.write(line)
        try:
            with self.app.dbs.session("logs") as s:
                s.add(MonitorEvent(node=node, component=component[:64], state=state[:32], message=message))
        except RuPostError:
            pass  # the file has it; the database may be what is down

    def last_states(self) -> dict:
        try:
            return json.loads(self.state_file.read_text()).get("states", {})
        except (OSError, ValueError):
            return {}

    @staticmethod
    def worst(results: list[CheckResult]) -> str:
        return max((r.status for r in results), key=SEVERITY.__getitem__, default=OK)
