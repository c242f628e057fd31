"""Administrators of the control panel: accounts, roles, login, lockout, TOTP.

Roles
    ``superadmin``    everything.
    ``domain_admin``  mailboxes and aliases of the domains listed on its account only
                      (it does not see other domains at all); no templates, deploys,
                      certificates, administrators or settings.
    ``readonly``      sees everything a superadmin sees, changes nothing.

Authentication: ``admin_identity`` (the identity, the chain of authenticators, TOTP).

Lockout: after ``lockout_user_failures`` failed logins for one login name, or
``lockout_address_failures`` from one client address, within ``lockout_minutes``,
further attempts for that login / from that address are refused for
``lockout_minutes`` without checking the password. Counters live in
``panel_lockouts`` (PostgreSQL), so every worker and every node sees them.
"""
from __future__ import annotations

import builtins
import datetime as dt
import re
from typing import TYPE_CHECKING, Any

from sqlalchemy import case, delete, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import IntegrityError

from .. import validation
from ..db.models import AuditRecord, Domain, Setting, utcnow
from ..db.panel_models import PanelAdmin, PanelLockout
from ..errors import ConflictError, NotFoundError, RuPostError, ValidationError
from ..passwords import hash_admin_password, verify_admin_password
from .admin_identity import (  # noqa: F401  (the faces import these from here)
    TOTP_WINDOW,
    AdminIdentity,
    AuthenticationError,
    AuthenticationUnavailable,
    Authenticator,
    LocalAuthenticator,
    LockedOutError,
    _identity,
    totp_step,
)

if TYPE_CHECKING:
    from collections.abc import Iterable

    from sqlalchemy.orm import Session

    from . import Services

ROLES = ("superadmin", "domain_admin", "readonly")
LANGUAGES = ("ru", "en")
_LOGIN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$")

DEFAULTS = {
    "panel.session_timeout_minutes": 30,
    "panel.lockout_user_failures": 5,
    "panel.lockout_address_failures": 20,
    "panel.lockout_minutes": 15,
}


def check_login_name(login: str) -> str:
    login = (login or "").strip()
    if not _LOGIN.match(login):
        raise ValidationError(f"invalid administrator login {login[:64]!r}: use letters, digits, '.', '_', '-', '@' "
                              "(max 128, starting with a letter or digit)")
    return login


