"""Calendar resources: rooms and equipment booked through SOGo's own resource support.

A resource is a mailbox row that cannot log in (its password is ``!resource``) plus a
``calendar_resources`` row. The ``sogo_users`` view serves it to SOGo with
``kind`` = ``location`` (room) or ``thing`` (equipment) and ``multiple_bookings``
(SOGo's KindFieldName / MultipleBookingsFieldName). SOGo then treats it as a resource:
an invitation that names it as an attendee is filed in its calendar and accepted
automatically, and SOGo refuses a booking that would exceed its limit of simultaneous
bookings (1 by default: no overlaps; 0: no limit). The booking owner is a mailbox given
the rights to manage the resource's calendar in SOGo.
"""
from __future__ import annotations

import base64
import http.client
import secrets
from typing import TYPE_CHECKING

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from .. import validation
from ..db.directory_models import DistributionList
from ..db.models import Alias, Mailbox
from ..db.resource_models import CalendarResource
from ..errors import ConflictError, NotFoundError, RuPostError, ValidationError
from ..passwords import hash_password
from .cache import accounts_changed, sogo_changed

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from . import Services

KINDS = {"room": "location", "equipment": "thing"}
NAMES = {v: k for k, v in KINDS.items()}
NO_LOGIN = "!resource"  # never a valid hash: neither dovecot nor SOGo accepts a password for it
MAX_BOOKINGS = 1000
# SOGo refuses to book a resource whose calendar the organizer cannot see: every
# authenticated user sees when it is busy (date and time only, no titles)
BOOKER_RIGHTS = ["PublicDAndTViewer", "ConfidentialDAndTViewer", "PrivateDAndTViewer"]
# the booking owner manages the resource's calendar: reads, changes and cancels bookings
OWNER_RIGHTS = ["ObjectCreator", "ObjectEraser", "PublicModifier", "ConfidentialModifier", "PrivateModifier"]


class ResourceProvisionError(RuPostError):
    pass


