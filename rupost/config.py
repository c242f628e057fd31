"""The node configuration file, config.json.

It holds only what a node needs before it can reach the database (connection
settings), its identity and its listening ports; everything else lives in
PostgreSQL. It contains the database password, so it is written 0600.
"""
from __future__ import annotations

import json
import os
import socket
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .errors import ConfigError
from .paths import Layout

# Public ports follow the guide (App.2); internal ports are loopback-only hops
# between HAProxy, nginx and the mail daemons.
DEFAULT_PORTS = {
    "smtp": 25,
    "submissions": 465,
    "imaps": 993,
    "sieve": 4190,
    "http": 80,
    "https": 443,
    "panel": 5000,
    "peers": 10000,
    "health": 20025,
    # cluster ports: traffic forwarded by a peer's HA agent enters here (PROXY protocol)
    "cluster_smtp": 11025,
    "cluster_submissions": 11465,
    "cluster_imaps": 11993,
    "cluster_sieve": 11190,
    "cluster_http": 11080,
    "cluster_https": 11443,
    "postfix_smtp": 10025,
    "postfix_submission": 10587,
    "dovecot_imap": 10143,
    "dovecot_sieve": 14190,
    "nginx_imaps": 10993,
    "nginx_submissions": 10465,
    "nginx_https": 10443,
    "nginx_http": 10080,
    # loopback listeners without the PROXY protocol, for SOGo's own IMAP/SMTP/Sieve
    "dovecot_imap_internal": 10144,
    "dovecot_sieve_internal": 14191,
    "postfix_submission_internal": 10588,
    # loopback only: the queue evacuator hands a failed node's mail to this node here
    "postfix_evacuation": 10589,
    # loopback only: dovecot's Sieve actions (redirect, vacation, notify) submit here
    "postfix_sieve": 10590,
    # loopback only: mail from postfix_sieve re-enters here, where its envelope sender is
    # rewritten with SRS (component postsrsd)
    "postfix_forward": 10591,
    # loopback only: postsrsd's TCP lookup tables (forward: sender -> SRS address; reverse)
    "srs_forward": 10601,
    "srs_reverse": 10602,
    "sogo": 20000,
    "memcached": 11211,
    # loopback only: the policy server (dovecot auth policy, webmail login guard)
    "auth_policy": 10091,
    # loopback only, with a highly available database (docs/database-ha.md): HAProxy's way to
    # the current primary, and to the primary or else any running replica for lookups
    "db_primary": 15432,
    "db_lookup": 15433,
}


def default_fqdn() -> str:
    """This machine's fully qualified name from the resolver; its plain host name when the
    resolver knows no better (socket.getfqdn() then answers `localhost`, which names every
    machine and so none)."""
    fqdn = socket.getfqdn()
    if "." in fqdn and not fqdn.startswith("localhost"):
        return fqdn
    return socket.gethostname()


@dataclass
class DatabaseMember:
    """One member of a Patroni cluster: its PostgreSQL and its REST API (health checks)."""
    host: str
    port: int = 5432
    api_port: int = 8008


def parse_member(text: str) -> DatabaseMember:
    """HOST[:PORT[:API_PORT]] (an IPv6 address in brackets), as the wizard's --db-member takes it."""
    host, sep, rest = text.strip(), "", ""
    if host.startswith("["):
        host, _, rest = host[1:].partition("]")
        sep = rest[:1]
        rest = rest[1:]
    elif ":" in host:
        host, sep, rest = host.partition(":")
    parts = rest.split(":") if sep else []
    if not host or sep not in ("", ":") or len(parts) > 2 or \
            not all(p.isdigit() and 0 < int(p) < 65536 for p in parts):
        raise ConfigError(f"database member {text!r}: expected HOST[:PORT[:API_PORT]] (PostgreSQL port, "
                          "Patroni REST API port)")
    return DatabaseMember(host, *(int(p) for p in parts))


@dataclass
class DatabaseSettings:
    host: str = "127.0.0.1"
    port: int = 5432
    user: str = "rupost"
    password: str = ""
    main: str = "rupost"
    data: str = "rupost_data"
    logs: str = "rupost_logs"
    # a Patroni cluster's members; empty: the one server at host:port (rupost/db/endpoints.py)
    members: list[DatabaseMember] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.members = [m if isinstance(m, DatabaseMember) else DatabaseMember(**m) for m in self.members]

    def names(self) -> dict[str, str]:
        return {"main": self.main, "data": self.data, "logs": self.logs}


@dataclass
class NodeConfig:
    database: DatabaseSettings = field(default_factory=DatabaseSettings)
    node_name: str = field(default_factory=lambda: socket.gethostname().split(".")[0])
    fqdn: str = field(default_factory=default_fqdn)
    address: str = "127.0.0.1"
    listen_address: str = "*"
    ports: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_PORTS))
    service_backend: str = "auto"
    generations_kept: int = 5
    # shared storage: empty means the default under the node root
    mail_storage: str = ""
    queue_directory: str = ""

    def port(self, name: str) -> int:
        return int(self.ports.get(name, DEFAULT_PORTS[name]))

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, data: dict) -> NodeConfig:
        data = dict(data)
        db = DatabaseSettings(**data.pop("database", {}))
        ports = dict(DEFAULT_PORTS)
        ports.update(data.pop("ports", {}) or {})
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"config.json: unknown keys: {', '.join(sorted(unknown))}")
        return cls(database=db, ports=ports, **data)


def load(layout: Layout) -> NodeConfig:
    path = layout.config_file
    try:
        raw = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{path} does not exist: run rupost-wizard first") from None
    except PermissionError:
        raise ConfigError(f"{path} is not readable by this user (it holds the database password)") from None
    try:
        return NodeConfig.from_dict(json.loads(raw))
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{path}: invalid: {exc}") from None


def save(layout: Layout, config: NodeConfig, owner: str | None = None) -> Path:
    """Write config.json atomically, readable by its owner only."""
    path = layout.config_file
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(config.to_json())
    if owner:
        import pwd

        try:
            pw = pwd.getpwnam(owner)
            os.chown(tmp, pw.pw_uid, pw.pw_gid)
        except KeyError:
            pass
    os.replace(tmp, path)
    return path
