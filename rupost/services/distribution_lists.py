"""Distribution lists (static members and dynamic members from a named LDAP filter)
and the named LDAP filters themselves.

The list address delivers through postfix's virtual_alias_maps: the ``lookup_lists``
view expands it to its current members, read from ``distribution_list_members``.
``update`` (the ``rupost-distribution-lists-updater`` job) materialises the members
of dynamic lists. It keeps the last good membership when a directory cannot be
asked, and refuses (and journals) a run that would drop more than the allowed share
of a list's members.
"""
from __future__ import annotations

import builtins
import re
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, func, insert, select
from sqlalchemy.exc import IntegrityError

from rupost.ldap import client as dl
from rupost.ldap.settings import settings_of

from .. import validation
from ..db.directory_models import DistributionList, DistributionListMember, LdapDomain, LdapFilter
from ..db.models import Alias, Mailbox, utcnow
from ..errors import ConflictError, NotFoundError, RuPostError, ValidationError
from .directory_sync import DROP_CHECK_MINIMUM

if TYPE_CHECKING:
    import ldap3
    from sqlalchemy.orm import Session

    from . import Services

# anyone; internal: authenticated senders only (postfix check_recipient_access);
# members: the list's current members only (the RuPost policy server, rupost/policy/server.py)
POLICIES = ("anyone", "internal", "members")
_FILTER_NAME = re.compile(r"^[a-z][a-z0-9_.-]{0,63}$")
MAX_STATIC_MEMBERS = 100_000


class LdapFilterService:
    def __init__(self, app: Services) -> None:
        self.app = app

    def add(self, name: str, ldap_domain: str, text: str, description: str = "") -> dict:
        name = _filter_name(name)
        text = dl.check_filter(text)
        with self.app.dbs.session("main") as s:
            domain = self.app.directories._row(s, ldap_domain)
            if s.scalar(select(LdapFilter.id).where(LdapFilter.name == name)):
                raise ConflictError(f"LDAP filter {name} already exists")
            s.add(LdapFilter(name=name, ldap_domain_id=domain.id, filter=text, description=description.strip()))
        self.app.audit.record("ldap_filter.add", name, ldap_domain=ldap_domain, filter=text)
        return {"name": name, "ldap_domain": ldap_domain, "filter": text, "description": description.strip()}

    def _get(self, session: Session, name: str) -> tuple[LdapFilter, LdapDomain]:
        row = session.scalar(select(LdapFilter).where(LdapFilter.name == (name or "").strip().lower()))
        if row is None:
            raise NotFoundError(f"LDAP filter {name} does not exist (rupost ldap-filters list)")
        return row, session.get(LdapDomain, row.ldap_domain_id)  # type: ignore[return-value]

    def list(self) -> list[dict]:
        with self.app.dbs.session("main") as s:
            rows = s.execute(select(LdapFilter, LdapDomain.name).join(
                LdapDomain, LdapDomain.id == LdapFilter.ldap_domain_id).order_by(LdapFilter.name)).all()
            return [{"name": f.name, "ldap_domain": n, "filter": f.filter, "description": f.description}
                    for f, n in rows]

    def set_filter(self, name: str, text: str) -> dict:
        text = dl.check_filter(text)
        with self.app.dbs.session("main") as s:
            row, domain = self._get(s, name)
            row.filter = text
            out = {"name": row.name, "ldap_domain": domain.name, "filter": text, "description": row.description}
        self.app.audit.record("ldap_filter.set", name, filter=text)
        return out

    def remove(self, name: str) -> None:
        with self.app.dbs.session("data") as s:
            used = s.scalars(select(DistributionList.address).where(
                DistributionList.filter_name == (name or "").strip().lower())).all()
        if used:
            raise ConflictError(f"LDAP filter {name} is used by distribution list(s) {', '.join(used)}")
        with self.app.dbs.session("main") as s:
            row, _ = self._get(s, name)
            s.delete(row)
        self.app.audit.record("ldap_filter.remove", name)

    def test(self, name: str | None = None, *, ldap_domain: str | None = None, text: str | None = None,
             limit: int = 20) -> dict:
        """Preview: who matches a stored filter (or a filter being written)."""
        if name:
            with self.app.dbs.session("main") as s:
                row, domain = self._get(s, name)
                settings, text = settings_of(domain), row.filter
        else:
            if not ldap_domain or not text:
                raise ValidationError("give a filter name, or an LDAP domain and a filter to try")
            text = dl.check_filter(text)
            settings = self.app.directories.get_settings(ldap_domain)
        members = self.matching(settings, text)
        return {"filter": text, "ldap_domain": settings.name, "count": len(members),
                "sample": sorted(members)[:max(0, limit)]}

    def matching(self, settings: dl.Settings, text: str, conn: ldap3.Connection | None = None) -> set[str]:
        """Mail addresses of the enabled users matching the filter (raises DirectoryError)."""
        own = conn is None
        conn = conn or dl.connect(settings)
        try:
            flt = dl.user_filter(settings, "(mail=*)", settings.profile.enabled_filter, text)
            return {m.strip().lower() for _dn, raw in dl.search(conn, settings, settings.base_dn, flt, ["mail"])
                    for m in dl.texts(raw, "mail")[:1] if m.strip()}
        finally:
            if own:
                conn.unbind()


