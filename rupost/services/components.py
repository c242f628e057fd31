"""The mail components of this node: state, start, stop, restart.

The components run as one unit (guide §2.3): stopping one stops them all.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import NotFoundError

if TYPE_CHECKING:
    from adapters.base import ProcessSpec

    from . import Services


class ComponentService:
    def __init__(self, app: Services) -> None:
        self.app = app

    def _check(self, names: list[str] | None) -> list[str]:
        names = names or list(self.app.adapters)
        unknown = [n for n in names if n not in self.app.adapters]
        if unknown:
            raise NotFoundError(f"unknown component(s): {', '.join(unknown)} "
                                f"(known: {', '.join(self.app.adapters)})")
        return names

    def process_spec(self, name: str) -> ProcessSpec:
        self._check([name])
        return self.app.component_runtime.process_spec(name)

    def states(self) -> dict:
        return self.app.component_runtime.states()

    def start(self, names: list[str] | None = None) -> list[str]:
        if not self.app.layout.current.exists():
            raise NotFoundError("nothing is deployed on this node yet: run rupost deploy")
        wanted = self._check(names)
        with self.app.evacuation.ownership():
            started = self.app.component_runtime.start(wanted)
        self.app.audit.record("components.start", ",".join(started))
        return started

    def reopen_logs(self) -> dict[str, str]:
        """Make every running daemon that writes its own log files reopen them (logrotate's postrotate)."""
        return self.app.component_runtime.reopen_logs()

    def stop(self, names: list[str] | None = None) -> list[str]:
        """Stop everything, or the named components; naming any mail component stops the
        whole mail unit (they run together), HAProxy and memcached can stop alone."""
        runtime = self.app.component_runtime
        stopped = runtime.stop(runtime.with_mail_unit(self._check(names)) if names else None)
        self.app.nodes.report("out_of_service", self.states())
        self.app.audit.record("components.stop", ",".join(stopped))
        return stopped

    def restart(self, names: list[str] | None = None) -> list[str]:
        self.stop(names)
        return self.start(None)