class AdminService:
    def __init__(self, app: Services) -> None:
        self.app = app
        self.local = LocalAuthenticator(self)

    @property
    def authenticators(self) -> list[Authenticator]:
        """The local one, then those registered for the whole process (shared by every actor)."""
        return [self.local, *self.app.runtime.authenticators]

    def register_authenticator(self, authenticator: Authenticator) -> None:
        self.app.runtime.authenticators.append(authenticator)

    def unregister_authenticator(self, authenticator: Authenticator) -> None:
        if authenticator in self.app.runtime.authenticators:
            self.app.runtime.authenticators.remove(authenticator)

    # ------------------------------------------------------------------ settings
    def setting(self, key: str) -> int:
        with self.app.dbs.session("main") as s:
            row = s.get(Setting, key)
            value = row.value if row is not None else None
        return int(value) if isinstance(value, (int, float, str)) and str(value).isdigit() else DEFAULTS[key]

    def secret_key(self) -> str:
        """The key signing panel session cookies: one per installation, so every worker and every
        node accepts the same sessions; created on first use."""
        import secrets

        with self.app.dbs.session("main") as s:
            s.execute(pg_insert(Setting).values(key="panel.secret_key", value=secrets.token_hex(32))
                      .on_conflict_do_nothing(index_elements=["key"]))
        with self.app.dbs.session("main") as s:
            return s.get(Setting, "panel.secret_key").value  # type: ignore[union-attr, return-value]

    def current_secret_key(self) -> str | None:
        """The stored key as it is now (every panel request compares it with the one it signs
        with: a rotated key takes effect at once in every worker of every node)."""
        with self.app.dbs.session("main") as s:
            row = s.get(Setting, "panel.secret_key")
            return str(row.value) if row is not None else None

    def rotate_session_key(self) -> dict:
        """A new key for the session cookies: every panel session ends (signed with the old key,
        and older than every administrator's sessions_after), a cookie forged with a leaked key
        opens nothing. Superadministrators only, journaled."""
        import secrets

        self.app.require_superadmin("rotating the panel's session key")
        now = utcnow()
        with self.app.dbs.session("main") as s:
            s.execute(pg_insert(Setting).values(key="panel.secret_key", value=secrets.token_hex(32))
                      .on_conflict_do_update(index_elements=["key"], set_={"value": secrets.token_hex(32)}))
            ended = len(s.scalars(update(PanelAdmin).values(sessions_after=now).returning(PanelAdmin.id)).all())
        self.app.audit.record("panel.rotate_session_key", "panel.secret_key", administrators=ended)
        return {"rotated_at": now.isoformat(), "administrators": ended}

    # ------------------------------------------------------------------ accounts
    def _validate(self, role: str, domains: Iterable[str] | None, language: str = "ru") -> list[str]:
        if role not in ROLES:
            raise ValidationError(f"invalid role {role!r}: use {', '.join(ROLES)}")
        if language not in LANGUAGES:
            raise ValidationError(f"invalid language {language!r}: use {', '.join(LANGUAGES)}")
        names = sorted({validation.domain_name(d) for d in (domains or ()) if d.strip()})
        if role == "domain_admin":
            if not names:
                raise ValidationError("a domain_admin needs at least one domain (--domain NAME)")
            with self.app.dbs.session("data") as s:
                known = set(s.scalars(select(Domain.name).where(Domain.name.in_(names))))
            missing = [n for n in names if n not in known]
            if missing:
                raise NotFoundError(f"domain(s) {', '.join(missing)} do not exist (rupost domains add NAME)")
        elif names:
            raise ValidationError(f"only a domain_admin is limited to domains; a {role} sees all of them")
        return names

    def add(self, login: str, password: str | None, role: str, domains: Iterable[str] | None = (), language: str = "ru",
            source: str = "local") -> dict:
        login = check_login_name(login)
        names = self._validate(role, domains, language)
        if source not in ("local", "ldap"):
            raise ValidationError(f"invalid source {source!r}: use local or ldap")
        if source == "local" and not password:
            raise ValidationError("a local administrator needs a password")
        password_hash = hash_admin_password(password) if source == "local" and password else ""
        try:
            with self.app.dbs.session("main") as s:
                row = PanelAdmin(login=login, source=source, password_hash=password_hash, role=role, domains=names,
                                 language=language, enabled=True)
                s.add(row)
                s.flush()
                out = self._as_dict(row)
        except IntegrityError:
            raise ConflictError(f"administrator {login} already exists") from None
        self.app.audit.record("admin.add", login, role=role, domains=names, source=source)
        return out

    def _row(self, s: Session, login: str) -> PanelAdmin:
        row = s.scalar(select(PanelAdmin).where(PanelAdmin.login == (login or "").strip()))
        if row is None:
            raise NotFoundError(f"administrator {login!r} does not exist (rupost admins list)")
        return row

    def list(self) -> list[dict]:
        with self.app.dbs.session("main") as s:
            return [self._as_dict(r) for r in s.scalars(select(PanelAdmin).order_by(PanelAdmin.login))]

    def show(self, login: str) -> dict:
        with self.app.dbs.session("main") as s:
            return self._as_dict(self._row(s, login))

    def identity(self, login: str) -> AdminIdentity | None:
        """The current identity of a logged-in administrator (None if removed or disabled)."""
        with self.app.dbs.session("main") as s:
            row = s.scalar(select(PanelAdmin).where(PanelAdmin.login == login))
            return _identity(row) if row is not None and row.enabled else None

    def _superadmins_left(self, s: Session, excluding: int) -> int:
        return s.scalar(select(func.count()).select_from(PanelAdmin).where(  # type: ignore[return-value]
            PanelAdmin.role == "superadmin", PanelAdmin.enabled, PanelAdmin.id != excluding))

    def remove(self, login: str) -> None:
        with self.app.dbs.session("main") as s:
            row = self._row(s, login)
            if row.role == "superadmin" and row.enabled and not self._superadmins_left(s, row.id):
                raise ConflictError(f"{login} is the last superadmin; add another one before removing it")
            s.delete(row)
        self.app.audit.record("admin.remove", login)

    def set_password(self, login: str, password: str) -> None:
        password_hash = hash_admin_password(password)
        with self.app.dbs.session("main") as s:
            row = self._row(s, login)
            if row.source != "local":
                raise ValidationError(f"{login} is an LDAP administrator: its password is the directory's")
            row.password_hash, row.sessions_after = password_hash, utcnow()
        self.app.audit.record("admin.passwd", login)

    def change_own_password(self, login: str, current: str, new: str) -> None:
        """An administrator's own password change: the current password is checked first."""
        with self.app.dbs.session("main") as s:
            row = self._row(s, login)
            if row.source != "local":
                raise ValidationError(f"{login} is an LDAP administrator: its password is the directory's")
            if not verify_admin_password(current or "", row.password_hash).ok:
                raise AuthenticationError("the current password is wrong")
        self.set_password(login, new)

    def set_role(self, login: str, role: str, domains: Iterable[str] | None = ()) -> dict:
        with self.app.dbs.session("main") as s:
            row = self._row(s, login)
            names = self._validate(role, domains, row.language)
            if row.role == "superadmin" and role != "superadmin" and not self._superadmins_left(s, row.id):
                raise ConflictError(f"{login} is the last superadmin; add another one before changing its role")
            row.role, row.domains = role, names
            out = self._as_dict(row)
        self.app.audit.record("admin.set_role", login, role=role, domains=names)
        return out

    def set_enabled(self, login: str, enabled: bool) -> None:
        with self.app.dbs.session("main") as s:
            row = self._row(s, login)
            if not enabled and row.role == "superadmin" and not self._superadmins_left(s, row.id):
                raise ConflictError(f"{login} is the last superadmin; add another one before disabling it")
            row.enabled = enabled
            if not enabled:
                row.sessions_after = utcnow()
        self.app.audit.record("admin.enable" if enabled else "admin.disable", login)

    def set_language(self, login: str, language: str) -> None:
        if language not in LANGUAGES:
            raise ValidationError(f"invalid language {language!r}: use {', '.join(LANGUAGES)}")
        with self.app.dbs.session("main") as s:
            self._row(s, login).language = language

    def sync_identity(self, identity: AdminIdentity) -> None:
        """Keep the row of an administrator authenticated elsewhere (LDAP) in step with its groups."""
        with self.app.dbs.session("main") as s:
            s.execute(pg_insert(PanelAdmin).values(
                login=identity.login, source=identity.source, password_hash="", role=identity.role,
                domains=list(identity.domains), language=identity.language, enabled=True)
                .on_conflict_do_update(index_elements=["login"], set_={
                    "role": identity.role, "domains": list(identity.domains)},
                    where=PanelAdmin.source == identity.source))

    # ---------------------------------------------------------------------- TOTP
    @staticmethod
    def new_totp_secret() -> str:
        import pyotp

        return pyotp.random_base32()

    @staticmethod
    def totp_uri(login: str, secret: str) -> str:
        import pyotp

        return pyotp.TOTP(secret).provisioning_uri(name=login, issuer_name="RuPost")

    def enable_totp(self, login: str, secret: str, code: str) -> None:
        """Store the second factor only once the administrator proved the app generates codes.
        A factor already set is not replaced here: replacing it is removing it first, which
        asks the password and a current code (remove_own_totp)."""
        if not re.fullmatch(r"[A-Z2-7]{16,64}", secret or ""):
            raise ValidationError("invalid TOTP secret")
        step = totp_step(secret, code, utcnow())
        if step is None:
            raise ValidationError("the code does not match: check the clock of the phone and try again")
        with self.app.dbs.session("main") as s:
            row = self._row(s, login)
            if row.totp_secret:
                raise ConflictError(f"{login} already has a second factor: turn it off first (password and a "
                                    "current code)")
            row.totp_secret, row.totp_last_step = secret, step  # the code just shown is spent
        self.app.audit.record("admin.totp_enable", login)

    def remove_own_totp(self, login: str, password: str, code: str) -> None:
        """An administrator turns off its own second factor: with its password and a current
        code, so that a stolen session (or a password alone) cannot strip it. A wrong password
        or code counts towards the login lockout and is journaled."""
        address = (self.app.acting.address or "?")[:255]
        now = utcnow()
        with self.app.dbs.session("main") as s:
            row = self._row(s, login)
            if not row.totp_secret:
                raise ValidationError(f"{login} has no second factor to turn off")
        locked = self._locked(login, address, now)
        if locked:
            raise LockedOutError(f"too many failed attempts: try again after {locked:%H:%M} UTC")
        problem = None if self._password_ok(login, password) else "wrong password"
        if problem is None:
            problem = self._accept_totp(login, code)
        if problem is not None:
            self._failed(login, address, now)
            self.app.audit.record("admin.totp_disable.refused", login, reason=problem)
            raise AuthenticationError("the second factor stays on: the password or the code is wrong "
                                      "(a code is accepted once)")
        self._clear_totp(login)
        self.app.audit.record("admin.totp_disable", login, by="self")

    def reset_totp(self, login: str) -> None:
        """A superadministrator turns off another administrator's second factor (a lost phone):
        the administrators page or `rupost admins totp-reset` (whoever runs the CLI holds the
        node's database credentials). Journaled as admin.totp_reset with who did it."""
        acting = self.app.acting
        self.app.require_superadmin("resetting another administrator's second factor")
        if acting.source == "panel":
            if (login or "").strip() == acting.login:
                raise ValidationError("your own second factor is turned off on the Account page, with your "
                                      "password and a current code")
        with self.app.dbs.session("main") as s:
            if not self._row(s, login).totp_secret:
                raise ValidationError(f"{login} has no second factor to reset")
        self._clear_totp(login)
        self.app.audit.record("admin.totp_reset", login, by=acting.login)

    def _clear_totp(self, login: str) -> None:
        with self.app.dbs.session("main") as s:
            row = self._row(s, login)
            row.totp_secret, row.totp_last_step = None, None

    def _password_ok(self, login: str, password: str) -> bool:
        """The administrator's password, checked by whoever holds it (the local hash, or the
        directory of an LDAP administrator: RuPostError when it cannot be reached)."""
        with self.app.dbs.session("main") as s:
            row = self._row(s, login)
            source, stored = row.source, row.password_hash
        if not password:
            return False
        if source == "local":
            return verify_admin_password(password, stored).ok
        for authenticator in self.authenticators[1:]:
            identity = authenticator.authenticate(login, password)
            if identity is not None and identity.login == login and identity.source == source:
                return True
        return False

    def _accept_totp(self, login: str, code: str | None) -> str | None:
        """Accept a code once: None when it is right and newer than the last one accepted
        (stored in the same transaction, the row locked, so two logins racing with one code
        cannot both pass); else why not."""
        with self.app.dbs.session("main") as s:
            row = s.scalar(select(PanelAdmin).where(PanelAdmin.login == login).with_for_update())
            if row is None or not row.totp_secret:
                return "no second factor"
            step = totp_step(row.totp_secret, code, utcnow())
            if step is None:
                return "wrong or missing second factor code"
            if row.totp_last_step is not None and step <= row.totp_last_step:
                return "second factor code already used"
            row.totp_last_step = step
            return None

    # --------------------------------------------------------------------- login
    def login(self, login: str, password: str, address: str, totp_code: str | None = None) -> AdminIdentity:
        """Check the credentials through the authenticators, with lockout and an audit record."""
        login = (login or "").strip()[:128]
        address = (address or "?")[:255]
        now = utcnow()
        locked = self._locked(login, address, now)
        if locked:
            self._audit(login, "panel.login.locked", address=address, until=locked.isoformat())
            raise LockedOutError(f"too many failed logins: try again after {locked:%H:%M} UTC")
        identity, reason, unavailable = None, "wrong login or password", None
        if login and password and _LOGIN.match(login):
            for authenticator in self.authenticators:
                try:
                    identity = authenticator.authenticate(login, password)
                except RuPostError as exc:  # could not check (directory down): try the next one
                    unavailable = f"{authenticator.name}: {exc}"
                    continue
                if identity is not None:
                    break
        if identity is None and unavailable:
            # an outage is not a wrong password: journaled, not counted towards a lockout
            self._audit(login or "?", "panel.login.failed", address=address, reason=unavailable)
            raise AuthenticationUnavailable(f"the password could not be checked: {unavailable}")
        if identity is not None and identity.source != "local":
            self.sync_identity(identity)
            stored = self.identity(identity.login)  # the stored row decides (it may be disabled)
            # a directory password never opens a local account of the same name
            identity = stored if stored is not None and stored.source == identity.source else None
        if identity is not None and identity.totp:
            problem = self._accept_totp(identity.login, totp_code)
            if problem is not None:
                identity, reason = None, problem
        if identity is None:
            self._failed(login, address, now)
            self._audit(login or "?", "panel.login.failed", address=address, reason=reason)
            raise AuthenticationError("wrong login, password or code")
        with self.app.dbs.session("main") as s:
            s.execute(delete(PanelLockout).where(PanelLockout.kind == "user", PanelLockout.key == login))
            row: PanelAdmin = s.scalar(select(PanelAdmin).where(PanelAdmin.login == identity.login))  # type: ignore[assignment]
            row.last_login_at = now
        self._audit(identity.login, "panel.login", address=address, role=identity.role, source=identity.source)
        return identity

    def logout(self, login: str, address: str, reason: str = "logout") -> None:
        """End the administrator's panel sessions (a copied session cookie is void too)."""
        if reason == "logout":
            with self.app.dbs.session("main") as s:
                row = s.scalar(select(PanelAdmin).where(PanelAdmin.login == login))
                if row is not None:
                    row.sessions_after = utcnow()
        self._audit(login, "panel.logout", address=address, reason=reason)

    def _audit(self, actor: str, action: str, **details: Any) -> None:
        with self.app.dbs.session("logs") as s:
            s.add(AuditRecord(actor=actor[:128], source="panel", action=action, target=actor, details=details))

    def locked_until(self, login: str, address: str, now: dt.datetime) -> dt.datetime | None:
        """Until when this login or this address is locked out (None: it is not); the API's
        bearer tokens use the address's counter, like the panel's login form."""
        return self._locked(login, address, now)

    def record_failure(self, login: str, address: str, now: dt.datetime) -> None:
        """Count one failed attempt for the login and the address (a wrong token too)."""
        self._failed(login, address, now)

    def _locked(self, login: str, address: str, now: dt.datetime) -> dt.datetime | None:
        with self.app.dbs.session("main") as s:
            until = s.scalar(select(func.max(PanelLockout.locked_until)).where(
                ((PanelLockout.kind == "user") & (PanelLockout.key == login))
                | ((PanelLockout.kind == "address") & (PanelLockout.key == address))))
        return until if until is not None and until > now else None

    def _failed(self, login: str, address: str, now: dt.datetime) -> None:
        minutes = self.setting("panel.lockout_minutes")
        window_start = now - dt.timedelta(minutes=minutes)
        limits = {"user": self.setting("panel.lockout_user_failures"),
                  "address": self.setting("panel.lockout_address_failures")}
        with self.app.dbs.session("main") as s:
            for kind, key in (("user", login or "?"), ("address", address)):
                stale = PanelLockout.first_failure_at < window_start
                failures = s.execute(pg_insert(PanelLockout).values(
                    kind=kind, key=key, failures=1, first_failure_at=now, locked_until=None)
                    .on_conflict_do_update(index_elements=["kind", "key"], set_={
                        "failures": case((stale, 1), else_=PanelLockout.failures + 1),
                        "first_failure_at": case((stale, now), else_=PanelLockout.first_failure_at)})
                    .returning(PanelLockout.failures)).scalar()
                if failures >= limits[kind]:  # type: ignore[operator]
                    lock: PanelLockout = s.get(PanelLockout, (kind, key))  # type: ignore[assignment]
                    lock.locked_until, lock.failures, lock.first_failure_at = \
                        now + dt.timedelta(minutes=minutes), 0, now

    def lockouts(self) -> builtins.list[dict]:
        with self.app.dbs.session("main") as s:
            rows = s.scalars(select(PanelLockout).where(PanelLockout.locked_until > utcnow())
                             .order_by(PanelLockout.locked_until.desc()))
            return [{"kind": r.kind, "key": r.key,
                     "locked_until": r.locked_until.isoformat()}  # type: ignore[union-attr]
                    for r in rows]

    def unlock(self, kind: str, key: str) -> None:
        with self.app.dbs.session("main") as s:
            s.execute(delete(PanelLockout).where(PanelLockout.kind == kind, PanelLockout.key == key))
        self.app.audit.record("admin.unlock", f"{kind}:{key}")

    @staticmethod
    def _as_dict(r: PanelAdmin) -> dict:
        return {"login": r.login, "source": r.source, "role": r.role, "domains": list(r.domains or ()),
                "language": r.language, "totp": bool(r.totp_secret), "enabled": r.enabled,
                "last_login_at": r.last_login_at.isoformat() if r.last_login_at else None}
