"""Models of calendar resources, impersonation accounts and their use journal.

- ``rupost_data`` (DataBase): what the daemons read. A calendar resource is a mailbox
  row (SOGo logs it in internally and delivers invitations to its calendar) plus its
  kind and booking limit, served to SOGo by the ``sogo_users`` view. Impersonation
  accounts are read by dovecot's master passdb (``lookup_master_users``).
- ``rupost_logs`` (LogsBase): one row per mailbox opened by an impersonation account.
"""
from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, Boolean, DateTime, ForeignKey, Integer, String, Text, func
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from .models import DataBase, LogsBase

Timestamp = DateTime(timezone=True)


class CalendarResource(DataBase):
    __tablename__ = "calendar_resources"

    id: Mapped[int] = mapped_column(primary_key=True)
    mailbox_id: Mapped[int] = mapped_column(ForeignKey("mailboxes.id", ondelete="CASCADE"), unique=True)
    kind: Mapped[str] = mapped_column(String(16))  # location (room) | thing (equipment)
    multiple_bookings: Mapped[int] = mapped_column(Integer, default=1)  # simultaneous bookings; 0 = no limit
    owner: Mapped[str] = mapped_column(String(320), default="")  # mailbox that manages the resource's calendar
    description: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, server_default=func.now())


class ImpersonationAccount(DataBase):
    __tablename__ = "impersonation_accounts"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(Text)
    domains: Mapped[list] = mapped_column(JSONB, default=list)  # mail domains whose mailboxes it may open
    description: Mapped[str] = mapped_column(Text, default="")
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, server_default=func.now())


class ImpersonationUse(LogsBase):
    __tablename__ = "impersonation_uses"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(Timestamp, server_default=func.now(), index=True)
    account: Mapped[str] = mapped_column(String(64), index=True)
    target: Mapped[str] = mapped_column(String(320), index=True)
    protocol: Mapped[str] = mapped_column(String(16), default="imap")
    remote_ip: Mapped[str] = mapped_column(String(64), default="")
    node: Mapped[str] = mapped_column(String(128), default="")
    mechanism: Mapped[str] = mapped_column(String(32), default="")  # SASL mechanism of the login