def _filter_name(name: str) -> str:
    name = (name or "").strip().lower()
    if not _FILTER_NAME.match(name):
        raise ValidationError(f"invalid filter name {name!r}: lowercase letters, digits, '.', '_', '-' "
                              "(e.g. sales-department)")
    return name


def membership_change(old: set[str], new: set[str], allowed: float, force: bool) -> dict:
    """What an update does to a dynamic list whose filter now gives ``new`` instead of
    ``old``: the counts, and ``unchanged``, ``updated`` or ``refused`` (more than the
    ``allowed`` share of its members would be dropped)."""
    dropped, added = old - new, new - old
    out: dict = {"members": len(new), "added": len(added), "dropped": len(dropped)}
    if not dropped and not added:
        return out | {"status": "unchanged"}
    if not force and len(dropped) >= DROP_CHECK_MINIMUM and old and len(dropped) / len(old) > allowed:
        return out | {"status": "refused", "error": (
            f"would drop {len(dropped)} of {len(old)} members ({len(dropped) / len(old):.0%}, more than "
            f"the allowed {allowed:.0%}); the current members stay; check the filter and the "
            "directory, then `rupost distribution-lists update --force ADDRESS`")}
    return out | {"status": "updated"}


class _RunConnections:
    """An update's connections, one per LDAP domain for all its lists; a domain that could
    not be asked is not asked again in the same run (``failed``: its error)."""

    def __init__(self, matching: Callable[[dl.Settings, str, Any], set[str]]) -> None:
        self.matching = matching
        self.open: dict[int, Any] = {}
        self.failed: dict[int, str] = {}

    def members(self, domain_id: int, settings: dl.Settings, text: str) -> set[str]:
        try:
            conn = self.open.get(domain_id)
            if conn is None:
                conn = self.open[domain_id] = dl.connect(settings)
            return self.matching(settings, text, conn)
        except dl.DirectoryError as exc:
            self.failed[domain_id] = str(exc)
            raise

    def close(self) -> None:
        for conn in self.open.values():
            conn.unbind()


