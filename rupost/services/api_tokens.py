"""Bearer tokens of the REST API (``/api/v1``): for scripts, with an administrator's role.

A token has a name (journaled as the actor ``token:NAME`` with every change made with it),
one of the panel's roles (superadmin, domain_admin with its domains, readonly) and an
optional expiry. The secret (``rpt_`` + 43 URL-safe characters, 256 random bits) is shown
once when the token is made; only its SHA-256 is stored. A wrong or unknown token counts
towards the panel's lockout of the client address (panel.lockout_address_failures within
panel.lockout_minutes), so guessing tokens is as slow as guessing passwords.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import re
import secrets
from collections.abc import Iterable
from typing import TYPE_CHECKING

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from ..db.api_models import ApiToken
from ..db.models import AuditRecord, utcnow
from ..errors import ConflictError, NotFoundError, ValidationError
from .admins import AuthenticationError, LockedOutError

if TYPE_CHECKING:
    from . import Services

PREFIX = "rpt_"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclasses.dataclass(frozen=True)
class TokenIdentity:
    """Who a valid token acts as."""
    name: str
    role: str
    domains: tuple[str, ...]

    @property
    def actor_login(self) -> str:
        return f"token:{self.name}"

    @property
    def domain_scope(self) -> frozenset[str] | None:
        return frozenset(self.domains) if self.role == "domain_admin" else None

    @property
    def can_write(self) -> bool:
        return self.role in ("superadmin", "domain_admin")


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def parse_expiry(text: str | None) -> dt.datetime | None:
    """An expiry date (YYYY-MM-DD: the end of that day, UTC) or an ISO date-time."""
    if text is None or not str(text).strip():
        return None
    text = str(text).strip()
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC) + dt.timedelta(days=1)
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ValidationError(f"invalid expiry {text[:40]!r}: use a date YYYY-MM-DD or an ISO date-time") from None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


class ApiTokenService:
    def __init__(self, app: Services) -> None:
        self.app = app

    def add(self, name: str, role: str, domains: Iterable[str] | None = (), expires: str | dt.datetime | None = None
            ) -> dict:
        """Make a token; the answer holds its secret (``token``), shown this once."""
        self.app.require_superadmin("making an API token")
        name = (name or "").strip()
        if not _NAME.match(name):
            raise ValidationError(f"invalid token name {name[:64]!r}: letters, digits, '.', '_', '-' (max 64)")
        names = self.app.admins._validate(role, domains)  # the same role and domain rules as administrators
        expires_at = expires if isinstance(expires, dt.datetime) else parse_expiry(expires)
        if expires_at is not None and expires_at <= utcnow():
            raise ValidationError(f"the expiry {expires_at.isoformat()} is in the past")
        secret = PREFIX + secrets.token_urlsafe(32)
        try:
            with self.app.dbs.session("main") as s:
                row = ApiToken(name=name, token_hash=digest(secret), role=role, domains=names,
                               created_by=self.app.actor, expires_at=expires_at)
                s.add(row)
                s.flush()
                out = self._as_dict(row)
        except IntegrityError:
            raise ConflictError(f"API token {name} already exists (rupost api-tokens list)") from None
        self.app.audit.record("api_token.add", name, role=role, domains=names,
                              expires_at=expires_at.isoformat() if expires_at else None)
        return {**out, "token": secret}

    def list(self) -> list[dict]:
        self.app.require_superadmin("listing API tokens")
        with self.app.dbs.session("main") as s:
            return [self._as_dict(r) for r in s.scalars(select(ApiToken).order_by(ApiToken.name))]

    def revoke(self, name: str) -> dict:
        """Void a token at once (kept in the list, marked revoked, for the audit trail)."""
        self.app.require_superadmin("revoking an API token")
        with self.app.dbs.session("main") as s:
            row = s.scalar(select(ApiToken).where(ApiToken.name == (name or "").strip()))
            if row is None:
                raise NotFoundError(f"API token {name!r} does not exist (rupost api-tokens list)")
            if row.revoked_at is None:
                row.revoked_at = utcnow()
            out = self._as_dict(row)
        self.app.audit.record("api_token.revoke", out["name"])
        return out

    def authenticate(self, secret: str | None, address: str) -> TokenIdentity:
        """The identity of a valid bearer token; AuthenticationError (journaled, counted towards
        the address's lockout) for a missing, unknown, revoked or expired one, LockedOutError
        while the address is locked out."""
        admins = self.app.admins
        address = (address or "?")[:255]
        now = utcnow()
        locked = admins.locked_until("", address, now)
        if locked:
            raise LockedOutError(f"too many failed attempts from {address}: try again after {locked:%H:%M} UTC")
        row_values = None
        if secret and secret.startswith(PREFIX) and len(secret) < 200:
            with self.app.dbs.session("main") as s:
                row = s.scalar(select(ApiToken).where(ApiToken.token_hash == digest(secret)))
                if row is not None:
                    row_values = (row.name, row.role, tuple(row.domains or ()), row.revoked_at, row.expires_at)
        problem = "unknown token"
        if row_values is not None:
            name, role, domains, revoked_at, expires_at = row_values
            problem = ("revoked token" if revoked_at is not None
                       else "expired token" if expires_at is not None and expires_at <= now else "")
            if not problem:
                with self.app.dbs.session("main") as s:
                    s.execute(update(ApiToken).where(ApiToken.name == name).values(last_used_at=now))
                return TokenIdentity(name, role, domains)
        admins.record_failure(f"token:{row_values[0]}" if row_values else "token:?", address, now)
        with self.app.dbs.session("logs") as s:
            s.add(AuditRecord(actor=f"token:{row_values[0]}" if row_values else "token:?", source="api",
                              action="api.auth.failed", target="", details={"address": address, "reason": problem}))
        raise AuthenticationError(f"{problem}: send a valid token as 'Authorization: Bearer rpt_...'")

    @staticmethod
    def _as_dict(r: ApiToken) -> dict:
        now = utcnow()
        state = ("revoked" if r.revoked_at is not None
                 else "expired" if r.expires_at is not None and r.expires_at <= now else "active")
        return {"name": r.name, "role": r.role, "domains": list(r.domains or ()), "state": state,
                "created_by": r.created_by, "created_at": r.created_at.isoformat() if r.created_at else None,
                "expires_at": r.expires_at.isoformat() if r.expires_at else None,
                "revoked_at": r.revoked_at.isoformat() if r.revoked_at else None,
                "last_used_at": r.last_used_at.isoformat() if r.last_used_at else None}
