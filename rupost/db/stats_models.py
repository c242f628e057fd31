"""Mail statistics in rupost_logs (issue 10, part 3): hourly counters per node and domain,
and where the log parser stopped in each log file."""
from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, DateTime, Integer, String, Text, UniqueConstraint, func
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from .models import LogsBase

Timestamp = DateTime(timezone=True)
MAIL_COUNTERS = ("received", "sent", "delivered", "deferred", "bounced", "rejected")
# rspamd's verdicts (logs migration 0007): messages it scanned, rejected (spam, a deny list, a
# virus), greylisted; its rejections are in `rejected` too, which counts postfix's refusals
FILTER_COUNTERS = ("filter_scanned", "filter_rejected", "filter_greylisted")
COUNTERS = MAIL_COUNTERS + FILTER_COUNTERS


class StatsHourly(LogsBase):
    """Messages per hour (UTC, the hour's start), node and domain (see docs/operations.md for
    which domain an event is counted on)."""

    __tablename__ = "stats_hourly"
    __table_args__ = (UniqueConstraint("hour", "node", "domain", name="uq_stats_hourly_hour_node_domain"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    hour: Mapped[dt.datetime] = mapped_column(Timestamp, index=True)
    node: Mapped[str] = mapped_column(String(128))
    domain: Mapped[str] = mapped_column(String(253), index=True)
    received: Mapped[int] = mapped_column(Integer, default=0)
    sent: Mapped[int] = mapped_column(Integer, default=0)
    delivered: Mapped[int] = mapped_column(Integer, default=0)
    deferred: Mapped[int] = mapped_column(Integer, default=0)
    bounced: Mapped[int] = mapped_column(Integer, default=0)
    rejected: Mapped[int] = mapped_column(Integer, default=0)
    filter_scanned: Mapped[int] = mapped_column(Integer, default=0)
    filter_rejected: Mapped[int] = mapped_column(Integer, default=0)
    filter_greylisted: Mapped[int] = mapped_column(Integer, default=0)


class StatsLogState(LogsBase):
    """How far one node's parser read one log: the file's inode, the byte offset after the
    last line counted and a hash of the file's first line (a file rotated, truncated or
    replaced is recognised by them), and the parser's per-message memory."""

    __tablename__ = "stats_log_state"
    __table_args__ = (UniqueConstraint("node", "source", name="uq_stats_log_state_node_source"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    node: Mapped[str] = mapped_column(String(128))
    source: Mapped[str] = mapped_column(String(32))  # postfix | dovecot
    path: Mapped[str] = mapped_column(Text)
    inode: Mapped[int] = mapped_column(BigInteger, default=0)
    offset: Mapped[int] = mapped_column(BigInteger, default=0)
    first_line_hash: Mapped[str] = mapped_column(String(64), default="")
    memory: Mapped[dict] = mapped_column(JSONB, default=dict)
    lines: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[dt.datetime] = mapped_column(Timestamp, server_default=func.now(), onupdate=func.now())


class SessionPeakHourly(LogsBase):
    """The most sessions a public listener of a node held at once in an hour (UTC, the hour's
    start): the node agent samples HAProxy's frontend counters every interval (the current
    sessions and their maximum since the previous sample) and keeps the greatest."""

    __tablename__ = "session_peaks_hourly"
    __table_args__ = (UniqueConstraint("hour", "node", "listener", name="uq_session_peaks_hourly_hour_node_listener"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    hour: Mapped[dt.datetime] = mapped_column(Timestamp, index=True)
    node: Mapped[str] = mapped_column(String(128))
    listener: Mapped[str] = mapped_column(String(32))  # imaps, smtp, submissions, https, http, sieve
    peak: Mapped[int] = mapped_column(Integer, default=0)
