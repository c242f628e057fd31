"""Who an administrator is and how credentials are checked: the identity, the
authenticators, the authentication errors and the TOTP step.

Authentication goes through a chain of ``Authenticator`` objects (the local one is
always first). An authenticator answers "these credentials belong to this
administrator" (an ``AdminIdentity``) or "not mine / wrong" (``None``); it raises a
RuPostError only when it could not check at all (a directory is unreachable).

Plugging in LDAP administrators (the directories engineer): write a class

    class LdapBindAuthenticator(Authenticator):
        name = "ldap"
        def authenticate(self, login, password):
            # bind as the user; read its groups; map group DNs to a role and domains
            # (e.g. {"cn=mail-admins,...": ("superadmin", [])}); None if no group maps
            return AdminIdentity(login=login, role=role, domains=tuple(domains), source="ldap", ...)

and register it with ``app.admins.register_authenticator(LdapBindAuthenticator(...))``
(the panel's app factory calls ``configure_authenticators`` hooks, see
``rupost/panel/__init__.py``). On each successful login the service keeps a
``panel_admins`` row for the identity (source ``ldap``, no password) up to date, so
every panel request re-reads the role from the database and a role removed in the
directory takes effect at the next login. ``AdminService.login`` applies the lockout,
the TOTP second factor (each code accepted once) and the audit record whatever
authenticator answered.
"""
from __future__ import annotations

import abc
import dataclasses
import datetime as dt
import re
from typing import TYPE_CHECKING

from sqlalchemy import select

from ..db.panel_models import PanelAdmin
from ..errors import RuPostError, ValidationError
from ..passwords import check_password_policy, dummy_admin_hash, hash_admin_password, verify_admin_password

if TYPE_CHECKING:
    from .admins import AdminService

# one time-step either side of now: a phone whose clock is up to 30 s off still works
TOTP_WINDOW = 1


class AuthenticationError(RuPostError):
    """Wrong login, password or second factor (the message does not say which)."""


class LockedOutError(AuthenticationError):
    """Too many failed logins for this login or from this address."""


class AuthenticationUnavailable(AuthenticationError):
    """No authenticator could check the password (e.g. every directory is unreachable)."""


@dataclasses.dataclass(frozen=True)
class AdminIdentity:
    login: str
    role: str
    domains: tuple[str, ...] = ()
    source: str = "local"
    language: str = "ru"
    totp: bool = False
    sessions_after: float | None = None  # epoch seconds: sessions started earlier are void

    @property
    def can_write(self) -> bool:
        return self.role in ("superadmin", "domain_admin")

    @property
    def is_superadmin(self) -> bool:
        return self.role == "superadmin"

    @property
    def domain_scope(self) -> list[str] | None:
        """The domains this administrator may see, or None for all of them."""
        return list(self.domains) if self.role == "domain_admin" else None

    def may_see_domain(self, name: str) -> bool:
        return self.role != "domain_admin" or name in self.domains

    def may_change_domain(self, name: str) -> bool:
        return self.role == "superadmin" or (self.role == "domain_admin" and name in self.domains)


class Authenticator(abc.ABC):
    """One way of checking an administrator's credentials (local accounts, an LDAP bind...)."""

    name: str = "?"

    @abc.abstractmethod
    def authenticate(self, login: str, password: str) -> AdminIdentity | None:
        """The identity when the credentials are right; None when they are wrong or the login
        is not an administrator here. Raise RuPostError only when the check could not be made."""


class LocalAuthenticator(Authenticator):
    """Accounts in ``panel_admins`` with an Argon2id password (source ``local``); a row still
    holding an older SHA512-CRYPT hash is verified with it and rehashed on the spot."""

    name = "local"

    def __init__(self, service: AdminService) -> None:
        self.service = service

    def authenticate(self, login: str, password: str) -> AdminIdentity | None:
        with self.service.app.dbs.session("main") as s:
            row = s.scalar(select(PanelAdmin).where(PanelAdmin.login == login, PanelAdmin.source == "local"))
            stored = row.password_hash if row is not None and row.enabled else dummy_admin_hash()
            check = verify_admin_password(password, stored)
            if row is None or not row.enabled or not check.ok:
                return None
            if check.rehash and _rehashable(password):
                row.password_hash = hash_admin_password(password)
            return _identity(row)


def _rehashable(password: str) -> bool:
    """An old password that no longer meets the policy still logs in; it keeps its old hash
    until it is changed (hash_admin_password refuses it)."""
    try:
        check_password_policy(password)
    except ValidationError:
        return False
    return True


def totp_step(secret: str, code: str | None, now: dt.datetime) -> int | None:
    """The time-step (unix time // 30) whose code `code` is, within TOTP_WINDOW steps of now;
    None when it is none of them."""
    import hmac

    import pyotp

    code = (code or "").strip()
    if not re.fullmatch(r"\d{6}", code):
        return None
    totp = pyotp.TOTP(secret)
    current = totp.timecode(now)
    for step in range(current - TOTP_WINDOW, current + TOTP_WINDOW + 1):
        if hmac.compare_digest(totp.generate_otp(step), code):
            return step
    return None


def _identity(row: PanelAdmin) -> AdminIdentity:
    return AdminIdentity(login=row.login, role=row.role, domains=tuple(row.domains or ()), source=row.source,
                         language=row.language or "ru", totp=bool(row.totp_secret),
                         sessions_after=row.sessions_after.timestamp() if row.sessions_after else None)
