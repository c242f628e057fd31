"""Models of the operations features: push endpoints (rupost), the push delivery
failure journal and the IMAP migration state (rupost_logs)."""
from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, Boolean, Integer, String, Text, UniqueConstraint, func
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from .models import LogsBase, MainBase, Timestamp


class PushEndpoint(MainBase):
    """An HTTP endpoint that receives new-mail events (dovecot push_notification)."""

    __tablename__ = "push_endpoints"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    url: Mapped[str] = mapped_column(Text)
    # sent as "Authorization: Bearer <secret>" when set
    secret: Mapped[str] = mapped_column(Text, default="")
    # only events of these mail domains (empty: all)
    domains: Mapped[list] = mapped_column(JSONB, default=list)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_by: Mapped[str] = mapped_column(String(128), default="")
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, server_default=func.now())


class PushDelivery(LogsBase):
    """A failed delivery attempt of a push event (and the final give-up)."""

    __tablename__ = "push_deliveries"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(Timestamp, server_default=func.now(), index=True)
    node: Mapped[str] = mapped_column(String(128), default="")
    endpoint: Mapped[str] = mapped_column(String(64), index=True)
    username: Mapped[str] = mapped_column(String(320), default="")
    mailbox: Mapped[str] = mapped_column(Text, default="")
    uid: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    status: Mapped[int | None] = mapped_column(Integer, nullable=True)  # HTTP status, if any
    final: Mapped[bool] = mapped_column(Boolean, default=False)  # no more retries
    error: Mapped[str] = mapped_column(Text, default="")


class MigrationMailbox(LogsBase):
    """State of one mailbox of an IMAP migration: what the last run did."""

    __tablename__ = "migration_mailboxes"
    __table_args__ = (UniqueConstraint("source", "source_login", "target"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    source: Mapped[str] = mapped_column(String(300))
    source_login: Mapped[str] = mapped_column(String(320))
    target: Mapped[str] = mapped_column(String(320), index=True)
    # pending | running | done | incomplete | failed
    status: Mapped[str] = mapped_column(String(16), default="pending")
    runs: Mapped[int] = mapped_column(Integer, default=0)
    started_at: Mapped[dt.datetime | None] = mapped_column(Timestamp, nullable=True)
    finished_at: Mapped[dt.datetime | None] = mapped_column(Timestamp, nullable=True)
    folders: Mapped[int] = mapped_column(Integer, default=0)
    source_messages: Mapped[int] = mapped_column(Integer, default=0)
    target_messages: Mapped[int] = mapped_column(Integer, default=0)
    copied: Mapped[int] = mapped_column(Integer, default=0)  # new messages in the last run
    # folders with fewer messages on RuPost than on the source: {folder: [source, target]}
    missing: Mapped[dict] = mapped_column(JSONB, default=dict)
    error: Mapped[str] = mapped_column(Text, default="")


class GroupwareMigration(LogsBase):
    """One user of a calendars-and-contacts migration: what the last run did."""

    __tablename__ = "groupware_migrations"
    __table_args__ = (UniqueConstraint("source", "source_login", "target"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    source: Mapped[str] = mapped_column(String(300))  # the DAV server's URL, or "files"
    source_login: Mapped[str] = mapped_column(String(1000))  # the source login, or the files read
    target: Mapped[str] = mapped_column(String(320), index=True)
    # pending | running | done | incomplete | failed
    status: Mapped[str] = mapped_column(String(16), default="pending")
    runs: Mapped[int] = mapped_column(Integer, default=0)
    started_at: Mapped[dt.datetime | None] = mapped_column(Timestamp, nullable=True)
    finished_at: Mapped[dt.datetime | None] = mapped_column(Timestamp, nullable=True)
    # {"calendar": {"source": n, "added": n, "existing": n, "refused": n}, "contacts": {...}}
    counts: Mapped[dict] = mapped_column(JSONB, default=dict)
    # every item not migrated: [{"kind", "uid", "summary", "reason"}]
    refused: Mapped[list] = mapped_column(JSONB, default=list)
    error: Mapped[str] = mapped_column(Text, default="")