class ResourceService:
    def __init__(self, app: Services) -> None:
        self.app = app

    @staticmethod
    def _kind(kind: str) -> str:
        value = (kind or "").strip().lower()
        if value not in KINDS:
            raise ValidationError(f"invalid resource kind {kind!r}: use room or equipment")
        return KINDS[value]

    @staticmethod
    def _bookings(value: int | str) -> int:
        try:
            number = int(value)
        except (TypeError, ValueError):
            raise ValidationError(f"invalid number of simultaneous bookings {value!r}: a whole number, "
                                  "1 = no overlapping bookings, 0 = no limit") from None
        if not 0 <= number <= MAX_BOOKINGS:
            raise ValidationError(f"simultaneous bookings must be between 0 (no limit) and {MAX_BOOKINGS}")
        return number

    def add(self, address: str, kind: str = "room", *, display_name: str = "", multiple_bookings: int | str = 1,
            owner: str | None = None, description: str = "") -> dict:
        local, domain_name = validation.address(address)
        full = f"{local}@{domain_name}"
        sogo_kind = self._kind(kind)
        bookings = self._bookings(multiple_bookings)
        owner_address = "@".join(validation.address(owner)) if owner else ""
        if owner_address == full:
            raise ValidationError("a resource cannot be its own booking owner")
        try:
            with self.app.dbs.session("data") as s:
                domain = self.app.domains.get(s, domain_name)
                self._check_owner(s, owner_address)
                if s.scalar(select(Alias.id).where(Alias.address == full)):
                    raise ConflictError(f"{full} is already an alias")
                if s.scalar(select(DistributionList.id).where(DistributionList.address == full)):
                    raise ConflictError(f"{full} is already a distribution list")
                mailbox = Mailbox(domain_id=domain.id, local_part=local, address=full, password_hash=NO_LOGIN,
                                  display_name=(display_name or local).strip()[:256], quota_bytes=0, enabled=True)
                s.add(mailbox)
                s.flush()
                s.add(CalendarResource(mailbox_id=mailbox.id, kind=sogo_kind, multiple_bookings=bookings,
                                       owner=owner_address, description=description.strip()))
                s.flush()
        except IntegrityError:
            raise ConflictError(f"{full} already exists (a mailbox or a resource)") from None
        self.app.audit.record("resource.add", full, kind=NAMES[sogo_kind], multiple_bookings=bookings,
                              owner=owner_address)
        out = self.show(full)
        out["calendar"] = self._provision_status(full)
        return out

    def _check_owner(self, s: Session, owner_address: str) -> None:
        """The booking owner is a mailbox the actor may name: outside a domain administrator's
        domains the answer is the one for a mailbox that does not exist, so the refusal does
        not tell them whether it does."""
        if not owner_address:
            return
        if (not self.app.in_scope(owner_address.rpartition("@")[2])
                or not s.scalar(select(Mailbox.id).where(Mailbox.address == owner_address))):
            raise NotFoundError(f"booking owner {owner_address} is not a mailbox of the domains you administer "
                                "(rupost mailboxes add)")

    def _provision_status(self, address: str) -> str:
        try:
            self.provision(address)
            return "ready"
        except RuPostError as exc:
            return f"not ready: {exc} (run `rupost resources provision {address}` once SOGo runs)"

    # ------------------------------------------------------------------ SOGo side
    def provision(self, address: str) -> dict:
        """Make the resource bookable in SOGo: its personal calendar exists, every
        authenticated user may see when it is busy (SOGo's condition to book it), the
        booking owner may manage it. Idempotent; run again after a failure."""
        with self.app.dbs.session("data") as s:
            resource, mailbox = self._get(s, address)
            full, owner = mailbox.address, resource.owner
        self._create_calendar(full)
        self._acl("remove", full, "<default>")
        for right in BOOKER_RIGHTS:
            self._acl("add", full, "<default>", right)
        if owner:
            self._acl("remove", full, owner)
            for right in OWNER_RIGHTS:
                self._acl("add", full, owner, right)
        sogo_changed(self.app)  # SOGo caches ACLs in memcached
        return {"address": full, "owner": owner, "calendar": "ready"}

    def _create_calendar(self, address: str) -> None:
        """SOGo creates a user's personal calendar on the first look at its calendar home.
        The resource cannot log in; for this one request it gets a random password
        nobody knows, which is replaced by the unusable one right after."""
        password = secrets.token_urlsafe(32)
        with self.app.dbs.session("data") as s:
            s.execute(update(Mailbox).where(Mailbox.address == address).values(password_hash=hash_password(password)))
        try:
            conn = http.client.HTTPConnection("127.0.0.1", self.app.config.port("sogo"), timeout=60)
            try:
                token = base64.b64encode(f"{address}:{password}".encode()).decode()
                conn.request("PROPFIND", f"/SOGo/dav/{address}/Calendar/",
                             body=b'<?xml version="1.0"?><propfind xmlns="DAV:"><prop><displayname/></prop></propfind>',
                             headers={"Authorization": f"Basic {token}", "Depth": "1",
                                      "Content-Type": "application/xml"})
                resp = conn.getresponse()
                body = resp.read()
            finally:
                conn.close()
        except OSError as exc:
            raise ResourceProvisionError(f"SOGo does not answer on port {self.app.config.port('sogo')}: {exc}") \
                from None
        finally:
            with self.app.dbs.session("data") as s:
                s.execute(update(Mailbox).where(Mailbox.address == address).values(password_hash=NO_LOGIN))
            accounts_changed(self.app)  # SOGo (and dovecot) cache the login just checked
        if resp.status != 207 or b"/Calendar/personal/" not in body:
            raise ResourceProvisionError(f"SOGo did not create the calendar of {address}: HTTP {resp.status}")

    def _acl(self, action: str, address: str, user: str, right: str | None = None) -> None:
        from .sogo_acl import SogoAclError, manage_acl

        try:
            manage_acl(self.app, action, address, "Calendar/personal", user, [right] if right else None)
        except SogoAclError as exc:
            raise ResourceProvisionError(str(exc)) from None

    def _get(self, session: Session, address: str) -> tuple[CalendarResource, Mailbox]:
        local, domain = validation.address(address)
        self.app.require_domain(domain)
        row = session.execute(select(CalendarResource, Mailbox).join(Mailbox, Mailbox.id == CalendarResource.mailbox_id)
                              .where(Mailbox.address == f"{local}@{domain}")).first()
        if row is None:
            raise NotFoundError(f"calendar resource {local}@{domain} does not exist (rupost resources list)")
        return row[0], row[1]

    def show(self, address: str) -> dict:
        with self.app.dbs.session("data") as s:
            return self._as_dict(*self._get(s, address))

    def list(self, domain: str | None = None) -> list[dict]:
        with self.app.dbs.session("data") as s:
            q = (select(CalendarResource, Mailbox).join(Mailbox, Mailbox.id == CalendarResource.mailbox_id)
                 .order_by(Mailbox.address))
            if domain:
                q = q.where(Mailbox.domain_id == self.app.domains.get(s, domain).id)
            return [self._as_dict(r, m) for r, m in s.execute(q) if self.app.in_scope(m.address.rpartition("@")[2])]

    def set(self, address: str, *, multiple_bookings: int | str | None = None, owner: str | None = None,
            display_name: str | None = None) -> dict:
        bookings = None if multiple_bookings is None else self._bookings(multiple_bookings)
        with self.app.dbs.session("data") as s:
            resource, mailbox = self._get(s, address)
            if bookings is not None:
                resource.multiple_bookings = bookings
            old_owner = resource.owner
            if owner is not None:
                owner_address = "@".join(validation.address(owner)) if owner else ""
                self._check_owner(s, owner_address)
                resource.owner = owner_address
            if display_name is not None:
                mailbox.display_name = display_name.strip()[:256]
            out = self._as_dict(resource, mailbox)
        self.app.audit.record("resource.set", out["address"], multiple_bookings=bookings, owner=owner)
        if owner is not None and old_owner != out["owner"]:
            if old_owner:
                try:
                    self._acl("remove", out["address"], old_owner)
                except RuPostError:
                    pass  # no calendar yet: provision below does it all
            out["calendar"] = self._provision_status(out["address"])
        else:
            sogo_changed(self.app)  # SOGo caches users (kind, booking limit) in memcached
        return out

    def remove(self, address: str) -> None:
        """The resource and its mailbox row; its calendar stays in SOGo's tables until
        SOGo's own cleanup (sogo-tool remove) - bookings are not lost by mistake."""
        with self.app.dbs.session("data") as s:
            resource, mailbox = self._get(s, address)
            full = mailbox.address
            s.delete(resource)
            s.delete(mailbox)
        accounts_changed(self.app)
        self.app.audit.record("resource.remove", full)

    @staticmethod
    def _as_dict(r: CalendarResource, m: Mailbox) -> dict:
        return {"address": m.address, "kind": NAMES.get(r.kind, r.kind), "display_name": m.display_name,
                "multiple_bookings": r.multiple_bookings, "owner": r.owner, "description": r.description,
                "enabled": m.enabled}
