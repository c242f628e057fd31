"""Where each consumer reaches the database: the one place that picks host and port.

Without high availability every consumer uses config.json's one host:port. With a Patroni
cluster (``database.members`` in config.json; docs/database-ha.md):

- the core (CLI, panel, agent, policy server, LISTEN consumers) gives libpq every member and
  ``target_session_attrs=read-write``: libpq connects to whichever member is the primary now.
  The core needs no local HAProxy for it, which matters because the core deploys HAProxy;
- the daemons (postfix, dovecot, SOGo) connect to this node's HAProxy on loopback:
  ``db_primary`` leads to the member whose Patroni answers ``GET /primary`` with 200,
  ``db_lookup`` to the primary while there is one and else to any running replica (a lookup
  stays answered while the members elect a new primary; it never reads a lagging replica
  while the primary is up, so a mailbox created a moment ago is found).

Only host and port are chosen here; credentials stay as configured, so a per-consumer role
replaces them without touching this module.
"""
from __future__ import annotations

from dataclasses import replace

from ..config import DatabaseSettings, NodeConfig

LOOPBACK = "127.0.0.1"  # the first of adapters.haproxy_db.LOOKUP_ADDRESSES


def is_ha(db: DatabaseSettings) -> bool:
    return bool(db.members)


def core_target(db: DatabaseSettings) -> dict:
    """libpq keywords (host, port and, with members, target_session_attrs) for the core."""
    if not is_ha(db):
        return {"host": db.host, "port": db.port}
    return {"host": ",".join(m.host for m in db.members), "port": ",".join(str(m.port) for m in db.members),
            "target_session_attrs": "read-write"}


def core_description(db: DatabaseSettings) -> str:
    """What error messages name as the database's address."""
    if not is_ha(db):
        return f"{db.host}:{db.port}"
    return "the primary of " + ", ".join(f"{m.host}:{m.port}" for m in db.members)


def daemon_database(node: NodeConfig) -> DatabaseSettings:
    """The settings a daemon that writes (SOGo) uses: the primary through local HAProxy."""
    db = node.database
    return replace(db, host=LOOPBACK, port=node.port("db_primary")) if is_ha(db) else db


def lookup_database(node: NodeConfig) -> DatabaseSettings:
    """The settings a daemon that only reads (postfix tables, dovecot's passdb/userdb) uses."""
    db = node.database
    return replace(db, host=LOOPBACK, port=node.port("db_lookup")) if is_ha(db) else db


def libpq_environment(db: DatabaseSettings) -> dict[str, str]:
    """core_target() as libpq's environment, for the PostgreSQL tools (pg_dump, psql)."""
    target = core_target(db)
    env = {"PGHOST": str(target["host"]), "PGPORT": str(target["port"])}
    if "target_session_attrs" in target:
        env["PGTARGETSESSIONATTRS"] = target["target_session_attrs"]
    return env
