"""Service backends: how a node's daemons are started, stopped, reloaded and watched.

``direct`` spawns each daemon in the foreground in its own session, with its own
configuration path, and tracks it by pid file (used where systemd is not PID 1:
containers, CI, development). ``systemd`` drives RuPost's own units. The deploy
pipeline and the node agent use the same calls on both.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Protocol

from adapters.base import ProcessSpec
from rupost.errors import ServiceError
from rupost.paths import Layout

_SIGNALS = {"hup": signal.SIGHUP, "usr2": signal.SIGUSR2}


class ServiceBackend(Protocol):
    """How the daemons of a node are run: DirectBackend or SystemdBackend."""

    name: str

    def is_running(self, component: str, spec: ProcessSpec | None = None) -> bool: ...

    def pid(self, component: str, spec: ProcessSpec | None = None) -> int | None: ...

    def start(self, component: str, spec: ProcessSpec) -> object: ...

    def reload(self, component: str, spec: ProcessSpec) -> None: ...

    def stop(self, component: str, spec: ProcessSpec) -> None: ...

    def open_files_limit(self) -> int:
        """RLIMIT_NOFILE the daemons run with (the limits' open_files must fit in it)."""
        ...


def _proc_start_time(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] == "Z":  # a zombie is a dead daemon whose parent has not reaped it
        return None
    return fields[19]


# The environment of every daemon (the systemd unit sets the same, a test compares them).
# TZ named: glibc otherwise stats /etc/localtime for every timestamp (each log line).
DAEMON_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8",
              "TZ": ":/etc/localtime"}


class DirectBackend:
    name = "direct"

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        _raise_nofile_limit()

    def open_files_limit(self) -> int:
        """The daemons inherit this process's limit, raised to its hard limit."""
        import resource

        return resource.getrlimit(resource.RLIMIT_NOFILE)[1]

    # --- tracking
    def _record(self, component: str) -> tuple[int, str] | None:
        try:
            pid_text, start = self.layout.pid_file(component).read_text().split()
            return int(pid_text), start
        except (OSError, ValueError):
            return None

    def pid(self, component: str, spec: ProcessSpec | None = None) -> int | None:
        record = self._record(component)
        if record is None:
            return None
        pid, start = record
        self._reap(pid)
        return pid if _proc_start_time(pid) == start else None

    def is_running(self, component: str, spec: ProcessSpec | None = None) -> bool:
        return self.pid(component, spec) is not None

    @staticmethod
    def _reap(pid: int) -> None:
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass

    # --- control
    def start(self, component: str, spec: ProcessSpec) -> int | None:
        if self.is_running(component):
            return self.pid(component)
        if spec.prepare:
            spec.prepare()
        self.layout.run.mkdir(parents=True, exist_ok=True)
        self.layout.logs.mkdir(parents=True, exist_ok=True)
        if shutil.which(spec.argv[0]) is None:
            raise ServiceError(f"{component}: {spec.argv[0]} is not installed")
        env = {**DAEMON_ENV, **spec.env}
        with open(self.layout.output_file(component), "ab") as log:
            proc = subprocess.Popen(spec.argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True, cwd="/", env=env, user=spec.user,
                                    group=spec.user and _primary_group(spec.user))
        start = None
        for _ in range(50):
            start = _proc_start_time(proc.pid)
            if start:
                break
            time.sleep(0.01)
        self.layout.pid_file(component).write_text(f"{proc.pid} {start}\n")
        return proc.pid

    def stop(self, component: str, spec: ProcessSpec) -> None:
        pid = self.pid(component)
        if pid is None:
            self.layout.pid_file(component).unlink(missing_ok=True)
            return
        if spec.stop_argv:
            subprocess.run(spec.stop_argv, capture_output=True, timeout=spec.stop_timeout)
        else:
            _signal_group(pid, signal.SIGTERM)
        if not self._wait_gone(component, spec.stop_timeout):
            _signal_group(pid, signal.SIGKILL)
            self._wait_gone(component, 5)
        self.layout.pid_file(component).unlink(missing_ok=True)

    def _wait_gone(self, component: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.is_running(component):
                return True
            time.sleep(0.05)
        return False

    def reload(self, component: str, spec: ProcessSpec) -> None:
        pid = self.pid(component)
        if pid is None:
            raise ServiceError(f"{component} is not running, cannot reload it")
        if spec.reload == "restart":
            self.stop(component, spec)
            self.start(component, spec)
        elif spec.reload == "command":
            proc = subprocess.run(spec.reload_argv or [], capture_output=True, text=True, timeout=60)
            if proc.returncode != 0:
                raise ServiceError(f"{component}: reload failed: {(proc.stderr or proc.stdout).strip()}")
        else:
            signal_reload(component, pid, spec.reload)


def signal_reload(component: str, pid: int, how: str, timeout: float = 30.0) -> None:
    """Signal the master process to reload and return once the reload has taken effect.

    A signal only asks: until the master has started workers with the new configuration
    and the old workers have closed their listening sockets, a new connection can still
    reach an old worker. A probe run in that window would pass with the old configuration
    and let a broken one stay live, so we wait for (1) at least one child the master did
    not have before and (2) no pre-reload child still holding a TCP listening socket.
    A master that does neither within ``timeout`` (for instance nginx refusing the new
    configuration and keeping its old workers) is a failed reload."""
    before = set(_children(pid))
    os.kill(pid, _SIGNALS[how])
    deadline = time.monotonic() + timeout
    while True:
        now = set(_children(pid))
        if now - before:
            listening = _tcp_listening_inodes()
            if not any(_holds_socket(child, listening) for child in before & now):
                return
        if time.monotonic() > deadline:
            raise ServiceError(f"{component}: the reload did not take effect within {timeout:.0f} s "
                               "(no new worker, or old workers still accepting connections); "
                               f"see its log")
        if _proc_start_time(pid) is None:
            raise ServiceError(f"{component}: the master process {pid} exited during the reload; see its log")
        time.sleep(0.02)


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(entry.name))
    return found


