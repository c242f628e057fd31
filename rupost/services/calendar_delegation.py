"""Delegated calendars: a user lets another user read, change, or only see the busy times
of their personal calendar, as Exchange delegates do.

The grant is a SOGo folder ACL (``sogo-tool manage-acl`` on ``Calendar/personal``), so SOGo
itself enforces it in webmail and over CalDAV: a delegate with ``write`` may PUT events into
the owner's calendar, one with ``read`` gets 403 for it. SOGo's ACL table is the only record;
``list`` reads it back. The delegate is also subscribed to the calendar, so it shows up in
their webmail. The owner's calendar exists once the owner has used webmail or CalDAV once.

A delegate may also be a distribution list (LDAP groups included). SOGo's ACLs name groups
only from LDAP user sources, and RuPost's SOGo sources are SQL views: the core expands the
list into one ACL per member who can log in, records whom it granted
(``calendar_group_delegations``), and keeps that in step whenever the list's members change
(``groups_changed``, called by the distribution list service and its LDAP updater).
"""
from __future__ import annotations

import builtins
from typing import TYPE_CHECKING

from sqlalchemy import delete, select, text
from sqlalchemy.exc import SQLAlchemyError

from .. import validation
from ..db.directory_models import DistributionList, DistributionListMember
from ..db.models import Mailbox
from ..db.shared_models import CalendarGroupDelegation
from ..errors import NotFoundError, RuPostError, ValidationError
from .cache import sogo_changed
from .sogo_acl import SogoAclError, manage_acl

if TYPE_CHECKING:
    from collections.abc import Iterable

    from . import Services

FOLDER = "Calendar/personal"
# SOGo's roles for each right (SOGoAppointmentFolder's ACLs); "write" includes reading
ROLES = {
    "freebusy": ["PublicDAndTViewer", "ConfidentialDAndTViewer", "PrivateDAndTViewer"],
    "read": ["PublicViewer", "ConfidentialViewer", "PrivateViewer"],
    "write": ["ObjectCreator", "ObjectEraser", "PublicModifier", "ConfidentialModifier", "PrivateModifier"],
}


class CalendarDelegationError(RuPostError):
    pass


def right_of(roles: set[str]) -> str:
    """The strongest right whose roles are all granted (what `list` shows)."""
    for name in ("write", "read", "freebusy"):
        if set(ROLES[name]) <= roles:
            return name
    return "custom: " + ",".join(sorted(roles))


