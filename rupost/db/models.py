"""Models of the three databases (SPEC §2, guide §4).

- ``rupost`` (MainBase): configuration: templates, settings, nodes, certificates,
  DH parameters, deploy generations.
- ``rupost_data`` (DataBase): user data served to the daemons by live lookups:
  domains, mailboxes, aliases (SOGo keeps its own tables here too).
- ``rupost_logs`` (LogsBase): the audit journal and monitor events.
"""
from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class MainBase(DeclarativeBase):
    pass


class DataBase(DeclarativeBase):
    pass


class LogsBase(DeclarativeBase):
    pass


Timestamp = DateTime(timezone=True)


# --------------------------------------------------------------------- rupost
class Template(MainBase):
    __tablename__ = "templates"
    __table_args__ = (UniqueConstraint("name", "version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    version: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))  # builtin | custom
    description: Mapped[str] = mapped_column(Text, default="")
    body: Mapped[str] = mapped_column(Text)  # as imported (what `export` gives back)
    # the full document after `extends:` was applied, pinned at import time so an
    # imported version never changes under the administrator
    resolved: Mapped[str | None] = mapped_column(Text, nullable=True)
    extends: Mapped[str] = mapped_column(String(200), default="")
    sha256: Mapped[str] = mapped_column(String(64))
    active: Mapped[bool] = mapped_column(Boolean, default=False)
    imported_by: Mapped[str] = mapped_column(String(128), default="")
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, server_default=func.now())


class Setting(MainBase):
    """Cluster-wide settings, e.g. template parameter values, the mail host name."""

    __tablename__ = "settings"

    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    value: Mapped[object] = mapped_column(JSONB)
    updated_at: Mapped[dt.datetime] = mapped_column(Timestamp, server_default=func.now(), onupdate=func.now())


class Node(MainBase):
    __tablename__ = "nodes"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    fqdn: Mapped[str] = mapped_column(String(255))
    address: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(32), default="registered")
    applied_generation: Mapped[int | None] = mapped_column(Integer, nullable=True)
    components: Mapped[dict] = mapped_column(JSONB, default=dict)
    # "enabled", or "drained" by an administrator: the HA agent then reports the node down
    admin_state: Mapped[str] = mapped_column(String(16), default="enabled")
    # this node's postfix queue on shared storage: where an evacuator finds its mail
    queue_directory: Mapped[str] = mapped_column(Text, default="")
    # rupost.__version__ of the node's agent, set with each heartbeat ("" before the first)
    software_version: Mapped[str] = mapped_column(String(32), default="", server_default="")
    registered_at: Mapped[dt.datetime] = mapped_column(Timestamp, server_default=func.now())
    last_heartbeat: Mapped[dt.datetime | None] = mapped_column(Timestamp, nullable=True)


class Certificate(MainBase):
    __tablename__ = "certificates"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    cert_type: Mapped[str] = mapped_column(String(32))  # mail | control_panel
    cert_pem: Mapped[str] = mapped_column(Text)
    key_pem: Mapped[str] = mapped_column(Text)
    builtin: Mapped[bool] = mapped_column(Boolean, default=False)
    active: Mapped[bool] = mapped_column(Boolean, default=False)
    not_after: Mapped[dt.datetime] = mapped_column(Timestamp)
    added_by: Mapped[str] = mapped_column(String(128), default="")
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, server_default=func.now())


class DHParam(MainBase):
    __tablename__ = "dhparams"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    pem: Mapped[str] = mapped_column(Text)
    bits: Mapped[int] = mapped_column(Integer)
    active: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, server_default=func.now())