class DistributionListService:
    def __init__(self, app: Services) -> None:
        self.app = app

    # ------------------------------------------------------------------ lists
    def add(self, address: str, *, members: Sequence[str] = (), filter_name: str | None = None,
            sender_policy: str = "anyone", display_name: str = "", max_drop_share: float | None = None,
            update_now: bool = True) -> dict:
        local, domain_name = validation.address(address)
        full = f"{local}@{domain_name}"
        policy = self._policy(sender_policy)
        statics = self._addresses(members, full)
        if filter_name:
            with self.app.dbs.session("main") as s:
                self.app.ldap_filters._get(s, filter_name)
            filter_name = filter_name.strip().lower()
        if max_drop_share is not None and not 0 <= float(max_drop_share) <= 1:
            raise ValidationError("the drop share must be between 0 and 1 (e.g. 0.3)")
        try:
            with self.app.dbs.session("data") as s:
                domain = self.app.domains.get(s, domain_name)
                if s.scalar(select(Mailbox.id).where(Mailbox.address == full)):
                    raise ConflictError(f"{full} is already a mailbox")
                if s.scalar(select(Alias.id).where(Alias.address == full)):
                    raise ConflictError(f"{full} is already an alias")
                row = DistributionList(domain_id=domain.id, address=full, display_name=display_name.strip()[:256],
                                       filter_name=filter_name, sender_policy=policy,
                                       max_drop_share=None if max_drop_share is None else float(max_drop_share),
                                       enabled=True, last_update_status="")
                s.add(row)
                s.flush()
                if statics:
                    s.execute(insert(DistributionListMember),
                              [{"list_id": row.id, "address": a, "source": "static"} for a in statics])
        except IntegrityError:
            raise ConflictError(f"distribution list {full} already exists") from None
        self.app.audit.record("distribution_list.add", full, filter=filter_name, members=len(statics),
                              sender_policy=policy)
        out = self.show(full)
        if filter_name and update_now:
            try:
                out["update"] = self.update(full)[0]
            except RuPostError as exc:
                out["update"] = {"address": full, "status": f"not updated yet: {exc}"}
        return out

    @staticmethod
    def _policy(policy: str) -> str:
        policy = (policy or "anyone").strip().lower()
        if policy not in POLICIES:
            raise ValidationError(f"invalid sender policy {policy!r}: use anyone, internal or members")
        return policy

    @staticmethod
    def _addresses(members: Iterable[str], own: str | None = None) -> list[str]:
        out = []
        for item in members:
            for part in str(item).replace(",", " ").split():
                address = "@".join(validation.address(part))
                if address == own:
                    raise ValidationError(f"list {own} cannot be a member of itself")
                out.append(address)
        if len(out) > MAX_STATIC_MEMBERS:
            raise ValidationError(f"more than {MAX_STATIC_MEMBERS} static members")
        return list(dict.fromkeys(out))

    def _get(self, session: Session, address: str) -> DistributionList:
        local, domain = validation.address(address)
        self.app.require_domain(domain)
        row = session.scalar(select(DistributionList).where(DistributionList.address == f"{local}@{domain}"))
        if row is None:
            raise NotFoundError(f"distribution list {local}@{domain} does not exist")
        return row

    def show(self, address: str) -> dict:
        with self.app.dbs.session("data") as s:
            row = self._get(s, address)
            members = s.execute(select(DistributionListMember.address, DistributionListMember.source).where(
                DistributionListMember.list_id == row.id).order_by(DistributionListMember.address)).all()
            return {**self._as_dict(row), "members": [{"address": a, "source": src} for a, src in members]}

    def list(self, domain: str | None = None) -> list[dict]:
        with self.app.dbs.session("data") as s:
            counts = dict(s.execute(select(DistributionListMember.list_id, func.count(
                func.distinct(DistributionListMember.address))).group_by(DistributionListMember.list_id)).all())
            q = select(DistributionList).order_by(DistributionList.address)
            if domain:
                q = q.where(DistributionList.domain_id == self.app.domains.get(s, domain).id)
            return [{**self._as_dict(r), "member_count": counts.get(r.id, 0)} for r in s.scalars(q)
                    if self.app.in_scope(r.address.rpartition("@")[2])]

    def set(self, address: str, *, sender_policy: str | None = None, filter_name: str | None = None,
            clear_filter: bool = False, max_drop_share: float | None = None, enabled: bool | None = None) -> dict:
        if filter_name:
            with self.app.dbs.session("main") as s:
                self.app.ldap_filters._get(s, filter_name)
        with self.app.dbs.session("data") as s:
            row = self._get(s, address)
            if sender_policy is not None:
                row.sender_policy = self._policy(sender_policy)
            if filter_name:
                row.filter_name = filter_name.strip().lower()
            if clear_filter:
                row.filter_name = None
                s.execute(delete(DistributionListMember).where(DistributionListMember.list_id == row.id,
                                                               DistributionListMember.source == "filter"))
            if max_drop_share is not None:
                if not 0 <= max_drop_share <= 1:
                    raise ValidationError("the drop share must be between 0 and 1")
                row.max_drop_share = max_drop_share
            if enabled is not None:
                row.enabled = enabled
            out = self._as_dict(row)
            list_id = row.id
        if clear_filter or enabled is not None:
            self._members_changed([list_id])
        self.app.audit.record("distribution_list.set", out["address"], sender_policy=sender_policy,
                              filter=filter_name, clear_filter=clear_filter, enabled=enabled)
        return out

    def remove(self, address: str) -> None:
        with self.app.dbs.session("data") as s:
            row = self._get(s, address)
            full = row.address
            # out of shared mailboxes' ACL files and delegated calendars first: a new list of the
            # same name starts without rights
            self.app.shared_mailboxes.lists_removed(s, [row.id])
            self.app.calendar_delegations.lists_removed([row.id])
            s.delete(row)
        self.app.audit.record("distribution_list.remove", full)

    def _members_changed(self, list_ids: Iterable[int]) -> None:
        """Who is in these lists changed: the rights granted to them follow (shared mailboxes
        through dovecot's acl_groups, delegated calendars expanded into SOGo's ACLs)."""
        ids = builtins.list(list_ids)
        self.app.shared_mailboxes.groups_changed(ids)
        self.app.calendar_delegations.groups_changed(ids)

    def add_members(self, address: str, members: Iterable[str]) -> int:
        with self.app.dbs.session("data") as s:
            row = self._get(s, address)
            wanted = self._addresses(members, row.address)
            have = set(s.scalars(select(DistributionListMember.address).where(
                DistributionListMember.list_id == row.id, DistributionListMember.source == "static")))
            new = [a for a in wanted if a not in have]
            if new:
                s.execute(insert(DistributionListMember),
                          [{"list_id": row.id, "address": a, "source": "static"} for a in new])
            list_id = row.id
        if new:
            self._members_changed([list_id])  # rights of a group follow its members
        self.app.audit.record("distribution_list.members.add", address, added=new)
        return len(new)

    def remove_members(self, address: str, members: Iterable[str]) -> int:
        with self.app.dbs.session("data") as s:
            row = self._get(s, address)
            wanted = self._addresses(members)
            n = s.execute(delete(DistributionListMember).where(  # type: ignore[attr-defined]
                DistributionListMember.list_id == row.id, DistributionListMember.source == "static",
                DistributionListMember.address.in_(wanted))).rowcount
            missing = len(wanted) - n
            list_id = row.id
        if n:
            self._members_changed([list_id])
        if missing and n == 0:
            raise NotFoundError(f"none of these addresses is a static member of {address}")
        self.app.audit.record("distribution_list.members.remove", address, removed=wanted)
        return n

    @staticmethod
    def _as_dict(r: DistributionList) -> dict:
        return {"address": r.address, "display_name": r.display_name, "kind": "dynamic" if r.filter_name else "static",
                "filter": r.filter_name, "sender_policy": r.sender_policy, "max_drop_share": r.max_drop_share,
                "enabled": r.enabled, "last_update_at": r.last_update_at.isoformat() if r.last_update_at else None,
                "last_update_status": r.last_update_status}

    # ------------------------------------------------------------------ the updater
    def update(self, address: str | None = None, force: bool = False) -> builtins.list[dict]:
        """Materialise the members of dynamic lists (all of them without ``address``).
        Per list: ``updated`` / ``unchanged`` / ``refused`` (too many members would be
        dropped) / ``kept`` (its directory could not be asked: the last good membership
        stays). Every run is journalled in rupost_logs."""
        lists, current = self._dynamic_lists(address)
        with self.app.dbs.session("main") as s:
            filters = {f.name: (f.filter, f.ldap_domain_id) for f in s.scalars(select(LdapFilter))}
            domains = {d.id: settings_of(d) for d in s.scalars(select(LdapDomain))}
        default_share = self.app.directories.max_drop_share()
        results, changes = [], []
        directories = _RunConnections(self.app.ldap_filters.matching)
        try:
            for list_id, list_address, filter_name, share in lists:
                result = {"address": list_address, "filter": filter_name}
                results.append(result)
                if filter_name not in filters:
                    result.update(status="kept", error=f"LDAP filter {filter_name} no longer exists")
                    continue
                text, domain_id = filters[filter_name]
                settings = domains[domain_id]
                if domain_id in directories.failed:
                    result.update(status="kept", error=directories.failed[domain_id])
                    continue
                try:
                    new = directories.members(domain_id, settings, text)
                except dl.DirectoryError as exc:
                    result.update(status="kept", error=str(exc))
                    continue
                old = current[list_id]
                result.update(membership_change(old, new, default_share if share is None else share, force))
                if result["status"] == "updated":
                    changes.append((list_id, new - old, old - new))
        finally:
            directories.close()
        self._apply(changes)
        self._record(results)
        return results

    def _dynamic_lists(self, address: str | None) -> tuple[builtins.list[tuple], dict[int, builtins.set[str]]]:
        """The dynamic lists (id, address, filter name, allowed drop share; all of them
        without ``address``) and the members their filter gave them last time."""
        with self.app.dbs.session("data") as s:
            q = select(DistributionList).where(DistributionList.filter_name.is_not(None))
            if address:
                q = q.where(DistributionList.id == self._get(s, address).id)
            lists = [(r.id, r.address, r.filter_name, r.max_drop_share) for r in s.scalars(q)]
            current: dict[int, set[str]] = {i: set() for i, *_ in lists}
            ids = list(current)
            for i in range(0, len(ids), 1000):
                for list_id, member in s.execute(select(DistributionListMember.list_id, DistributionListMember.address)
                                                 .where(DistributionListMember.list_id.in_(ids[i:i + 1000]),
                                                        DistributionListMember.source == "filter")):
                    current[list_id].add(member)
        return lists, current

    def _apply(self, changes: builtins.list[tuple[int, builtins.set[str], builtins.set[str]]]) -> None:
        """Every list's new members in one transaction: postfix sees the run's result at once."""
        if not changes:
            return
        with self.app.dbs.session("data") as s:
            rows = []
            for list_id, added, dropped in changes:
                dropped_list = list(dropped)
                for i in range(0, len(dropped_list), 5000):
                    s.execute(delete(DistributionListMember).where(
                        DistributionListMember.list_id == list_id, DistributionListMember.source == "filter",
                        DistributionListMember.address.in_(dropped_list[i:i + 5000])))
                rows += [{"list_id": list_id, "address": a, "source": "filter"} for a in added]
            for i in range(0, len(rows), 10000):
                s.execute(insert(DistributionListMember), rows[i:i + 10000])
        # an LDAP group's new members gain (and its former ones lose) its shared mailboxes' rights
        self._members_changed(list_id for list_id, *_ in changes)

    def _record(self, results: builtins.list[dict]) -> None:
        now = utcnow()
        by_address = {r["address"]: r for r in results}
        with self.app.dbs.session("data") as s:
            for row in s.scalars(select(DistributionList).where(DistributionList.address.in_(list(by_address)))):
                r = by_address[row.address]
                row.last_update_at = now
                row.last_update_status = r["status"] + (f": {r['error']}" if r.get("error") else "")
        counts: dict[str, int] = {}
        for r in results:
            counts[r["status"]] = counts.get(r["status"], 0) + 1
        problems = [r for r in results if r["status"] in ("refused", "kept")]
        self.app.audit.record("distribution_lists.update", f"{len(results)} list(s)", source="updater",
                              **counts, problems=problems[:50])
        for r in problems:
            if r["status"] == "refused":
                self.app.audit.record("distribution_list.update.refused", r["address"], source="updater",
                                      error=r["error"])


def scheduled_update(app: Services) -> list[dict]:
    """Refresh the members of dynamic distribution lists (the updater; scheduler job)."""
    return app.distribution_lists.update()
