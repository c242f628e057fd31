"""LDAP domains (Active Directory, FreeIPA, ALD Pro): registration, connection test,
materialisation of directory users into mailboxes and aliases, the GAL, and
administrators authenticated by a directory bind.

Design (docs/directories.md): what the mail daemons *look up* (domains, mailboxes,
aliases, list members, the GAL) is materialised into rupost_data by ``sync``, keyed
by the directory's stable id (objectGUID / ipaUniqueID), so lookups stay in
PostgreSQL (fast, and mail keeps flowing while a directory is down). What needs the
user's *password* is a bind against the directory (dovecot LDAP passdb with
auth_bind, SOGo LDAP source, the panel through ``authenticate_admin``); no
directory password is ever stored.

A sync decides in rupost.services.directory_sync (pure: the plan) and changes the rows
in rupost.services.directory_apply; the administrators' part is
rupost.services.directory_admins.
"""
from __future__ import annotations

import builtins
import datetime as dt
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select

from rupost.ldap import client as dl
from rupost.ldap.settings import settings_of

from .. import validation
from ..db.directory_models import DirectoryAccount, LdapDomain, LdapFilter
from ..db.models import Alias, Mailbox, utcnow
from ..errors import ConflictError, NotFoundError, RuPostError, ValidationError
from .cache import accounts_changed
from .directory_admins import DirectoryAdmins, ldap_bind_authenticator  # noqa: F401 (imported from here)
from .directory_apply import DirectoryRows, apply_plan
from .directory_kerberos import DirectoryKerberos, kerberos_public
from .directory_sync import SyncSummary, plan_sync
from .directory_writeback import DirectoryWriteback

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from . import Services

MAX_DROP_SHARE_KEY = "directories.max_drop_share"
DEFAULT_MAX_DROP_SHARE = 0.5
_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")


class SyncRefused(RuPostError):
    """A sync would disable more accounts than allowed; nothing was changed."""


def check_name(name: str) -> str:
    name = (name or "").strip().lower()
    if not _NAME.match(name):
        raise ValidationError(f"invalid LDAP domain name {name!r}: lowercase letters, digits, '-' and '_', "
                              "starting with a letter (e.g. corp)")
    return name


