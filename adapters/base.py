"""The adapter interface every component implements.

The deploy package (rupost.deploy) owns generations, hashing, the atomic switch and
rollback once for all components; an adapter only knows its component. It *declares*
how the core treats it (class attributes, read through adapters.registry):

- ``reads_tls``: reads the node's TLS files, so it reloads when they change;
- ``in_mail_unit``: lives and dies with the mail unit (guide §2.3);
- ``optional_section``: a template may leave its section out (the adapter's defaults);
- ``switchable``: runs only when the live generation has its directory (its section turns
  it on; off, it renders no file and is stopped);
- ``log_reopen``: how it reopens its log files after logrotate;
- ``probes``: the protocol checks through the node's public ports that prove it serves;

and implements:

- ``schema``: JSON Schema of its template section, checked after rendering so a
  typo is reported with its key path before anything touches the disk;
- ``check_model(model)``: extra checks a schema cannot express;
- ``render(model, ctx)``: native files, with correct quoting for the syntax;
- ``validate(config_dir, ctx)``: the component's own checker run on the *staged*
  copy; raises ComponentCheckError with the checker's message;
- ``process(ctx)``: how the service backend runs and reloads the daemon.
"""
from __future__ import annotations

import abc
import enum
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

from adapters.probes import ProbeResult
from rupost.config import DatabaseSettings, NodeConfig
from rupost.db.roles import ConsumerLogin, consumer_database
from rupost.errors import ComponentCheckError
from rupost.paths import Layout


@dataclass
class RenderedFile:
    path: str  # relative to the component's directory in the generation
    content: str
    mode: int = 0o644
    group: str | None = None  # group that must read it (file stays owned by root)


class NodeData(Protocol):
    """What a component needs from the database when it starts, provided by the core
    (adapters import nothing from the service layer)."""

    def dkim_keys(self) -> list[tuple[str, str, str]]:
        """(domain, selector, private key PEM) of every active DKIM key."""
        ...

    def srs_secrets(self) -> list[str]:
        """The cluster's SRS secrets, the signing one first (created on first use)."""
        ...

    def consumer_logins(self) -> dict[str, ConsumerLogin]:
        """The database login of each daemon that has its own role (rupost/db/roles.py)."""
        ...

    def kerberos_keytabs(self) -> list[tuple[str, bytes]]:
        """(file name, keytab) of the LDAP domains with Kerberos single sign-on."""
        ...


@dataclass
class RenderContext:
    layout: Layout
    node: NodeConfig
    database: DatabaseSettings  # for daemons that write (rupost.db.endpoints.daemon_database)
    generation_dir: Path  # real or tokenized generation directory the files refer to
    data: NodeData | None = None  # absent when rendering for a plan
    # for daemons that only read (rupost.db.endpoints.lookup_database); None: `database`
    lookup: DatabaseSettings | None = None
    # more loopback addresses that reach the same lookup port (adapters/haproxy_db.py)
    lookup_spares: tuple[str, ...] = ()
    # the daemons' own database logins, read from `data` when a file first needs one (only the
    # owner role reads them: a process spec, asked by the policy server too, never does); a
    # daemon without one uses `database`
    consumers: dict[str, ConsumerLogin] | None = None

    @property
    def lookup_database(self) -> DatabaseSettings:
        return self.lookup or self.database

    def consumer_database(self, consumer: str, *, lookup: bool = False) -> DatabaseSettings:
        """What `consumer`'s files connect with: the node's way to the database (its read-only
        lookup way when `lookup`), the consumer's own role."""
        if self.consumers is None:
            self.consumers = self.data.consumer_logins() if self.data is not None else {}
        return consumer_database(self.lookup_database if lookup else self.database, self.consumers.get(consumer))

    def config_dir(self, component: str) -> Path:
        return self.generation_dir / component

    @property
    def tls_dir(self) -> Path:
        return self.generation_dir / "tls"


@dataclass
class ProcessSpec:
    argv: list[str]
    user: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    # "hup"/"usr2": signal the running daemon; "restart": stop and start again;
    # "command": run reload_argv
    reload: str = "hup"
    reload_argv: list[str] | None = None
    stop_argv: list[str] | None = None  # graceful stop by the daemon's own tool
    pid_file: Path | None = None  # the daemon's own pid file, when the spawned process is a wrapper
    prepare: Callable[[], None] | None = None
    ports: list[tuple[str, int]] = field(default_factory=list)  # what must accept connections when up
    sockets: list[Path] = field(default_factory=list)  # Unix sockets that must accept connections when up
    stop_timeout: float = 15.0


