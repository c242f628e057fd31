"""Mail queue requests between nodes (rupost): an action on another node's postfix queue,
asked by one node's core and executed by the owning node's agent (services/mailqueues.py)."""
from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, Index, String, Text, func
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from .models import MainBase, Timestamp


class QueueRequest(MainBase):
    """One relayed queue request: requested -> running -> done | failed; or expired when the
    target node did not pick it up within the requester's timeout (then it is never run)."""

    __tablename__ = "queue_requests"
    __table_args__ = (Index("ix_queue_requests_node_status", "node_name", "status"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    node_name: Mapped[str] = mapped_column(String(128))  # the node that executes it
    action: Mapped[str] = mapped_column(String(16))  # list, show, hold, release, delete, requeue, flush
    arguments: Mapped[dict] = mapped_column(JSONB, default=dict)  # ids, match, headers_only
    status: Mapped[str] = mapped_column(String(16), default="requested")
    requested_by: Mapped[str] = mapped_column(String(128), default="")  # the administrator
    requested_from: Mapped[str] = mapped_column(String(128), default="")  # the requesting node
    source: Mapped[str] = mapped_column(String(16), default="cli")  # cli | panel
    address: Mapped[str] = mapped_column(String(64), default="")  # the panel client's address
    result: Mapped[dict | None] = mapped_column(JSONB, nullable=True)
    error: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, server_default=func.now())
    # the requester stops waiting then: a request not picked up by this time is never run
    expires_at: Mapped[dt.datetime] = mapped_column(Timestamp)
    started_at: Mapped[dt.datetime | None] = mapped_column(Timestamp, nullable=True)
    finished_at: Mapped[dt.datetime | None] = mapped_column(Timestamp, nullable=True)