class DirectoryService(DirectoryAdmins, DirectoryWriteback, DirectoryKerberos):
    def __init__(self, app: Services) -> None:
        self.app = app

    # ================================================================ LDAP domains
    def add(self, name: str, kind: str, uris: list[str], base_dn: str, bind_dn: str, bind_password: str, *,
            security: str = "ldaps", ca_pem: str = "", mail_domains: Sequence[str] = (), user_filter: str = "",
            group_filter: str = "", timeout: int = 10, allow_plain: bool = False, check: bool = True) -> dict:
        settings = self._validated(name, kind, uris, base_dn, bind_dn, bind_password, security, ca_pem, user_filter,
                                   group_filter, timeout, allow_plain)
        domains = self._check_mail_domains(mail_domains)
        if check:
            report = self.test_settings(settings, sample=1)
            if not report["ok"]:
                raise dl.DirectoryError(f"LDAP domain {settings.name} not added: {report['error']} "
                                        "(--no-check adds it anyway)")
        with self.app.dbs.session("main") as s:
            if s.scalar(select(LdapDomain.id).where(LdapDomain.name == settings.name)):
                raise ConflictError(f"LDAP domain {settings.name} already exists")
            taken = self._bound_elsewhere(s, domains, settings.name)
            if taken:
                raise ConflictError(f"mail domain {taken[0][0]} is already bound to LDAP domain {taken[0][1]}")
            row = LdapDomain(name=settings.name, kind=settings.kind, uris=settings.uris, security=settings.security,
                             ca_pem=settings.ca_pem, bind_dn=settings.bind_dn, bind_password=settings.bind_password,
                             base_dn=settings.base_dn, user_filter=settings.user_filter,
                             group_filter=settings.group_filter, mail_domains=domains, timeout=settings.timeout,
                             enabled=True, last_sync={})
            s.add(row)
            s.flush()
            out = self._as_dict(row)
        self.app.audit.record("ldap_domain.add", settings.name, kind=kind, uris=settings.uris,
                              mail_domains=domains, security=settings.security)
        return out

    def _validated(self, name: str, kind: str, uris: list[str], base_dn: str, bind_dn: str, bind_password: str,
                   security: str, ca_pem: str, user_filter: str, group_filter: str, timeout: int,
                   allow_plain: bool) -> dl.Settings:
        name = check_name(name)
        kind = (kind or "").strip().lower()
        if kind not in dl.KINDS:
            raise ValidationError(f"invalid directory type {kind!r}: use one of {', '.join(dl.KINDS)}")
        security = (security or "").strip().lower()
        if security not in dl.SECURITY:
            raise ValidationError(f"invalid security {security!r}: use ldaps, starttls or plain")
        if security == "plain" and not allow_plain:
            raise ValidationError("plain LDAP sends user passwords in clear text; use ldaps or starttls, "
                                  "or allow it explicitly (--allow-plain)")
        uris = [u for part in uris for u in str(part).replace(",", " ").split()]
        if not uris:
            raise ValidationError("at least one server URI is required (e.g. ldaps://dc1.corp.example)")
        uris = list(dict.fromkeys(dl.check_uri(u, security) for u in uris))
        if ca_pem.strip():
            from cryptography import x509

            try:
                x509.load_pem_x509_certificates(ca_pem.encode())
            except ValueError:
                raise ValidationError("the CA file is not a PEM certificate (-----BEGIN CERTIFICATE-----)") from None
        if not bind_password:
            raise ValidationError("the service account password is empty (an empty password is an anonymous bind)")
        if any(ch in bind_password for ch in "\r\n\x00"):
            raise ValidationError("the service account password must not contain line breaks or NUL")
        if not 1 <= int(timeout) <= 300:
            raise ValidationError("timeout must be between 1 and 300 seconds")
        return dl.Settings(
            name=name, kind=kind, uris=uris, security=security,
            ca_pem=ca_pem.strip() + ("\n" if ca_pem.strip() else ""),
            bind_dn=dl.check_dn(bind_dn, "service account DN"), bind_password=bind_password,
            base_dn=dl.check_dn(base_dn, "base DN"),
            user_filter=dl.check_filter(user_filter, "user filter") if user_filter.strip() else "",
            group_filter=dl.check_filter(group_filter, "group filter") if group_filter.strip() else "",
            timeout=int(timeout))

    def _check_mail_domains(self, mail_domains: Iterable[str]) -> list[str]:
        names = list(dict.fromkeys(validation.domain_name(d) for part in mail_domains
                                   for d in str(part).replace(",", " ").split()))
        with self.app.dbs.session("data") as s:
            for name in names:
                self.app.domains.get(s, name)
        return names

    @staticmethod
    def _bound_elsewhere(session: Session, domains: list[str], name: str) -> list[tuple[str, str]]:
        out = []
        for row in session.scalars(select(LdapDomain).where(LdapDomain.name != name)):
            out += [(d, row.name) for d in row.mail_domains if d in domains]
        return out

    def _row(self, session: Session, name: str) -> LdapDomain:
        row = session.scalar(select(LdapDomain).where(LdapDomain.name == (name or "").strip().lower()))
        if row is None:
            raise NotFoundError(f"LDAP domain {name} does not exist (rupost ldap-domains list)")
        return row

    def get_settings(self, name: str) -> dl.Settings:
        with self.app.dbs.session("main") as s:
            return settings_of(self._row(s, name))

    def list(self) -> list[dict]:
        with self.app.dbs.session("main") as s:
            return [self._as_dict(r) for r in s.scalars(select(LdapDomain).order_by(LdapDomain.name))]

    def show(self, name: str) -> dict:
        with self.app.dbs.session("main") as s:
            out = self._as_dict(self._row(s, name))
        with self.app.dbs.session("data") as s:
            counts = dict(s.execute(select(DirectoryAccount.state, func.count()).where(
                DirectoryAccount.directory == out["name"]).group_by(DirectoryAccount.state)).all())
        out["accounts"] = counts
        return out

    def update(self, name: str, **changes: Any) -> dict:
        """Change connection settings (e.g. rotate the service account password).

        A setting given as None is kept as it is; an empty service account password is
        kept too (the panel's password field left empty). Everything else given is
        validated like ``add`` (an empty URI list, base DN or bind DN is refused, an empty
        filter clears it) before anything is written. The audit record names the
        settings that really changed (never the password itself)."""
        def given(key: str) -> bool:
            return changes.get(key) is not None

        with self.app.dbs.session("main") as s:
            row = self._row(s, name)
            current = settings_of(row)
            merged = {key: changes[key] if given(key) else getattr(current, key)
                      for key in ("uris", "base_dn", "bind_dn", "security", "ca_pem", "user_filter", "group_filter",
                                  "timeout")}
            merged["bind_password"] = changes.get("bind_password") or current.bind_password
            before = self._as_dict(row)
            settings = self._validated(row.name, row.kind, list(merged["uris"]), merged["base_dn"], merged["bind_dn"],
                                       merged["bind_password"], merged["security"], merged["ca_pem"],
                                       merged["user_filter"], merged["group_filter"], merged["timeout"],
                                       bool(changes.get("allow_plain")) or row.security == "plain")
            if given("mail_domains"):
                domains = self._check_mail_domains(changes["mail_domains"])
                taken = self._bound_elsewhere(s, domains, row.name)
                if taken:
                    raise ConflictError(f"mail domain {taken[0][0]} is already bound to LDAP domain {taken[0][1]}")
                row.mail_domains = domains
            password_changed = settings.bind_password != row.bind_password
            ca_changed = settings.ca_pem != row.ca_pem
            for key in ("uris", "security", "ca_pem", "bind_dn", "bind_password", "base_dn", "user_filter",
                        "group_filter", "timeout"):
                setattr(row, key, getattr(settings, key))
            if given("enabled"):
                row.enabled = bool(changes["enabled"])
            out = self._as_dict(row)
        changed = sorted(k for k in out if k not in ("ca", "last_sync", "last_sync_at") and out[k] != before[k])
        changed = sorted(changed + ["bind_password"] * password_changed + ["ca_pem"] * ca_changed)
        self.app.audit.record("ldap_domain.update", out["name"], changed=changed)
        return out

    def remove(self, name: str, force: bool = False) -> dict:
        """Unregister a directory. Its materialised mailboxes are disabled (their mail stays
        on disk); without ``force`` a directory that still has mailboxes is refused."""
        with self.app.dbs.session("main") as s:
            row = self._row(s, name)
            used = s.scalars(select(LdapFilter.name).where(LdapFilter.ldap_domain_id == row.id)).all()
            if used:
                raise ConflictError(f"LDAP domain {row.name} is used by LDAP filter(s) {', '.join(used)}; "
                                    "remove them first")
            name = row.name
        with self.app.dbs.session("data") as s:
            accounts = s.scalars(select(DirectoryAccount).where(DirectoryAccount.directory == name)).all()
            if accounts and not force:
                raise ConflictError(f"LDAP domain {name} has {len(accounts)} materialised account(s); "
                                    "--force disables their mailboxes (mail stays on disk) and removes it")
            disabled = 0
            for acc in accounts:
                if acc.mailbox_id:
                    mb = s.get(Mailbox, acc.mailbox_id)
                    if mb is not None and mb.enabled:
                        mb.enabled = False
                        disabled += 1
                self._disable_aliases(s, acc)
                s.delete(acc)
        with self.app.dbs.session("main") as s:
            s.delete(self._row(s, name))
        accounts_changed(self.app)
        self.app.audit.record("ldap_domain.remove", name, disabled_mailboxes=disabled)
        return {"name": name, "disabled_mailboxes": disabled}

    @staticmethod
    def _as_dict(r: LdapDomain) -> dict:
        return {"name": r.name, "kind": r.kind, "uris": list(r.uris), "security": r.security,
                "ca": "custom" if r.ca_pem.strip() else "system", "bind_dn": r.bind_dn, "base_dn": r.base_dn,
                "user_filter": r.user_filter, "group_filter": r.group_filter, "mail_domains": list(r.mail_domains),
                "timeout": r.timeout, "enabled": r.enabled,
                "last_sync_at": r.last_sync_at.isoformat() if r.last_sync_at else None,
                "last_sync": r.last_sync or {},
                "writeback": {k: v for k, v in (r.writeback or {}).items() if k != "bind_password"},
                "kerberos": kerberos_public(r.kerberos or {})}

    # ================================================================ test
    def test(self, name: str, sample: int = 5) -> dict:
        return self.test_settings(self.get_settings(name), sample)

    def test_settings(self, settings: dl.Settings, sample: int = 5) -> dict:
        """Reachability of each server, bind, base DN, a sample of users. Never raises for
        directory problems: the report says what failed (``ok``/``error``)."""
        report: dict[str, Any] = {"name": settings.name, "servers": [], "bind": False, "base_dn": False,
                                  "users": [], "user_count_sample": 0, "ok": False, "error": ""}
        for uri in settings.uris:
            problem = dl.tcp_reachable(uri, timeout=min(settings.timeout, 5))
            report["servers"].append({"uri": uri, "reachable": problem is None, "problem": problem or ""})
        try:
            conn = dl.connect(settings)
        except dl.DirectoryError as exc:
            report["error"] = str(exc)
            return report
        report["bind"] = True
        report["server_used"] = f"{conn.server.host}:{conn.server.port}"
        try:
            ok = conn.search(settings.base_dn, "(objectClass=*)", search_scope="BASE", attributes=["objectClass"])
            if not ok:
                result = conn.result or {}
                if result.get("description") == "noSuchObject":
                    report["error"] = (f"LDAP domain {settings.name}: base DN {settings.base_dn!r} does not exist "
                                       "on the server (check the spelling, e.g. ou=Users,dc=corp,dc=example)")
                else:
                    report["error"] = (f"LDAP domain {settings.name}: cannot read base DN {settings.base_dn!r}: "
                                       f"{result.get('description')} {result.get('message', '')}".rstrip())
                return report
            report["base_dn"] = True
            users = list(dl.iter_users(conn, settings, size_limit=max(1, sample)))
            report["user_count_sample"] = len(users)
            report["users"] = [{"login": u.login, "mail": u.mail, "disabled": u.disabled, "id": u.stable_id,
                                "extra": u.extra} for u in users]
            if not users:
                report["warning"] = ("bind and base DN are fine but no user with a mail attribute matches "
                                     f"{dl.user_filter(settings, '(mail=*)')}")
            report["ok"] = True
        except dl.DirectoryError as exc:
            report["error"] = str(exc)
        finally:
            conn.unbind()
        return report

    # ================================================================ sync
    def sync_all(self, force: bool = False) -> builtins.list[Mapping]:
        """Sync every enabled LDAP domain; the scheduler calls this. One directory's failure
        does not stop the others; each result (or error) is returned and journalled."""
        with self.app.dbs.session("main") as s:
            names = s.scalars(select(LdapDomain.name).where(LdapDomain.enabled).order_by(LdapDomain.name)).all()
        results: list[Mapping] = []
        for name in names:
            try:
                results.append(self.sync(name, force=force))
            except RuPostError as exc:
                results.append({"name": name, "ok": False, "error": str(exc)})
        return results

    def sync(self, name: str, force: bool = False, dry_run: bool = False) -> SyncSummary:
        started = utcnow()
        with self.app.dbs.session("main") as s:
            row = self._row(s, name)
            settings, mail_domains = settings_of(row), list(row.mail_domains)
        try:
            conn = dl.connect(settings)
            try:
                users = list(dl.iter_users(conn, settings))
            finally:
                conn.unbind()
        except RuPostError as exc:
            # the materialised state stays as it is: mail keeps flowing during an outage
            self._record_sync(settings.name, started, {"ok": False, "error": str(exc)})
            self.app.audit.record("ldap_domain.sync.failed", settings.name, source="sync", error=str(exc))
            raise
        summary = self._materialise(settings, mail_domains, users, force=force, dry_run=dry_run)
        summary.update({"name": settings.name, "ok": True, "seconds": round((utcnow() - started).total_seconds(), 3)})
        if not dry_run:
            self._record_sync(settings.name, started, summary)
            self.app.audit.record("ldap_domain.sync", settings.name, source="sync",
                                  **{k: v for k, v in summary.items() if k not in ("name", "problems")},
                                  problems=summary["problems"][:50])
            # dovecot's caches hold the last answer per account, negative ones too: a
            # re-enabled account (a GSSAPI login is cached by name alone) must not wait for them
            if summary["disabled"] or summary["deleted"] or summary["enabled"]:
                accounts_changed(self.app)
        return summary

    def _record_sync(self, name: str, started: dt.datetime, summary: Mapping) -> None:
        with self.app.dbs.session("main") as s:
            row = s.scalar(select(LdapDomain).where(LdapDomain.name == name))
            if row is not None:
                row.last_sync_at = started
                row.last_sync = {k: v for k, v in summary.items() if k != "problems"} | {
                    "problems": summary.get("problems", [])[:20]}

    def _materialise(self, settings: dl.Settings, mail_domains: builtins.list[str],
                     users: builtins.list[dl.DirectoryUser], *,
                     force: bool, dry_run: bool) -> SyncSummary:
        with self.app.dbs.session("data") as s:
            rows = DirectoryRows.read(s, settings.name, mail_domains)
            plan = plan_sync(settings.name, settings.profile.id_attr, mail_domains, users, rows.snapshot(),
                             share=self.max_drop_share(), force=force, now=utcnow())
            if plan.refusal is not None:
                refusal = plan.refusal
                self.app.audit.record("ldap_domain.sync.refused", settings.name, source="sync",
                                      losing=refusal.losing, active=refusal.active, share=refusal.share)
                raise SyncRefused(refusal.message(settings.name))
            apply_plan(s, settings.name, rows, plan.actions, storage=self.app.layout.mail_storage, dry_run=dry_run)
            if dry_run:
                s.rollback()
        return plan.summary

    def _disable_aliases(self, s: Session, acc: DirectoryAccount) -> None:
        for address in acc.aliases or []:
            alias = s.scalar(select(Alias).where(Alias.address == address))
            if alias is not None:
                alias.enabled = False

    def max_drop_share(self) -> float:
        value = self.app.settings.get(MAX_DROP_SHARE_KEY, DEFAULT_MAX_DROP_SHARE)
        try:
            return min(1.0, max(0.0, float(value)))
        except (TypeError, ValueError):
            return DEFAULT_MAX_DROP_SHARE

    def set_max_drop_share(self, share: float) -> None:
        share = float(share)
        if not 0 <= share <= 1:
            raise ValidationError("the share must be between 0 and 1 (e.g. 0.2 for 20%)")
        self.app.settings.set(MAX_DROP_SHARE_KEY, share)

    def accounts(self, name: str | None = None, state: str | None = None, limit: int = 1000) -> builtins.list[dict]:
        with self.app.dbs.session("data") as s:
            q = select(DirectoryAccount).order_by(DirectoryAccount.mail).limit(limit)
            if name:
                q = q.where(DirectoryAccount.directory == name)
            if state:
                q = q.where(DirectoryAccount.state == state)
            return [{"directory": a.directory, "id": a.stable_id, "login": a.login, "mail": a.mail, "state": a.state,
                     "reason": a.state_reason, "aliases": list(a.aliases or []), "dn": a.dn,
                     "written_aliases": list(a.written_aliases or [])} for a in s.scalars(q)]

    # ================================================================ GAL
    def gal(self, search: str = "", limit: int = 100) -> builtins.list[dict]:
        with self.app.dbs.session("data") as s:
            q = (select(DirectoryAccount).join(Mailbox, Mailbox.id == DirectoryAccount.mailbox_id)
                 .where(DirectoryAccount.state == "active", Mailbox.enabled).order_by(DirectoryAccount.mail)
                 .limit(limit))
            if search:
                q = q.where(DirectoryAccount.mail.contains(search.lower(), autoescape=True)
                            | DirectoryAccount.gal["display_name"].astext.ilike(
                                "%" + search.replace("%", r"\%").replace("_", r"\_") + "%"))
            return [{"directory": a.directory, **{k: a.gal.get(k, "") for k in dl.GAL_FIELDS}, "mail": a.mail}
                    for a in s.scalars(q)]

    # ================================================================ rendering
    def template_context(self) -> dict:
        """What the configuration template may use (context name ``directories``): one
        dovecot LDAP passdb and one SOGo authentication source per enabled LDAP domain
        with bound mail domains."""
        try:
            with self.app.dbs.session("main") as s:
                rows = s.scalars(select(LdapDomain).where(LdapDomain.enabled).order_by(LdapDomain.name)).all()
        except Exception:  # the table does not exist before the migration
            rows = []
        passdbs, sogo = [], []
        for r in rows:
            if not r.mail_domains:
                continue
            settings = settings_of(r)
            profile = settings.profile
            accounts = dl.and_filters(profile.user_class_filter, settings.user_filter, profile.enabled_filter)
            # %-sequences are dovecot variables: the administrator's filter must not contain live ones
            base_filter = accounts.replace("%", "%%")
            passdbs.append({
                "name": r.name, "uris": list(r.uris), "starttls": r.security == "starttls",
                "tls": r.security != "plain", "ca_pem": r.ca_pem, "bind_dn": r.bind_dn,
                "bind_password": r.bind_password, "base": r.base_dn,
                "filter": dl.and_filters(base_filter, "(mail=%Lu)"),
                "domains": list(r.mail_domains), "timeout": r.timeout,
            })
            sogo.append({
                "name": r.name, "uris": list(r.uris), "starttls": r.security == "starttls", "ca_pem": r.ca_pem,
                "bind_dn": r.bind_dn, "bind_password": r.bind_password, "base": r.base_dn,
                "filter": accounts, "domains": list(r.mail_domains),
            })
        return {"dovecot_passdbs": passdbs, "sogo_sources": sogo, "kerberos": self.kerberos_context(rows)}



def scheduled_sync(app: Services) -> list[Mapping]:
    """Sync every enabled LDAP domain into mailboxes, aliases and the GAL (scheduler job)."""
    return app.directories.sync_all()
