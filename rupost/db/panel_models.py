"""Models of the control panel, in the ``rupost`` database (migration 0004_main_panel).

- ``panel_admins``: administrators who may log in to the panel (local accounts with an
  Argon2id password, older rows SHA512-CRYPT until their next login; or LDAP administrators
  registered by login whose password is checked by an LDAP bind), their role and, for
  domain administrators, their domains.
- ``panel_lockouts``: failed logins counted per login and per client address, so that
  every gunicorn worker and every node sees the same lockout.
- ``panel_jobs``: long actions (deploy, rollback...) run in the background, with progress
  and result, readable from any worker.
"""
from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, Boolean, DateTime, Integer, String, Text, func
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from .models import MainBase

Timestamp = DateTime(timezone=True)


class PanelAdmin(MainBase):
    __tablename__ = "panel_admins"

    id: Mapped[int] = mapped_column(primary_key=True)
    login: Mapped[str] = mapped_column(String(128), unique=True)
    source: Mapped[str] = mapped_column(String(16), default="local")  # local | ldap
    password_hash: Mapped[str] = mapped_column(Text, default="")  # local only
    role: Mapped[str] = mapped_column(String(16))  # superadmin | domain_admin | readonly
    domains: Mapped[list] = mapped_column(JSONB, default=list)  # domain_admin: the domains it manages
    language: Mapped[str] = mapped_column(String(8), default="ru")
    totp_secret: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # the last TOTP time-step (unix time // 30) accepted: a code is refused once used (0006_main)
    totp_last_step: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, server_default=func.now())
    last_login_at: Mapped[dt.datetime | None] = mapped_column(Timestamp, nullable=True)
    # panel sessions started before this moment are void (logout, password reset, disable)
    sessions_after: Mapped[dt.datetime | None] = mapped_column(Timestamp, nullable=True)


class PanelLockout(MainBase):
    __tablename__ = "panel_lockouts"

    kind: Mapped[str] = mapped_column(String(8), primary_key=True)  # user | address
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    first_failure_at: Mapped[dt.datetime] = mapped_column(Timestamp, server_default=func.now())
    locked_until: Mapped[dt.datetime | None] = mapped_column(Timestamp, nullable=True)


class PanelJob(MainBase):
    __tablename__ = "panel_jobs"

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), default="queued")  # queued | running | done | failed
    progress: Mapped[int] = mapped_column(Integer, default=0)  # percent
    message: Mapped[str] = mapped_column(Text, default="")
    result: Mapped[dict] = mapped_column(JSONB, default=dict)
    error: Mapped[str] = mapped_column(Text, default="")
    requested_by: Mapped[str] = mapped_column(String(128), default="")
    node: Mapped[str] = mapped_column(String(128), default="")
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, server_default=func.now())
    started_at: Mapped[dt.datetime | None] = mapped_column(Timestamp, nullable=True)
    finished_at: Mapped[dt.datetime | None] = mapped_column(Timestamp, nullable=True)
