"""The inbound filter as this node sees it (docs/antispam.md): the `antispam` check asks
rspamd's controller and its Redis over their Unix sockets, as rspamd and postfix reach
them, whether they answer. A daemon that runs but does not answer (rspamd still compiling
its rules, Redis out of memory) is what the component check cannot see.
"""
from __future__ import annotations

import socket
from pathlib import Path
from typing import TYPE_CHECKING

from adapters import redis, rspamd

from .checks import CRITICAL, OK, CheckResult, register_check

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


def check_antispam(app: Services) -> list[CheckResult]:
    if not app.layout.current.exists() or "rspamd" not in app.adapters:
        return []
    results = []
    redis_socket = redis.socket_path(app.layout)
    try:
        answer = ask_unix(redis_socket, b"PING\r\n")
        ok = answer.startswith(b"+PONG")
        results.append(CheckResult("antispam", "redis", OK if ok else CRITICAL,
                                   "answers PING" if ok else f"unexpected answer to PING: {answer[:80]!r}"))
    except OSError as exc:
        results.append(CheckResult("antispam", "redis", CRITICAL,
                                   f"{redis_socket}: {exc.strerror or exc}: rspamd has no Bayes or greylisting "
                                   f"state (log: {app.layout.log_file('redis')})"))
    controller = rspamd.controller_socket(app.layout)
    try:
        answer = ask_unix(controller, b"GET /ping HTTP/1.0\r\n\r\n")
        ok = b"pong" in answer.lower()
        results.append(CheckResult("antispam", "rspamd", OK if ok else CRITICAL,
                                   "controller answers /ping" if ok else
                                   f"unexpected answer to /ping: {answer[:80]!r}"))
    except OSError as exc:
        results.append(CheckResult("antispam", "rspamd", CRITICAL,
                                   f"{controller}: {exc.strerror or exc}: port 25 follows milter_default_action "
                                   f"(log: {app.layout.log_file('rspamd')})"))
    return results


register_check("antispam", check_antispam)
