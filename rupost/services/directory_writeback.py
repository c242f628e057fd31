"""Write-back (guide §7.5), the part of DirectoryService that writes to a directory.

For the accounts RuPost provisions (enabled users the LDAP domain selects that have no
``mail`` yet) RuPost generates the primary address from the login by a per-domain pattern
(``{login}``, ``{given}``, ``{surname}``) and writes it to ``mail`` and, as ``SMTP:...``, to
``proxyAddresses`` (FreeIPA / ALD Pro: with the auxiliary class ``ruPostMailAccount``). The next
sync then creates the mailbox. For accounts that have a mailbox, the RuPost aliases of that
mailbox are written next to the primary address (rupost.services.directory_writeback_aliases,
which also holds the ownership rule with the sync). Nothing else in the entry is touched.

It binds with a **separate account** (not the read-only service account) that needs write
rights on ``mail`` and ``proxyAddresses`` only (guide §7.6); a refusal names the account, the
entry and the rights to grant. Each entry is written in one LDAP modify (all or nothing per
account); a run stops at the first refusal and reports what it had written.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import ldap3
from sqlalchemy import select

from rupost.ldap import client as dl
from rupost.ldap.settings import settings_of

from .. import validation
from ..db.models import Alias, Mailbox
from ..errors import ValidationError
from . import directory_writeback_aliases as wa

if TYPE_CHECKING:
    from ..db.directory_models import LdapDomain
    from . import Services

_PLACEHOLDER = re.compile(r"\{([a-z]*)\}")
PLACEHOLDERS = ("login", "given", "surname")


def generate_local(pattern: str, login: str, given: str = "", surname: str = "") -> str:
    values = {"login": login, "given": given, "surname": surname}
    local = _PLACEHOLDER.sub(lambda m: values[m.group(1)], pattern).strip().lower()
    return re.sub(r"\s+", ".", local)


def check_pattern(pattern: str) -> str:
    pattern = (pattern or "").strip()
    used = _PLACEHOLDER.findall(pattern)
    unknown = [p for p in used if p not in PLACEHOLDERS]
    if not used or unknown or "@" in pattern:
        raise ValidationError(f"write-back pattern {pattern!r}: the local part of the address, with "
                              f"{', '.join('{' + p + '}' for p in PLACEHOLDERS)} (e.g. {{login}} or "
                              "{given}.{surname}); the domain is --mail-domain")
    validation.address(generate_local(pattern, "ivanov", "ivan", "ivanov") + "@example.org")
    return pattern


class DirectoryWriteback:
    """Inherited by DirectoryService; uses its ``app`` and ``_row``."""

    app: Services
    _row: Callable[[Any, str], LdapDomain]

    def writeback_set(self, name: str, *, enabled: bool = True, pattern: str = "{login}", mail_domain: str = "",
                      bind_dn: str = "", bind_password: str = "", check: bool = True) -> dict:
        if not enabled:
            with self.app.dbs.session("main") as s:
                self._row(s, name).writeback = {}
            self.app.audit.record("ldap_domain.writeback.disable", name)
            return {"name": name, "enabled": False}
        pattern = check_pattern(pattern)
        bind_dn = dl.check_dn(bind_dn, "write-back bind DN")
        if not bind_password:
            raise ValidationError("the write-back account's password is empty")
        with self.app.dbs.session("main") as s:
            row = self._row(s, name)
            settings, domains = settings_of(row), list(row.mail_domains)
        mail_domain = validation.domain_name(mail_domain) if mail_domain else (domains[0] if domains else "")
        if mail_domain not in domains:
            raise ValidationError(f"write-back mail domain {mail_domain!r} is not bound to LDAP domain {name} "
                                  f"(bound: {', '.join(domains) or 'none'})")
        if bind_dn.lower() == settings.bind_dn.lower():
            raise ValidationError("write-back needs a separate account: the service account only reads; give an "
                                  "account with write rights on mail and proxyAddresses alone (guide §7.6)")
        if check:
            dl.connect(settings, bind_dn, bind_password).unbind()  # raises with the reason
        config = {"enabled": True, "pattern": pattern, "mail_domain": mail_domain, "bind_dn": bind_dn,
                  "bind_password": bind_password}
        with self.app.dbs.session("main") as s:
            self._row(s, name).writeback = config
        self.app.audit.record("ldap_domain.writeback.set", name, pattern=pattern, mail_domain=mail_domain,
                              bind_dn=bind_dn)
        return {"name": name, **{k: v for k, v in config.items() if k != "bind_password"}}

    def writeback_plan(self, name: str) -> tuple[dl.Settings, dict, list[dict]]:
        """(settings, write-back config, plan): per entry to write {dn, login, mail, changes, add,
        remove} (the primary address of an account without one, or the aliases of one with a
        mailbox), per skipped address {dn, login, mail, skipped}."""
        with self.app.dbs.session("main") as s:
            row = self._row(s, name)
            settings, config, bound = settings_of(row), dict(row.writeback or {}), set(row.mail_domains)
        if not config.get("enabled"):
            raise ValidationError(f"write-back is not enabled for LDAP domain {name} "
                                  f"(rupost ldap-domains writeback-set {name} --bind-dn ... --pattern ...)")
        conn = dl.connect(settings)
        try:
            plan = self._primary_plan(conn, settings, config) + self._alias_plan(conn, settings, bound)
        finally:
            conn.unbind()
        return settings, config, plan

    def _primary_plan(self, conn: ldap3.Connection, settings: dl.Settings, config: dict) -> list[dict]:
        profile = settings.profile
        attrs = [profile.login_attr, "givenName", "sn", "objectClass", "proxyAddresses"]
        flt = dl.user_filter(settings, profile.enabled_filter, "(!(mail=*))")
        plan: list[dict] = []
        planned: set[str] = set()
        for dn, raw in list(dl.search(conn, settings, settings.base_dn, flt, attrs)):
            login = dl.first(raw, profile.login_attr)
            local = generate_local(config["pattern"], login, dl.first(raw, "givenName"), dl.first(raw, "sn"))
            address = f"{local}@{config['mail_domain']}"
            why = self._address_problem(conn, settings, address, planned)
            if why:
                plan.append({"dn": dn, "login": login, "mail": address, "skipped": why})
                continue
            planned.add(address)
            changes = _changes(profile.kind, address, dl.texts(raw, "objectClass"))
            plan.append({"dn": dn, "login": login, "mail": address, "changes": changes,
                         "add": [f"{attr}: {v}" for attr, ops in changes.items() for _, values in ops
                                 for v in values], "remove": []})
        return plan

    def _alias_plan(self, conn: ldap3.Connection, settings: dl.Settings, bound: set[str]) -> list[dict]:
        accounts = wa.read_accounts(self.app, settings.name)
        if not accounts:
            return []
        profile = settings.profile
        attrs = [profile.id_attr, profile.login_attr, "mail", "proxyAddresses"]
        plan: list[dict] = []
        for dn, raw in list(dl.search(conn, settings, settings.base_dn, dl.user_filter(settings, "(mail=*)"),
                                      attrs)):
            acc = accounts.get(dl.stable_id(profile, raw))
            if acc is None:
                continue  # not materialised (yet): the sync decides about it
            user = dl.to_user(profile, dn, raw)
            plan += wa.plan_entry(profile.kind, bound, dn, user.login, user.mail, raw, acc,
                                  lambda address: self._in_directory(conn, settings, address))
        return plan

    def _address_problem(self, conn: ldap3.Connection, settings: dl.Settings, address: str,
                         planned: set[str]) -> str:
        try:
            validation.address(address)
        except ValidationError as exc:
            return str(exc)
        if address in planned:
            return "another account of this run gets the same address"
        with self.app.dbs.session("data") as s:
            if s.scalar(select(Mailbox.id).where(Mailbox.address == address)) or \
                    s.scalar(select(Alias.id).where(Alias.address == address)):
                return "the address belongs to a RuPost mailbox or alias"
        if self._in_directory(conn, settings, address):
            return "the address is already an account's mail or proxyAddresses in the directory"
        return ""

    @staticmethod
    def _in_directory(conn: ldap3.Connection, settings: dl.Settings, address: str) -> bool:
        flt = f"(|(mail={dl.escape(address)})(proxyAddresses=smtp:{dl.escape(address)}))"
        return any(True for _ in dl.search(conn, settings, settings.base_dn, flt, ["1.1"], size_limit=1))

    def writeback(self, name: str, dry_run: bool = False) -> dict:
        """Write the generated addresses and the aliases (or, with dry_run, only say which),
        then sync."""
        settings, config, plan = self.writeback_plan(name)
        todo = [p for p in plan if "changes" in p]
        report: dict[str, Any] = {"name": name, "dry_run": dry_run, "planned": plan, "written": 0}
        if dry_run:
            return report
        for item in plan:  # recorded aliases already gone from RuPost and from the entry
            if "changes" not in item and "written_aliases" in item:
                wa.record_written(self.app, settings.name, item["stable_id"], item["written_aliases"])
        if not todo:
            return report
        conn = dl.connect(settings, config["bind_dn"], config["bind_password"], read_only=False)
        try:
            for item in todo:
                if not conn.modify(item["dn"], item["changes"]):
                    result = conn.result or {}
                    self.app.audit.record("ldap_domain.writeback.refused", name, dn=item["dn"],
                                          written=report["written"], code=result.get("description"))
                    raise dl.DirectoryError(_refusal(config["bind_dn"], item, result, report["written"]))
                if "written_aliases" in item:  # at once: a later refusal must not lose what is written
                    wa.record_written(self.app, settings.name, item["stable_id"], item["written_aliases"])
                report["written"] += 1
        finally:
            conn.unbind()
        self.app.audit.record("ldap_domain.writeback", name, written=report["written"],
                              changes=[{"dn": p["dn"], "add": p["add"], "remove": p["remove"]} for p in todo][:50])
        report["sync"] = self.sync(name)  # type: ignore[attr-defined]  # DirectoryService's
        return report


def _changes(kind: str, address: str, classes: list[str]) -> dict:
    changes: dict[str, list] = {"mail": [(ldap3.MODIFY_REPLACE, [address])],
                                "proxyAddresses": [(ldap3.MODIFY_ADD, [f"SMTP:{address}"])]}
    if kind != "ad" and "rupostmailaccount" not in {c.lower() for c in classes}:
        changes["objectClass"] = [(ldap3.MODIFY_ADD, ["ruPostMailAccount"])]
    return changes


def _refusal(bind_dn: str, item: dict, result: dict, written: int) -> str:
    code = result.get("description")
    what = ", ".join(sorted(item["changes"]))
    if code == "insufficientAccessRights":
        reason = (f"the write-back account {bind_dn!r} may not write {what} of {item['dn']!r}: grant it write "
                  "access to mail and proxyAddresses (and objectClass on FreeIPA / ALD Pro), guide §7.6")
    else:
        reason = f"writing {what} of {item['dn']!r} refused: {code} {result.get('message', '')}".rstrip()
    return f"write-back stopped: {reason}; {written} account(s) written before, the others untouched"
