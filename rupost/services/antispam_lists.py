"""Per-domain allow and deny lists of senders, kept in the data database and served live to
rspamd (docs/antispam.md#allow-and-deny-lists): each node's policy server answers rspamd's
map requests from ``antispam_map``, so a change is in force at rspamd's next poll, without
a deploy.

An entry is (recipient domain or global, sender address or sender domain, allow or deny).
A domain administrator edits their domains' entries only; global entries (every recipient
domain) are for administrators of every domain.
"""
from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from sqlalchemy import func, select, text

from .. import validation
from ..db.antispam_models import AntispamListEntry
from ..db.models import Domain
from ..errors import NotFoundError, PermissionDeniedError, ValidationError

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from . import Services

KINDS = ("allow", "deny")
GLOBAL = "*"  # the scope of an entry for every recipient domain, in the map and the faces' output
MAP_HEADER = "# RuPost allow/deny lists of senders: RECIPIENT_DOMAIN|SENDER allow|deny (* every domain)\n"


def sender_key(value: str) -> str:
    """An address (user@example.org) or a domain (example.org), normalised; anything else is
    refused with what was expected."""
    text_value = (value or "").strip()
    if not text_value:
        raise ValidationError("sender is empty: give an address (user@example.org) or a domain (example.org)")
    if "@" in text_value:
        if text_value.startswith("@"):  # "@example.org" is read as the domain
            return validation.domain_name(text_value[1:])
        local, domain = validation.address(text_value)
        return f"{local}@{domain}"
    return validation.domain_name(text_value)


class AntispamListService:
    def __init__(self, app: Services) -> None:
        self.app = app

    def set(self, kind: str, sender: str, domain: str | None = None, comment: str = "") -> dict:
        """Allow or deny `sender` for mail to `domain` (None: every domain). An existing entry
        for the same scope and sender changes its kind."""
        if kind not in KINDS:
            raise ValidationError(f"kind {kind!r} is neither allow nor deny")
        key = sender_key(sender)
        if len(comment) > 1000:
            raise ValidationError("comment is longer than 1000 characters")
        with self.app.dbs.session("data") as s:
            domain_id, scope = self._scope(s, domain)
            entry = self._find(s, domain_id, key)
            if entry is None:
                entry = AntispamListEntry(domain_id=domain_id, sender=key, kind=kind, comment=comment,
                                          created_by=self.app.actor)
                s.add(entry)
            else:
                entry.kind, entry.comment = kind, comment or entry.comment
            s.flush()
            out = self._as_dict(entry, scope)
        self.app.audit.record(f"antispam.{kind}", f"{scope} {key}")
        return out

    def show(self, sender: str, domain: str | None = None) -> dict:
        key = sender_key(sender)
        with self.app.dbs.session("data") as s:
            domain_id, scope = self._scope(s, domain, reading=True)
            entry = self._find(s, domain_id, key)
            if entry is None:
                raise NotFoundError(f"{key} is on no list of {'every domain' if scope == GLOBAL else scope}")
            return self._as_dict(entry, scope)

    def remove(self, sender: str, domain: str | None = None) -> None:
        key = sender_key(sender)
        with self.app.dbs.session("data") as s:
            domain_id, scope = self._scope(s, domain)
            entry = self._find(s, domain_id, key)
            if entry is None:
                raise NotFoundError(f"{key} is on no list of {'every domain' if scope == GLOBAL else scope}")
            s.delete(entry)
        self.app.audit.record("antispam.remove", f"{scope} {key}")

    def list(self, domain: str | None = None, kind: str | None = None) -> list[dict]:
        """Entries of `domain` (None: every entry the actor may see: a domain administrator's
        domains and the global entries, which apply to their domains too)."""
        if kind is not None and kind not in KINDS:
            raise ValidationError(f"kind {kind!r} is neither allow nor deny")
        with self.app.dbs.session("data") as s:
            query = (select(AntispamListEntry, Domain.name).outerjoin(Domain, Domain.id == AntispamListEntry.domain_id)
                     .order_by(Domain.name.nulls_first(), AntispamListEntry.sender))
            if domain is not None and domain != GLOBAL:
                query = query.where(AntispamListEntry.domain_id == self._scope(s, domain)[0])
            elif domain == GLOBAL:
                self._scope(s, GLOBAL, reading=True)
                query = query.where(AntispamListEntry.domain_id.is_(None))
            elif (scope := self.app.scoped(None)) is not None:
                query = query.where(AntispamListEntry.domain_id.is_(None) | Domain.name.in_(scope))
            if kind is not None:
                query = query.where(AntispamListEntry.kind == kind)
            return [self._as_dict(entry, name or GLOBAL) for entry, name in s.execute(query)]

    def map_text(self) -> tuple[str, str]:
        """rspamd's map (``KEY VALUE`` lines) and its entity tag: what the policy server
        answers. Read through the ``antispam_map`` view, the policy server's only grant here."""
        with self.app.dbs.session("data") as s:
            rows = s.execute(text("SELECT key, kind FROM antispam_map ORDER BY key")).all()
        body = MAP_HEADER + "".join(f"{key} {kind}\n" for key, kind in rows)
        return body, '"' + hashlib.sha256(body.encode()).hexdigest()[:32] + '"'

    def count(self) -> int:
        with self.app.dbs.session("data") as s:
            return s.scalar(select(func.count()).select_from(AntispamListEntry)) or 0

    # ------------------------------------------------------------ helpers
    def _scope(self, s: Session, domain: str | None, reading: bool = False) -> tuple[int | None, str]:
        """(domain id or None, the scope's name); the actor must administer it (the global
        entries, which apply to their domains too, a domain administrator may read)."""
        if domain is None or domain == GLOBAL:
            if self.app.acting.domains is not None and not reading:
                raise PermissionDeniedError(f"{self.app.actor} administers {', '.join(sorted(self.app.acting.domains))}"
                                            " only: entries for every domain are for administrators of every domain")
            return None, GLOBAL
        name = validation.domain_name(domain)
        self.app.require_domain(name)
        return self.app.domains.get(s, name).id, name

    @staticmethod
    def _find(s: Session, domain_id: int | None, key: str) -> AntispamListEntry | None:
        scope = AntispamListEntry.domain_id.is_(None) if domain_id is None else AntispamListEntry.domain_id == domain_id
        return s.scalar(select(AntispamListEntry).where(scope, AntispamListEntry.sender == key))

    @staticmethod
    def _as_dict(entry: AntispamListEntry, scope: str) -> dict:
        return {"id": entry.id, "domain": scope, "sender": entry.sender, "kind": entry.kind,
                "comment": entry.comment, "created_by": entry.created_by}
