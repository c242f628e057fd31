"""The inbound filter as this node sees it (docs/antispam.md): the `antispam` check asks
rspamd's controller and its Redis over their Unix sockets, as rspamd and postfix reach
them, whether they answer. A daemon that runs but does not answer (rspamd still compiling
its rules, Redis out of memory) is what the component check cannot see. With antivirus on,
the `antivirus` check asks clamd the same way and reports its signature databases' age.
"""
from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from adapters import clamd, redis, rspamd

from .checks import CRITICAL, OK, WARNING, CheckResult, register_check, setting

if TYPE_CHECKING:
    from . import Services

TIMEOUT = 3.0


def ask_unix(path: Path, request: bytes, timeout: float = TIMEOUT) -> bytes:
    """Send `request` on the Unix socket at `path`; the answer's first bytes."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        sock.sendall(request)
        answer = b""
        while len(answer) < 4096:
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
            if b"pong" in answer.lower() or answer.startswith(b"+") or answer.startswith(b"-"):
                break
        return answer


def ping(group: str, name: str, sock: Path, request: bytes, answered: Callable[[bytes], bool], what: str,
         when_down: str, log: Path) -> CheckResult:
    """A check row: the daemon behind `sock` answers `request` as `answered` expects; when it
    cannot be reached, `when_down` says what mail then meets."""
    try:
        answer = ask_unix(sock, request)
    except OSError as exc:
        return CheckResult(group, name, CRITICAL, f"{sock}: {exc.strerror or exc}: {when_down} (log: {log})")
    if answered(answer):
        return CheckResult(group, name, OK, f"answers {what}")
    return CheckResult(group, name, CRITICAL, f"unexpected answer to {what}: {answer[:80]!r}")


def check_antispam(app: Services) -> list[CheckResult]:
    if not app.layout.current.exists() or "rspamd" not in app.adapters:
        return []
    return [
        ping("antispam", "redis", redis.socket_path(app.layout), b"PING\r\n", lambda a: a.startswith(b"+PONG"),
             "PING", "rspamd has no Bayes or greylisting state", app.layout.log_file("redis")),
        ping("antispam", "rspamd", rspamd.controller_socket(app.layout), b"GET /ping HTTP/1.0\r\n\r\n",
             lambda a: b"pong" in a.lower(), "/ping", "port 25 follows milter_default_action",
             app.layout.log_file("rspamd")),
    ]


def check_antivirus(app: Services) -> list[CheckResult]:
    """clamd answers PING on its socket (as rspamd reaches it), and its newest signature
    database is younger than the thresholds (hours; `rupost settings thresholds`)."""
    conf = app.layout.current / clamd.NAME / "clamd.conf"
    if not conf.exists():
        return []  # antivirus off
    return [ping("antivirus", "clamd", clamd.socket_path(app.layout), b"zPING\0",
                 lambda a: a.rstrip(b"\0\n") == b"PONG", "PING", "mail is tempfailed until it answers",
                 app.layout.output_file(clamd.NAME)),
            database_age(app, conf)]


def database_age(app: Services, conf: Path) -> CheckResult:
    directory = next((Path(line.split(None, 1)[1]) for line in conf.read_text().splitlines()
                      if line.startswith("DatabaseDirectory ")), Path("/var/lib/clamav"))
    files = clamd.databases(directory)
    if not files:
        return CheckResult("antivirus", "signatures", CRITICAL, f"no signature database in {directory}")
    newest = max(files, key=lambda p: p.stat().st_mtime)
    hours = (time.time() - newest.stat().st_mtime) / 3600
    warning = setting(app, "monitor_antivirus_db_warning_hours")
    critical = setting(app, "monitor_antivirus_db_critical_hours")
    status = CRITICAL if hours >= critical else WARNING if hours >= warning else OK
    detail = f"newest {newest.name} updated {hours:.0f} h ago"
    if status != OK:
        detail += (f" (thresholds {warning} h / {critical} h): freshclam is not updating {directory}; "
                   "new viruses pass unseen")
    return CheckResult("antivirus", "signatures", status, detail)


register_check("antispam", check_antispam)
register_check("antivirus", check_antivirus)