class Generation(MainBase):
    """One deploy of the active configuration onto one node."""

    __tablename__ = "generations"
    __table_args__ = (UniqueConstraint("node_id", "number"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    node_id: Mapped[int] = mapped_column(ForeignKey("nodes.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)
    template_name: Mapped[str] = mapped_column(String(128))
    template_version: Mapped[str] = mapped_column(String(64))
    parameters: Mapped[dict] = mapped_column(JSONB, default=dict)
    file_hashes: Mapped[dict] = mapped_column(JSONB, default=dict)
    steps: Mapped[list] = mapped_column(JSONB, default=list)
    result: Mapped[str] = mapped_column(String(32), default="running")
    error: Mapped[str] = mapped_column(Text, default="")
    started_by: Mapped[str] = mapped_column(String(128), default="")
    started_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow)
    finished_at: Mapped[dt.datetime | None] = mapped_column(Timestamp, nullable=True)

    node: Mapped[Node] = relationship()


class Rollout(MainBase):
    """A cluster-wide deploy: applied node by node, stopping at the first failure."""

    __tablename__ = "rollouts"

    id: Mapped[int] = mapped_column(primary_key=True)
    template_name: Mapped[str] = mapped_column(String(128))
    template_version: Mapped[str] = mapped_column(String(64))
    parameters: Mapped[dict] = mapped_column(JSONB, default=dict)
    status: Mapped[str] = mapped_column(String(16), default="running")  # running | done | failed
    requested_by: Mapped[str] = mapped_column(String(128), default="")
    error: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, server_default=func.now())
    finished_at: Mapped[dt.datetime | None] = mapped_column(Timestamp, nullable=True)


class RolloutStep(MainBase):
    __tablename__ = "rollout_steps"
    __table_args__ = (UniqueConstraint("rollout_id", "node_name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    rollout_id: Mapped[int] = mapped_column(ForeignKey("rollouts.id", ondelete="CASCADE"), index=True)
    node_name: Mapped[str] = mapped_column(String(128))
    position: Mapped[int] = mapped_column(Integer)
    # pending | requested | running | applied | failed | skipped
    status: Mapped[str] = mapped_column(String(16), default="pending")
    generation: Mapped[int | None] = mapped_column(Integer, nullable=True)
    error: Mapped[str] = mapped_column(Text, default="")
    updated_at: Mapped[dt.datetime] = mapped_column(Timestamp, server_default=func.now(), onupdate=func.now())


# ---------------------------------------------------------------- rupost_data
class Domain(DataBase):
    __tablename__ = "domains"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(253), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, server_default=func.now())


class Mailbox(DataBase):
    __tablename__ = "mailboxes"

    id: Mapped[int] = mapped_column(primary_key=True)
    domain_id: Mapped[int] = mapped_column(ForeignKey("domains.id", ondelete="RESTRICT"), index=True)
    local_part: Mapped[str] = mapped_column(String(64))
    address: Mapped[str] = mapped_column(String(320), unique=True)
    password_hash: Mapped[str] = mapped_column(Text)
    display_name: Mapped[str] = mapped_column(String(256), default="")
    quota_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, server_default=func.now())

    domain: Mapped[Domain] = relationship()


class Alias(DataBase):
    __tablename__ = "aliases"

    id: Mapped[int] = mapped_column(primary_key=True)
    domain_id: Mapped[int] = mapped_column(ForeignKey("domains.id", ondelete="RESTRICT"), index=True)
    address: Mapped[str] = mapped_column(String(320), unique=True)
    # comma-separated list, the syntax postfix virtual_alias_maps expects
    destinations: Mapped[str] = mapped_column(Text)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, server_default=func.now())

    domain: Mapped[Domain] = relationship()


# ---------------------------------------------------------------- rupost_logs
class AuditRecord(LogsBase):
    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(Timestamp, server_default=func.now(), index=True)
    actor: Mapped[str] = mapped_column(String(128))
    source: Mapped[str] = mapped_column(String(64), default="cli")
    action: Mapped[str] = mapped_column(String(64), index=True)
    target: Mapped[str] = mapped_column(Text, default="")
    details: Mapped[dict] = mapped_column(JSONB, default=dict)


class MonitorEvent(LogsBase):
    __tablename__ = "monitor_events"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(Timestamp, server_default=func.now(), index=True)
    node: Mapped[str] = mapped_column(String(128))
    component: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(32))
    message: Mapped[str] = mapped_column(Text, default="")


class Evacuation(LogsBase):
    """One run of the queue evacuator over a failed node's queue."""

    __tablename__ = "evacuations"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    failed_node: Mapped[str] = mapped_column(String(128), index=True)
    by_node: Mapped[str] = mapped_column(String(128))
    started_at: Mapped[dt.datetime] = mapped_column(Timestamp, server_default=func.now())
    finished_at: Mapped[dt.datetime | None] = mapped_column(Timestamp, nullable=True)
    found: Mapped[int] = mapped_column(Integer, default=0)
    delivered: Mapped[int] = mapped_column(Integer, default=0)
    remaining: Mapped[int] = mapped_column(Integer, default=0)
    result: Mapped[str] = mapped_column(String(32), default="running")
    message: Mapped[str] = mapped_column(Text, default="")


class EvacuatedMessage(LogsBase):
    """Hand-over journal of one evacuated message (see rupost/cluster/evacuation_proxy.py):
    `prepared` before the receiver got the final dot, `delivered` after its 250."""

    __tablename__ = "evacuated_messages"

    evacuation_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    failed_node: Mapped[str] = mapped_column(String(128), index=True)
    queue_id: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16))
    by_node: Mapped[str] = mapped_column(String(128))
    reply: Mapped[str] = mapped_column(Text, default="")
    updated_at: Mapped[dt.datetime] = mapped_column(Timestamp, server_default=func.now(), onupdate=func.now())


METADATA = {"main": MainBase.metadata, "data": DataBase.metadata, "logs": LogsBase.metadata}
