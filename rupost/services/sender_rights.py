"""Send-as and send-on-behalf: who may submit mail from a mailbox that is not their own.

A right names a mailbox (shared or personal) and a grantee: a mailbox, or a distribution
list, whose current members hold the right (LDAP groups are materialised as lists by the
directory sync, so a group grant follows the group). Both kinds let the grantee use the
mailbox's address as envelope sender on submission: ``lookup_senders``, postfix's
smtpd_sender_login_maps, lists them, and anyone else gets postfix's ``553 5.7.1 Sender
address rejected: not owned by user``. Send-on-behalf also marks the message: the policy
server, asked at DATA, prepends ``Sender: LOGIN`` so the recipient reads "LOGIN on behalf of
MAILBOX" (a grantee holding send-as as well sends as the mailbox, no Sender:).
Rows only: nothing is written to a file, nothing reloads.
"""
from __future__ import annotations

import builtins
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from .. import validation
from ..db.directory_models import DistributionList
from ..db.models import Mailbox
from ..db.shared_models import SenderRight
from ..errors import ConflictError, NotFoundError, ValidationError

if TYPE_CHECKING:
    from . import Services

KINDS = {"send-as": "send_as", "send-on-behalf": "send_on_behalf"}
NAMES = {v: k for k, v in KINDS.items()}


def kind_of(kind: str) -> str:
    value = (kind or "").strip().lower().replace("_", "-")
    if value not in KINDS:
        raise ValidationError(f"unknown sender right {kind!r}: use send-as or send-on-behalf")
    return KINDS[value]


class SenderRightService:
    def __init__(self, app: Services) -> None:
        self.app = app

    def _mailbox(self, address: str) -> str:
        local, domain = validation.address(address)
        self.app.require_domain(domain)
        return f"{local}@{domain}"

    def grant(self, mailbox: str, grantee: str, kind: str) -> dict:
        right = kind_of(kind)
        target = self._mailbox(mailbox)
        who = "@".join(validation.address(grantee))
        if who == target:
            raise ValidationError(f"{target} always sends as itself: nothing to grant")
        try:
            with self.app.dbs.session("data") as s:
                if s.scalar(select(Mailbox.id).where(Mailbox.address == target)) is None:
                    raise NotFoundError(f"mailbox {target} does not exist")
                is_mailbox = s.scalar(select(Mailbox.id).where(Mailbox.address == who)) is not None
                is_list = s.scalar(select(DistributionList.id).where(DistributionList.address == who)) is not None
                if not (is_mailbox or is_list):
                    raise NotFoundError(f"grantee {who} is neither a mailbox nor a distribution list (group)")
                s.add(SenderRight(mailbox=target, grantee=who, kind=right))
                s.flush()
        except IntegrityError:
            raise ConflictError(f"{who} already has {NAMES[right]} on {target}") from None
        self.app.audit.record(f"mailbox.{right}.grant", target, grantee=who)
        return {"mailbox": target, "grantee": who, "right": NAMES[right], "group": is_list}

    def revoke(self, mailbox: str, grantee: str, kind: str) -> None:
        right = kind_of(kind)
        target = self._mailbox(mailbox)
        who = "@".join(validation.address(grantee))
        with self.app.dbs.session("data") as s:
            row = s.get(SenderRight, (target, who, right))
            if row is None:
                raise NotFoundError(f"{who} has no {NAMES[right]} right on {target}")
            s.delete(row)
        self.app.audit.record(f"mailbox.{right}.revoke", target, grantee=who)

    def list(self, mailbox: str | None = None, kind: str | None = None) -> builtins.list[dict]:
        query = select(SenderRight).order_by(SenderRight.mailbox, SenderRight.kind, SenderRight.grantee)
        if mailbox:
            query = query.where(SenderRight.mailbox == self._mailbox(mailbox))
        if kind:
            query = query.where(SenderRight.kind == kind_of(kind))
        with self.app.dbs.session("data") as s:
            lists = set(s.scalars(select(DistributionList.address)))
            return [{"mailbox": r.mailbox, "grantee": r.grantee, "right": NAMES[r.kind],
                     "group": r.grantee in lists} for r in s.scalars(query)
                    if self.app.in_scope(r.mailbox.rpartition("@")[2])]
