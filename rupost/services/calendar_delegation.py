"""Delegated calendars: a user lets another user read, change, or only see the busy times
of their personal calendar, as Exchange delegates do.

The grant is a SOGo folder ACL (``sogo-tool manage-acl`` on ``Calendar/personal``), so SOGo
itself enforces it in webmail and over CalDAV: a delegate with ``write`` may PUT events into
the owner's calendar, one with ``read`` gets 403 for it. SOGo's ACL table is the only record;
``list`` reads it back. The delegate is also subscribed to the calendar, so it shows up in
their webmail. The owner's calendar exists once the owner has used webmail or CalDAV once.
"""
from __future__ import annotations

import builtins
from typing import TYPE_CHECKING

from sqlalchemy import select, text
from sqlalchemy.exc import SQLAlchemyError

from .. import validation
from ..db.models import Mailbox
from ..errors import NotFoundError, RuPostError, ValidationError
from .cache import sogo_changed
from .sogo_acl import SogoAclError, manage_acl

if TYPE_CHECKING:
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
        return [{"owner": o, "delegate": d, "rights": right_of(roles)} for (o, d), roles in sorted(grants.items())
                if self.app.in_scope(o.rpartition("@")[2])]

    def _sogo(self, action: str, owner: str, delegate: str, roles: builtins.list[str] | None = None) -> None:
        try:
            manage_acl(self.app, action, owner, FOLDER, delegate, roles)
        except SogoAclError as exc:
            if "No folder" in str(exc):
                raise CalendarDelegationError(
                    f"the calendar of {owner} does not exist yet: SOGo creates it when {owner} first "
                    "opens webmail or a CalDAV client") from None
            raise CalendarDelegationError(str(exc)) from None
