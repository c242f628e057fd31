"""The components' daemons on this node: start, reload, stop, probe, reopen logs.

One object shared by the deploy pipeline, the components service and the node agent, so
the order, the readiness checks and the mail unit's rules live in one place.
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from adapters import ComponentRegistry, LogReopen, NodeData, Probe, ProcessSpec, RenderContext
from adapters import probes as protocol

from ..config import NodeConfig
from ..errors import DeployError, ServiceError
from ..paths import Layout
from .backend import ServiceBackend
from .plan import render_context


@dataclass
class Step:
    """One step of a deploy as recorded in its generation and shown to the administrator."""
    step: str
    ok: bool
    detail: str = ""
    at: float = field(default_factory=time.time)

    def as_dict(self) -> dict:
        return {"step": self.step, "ok": self.ok, "detail": self.detail, "at": self.at}


@dataclass
class StepLog:
    """Where the runtime reports what it did (a DeployOutcome is one)."""
    steps: list[Step] = field(default_factory=list)
    reloaded: list[str] = field(default_factory=list)
    started: list[str] = field(default_factory=list)

    def step(self, name: str, ok: bool, detail: str = "") -> None:
        self.steps.append(Step(name, ok, detail))


class PlannedProbe(NamedTuple):
    component: str
    probe: Probe
    host: str
    port: int


class ComponentRuntime:
    def __init__(self, layout: Layout, node: NodeConfig, components: ComponentRegistry, backend: ServiceBackend,
                 data: NodeData | None = None) -> None:
        self.layout = layout
        self.node = node
        self.components = components
        self.backend = backend
        self.data = data

    # ------------------------------------------------------------ what runs
    def live_context(self) -> RenderContext:
        return render_context(self.layout, self.node, self.layout.current, self.data)

    def process_spec(self, name: str) -> ProcessSpec:
        return self.components[name].process(self.live_context())

    def is_running(self, name: str) -> bool:
        return self.backend.is_running(name)

    def deployed(self) -> list[str]:
        """The components the live generation runs, in dependency order: those it has a
        directory for. A switchable one (clamd) has one when its section turned it on; one
        this release added (installed by an upgrade, the deploy after it not done yet) has
        none: it has no configuration to run with, so it is neither started nor supervised."""
        return [name for name in self.components if (self.layout.current / name).is_dir()]

    def states(self) -> dict[str, dict]:
        return {name: {"running": self.backend.is_running(name), "pid": self.backend.pid(name)}
                for name in self.deployed()}

    def stopped(self) -> list[str]:
        return [name for name in self.deployed() if not self.backend.is_running(name)]

    # ------------------------------------------------------------ start, reload, stop
    def start_or_reload(self, names: Iterable[str], to_reload: Iterable[str], log: StepLog) -> None:
        """Start each named component that is not running, reload those in `to_reload` that
        are, in dependency order; each must then accept connections on its ports."""
        names, to_reload = set(names), set(to_reload)
        ctx = self.live_context()
        deployed = set(self.deployed())
        for name, adapter in self.components.items():
            if name not in names:
                continue
            if name not in deployed:  # switched off by this generation
                if self.backend.is_running(name):
                    self.backend.stop(name, adapter.process(ctx))
                    log.step(f"stop {name}", True, "switched off")
                continue
            spec = adapter.process(ctx)
            try:
                if not self.backend.is_running(name):
                    self.backend.start(name, spec)
                    log.started.append(name)
                    action = "start"
                elif name in to_reload:
                    self.backend.reload(name, spec)
                    log.reloaded.append(name)
                    action = "reload"
                else:
                    continue
            except Exception as exc:  # a daemon that cannot start is a deploy failure, not a crash
                log.step(name, False, str(exc))
                raise DeployError(f"{name}: {exc}") from None
            self._require_ready(name, spec, action, log)

    def _require_ready(self, name: str, spec: ProcessSpec, action: str, log: StepLog) -> None:
        missing = [f"{h}:{p}" for h, p in spec.ports if not protocol.wait_for_port(h, p, 30)]
        missing += [str(s) for s in spec.sockets if not protocol.wait_for_unix_socket(str(s), 120)]
        if missing or not self.backend.is_running(name):
            detail = f"not listening on {', '.join(missing)}" if missing else "exited after start"
            # a start failure is on stderr; the daemon's own log may say more
            tail = " | ".join(t for t in {_tail(self.layout.output_file(name)): 0,
                                          _tail(self.layout.log_file(name)): 0} if t)
            log.step(f"{action} {name}", False, detail + (f"; log: {tail}" if tail else ""))
            raise DeployError(f"{name} failed after {action}: {detail}" + (f"\n{tail}" if tail else ""))
        log.step(f"{action} {name}", True)

    def start(self, names: Iterable[str]) -> list[str]:
        """Start the named components that are not running, in dependency order (no readiness
        wait: the agent and the deploy probe afterwards)."""
        wanted = set(names) & set(self.deployed())
        ctx = self.live_context()
        started = []
        for name, adapter in self.components.items():
            if name in wanted and not self.backend.is_running(name):
                self.backend.start(name, adapter.process(ctx))
                started.append(name)
        return started

    def restart(self, names: list[str], log: StepLog) -> None:
        try:
            stopped = self.stop(names)
        except Exception as exc:  # a daemon that will not stop fails the rollback, not the process
            log.step(f"stop {', '.join(names)}", False, str(exc))
            raise DeployError(f"stopping {', '.join(names)}: {exc}") from None
        for name in stopped:
            log.step(f"stop {name}", True)
        self.start_or_reload(names, [], log)

    def reload(self, name: str) -> bool:
        """Reload one running component outside a deploy (the same files); False when it
        is not running."""
        if not self.backend.is_running(name):
            return False
        self.backend.reload(name, self.process_spec(name))
        return True

    def stop(self, names: Iterable[str] | None = None) -> list[str]:
        """Stop the named components (all by default), in reverse dependency order."""
        wanted = set(self.components if names is None else names)
        ctx = self.live_context()
        stopped = []
        for name in reversed(list(self.components)):
            if name in wanted and self.backend.is_running(name):
                self.backend.stop(name, self.components[name].process(ctx))
                stopped.append(name)
        return stopped

    def stop_mail_unit(self) -> list[str]:
        """Stop the mail components together; HAProxy stays up and its health endpoint
        reports the node down, so peers route around it."""
        return self.stop(self.components.mail_unit)

    def with_mail_unit(self, names: Iterable[str]) -> set[str]:
        """Naming any mail component means the whole mail unit: they run together."""
        names = set(names)
        return names | set(self.components.mail_unit) if names & set(self.components.mail_unit) else names

    # ------------------------------------------------------------ probes
    def probe_host(self) -> str:
        return "127.0.0.1" if self.node.listen_address in ("*", "0.0.0.0", "::") else self.node.listen_address

    def planned_probes(self) -> list[PlannedProbe]:
        """Every probe the components declare, with where it connects."""
        host = self.probe_host()
        deployed = set(self.deployed())
        return [PlannedProbe(name, probe, "127.0.0.1" if probe.loopback else host, self.node.port(probe.port))
                for name, probe in self.components.probes() if name in deployed]

    def run_probes(self, patience: float = 10.0) -> list[protocol.ProbeResult]:
        """Every daemon already accepts connections (checked after its start or reload);
        the patience only covers a worker that is still reloading. A failing probe holds
        the rollback back by this long, so it stays short."""
        planned = self.planned_probes()
        # side by side: a failing probe waits out its patience, and a rollback waits for all of them
        with ThreadPoolExecutor(max_workers=max(1, len(planned))) as pool:
            return list(pool.map(lambda p: protocol.retry(p.probe.check, p.host, p.port, attempts_for=patience),
                                 planned))

    def require_probes(self, log: StepLog) -> None:
        failed = []
        for probe in self.run_probes():
            log.step(f"probe {probe.name}", probe.ok, probe.detail)
            if not probe.ok:
                failed.append(f"{probe.name}: {probe.detail}")
        if failed:
            raise DeployError("probe failed: " + "; ".join(failed))

    # ------------------------------------------------------------ logs
    def reopen_logs(self) -> dict[str, str]:
        """Make every running daemon that writes its own log files reopen them (logrotate's postrotate)."""
        done = {}
        for name in self.components:
            how = self.components.log_reopen(name)
            if how is LogReopen.COPYTRUNCATE:
                done[name] = "stdout only (copytruncate)"
                continue
            pid = self.backend.pid(name)
            if pid is None:
                done[name] = "not running"
                continue
            if how is LogReopen.SIGUSR1:
                try:
                    os.kill(pid, signal.SIGUSR1)
                except ProcessLookupError:
                    done[name] = "not running"
                    continue
            else:
                r = subprocess.run(self.process_spec(name).reload_argv or [], capture_output=True, text=True,
                                   timeout=60)
                if r.returncode != 0:
                    raise ServiceError(f"{name}: reopening its log failed: {(r.stderr or r.stdout).strip()}")
            done[name] = "reopened"
        return done


def _tail(path: Path, lines: int = 5) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return ""
