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
"""
from __future__ import annotations

import datetime as dt
import os
import re

from sqlalchemy import delete, func, select

from .. import validation
from ..db.directory_models import DirectoryAccount, LdapAdminMapping, LdapDomain, LdapFilter
from ..db.models import Alias, Domain, Mailbox, utcnow
from rupost.ldap import client as dl
from ..errors import ConflictError, NotFoundError, RuPostError, ValidationError
from .cache import accounts_changed

# the password "hash" of a mailbox whose owner authenticates against a directory:
# never a valid hash, so the local passdb (and SOGo's SQL source) can never accept it
DIRECTORY_PASSWORD_PREFIX = "!directory:"
MAX_DROP_SHARE_KEY = "directories.max_drop_share"
DEFAULT_MAX_DROP_SHARE = 0.5
DROP_CHECK_MINIMUM = 5  # below this many affected accounts the share is not checked
_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")
ADMIN_ROLES = ("superadmin", "domain_admin", "readonly")


class SyncRefused(RuPostError):
    """A sync would disable more accounts than allowed; nothing was changed."""


def settings_of(row: LdapDomain) -> dl.Settings:
    return dl.Settings(name=row.name, kind=row.kind, uris=list(row.uris), security=row.security, ca_pem=row.ca_pem,
                       bind_dn=row.bind_dn, bind_password=row.bind_password, base_dn=row.base_dn,
                       user_filter=row.user_filter, group_filter=row.group_filter, timeout=row.timeout)


def check_name(name: str) -> str:
    name = (name or "").strip().lower()
    if not _NAME.match(name):
        raise ValidationError(f"invalid LDAP domain name {name!r}: lowercase letters, digits, '-' and '_', "
                              "starting with a letter (e.g. corp)")
    return name


class DirectoryService:
    def __init__(self, app):
        self.app = app

    # ================================================================ LDAP domains
    def add(self, name: str, kind: str, uris: list[str], base_dn: str, bind_dn: str, bind_password: str, *,
            security: str = "ldaps", ca_pem: str = "", mail_domains: list[str] = (), user_filter: str = "",
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

    def _validated(self, name, kind, uris, base_dn, bind_dn, bind_password, security, ca_pem, user_filter,
                   group_filter, timeout, allow_plain) -> dl.Settings:
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
            name=name, kind=kind, uris=uris, security=security, ca_pem=ca_pem.strip() + ("\n" if ca_pem.strip() else ""),
            bind_dn=dl.check_dn(bind_dn, "service account DN"), bind_password=bind_password,
            base_dn=dl.check_dn(base_dn, "base DN"),
            user_filter=dl.check_filter(user_filter, "user filter") if user_filter.strip() else "",
            group_filter=dl.check_filter(group_filter, "group filter") if group_filter.strip() else "",
            timeout=int(timeout))

    def _check_mail_domains(self, mail_domains) -> list[str]:
        names = list(dict.fromkeys(validation.domain_name(d) for part in mail_domains
                                   for d in str(part).replace(",", " ").split()))
        with self.app.dbs.session("data") as s:
            for name in names:
                self.app.domains.get(s, name)
        return names

    @staticmethod
    def _bound_elsewhere(session, domains: list[str], name: str) -> list[tuple[str, str]]:
        out = []
        for row in session.scalars(select(LdapDomain).where(LdapDomain.name != name)):
            out += [(d, row.name) for d in row.mail_domains if d in domains]
        return out

    def _row(self, session, name: str) -> LdapDomain:
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

    def update(self, name: str, **changes) -> dict:
        """Change connection settings (e.g. rotate the service account password).

        A setting given as None is kept as it is; an empty service account password is
        kept too (the panel's password field left empty). Everything else given is
        validated like ``add`` (an empty URI list, base DN or bind DN is refused, an empty
        filter clears it) before anything is written. The audit record names the
        settings that really changed (never the password itself)."""
        def given(key):
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
                self._set_aliases_enabled(s, acc, False)
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
                "last_sync": r.last_sync or {}}

    # ================================================================ test
    def test(self, name: str, sample: int = 5) -> dict:
        return self.test_settings(self.get_settings(name), sample)

    def test_settings(self, settings: dl.Settings, sample: int = 5) -> dict:
        """Reachability of each server, bind, base DN, a sample of users. Never raises for
        directory problems: the report says what failed (``ok``/``error``)."""
        report = {"name": settings.name, "servers": [], "bind": False, "base_dn": False, "users": [],
                  "user_count_sample": 0, "ok": False, "error": ""}
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
    def sync_all(self, force: bool = False) -> list[dict]:
        """Sync every enabled LDAP domain; the scheduler calls this. One directory's failure
        does not stop the others; each result (or error) is returned and journalled."""
        with self.app.dbs.session("main") as s:
            names = s.scalars(select(LdapDomain.name).where(LdapDomain.enabled).order_by(LdapDomain.name)).all()
        results = []
        for name in names:
            try:
                results.append(self.sync(name, force=force))
            except RuPostError as exc:
                results.append({"name": name, "ok": False, "error": str(exc)})
        return results

    def sync(self, name: str, force: bool = False, dry_run: bool = False) -> dict:
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
            if summary["disabled"] or summary["deleted"]:
                accounts_changed(self.app)
        return summary

    def _record_sync(self, name: str, started: dt.datetime, summary: dict) -> None:
        with self.app.dbs.session("main") as s:
            row = s.scalar(select(LdapDomain).where(LdapDomain.name == name))
            if row is not None:
                row.last_sync_at = started
                row.last_sync = {k: v for k, v in summary.items() if k != "problems"} | {
                    "problems": summary.get("problems", [])[:20]}

    def _materialise(self, settings: dl.Settings, mail_domains: list[str], users: list[dl.DirectoryUser], *,
                     force: bool, dry_run: bool) -> dict:
        summary = {"seen": len(users), "created": 0, "updated": 0, "renamed": 0, "disabled": 0, "deleted": 0,
                   "enabled": 0, "aliases_added": 0, "aliases_removed": 0, "skipped": 0, "conflicts": 0,
                   "problems": []}
        bound = set(mail_domains)
        wanted: dict[str, dl.DirectoryUser] = {}
        for u in users:
            domain = u.mail.rpartition("@")[2]
            if not u.stable_id:
                summary["skipped"] += 1
                summary["problems"].append(f"{u.dn}: no {settings.profile.id_attr}; skipped")
            elif domain not in bound:
                summary["skipped"] += 1  # a user of a mail domain this directory does not serve
            elif u.stable_id in wanted:
                summary["problems"].append(f"{u.dn}: duplicate {settings.profile.id_attr} {u.stable_id}; skipped")
            else:
                try:
                    validation.address(u.mail)
                except ValidationError as exc:
                    summary["skipped"] += 1
                    summary["problems"].append(f"{u.dn}: {exc}")
                    continue
                wanted[u.stable_id] = u
        marker = DIRECTORY_PASSWORD_PREFIX + settings.name
        with self.app.dbs.session("data") as s:
            domains = {d.name: d for d in s.scalars(select(Domain).where(Domain.name.in_(bound)))}
            accounts = {a.stable_id: a for a in s.scalars(
                select(DirectoryAccount).where(DirectoryAccount.directory == settings.name))}
            domain_ids = [d.id for d in domains.values()]
            mailboxes = {m.address: m for m in s.scalars(select(Mailbox).where(Mailbox.domain_id.in_(domain_ids)))}
            by_id = {m.id: m for m in mailboxes.values()}
            aliases = {a.address: a for a in s.scalars(select(Alias).where(Alias.domain_id.in_(domain_ids)))}
            linked = {a.mailbox_id: a for a in s.scalars(select(DirectoryAccount).where(
                DirectoryAccount.mailbox_id.is_not(None)))}
            # ---- the safety check, before any change
            active = [a for a in accounts.values() if a.state == "active"]
            losing = [a for a in active if a.stable_id not in wanted or wanted[a.stable_id].disabled]
            share = self.max_drop_share()
            if not force and len(losing) >= DROP_CHECK_MINIMUM and active and len(losing) / len(active) > share:
                message = (f"LDAP domain {settings.name}: sync refused: it would disable {len(losing)} of "
                           f"{len(active)} active mailbox(es) ({len(losing) / len(active):.0%}, more than the allowed "
                           f"{share:.0%}); check the directory and the user filter, then run "
                           "`rupost ldap-domains sync --force` if this is intended")
                self.app.audit.record("ldap_domain.sync.refused", settings.name, source="sync",
                                      losing=len(losing), active=len(active), share=share)
                raise SyncRefused(message)
            now = utcnow()
            new_mailboxes: list[tuple[DirectoryAccount, Mailbox]] = []
            for stable, u in wanted.items():
                acc = accounts.get(stable)
                mb = by_id.get(acc.mailbox_id) if acc is not None and acc.mailbox_id else None
                domain = domains[u.mail.rpartition("@")[2]]
                display = (u.gal.get("display_name") or "")[:256]
                if acc is None:
                    acc = DirectoryAccount(directory=settings.name, stable_id=stable, aliases=[], groups=[], gal={},
                                           state="active", state_reason="", dn=u.dn, login=u.login, mail=u.mail)
                    s.add(acc)
                    accounts[stable] = acc
                if mb is None:
                    existing = mailboxes.get(u.mail)
                    if existing is not None and (existing.password_hash != marker or existing.id in linked):
                        acc.state, acc.state_reason = "conflict", f"{u.mail} is already a local mailbox"
                        summary["conflicts"] += 1
                        summary["problems"].append(f"{u.dn}: {u.mail} is already a mailbox not owned by this "
                                                   "directory; not taken over")
                        self._fill(acc, u, now)
                        continue
                    if existing is None and u.mail in aliases:
                        acc.state, acc.state_reason = "conflict", f"{u.mail} is already an alias"
                        summary["conflicts"] += 1
                        summary["problems"].append(f"{u.dn}: {u.mail} is already an alias; not created")
                        self._fill(acc, u, now)
                        continue
                    if existing is None:
                        mb = Mailbox(domain_id=domain.id, local_part=u.mail.split("@")[0], address=u.mail,
                                     password_hash=marker, display_name=display, quota_bytes=0,
                                     enabled=not u.disabled)
                        s.add(mb)
                        mailboxes[u.mail] = mb
                        new_mailboxes.append((acc, mb))  # ids after one flush for all of them
                        summary["created"] += 1
                    else:
                        mb = existing  # ours from an earlier account row (e.g. re-added after a removal)
                        by_id[mb.id] = mb
                        linked[mb.id] = acc
                        acc.mailbox_id = mb.id
                elif mb.address != u.mail:
                    if u.mail in mailboxes or u.mail in aliases and u.mail not in acc.aliases:
                        summary["conflicts"] += 1
                        summary["problems"].append(f"{u.dn}: mail changed to {u.mail}, which is already taken; "
                                                   f"the mailbox stays {mb.address}")
                    else:
                        old = mb.address
                        if u.mail in aliases:  # it was one of its own extra addresses
                            s.delete(aliases.pop(u.mail))
                            s.flush()
                        self._move_storage(old, u.mail, dry_run)
                        mailboxes.pop(old, None)
                        mb.address, mb.local_part, mb.domain_id = u.mail, u.mail.split("@")[0], domain.id
                        mailboxes[u.mail] = mb
                        # mail to the old address keeps arriving
                        u.extra = list(dict.fromkeys([*u.extra, old]))
                        summary["renamed"] += 1
                if acc.state in ("conflict",) and mb is not None:
                    acc.state_reason = ""
                new_state = "disabled" if u.disabled else "active"
                if mb.enabled != (not u.disabled):
                    summary["disabled" if u.disabled else "enabled"] += 1
                    mb.enabled = not u.disabled
                if display and mb.display_name != display:
                    mb.display_name = display
                changed = (acc.dn, acc.login, acc.state, acc.gal, acc.groups) != (u.dn, u.login, new_state, u.gal,
                                                                                   u.groups)
                if (acc.state, acc.state_reason) != (new_state, "disabled in the directory" if u.disabled else ""):
                    acc.state, acc.state_reason = new_state, "disabled in the directory" if u.disabled else ""
                self._fill(acc, u, now)
                summary["updated"] += int(changed)
                added, removed = self._sync_aliases(s, acc, mb, u, bound, domains, aliases, mailboxes, summary)
                summary["aliases_added"] += added
                summary["aliases_removed"] += removed
            s.flush()
            for acc, mb in new_mailboxes:
                acc.mailbox_id = mb.id
            for stable, acc in accounts.items():
                if stable in wanted or acc.state == "deleted":
                    continue
                acc.state, acc.state_reason = "deleted", "no longer in the directory (or outside its filter)"
                mb = by_id.get(acc.mailbox_id) if acc.mailbox_id else None
                if mb is not None and mb.enabled:
                    mb.enabled = False
                self._set_aliases_enabled(s, acc, False, aliases)
                summary["deleted"] += 1
            if dry_run:
                s.rollback()
        return summary

    @staticmethod
    def _fill(acc: DirectoryAccount, u: dl.DirectoryUser, now) -> None:
        # only what changed is written: a sync with nothing to change issues no UPDATE
        # (synced_at is the time of the last change seen)
        new = {"dn": u.dn, "login": u.login, "mail": u.mail, "groups": u.groups, "gal": u.gal}
        changed = {k: v for k, v in new.items() if getattr(acc, k) != v}
        for key, value in changed.items():
            setattr(acc, key, value)
        if changed or acc.synced_at is None:
            acc.synced_at = now

    def _sync_aliases(self, s, acc, mb, u, bound, domains, aliases, mailboxes, summary) -> tuple[int, int]:
        added = removed = 0
        desired = [a for a in u.extra if a.rpartition("@")[2] in bound]
        for address in u.extra:
            if address.rpartition("@")[2] not in bound:
                summary["problems"].append(f"{u.dn}: extra address {address} is not in a mail domain of this "
                                           "directory; ignored")
        kept = []
        for address in desired:
            alias = aliases.get(address)
            if alias is not None:
                if address in acc.aliases:
                    if alias.destinations != mb.address or alias.enabled != mb.enabled:
                        alias.destinations, alias.enabled = mb.address, mb.enabled
                    kept.append(address)
                else:
                    summary["problems"].append(f"{u.dn}: extra address {address} is already an alias; not taken over")
                continue
            if address in mailboxes:
                summary["problems"].append(f"{u.dn}: extra address {address} is already a mailbox; ignored")
                continue
            alias = Alias(domain_id=domains[address.rpartition("@")[2]].id, address=address,
                          destinations=mb.address, enabled=mb.enabled)
            s.add(alias)
            aliases[address] = alias
            kept.append(address)
            added += 1
        for address in acc.aliases:
            if address not in kept and address in aliases and aliases[address].destinations == mb.address:
                s.delete(aliases.pop(address))
                removed += 1
        acc.aliases = kept
        return added, removed

    def _set_aliases_enabled(self, s, acc: DirectoryAccount, enabled: bool, aliases: dict | None = None) -> None:
        for address in acc.aliases or []:
            alias = aliases.get(address) if aliases is not None else s.scalar(
                select(Alias).where(Alias.address == address))
            if alias is not None:
                alias.enabled = enabled

    def _move_storage(self, old: str, new: str, dry_run: bool) -> None:
        """Mail is stored under DOMAIN/LOCAL: a changed primary address moves the directory."""
        if dry_run:
            return
        storage = self.app.layout.mail_storage
        old_local, old_domain = old.split("@")
        new_local, new_domain = new.split("@")
        src, dst = storage / old_domain / old_local, storage / new_domain / new_local
        if src.is_dir() and not dst.exists():
            dst.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.chown(dst.parent, src.parent.stat().st_uid, src.parent.stat().st_gid)
            except OSError:
                pass
            os.rename(src, dst)

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

    def accounts(self, name: str | None = None, state: str | None = None, limit: int = 1000) -> list[dict]:
        with self.app.dbs.session("data") as s:
            q = select(DirectoryAccount).order_by(DirectoryAccount.mail).limit(limit)
            if name:
                q = q.where(DirectoryAccount.directory == name)
            if state:
                q = q.where(DirectoryAccount.state == state)
            return [{"directory": a.directory, "id": a.stable_id, "login": a.login, "mail": a.mail, "state": a.state,
                     "reason": a.state_reason, "aliases": list(a.aliases or []), "dn": a.dn} for a in s.scalars(q)]

    # ================================================================ GAL
    def gal(self, search: str = "", limit: int = 100) -> list[dict]:
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
        return {"dovecot_passdbs": passdbs, "sogo_sources": sogo}

    # ================================================================ administrators
    def admin_map_add(self, directory: str, kind: str, value: str, role: str, domains=()) -> dict:
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
            n = s.execute(delete(LdapAdminMapping).where(LdapAdminMapping.ldap_domain_id == row.id,
                                                         LdapAdminMapping.kind == kind,
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
            mappings = {}
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
                finally:
                    conn.unbind()
                if len(found) != 1:
                    continue  # unknown here (or ambiguous: never guess whose password it is)
                dn, raw = found[0]
                if not dl.try_bind(settings, dn, password):
                    return None  # the account exists here: a wrong password is final
            except dl.DirectoryError as exc:
                errors.append(str(exc))
                continue
            groups = {g.lower() for g in dl.texts(raw, "memberOf")}
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


def ldap_bind_authenticator(app):
    """The control panel's Authenticator for administrators from LDAP domains
    (rupost.services.admins): bind as the user, map its groups to a role."""
    from .admins import AdminIdentity, Authenticator

    class LdapBindAuthenticator(Authenticator):
        name = "ldap"

        def authenticate(self, login: str, password: str):
            granted = app.directories.authenticate_admin(login, password)
            if granted is None:
                return None
            role, domains = granted
            return AdminIdentity(login=login.strip(), role=role, domains=tuple(domains), source="ldap")

    return LdapBindAuthenticator()


def scheduled_sync(app):
    """Sync every enabled LDAP domain into mailboxes, aliases and the GAL (scheduler job)."""
    return app.directories.sync_all()
