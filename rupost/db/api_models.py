"""Models of the REST API, in the ``rupost`` database (migration 0008_main_api_tokens).

- ``api_tokens``: bearer tokens for scripts (`rupost api-tokens add`): a name, the role and
  domains of a panel administrator, an expiry; only the SHA-256 of the secret is stored.
  A token is 32 random bytes, so a plain hash is enough: unlike a password, it cannot be
  guessed from a dictionary, and a fast hash keeps every request's check cheap.
- ``api_idempotency``: the answer given to a create sent with an ``Idempotency-Key`` header,
  so a client retrying after a lost answer gets the same answer, not a second object.
"""
from __future__ import annotations

import datetime as dt

from sqlalchemy import DateTime, Integer, String, Text, func
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from .models import MainBase

Timestamp = DateTime(timezone=True)


class ApiToken(MainBase):
    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)  # hex SHA-256 of the secret
    role: Mapped[str] = mapped_column(String(16))  # superadmin | domain_admin | readonly
    domains: Mapped[list] = mapped_column(JSONB, default=list)
    created_by: Mapped[str] = mapped_column(String(128), default="")
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, server_default=func.now())
    expires_at: Mapped[dt.datetime | None] = mapped_column(Timestamp, nullable=True)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(Timestamp, nullable=True)
    last_used_at: Mapped[dt.datetime | None] = mapped_column(Timestamp, nullable=True)


class ApiIdempotency(MainBase):
    __tablename__ = "api_idempotency"

    token: Mapped[str] = mapped_column(String(128), primary_key=True)  # the token's name
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64))  # method, path and body of the first request
    status: Mapped[int] = mapped_column(Integer)
    body: Mapped[str] = mapped_column(Text)
    location: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, server_default=func.now())
