"""Measured mail storage use per mailbox, in ``rupost_data`` (migration 0003_data_quota_usage).

The quota backend of the standard template is dovecot's ``maildir`` quota: the use is kept in
each mailbox's ``maildirsize`` file, not in the database. ``rupost.services.quota_usage``
reads it with ``doveadm quota get -A`` in the background and stores it here, so that the
dashboard's totals and its largest mailboxes are one indexed query at any number of mailboxes.
A row goes with its mailbox (ON DELETE CASCADE).
"""
from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, DateTime, ForeignKey, Index, Integer
from sqlalchemy.orm import Mapped, mapped_column

from .models import DataBase

Timestamp = DateTime(timezone=True)


class MailboxUsage(DataBase):
    __tablename__ = "mailbox_usage"
    __table_args__ = (Index("ix_mailbox_usage_used", "used_bytes"),
                      Index("ix_mailbox_usage_domain_used", "domain_id", "used_bytes"))

    mailbox_id: Mapped[int] = mapped_column(ForeignKey("mailboxes.id", ondelete="CASCADE"), primary_key=True)
    # copied from the mailbox when measured: totals per domain and "near full" read this table alone
    domain_id: Mapped[int] = mapped_column(Integer)
    quota_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    used_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    messages: Mapped[int] = mapped_column(BigInteger, default=0)
    measured_at: Mapped[dt.datetime] = mapped_column(Timestamp)
