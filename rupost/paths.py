"""Every path the core writes, derived from one configurable root.

A real install uses root "/" (config in /etc/rupost, state in /var/lib/rupost);
tests and benchmarks use a temporary root so that whole instances run side by side.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

ROOT_ENV = "RUPOST_ROOT"

# Rendered files reference their own generation through this token; it is replaced
# by the real generation directory when files are written, so a rendered file's
# hash does not depend on which generation it lands in.
GENERATION_TOKEN = "@@RUPOST_GENERATION_DIR@@"


def default_root() -> Path:
    return Path(os.environ.get(ROOT_ENV, "/"))


# components whose daemon writes its own component.log by name (see Layout.output_file)
OWN_LOG_FILE = frozenset({"postfix", "dovecot"})


@dataclass(frozen=True)
class Layout:
    root: Path
    # shared storage (NFS in a cluster): configurable per node in config.json
    mail_storage_dir: Path | None = None
    queue_dir: Path | None = None

    @classmethod
    def at(cls, root: str | os.PathLike | None = None) -> Layout:
        return cls(Path(root) if root is not None else default_root())

    def with_storage(self, mail_storage: str = "", queue_directory: str = "") -> Layout:
        return Layout(self.root, Path(mail_storage) if mail_storage else None,
                      Path(queue_directory) if queue_directory else None)

    def _p(self, *parts: str) -> Path:
        return self.root.joinpath(*parts)

    @property
    def etc(self) -> Path:
        return self._p("etc", "rupost")

    @property
    def config_file(self) -> Path:
        return self.etc / "config.json"

    @property
    def state(self) -> Path:
        return self._p("var", "lib", "rupost")

    @property
    def generations(self) -> Path:
        return self.state / "generations"

    @property
    def current(self) -> Path:
        """Symlink to the live generation; daemons are started with paths through it."""
        return self.state / "current"

    def component_config(self, component: str) -> Path:
        return self.current / component

    @property
    def run(self) -> Path:
        return self._p("run", "rupost")

    def run_dir(self, component: str) -> Path:
        return self.run / component

    def pid_file(self, component: str) -> Path:
        return self.run / f"{component}.pid"

    @property
    def logs(self) -> Path:
        return self._p("var", "log", "rupost")

    def log_file(self, component: str) -> Path:
        return self.logs / f"{component}.log"

    def output_file(self, component: str) -> Path:
        """Where the component's stdout and stderr go (direct backend; the systemd unit's
        StandardOutput=append: and its drop-ins name the same files). Daemons that open their
        component.log by name (postfix's maillog_file, dovecot's log_path) get another file:
        logrotate moves component.log aside and makes them reopen it, but an inherited stdout
        cannot be reopened and would keep writing into the rotated file."""
        if component in OWN_LOG_FILE:
            return self.logs / f"{component}-stdout.log"
        return self.log_file(component)

    @property
    def monitor_log(self) -> Path:
        return self.logs / "monitor.log"

    @property
    def mail_storage(self) -> Path:
        return self.mail_storage_dir or self._p("var", "vmail")

    @property
    def postfix_queue(self) -> Path:
        return self.queue_dir or self._p("var", "spool", "rupost", "postfix")

    @property
    def postfix_data(self) -> Path:
        return self.state / "postfix-data"

    @property
    def sogo_home(self) -> Path:
        return self.state / "sogo"

    def ensure_base(self) -> None:
        for d in (self.etc, self.state, self.generations, self.run, self.logs):
            d.mkdir(parents=True, exist_ok=True)