class CalendarDelegationService:
    def __init__(self, app: Services) -> None:
        self.app = app

    def _user(self, address: str, what: str) -> str:
        local, domain = validation.address(address)
        self.app.require_domain(domain)
        full = f"{local}@{domain}"
        with self.app.dbs.session("data") as s:
            password = s.scalar(select(Mailbox.password_hash).where(Mailbox.address == full))
        if password is None:
            raise NotFoundError(f"{what} {full} is not a mailbox")
        if password.startswith(("!shared", "!resource")):
            raise ValidationError(f"{what} {full} cannot log in (a shared mailbox or a resource): "
                                  "delegate calendars between users")
        return full

    def delegate(self, owner: str, delegate: str, rights: str) -> dict:
        if rights not in ROLES:
            raise ValidationError(f"unknown calendar right {rights!r}: use {', '.join(ROLES)}")
        group = self._group(delegate)
        if group is not None:
            return self._delegate_group(self._user(owner, "owner"), group, rights)
        owner_address, delegate_address = self._user(owner, "owner"), self._user(delegate, "delegate")
        if owner_address == delegate_address:
            raise ValidationError("a user cannot delegate their calendar to themselves")
        self._sogo("remove", owner_address, delegate_address)  # replaces whatever the delegate had
        self._sogo("add", owner_address, delegate_address, ROLES[rights])
        try:
            self._sogo("subscribe", owner_address, delegate_address)
        except CalendarDelegationError:
            pass  # only the webmail's list of calendars; CalDAV access does not need it
        sogo_changed(self.app)  # SOGo caches ACLs in memcached
        self.app.audit.record("calendar.delegate", owner_address, delegate=delegate_address, rights=rights)
        return {"owner": owner_address, "delegate": delegate_address, "rights": rights}

    def revoke(self, owner: str, delegate: str) -> None:
        group = self._group(delegate)
        if group is not None:
            return self._revoke_group(self._user(owner, "owner"), group)
        owner_address, delegate_address = self._user(owner, "owner"), self._user(delegate, "delegate")
        if not [r for r in self.list(owner_address) if r["delegate"] == delegate_address]:
            raise NotFoundError(f"{delegate_address} has no rights on the calendar of {owner_address}")
        self._sogo("remove", owner_address, delegate_address)
        sogo_changed(self.app)
        self.app.audit.record("calendar.revoke", owner_address, delegate=delegate_address)

    def list(self, owner: str | None = None) -> builtins.list[dict]:
        """Delegations as SOGo holds them (folder-level ACL rows of personal calendars)."""
        # SOGo names the folder /Users/OWNER/Calendar/personal in its folder table and
        # /OWNER/Calendar/personal in its ACL rows (an event's own ACLs name the event too)
        query = ("SELECT f.c_path2 AS owner, a.c_uid AS delegate, a.c_role AS role "
                 "FROM sogo_acl a JOIN sogo_folder_info f ON f.c_folder_id = a.c_folder_id "
                 "WHERE f.c_path3 = 'Calendar' AND f.c_path4 = 'personal' "
                 "AND a.c_object = '/' || f.c_path2 || '/Calendar/personal' "
                 "AND a.c_uid NOT LIKE '<%>' AND (CAST(:owner AS text) IS NULL OR f.c_path2 = :owner)")
        owner_address = "@".join(validation.address(owner)) if owner else None
        try:
            with self.app.dbs.session("data") as s:
                rows = s.execute(text(query), {"owner": owner_address}).all()
        except SQLAlchemyError as exc:
            raise CalendarDelegationError(f"SOGo's ACL table cannot be read (has SOGo started once?): "
                                          f"{str(exc).splitlines()[0]}") from None
        grants: dict[tuple[str, str], set[str]] = {}
        for row in rows:
            grants.setdefault((row.owner, row.delegate), set()).add(row.role)
        with self.app.dbs.session("data") as s:
            by_group = select(CalendarGroupDelegation, DistributionList.address).join(
                DistributionList, DistributionList.id == CalendarGroupDelegation.list_id)
            if owner_address:
                by_group = by_group.where(CalendarGroupDelegation.owner == owner_address)
            groups: builtins.list[dict] = [
                {"owner": row.owner, "delegate": address, "rights": row.rights, "group": True,
                 "members": sorted(row.members)} for row, address in s.execute(by_group)]
        users: builtins.list[dict] = [{"owner": o, "delegate": d, "rights": right_of(roles), "group": False}
                                      for (o, d), roles in sorted(grants.items())]
        return [r for r in sorted(users + groups, key=lambda r: (str(r["owner"]), str(r["delegate"])))
                if self.app.in_scope(str(r["owner"]).rpartition("@")[2])]

    def _sogo(self, action: str, owner: str, delegate: str, roles: builtins.list[str] | None = None) -> None:
        try:
            manage_acl(self.app, action, owner, FOLDER, delegate, roles)
        except SogoAclError as exc:
            if "No folder" in str(exc):
                raise CalendarDelegationError(
                    f"the calendar of {owner} does not exist yet: SOGo creates it when {owner} first "
                    "opens webmail or a CalDAV client") from None
            raise CalendarDelegationError(str(exc)) from None

    # ------------------------------------------------------------------ groups
    def _group(self, address: str) -> tuple[int, str] | None:
        """(id, address) of the distribution list `address` names, if it names one."""
        full = "@".join(validation.address(address))
        with self.app.dbs.session("data") as s:
            row = s.execute(select(DistributionList.id, DistributionList.address)
                            .where(DistributionList.address == full)).first()
        return (row.id, row.address) if row else None

    def _delegate_group(self, owner: str, group: tuple[int, str], rights: str) -> dict:
        list_id, address = group
        with self.app.dbs.session("data") as s:
            row = s.get(CalendarGroupDelegation, (owner, list_id))
            if row is None:
                s.add(CalendarGroupDelegation(owner=owner, list_id=list_id, rights=rights, members=[]))
            else:
                row.rights = rights
        members = self._sync_group(owner, list_id, regrant=True)
        self.app.audit.record("calendar.delegate", owner, delegate=address, rights=rights, group=True,
                              members=len(members))
        return {"owner": owner, "delegate": address, "rights": rights, "group": True, "members": members}

    def _revoke_group(self, owner: str, group: tuple[int, str]) -> None:
        list_id, address = group
        with self.app.dbs.session("data") as s:
            row = s.get(CalendarGroupDelegation, (owner, list_id))
            if row is None:
                raise NotFoundError(f"{address} has no rights on the calendar of {owner}")
            granted = builtins.list(row.members)
        for member in granted:
            self._sogo("remove", owner, member)
        with self.app.dbs.session("data") as s:
            s.execute(delete(CalendarGroupDelegation).where(CalendarGroupDelegation.owner == owner,
                                                            CalendarGroupDelegation.list_id == list_id))
        sogo_changed(self.app)
        self.app.audit.record("calendar.revoke", owner, delegate=address, group=True)

    def _sync_group(self, owner: str, list_id: int, regrant: bool = False) -> builtins.list[str]:
        """Grant the list's current members who can log in (the owner aside) and take the
        grant from those who left; `regrant`: every member again (the rights changed).
        Records whom it granted after each member, so a failure half way is taken up by the
        next change or the next delegation."""
        with self.app.dbs.session("data") as s:
            row = s.get(CalendarGroupDelegation, (owner, list_id))
            if row is None:
                return []
            rights, granted = row.rights, set(row.members)
            current = set(s.scalars(
                select(Mailbox.address).join(DistributionListMember, DistributionListMember.address == Mailbox.address)
                .join(DistributionList, DistributionList.id == DistributionListMember.list_id)
                .where(DistributionListMember.list_id == list_id, DistributionList.enabled, Mailbox.enabled,
                       ~Mailbox.password_hash.startswith("!shared"), ~Mailbox.password_hash.startswith("!resource"),
                       Mailbox.address != owner)))
        for member in sorted(granted - current):
            self._sogo("remove", owner, member)
            granted.discard(member)
            self._record_members(owner, list_id, granted)
        for member in sorted(current if regrant else current - granted):
            self._sogo("remove", owner, member)
            self._sogo("add", owner, member, ROLES[rights])
            try:
                self._sogo("subscribe", owner, member)
            except CalendarDelegationError:
                pass  # only the webmail's list of calendars
            granted.add(member)
            self._record_members(owner, list_id, granted)
        sogo_changed(self.app)
        return sorted(granted)

    def _record_members(self, owner: str, list_id: int, members: set[str]) -> None:
        with self.app.dbs.session("data") as s:
            row = s.get(CalendarGroupDelegation, (owner, list_id))
            if row is not None:
                row.members = sorted(members)

    def groups_changed(self, list_ids: Iterable[int]) -> None:
        """The members of these lists changed: their calendar delegations follow."""
        ids = builtins.list(set(list_ids))
        if not ids:
            return
        with self.app.dbs.session("data") as s:
            pairs = s.execute(select(CalendarGroupDelegation.owner, CalendarGroupDelegation.list_id)
                              .where(CalendarGroupDelegation.list_id.in_(ids))).all()
        for owner, list_id in pairs:
            self._sync_group(owner, list_id)

    def lists_removed(self, list_ids: builtins.list[int]) -> None:
        """Lists about to be removed take back the calendar rights they granted."""
        with self.app.dbs.session("data") as s:
            rows = s.execute(select(CalendarGroupDelegation.owner, CalendarGroupDelegation.members)
                             .where(CalendarGroupDelegation.list_id.in_(list_ids))).all()
        for owner, members in rows:
            for member in members:
                self._sogo("remove", owner, member)
        if rows:
            sogo_changed(self.app)
