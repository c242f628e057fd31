"""Administrators from LDAP domains: which directory groups and users get which
control panel role, and the check of their password by a bind against the directory."""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, func, select

from rupost.ldap import client as dl
from rupost.ldap.settings import settings_of

from .. import validation
from ..db.directory_models import LdapAdminMapping, LdapDomain
from ..errors import ConflictError, NotFoundError, ValidationError

if TYPE_CHECKING:
    from collections.abc import Iterable

    from . import Services
    from .admins import AdminIdentity, Authenticator

ADMIN_ROLES = ("superadmin", "domain_admin", "readonly")


class DirectoryAdmins:
    """The administrator part of DirectoryService, which it inherits; it uses the
    service's ``app`` and ``_row`` (an LDAP domain's row by name)."""

    app: Services
    _row: Callable[[Any, str], LdapDomain]

    def admin_map_add(self, directory: str, kind: str, value: str, role: str, domains: Iterable[str] = ()) -> dict:
        kind = (kind or "").strip().lower()
        if kind not in ("group", "user"):
            raise ValidationError("map a 'group' (its DN) or a 'user' (its login)")
        if role not in ADMIN_ROLES:
            raise ValidationError(f"invalid role {role!r}: use one of {', '.join(ADMIN_ROLES)}")
        value = dl.check_dn(value, "group DN") if kind == "group" else (value or "").strip()
        if kind == "user" and not value:
            raise ValidationError("the user login is empty")
        domain_names = [validation.domain_name(d) for part in domains for d in str(part).replace(",", " ").split()]
        if role == "domain_admin" and not domain_names:
            raise ValidationError("a domain_admin needs at least one mail domain (--domain)")
        with self.app.dbs.session("main") as s:
            row = self._row(s, directory)
            if s.scalar(select(LdapAdminMapping.id).where(LdapAdminMapping.ldap_domain_id == row.id,
                                                          LdapAdminMapping.kind == kind,
                                                          func.lower(LdapAdminMapping.value) == value.lower())):
                raise ConflictError(f"{kind} {value} is already mapped in LDAP domain {row.name}")
            s.add(LdapAdminMapping(ldap_domain_id=row.id, kind=kind, value=value, role=role, domains=domain_names))
        self.app.audit.record("ldap_admin.map", f"{directory}:{kind}:{value}", role=role, domains=domain_names)
        return {"directory": directory, "kind": kind, "value": value, "role": role, "domains": domain_names}

    def admin_map_list(self) -> list[dict]:
        with self.app.dbs.session("main") as s:
            rows = s.execute(select(LdapAdminMapping, LdapDomain.name).join(
                LdapDomain, LdapDomain.id == LdapAdminMapping.ldap_domain_id).order_by(LdapDomain.name,
                                                                                       LdapAdminMapping.id)).all()
            return [{"directory": n, "kind": m.kind, "value": m.value, "role": m.role, "domains": list(m.domains)}
                    for m, n in rows]

    def admin_map_remove(self, directory: str, kind: str, value: str) -> None:
        with self.app.dbs.session("main") as s:
            row = self._row(s, directory)
            n = s.execute(delete(LdapAdminMapping).where(  # type: ignore[attr-defined]
                LdapAdminMapping.ldap_domain_id == row.id, LdapAdminMapping.kind == kind,
                func.lower(LdapAdminMapping.value) == value.lower())).rowcount
            if not n:
                raise NotFoundError(f"no mapping of {kind} {value} in LDAP domain {directory}")
        self.app.audit.record("ldap_admin.unmap", f"{directory}:{kind}:{value}")

    def authenticate_admin(self, login: str, password: str) -> tuple[str, list[str]] | None:
        """(role, domains) when ``login`` (a mail address or a directory login, optionally
        ``login@ldap-domain-name``) binds with ``password`` and one of its groups (or the
        user itself) is mapped to a role; None otherwise. The strongest role wins; the
        domains of several domain-level mappings add up. Raises DirectoryError only when
        no directory that could hold the login could be asked."""
        login = (login or "").strip()
        if not login or not password or len(login) > 256:
            return None
        with self.app.dbs.session("main") as s:
            rows = s.scalars(select(LdapDomain).where(LdapDomain.enabled).order_by(LdapDomain.name)).all()
            mappings: dict[int, list[tuple[str, str, str, list[str]]]] = {}
            for m in s.scalars(select(LdapAdminMapping)):
                mappings.setdefault(m.ldap_domain_id, []).append((m.kind, m.value, m.role, list(m.domains)))
            candidates = [(settings_of(r), mappings.get(r.id, [])) for r in rows if mappings.get(r.id)]
        errors = []
        for settings, maps in candidates:
            name_part, _, suffix = login.rpartition("@")
            if suffix == settings.name:
                login_value = name_part
            else:
                login_value = login
            profile = settings.profile
            by = "mail" if "@" in login_value else profile.login_attr
            flt = dl.user_filter(settings, f"({by}={dl.escape(login_value)})", profile.enabled_filter)
            try:
                conn = dl.connect(settings)
                try:
                    found = list(dl.search(conn, settings, settings.base_dn, flt,
                                           [profile.login_attr, "memberOf"], size_limit=2))
                    if len(found) != 1:
                        continue  # unknown here (or ambiguous: never guess whose password it is)
                    dn, raw = found[0]
                    groups = {g.lower() for g in dl.texts(raw, "memberOf")}
                    indirect = [v for k, v, _, _ in maps if k == "group" and v.lower() not in groups]
                    groups |= dl.nested_groups(conn, settings, dn, indirect)
                finally:
                    conn.unbind()
                if not dl.try_bind(settings, dn, password):
                    return None  # the account exists here: a wrong password is final
            except dl.DirectoryError as exc:
                errors.append(str(exc))
                continue
            user_login = dl.first(raw, profile.login_attr).lower()
            granted = [(role, domains) for kind, value, role, domains in maps
                       if (kind == "group" and value.lower() in groups)
                       or (kind == "user" and value.lower() in (user_login, login_value.lower()))]
            if not granted:
                return None
            rank = {r: i for i, r in enumerate(ADMIN_ROLES)}
            role = min((g[0] for g in granted), key=lambda r: rank[r])
            domains = sorted({d for r, ds in granted if r == role for d in ds}) if role != "superadmin" else []
            self.app.audit.record("ldap_admin.login", login, source="panel", directory=settings.name, role=role)
            return role, domains
        if errors and len(errors) == len(candidates):
            raise dl.DirectoryError("no directory could check the administrator's password: " + "; ".join(errors))
        return None


def ldap_bind_authenticator(app: Services) -> Authenticator:
    """The control panel's Authenticator for administrators from LDAP domains
    (rupost.services.admins): bind as the user, map its groups to a role."""
    from .admins import AdminIdentity, Authenticator

    class LdapBindAuthenticator(Authenticator):
        name = "ldap"

        def authenticate(self, login: str, password: str) -> AdminIdentity | None:
            granted = app.directories.authenticate_admin(login, password)
            if granted is None:
                return None
            role, domains = granted
            return AdminIdentity(login=login.strip(), role=role, domains=tuple(domains), source="ldap")

    return LdapBindAuthenticator()
