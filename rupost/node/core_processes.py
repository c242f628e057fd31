"""The management core's own long-running processes, supervised by the node agent.

`rupost.service` is the agent plus these (SPEC §5): the control panel (gunicorn over
HTTPS), the client autoconfiguration server nginx proxies to, and the push-notification
dispatcher. They are not mail components: they do not stop with the mail unit, a deploy
does not restart them, and a failing one never takes the node out of service. The agent
(re)starts each on every tick, with a back-off so one that cannot start does not spin,
and stops them when it stops.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time


class CoreProcess:
    def __init__(self, name: str, root, args: list[str], backoff: float = 10.0):
        self.name, self.root, self.args, self.backoff = name, root, args, backoff
        self.proc: subprocess.Popen | None = None
        self.started_at = 0.0

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def ensure_running(self) -> bool:
        """Start it if it is not running; False while waiting out the back-off."""
        if self.running:
            return True
        if self.proc is not None and time.monotonic() - self.started_at < self.backoff:
            return False
        argv = [sys.executable, "-m", "rupost.cli", "--root", str(self.root), *self.args]
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, start_new_session=True)
        self.started_at = time.monotonic()
        return True

    def stop(self, timeout: float = 60.0) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:  # not running
            return
        os.killpg(proc.pid, signal.SIGTERM)  # each stops its own workers gracefully
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def core_processes(root) -> list[CoreProcess]:
    return [CoreProcess("panel", root, ["panel", "serve"]),
            CoreProcess("autoconfig", root, ["autoconfig", "serve"]),
            CoreProcess("push", root, ["push", "dispatch"])]