def _tcp_listening_inodes() -> set[str]:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A":  # TCP_LISTEN
                inodes.add(fields[9])
    return inodes


def _holds_socket(pid: int, inodes: set[str]) -> bool:
    try:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:[") and target[8:-1] in inodes:
                return True
    except OSError:  # the process is gone
        return False
    return False


class SystemdBackend:
    """One templated unit, systemd/rupost-component@.service, runs every daemon
    through `rupost components exec NAME`: the same argv as the direct backend."""

    name = "systemd"

    def __init__(self, layout: Layout) -> None:
        self.layout = layout

    @staticmethod
    def unit(component: str) -> str:
        return f"rupost-component@{component}.service"

    def _systemctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run(["systemctl", *args], capture_output=True, text=True, timeout=120)
        if check and proc.returncode != 0:
            raise ServiceError(f"systemctl {' '.join(args)}: {(proc.stderr or proc.stdout).strip()}")
        return proc

    def is_running(self, component: str, spec: ProcessSpec | None = None) -> bool:
        return self._systemctl("is-active", "--quiet", self.unit(component), check=False).returncode == 0

    def pid(self, component: str, spec: ProcessSpec | None = None) -> int | None:
        out = self._systemctl("show", "-p", "MainPID", "--value", self.unit(component), check=False).stdout
        return int(out.strip()) or None if out.strip().isdigit() else None

    def open_files_limit(self) -> int:
        """LimitNOFILE of the component unit (systemd/rupost-component@.service)."""
        out = self._systemctl("show", "-p", "LimitNOFILE", "--value", self.unit("dovecot"), check=False).stdout
        return int(out.strip()) if out.strip().isdigit() else 1048576

    def start(self, component: str, spec: ProcessSpec) -> None:
        if spec.prepare:
            spec.prepare()
        self._systemctl("start", self.unit(component))

    def stop(self, component: str, spec: ProcessSpec) -> None:
        self._systemctl("stop", self.unit(component))

    def reload(self, component: str, spec: ProcessSpec) -> None:
        verb = "restart" if spec.reload == "restart" else "reload"
        self._systemctl(verb, self.unit(component))


def _raise_nofile_limit() -> None:
    """Daemons inherit our limits: give them the hard limit of open files (the
    systemd units set LimitNOFILE themselves)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _primary_group(user: str) -> int:
    import pwd

    return pwd.getpwnam(user).pw_gid


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass
    except PermissionError:
        os.kill(pid, sig)


def systemd_is_pid1() -> bool:
    return Path("/run/systemd/system").is_dir()


def make_backend(layout: Layout, choice: str = "auto") -> ServiceBackend:
    if choice == "auto":
        choice = "systemd" if systemd_is_pid1() and layout.root == Path("/") else "direct"
    if choice == "direct":
        return DirectBackend(layout)
    if choice == "systemd":
        return SystemdBackend(layout)
    raise ServiceError(f"unknown service backend {choice!r} (expected auto, direct or systemd)")