class LogReopen(enum.Enum):
    """How a daemon reopens the files it logs to after logrotate renamed them."""
    COPYTRUNCATE = "copytruncate"  # writes only to stdout, which the backend appends to NAME.log
    SIGUSR1 = "usr1"  # reopens on SIGUSR1 (nginx, the dovecot master)
    RELOAD = "reload"  # its reload command reopens them (postfix restarts postlogd)


@dataclass(frozen=True)
class Probe:
    """One protocol check through a public port of the node (SPEC §4 step 5)."""
    check: Callable[[str, int], ProbeResult]
    port: str  # the node's port name (NodeConfig.port)
    # a loopback-only service (never exposed: postsrsd's reverse table would make the node
    # an open relay), probed on 127.0.0.1 whatever address the public ports listen on
    loopback: bool = False


class Adapter(abc.ABC):
    name: ClassVar[str] = ""
    schema: ClassVar[dict[str, Any]] = {"type": "object"}
    reads_tls: ClassVar[bool] = False
    in_mail_unit: ClassVar[bool] = False
    optional_section: ClassVar[bool] = False
    switchable: ClassVar[bool] = False
    log_reopen: ClassVar[LogReopen] = LogReopen.COPYTRUNCATE
    probes: ClassVar[tuple[Probe, ...]] = ()

    def check_model(self, model: dict) -> list[str]:
        return []

    @abc.abstractmethod
    def render(self, model: dict, ctx: RenderContext) -> list[RenderedFile]:
        """Native files for this component's section of the rendered template."""

    def validate(self, config_dir: Path, ctx: RenderContext) -> None:  # noqa: B027 (optional hook)
        """Run the component's own checker on the staged configuration."""

    def finalize(self, config_dir: Path) -> None:  # noqa: B027 (optional hook)
        """Derive files the daemon needs next to the rendered ones in a new generation
        (e.g. compiled scripts); they are not part of the recorded hashes."""

    @abc.abstractmethod
    def process(self, ctx: RenderContext) -> ProcessSpec:
        """How the service backend runs and reloads this component's daemon."""

    # ---- helpers for subclasses
    def run_checker(self, argv: list[str], *, env: dict | None = None, ok_warnings: bool = True) -> str:
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env)
        except FileNotFoundError:
            raise ComponentCheckError(self.name, f"checker {argv[0]} is not installed") from None
        output = (proc.stderr + proc.stdout).strip()
        if proc.returncode != 0:
            raise ComponentCheckError(self.name, output or f"{argv[0]} exited with {proc.returncode}")
        if not ok_warnings and "warning" in proc.stderr.lower():
            raise ComponentCheckError(self.name, proc.stderr.strip())
        return output


def snippet_schema() -> dict:
    """An `extra` snippet: native text appended as is, checked by the component's checker."""
    return {"type": "string", "maxLength": 65536}


def extra_block(snippet: str | None) -> list[str]:
    if not snippet:
        return []
    return ["# --- extra, from the configuration template ---", *snippet.rstrip("\n").splitlines()]


def scalar_schema() -> dict:
    return {"type": ["string", "integer", "boolean", "number"]}


def listen_schema() -> dict:
    return {"type": "string", "pattern": r"^(\*|[0-9.]+|\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):[0-9]{1,5}$"}


def ldap_directory_schema(required: list[str], uri_pattern: str = r"^ldaps?://[^\s]+$",
                          **extra: Any) -> dict:
    """One LDAP directory as a component sees it (dovecot's passdbs, SOGo's sources): the
    connection and bind common to all, plus the component's own fields."""
    return {"type": "array", "items": {
        "type": "object",
        "additionalProperties": False,
        "required": required,
        "properties": {
            "name": {"type": "string", "pattern": r"^[a-z][a-z0-9_-]{0,63}$"},
            "uris": {"type": "array", "minItems": 1, "items": {"type": "string", "pattern": uri_pattern}},
            "starttls": {"type": "boolean"},
            "ca_pem": {"type": "string"},
            "bind_dn": {"type": "string"},
            "bind_password": {"type": "string"},
            "base": {"type": "string"},
            "filter": {"type": "string"},
            **extra,
        },
    }}


def split_listen(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return host.strip("[]"), int(port)


def socket_dir(path: Path, user: str, group: str, needs: str) -> int:
    """A daemon's Unix-socket directory: owned by `user` (the daemon creates its socket there),
    group `group` (its only clients reach it), nobody else. `needs` names what is missing when
    the user or group does not exist (the packages that create them). The user's uid."""
    import grp
    import os
    import pwd

    try:
        uid = pwd.getpwnam(user).pw_uid
        gid = grp.getgrnam(group).gr_gid
    except KeyError as exc:
        raise OSError(f"{needs} needs user {user} and group {group}: {exc}") from None
    path.mkdir(parents=True, exist_ok=True)
    os.chown(path, uid, gid)
    os.chmod(path, 0o750)
    return uid
