"""The per-domain allow and deny lists of senders (rspamd's map: data migration
0012_data_antispam_lists, docs/antispam.md)."""
from __future__ import annotations

import datetime as dt

from sqlalchemy import DateTime, ForeignKey, String, Text, func
from sqlalchemy.orm import Mapped, mapped_column

from .models import DataBase

Timestamp = DateTime(timezone=True)


class AntispamListEntry(DataBase):
    __tablename__ = "antispam_lists"

    id: Mapped[int] = mapped_column(primary_key=True)
    domain_id: Mapped[int | None] = mapped_column(ForeignKey("domains.id", ondelete="CASCADE"), nullable=True)
    sender: Mapped[str] = mapped_column(String(320))  # an address, or a domain (every address in it)
    kind: Mapped[str] = mapped_column(String(8))  # allow | deny
    comment: Mapped[str] = mapped_column(Text, default="")
    created_by: Mapped[str] = mapped_column(String(320), default="")
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, server_default=func.now())
