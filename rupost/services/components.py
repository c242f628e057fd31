"""The mail components of this node: state, start, stop, restart.

The components run as one unit (guide §2.3): stopping one stops them all.
"""
from __future__ import annotations

from ..errors import NotFoundError, ServiceError

# How each daemon reopens the log files it opens by name in /var/log/rupost (after logrotate
# renamed them): nginx and the dovecot master on SIGUSR1; postfix's postlogd is restarted by
# `postfix reload`. memcached, HAProxy and SOGo only write to their stdout, which the backend
# appends to NAME.log: logrotate truncates those in place (copytruncate).
REOPEN_LOGS = {"nginx": "usr1", "dovecot": "usr1", "postfix": "reload"}


class ComponentService:
    def __init__(self, app):
        self.app = app

    def _check(self, names: list[str] | None) -> list[str]:
        names = names or list(self.app.adapters)
        unknown = [n for n in names if n not in self.app.adapters]
        if unknown:
            raise NotFoundError(f"unknown component(s): {', '.join(unknown)} "
                                f"(known: {', '.join(self.app.adapters)})")
        return names

    def process_spec(self, name: str):
        self._check([name])
        return self.app.adapters[name].process(self.app.deploys.deployer.live_context())


    def states(self) -> dict:
        backend = self.app.backend
        return {name: {"running": backend.is_running(name), "pid": backend.pid(name)} for name in self.app.adapters}

    def start(self, names: list[str] | None = None) -> list[str]:
        if not self.app.layout.current.exists():
            raise NotFoundError("nothing is deployed on this node yet: run rupost deploy")
        started = []
        with self.app.evacuation.ownership():
            for name in self.app.adapters:
                if name in self._check(names) and not self.app.backend.is_running(name):
                    self.app.backend.start(name, self.process_spec(name))
                    started.append(name)
        self.app.audit.record("components.start", ",".join(started))
        return started

    def reopen_logs(self) -> dict[str, str]:
        """Make every running daemon that writes its own log files reopen them (logrotate's postrotate)."""
        import os
        import signal
        import subprocess

        done = {}
        for name in self.app.adapters:
            how = REOPEN_LOGS.get(name)
            if how is None:
                done[name] = "stdout only (copytruncate)"
                continue
            pid = self.app.backend.pid(name)
            if pid is None:
                done[name] = "not running"
                continue
            if how == "usr1":
                try:
                    os.kill(pid, signal.SIGUSR1)
                except ProcessLookupError:
                    done[name] = "not running"
                    continue
            else:
                r = subprocess.run(self.process_spec(name).reload_argv, capture_output=True, text=True, timeout=60)
                if r.returncode != 0:
                    raise ServiceError(f"{name}: reopening its log failed: {(r.stderr or r.stdout).strip()}")
            done[name] = "reopened"
        return done

    def stop(self, names: list[str] | None = None) -> list[str]:
        """Stop everything, or the named components; naming any mail component stops the
        whole mail unit (they run together), HAProxy and memcached can stop alone."""
        from adapters import MAIL_UNIT

        if names:
            self._check(names)
            wanted = set(names) | (set(MAIL_UNIT) if set(names) & set(MAIL_UNIT) else set())
            stopped = self.app.deploys.deployer.stop_all(wanted)
        else:
            stopped = self.app.deploys.deployer.stop_all()
        self.app.nodes.report("out_of_service", self.states())
        self.app.audit.record("components.stop", ",".join(stopped))
        return stopped

    def restart(self, names: list[str] | None = None) -> list[str]:
        self.stop(names)
        return self.start(None)
