"""Mail domains served by this installation."""
from __future__ import annotations

import builtins
from typing import TYPE_CHECKING

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.exc import IntegrityError

from .. import validation
from ..db.models import Alias, Domain, Mailbox
from ..errors import ConflictError, NotFoundError
from .cache import accounts_changed

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from . import Services


class DomainService:
    def __init__(self, app: Services) -> None:
        self.app = app

    def add(self, name: str, description: str = "") -> dict:
        name = validation.domain_name(name)
        self.app.require_domain(name)
        try:
            with self.app.dbs.session("data") as s:
                domain = Domain(name=name, description=description, enabled=True)
                s.add(domain)
                s.flush()
                out = self._as_dict(domain, 0, 0)
        except IntegrityError:
            raise ConflictError(f"domain {name} already exists") from None
        self.app.audit.record("domain.add", name)
        return out

    def get(self, session: Session, name: str) -> Domain:
        """The domain every domain-scoped operation works on: outside the actor's domains it is
        refused here (PermissionDeniedError), whichever service asked."""
        name = validation.domain_name(name)
        self.app.require_domain(name)
        domain = session.scalar(select(Domain).where(Domain.name == name))
        if domain is None:
            raise NotFoundError(f"domain {name} does not exist (rupost domains add {name})")
        return domain

    def show(self, name: str) -> dict:
        """One domain with its mailbox and alias counts."""
        with self.app.dbs.session("data") as s:
            domain = self.get(s, name)
            mailboxes = s.scalar(select(func.count()).select_from(Mailbox).where(Mailbox.domain_id == domain.id))
            aliases = s.scalar(select(func.count()).select_from(Alias).where(Alias.domain_id == domain.id))
            return self._as_dict(domain, mailboxes, aliases)

    def list(self) -> list[dict]:
        with self.app.dbs.session("data") as s:
            mailbox_counts = dict(s.execute(select(Mailbox.domain_id, func.count()).group_by(Mailbox.domain_id)).all())
            alias_counts = dict(s.execute(select(Alias.domain_id, func.count()).group_by(Alias.domain_id)).all())
            return [self._as_dict(d, mailbox_counts.get(d.id, 0), alias_counts.get(d.id, 0))
                    for d in s.scalars(select(Domain).order_by(Domain.name)) if self.app.in_scope(d.name)]

    def page(self, search: str | None = None, domains: builtins.list[str] | None = None, limit: int = 50,
             offset: int = 0, with_counts: bool = True) -> dict:
        """One page of domains by name with their counts, filtered in SQL (`domains`: None for all;
        `with_counts=False`: mailbox and alias counts are not computed, None)."""
        conditions: list[ColumnElement[bool]] = []
        domains = self.app.scoped(domains)
        if domains is not None:
            conditions.append(Domain.name.in_(domains))
        if search:
            conditions.append(Domain.name.contains(search.strip().lower(), autoescape=True))
        with self.app.dbs.session("data") as s:
            total = s.scalar(select(func.count()).select_from(Domain).where(*conditions))
            page = list(s.scalars(select(Domain).where(*conditions).order_by(Domain.name)
                                  .limit(max(1, min(limit, 500))).offset(max(0, offset))))
            if not with_counts:
                return {"rows": [self._as_dict(d, None, None) for d in page], "total": total}
            ids = [d.id for d in page]
            mailbox_counts = dict(s.execute(select(Mailbox.domain_id, func.count()).where(
                Mailbox.domain_id.in_(ids)).group_by(Mailbox.domain_id)).all())
            alias_counts = dict(s.execute(select(Alias.domain_id, func.count()).where(
                Alias.domain_id.in_(ids)).group_by(Alias.domain_id)).all())
            return {"rows": [self._as_dict(d, mailbox_counts.get(d.id, 0), alias_counts.get(d.id, 0)) for d in page],
                    "total": total}

    def set_enabled(self, name: str, enabled: bool) -> None:
        with self.app.dbs.session("data") as s:
            self.get(s, name).enabled = enabled
        accounts_changed(self.app)  # every account of the domain
        self.app.audit.record("domain.enable" if enabled else "domain.disable", name)

    def remove(self, name: str) -> None:
        with self.app.dbs.session("data") as s:
            domain = self.get(s, name)
            used = s.scalar(select(func.count()).select_from(Mailbox).where(Mailbox.domain_id == domain.id))
            aliases = s.scalar(select(func.count()).select_from(Alias).where(Alias.domain_id == domain.id))
            if used or aliases:
                raise ConflictError(f"domain {domain.name} still has {used} mailbox(es) and {aliases} alias(es); "
                                    "remove them first (mail storage is never deleted implicitly)")
            s.delete(domain)
        self.app.audit.record("domain.remove", name)

    @staticmethod
    def _as_dict(d: Domain, mailboxes: int | None, aliases: int | None) -> dict:
        return {"name": d.name, "description": d.description, "enabled": d.enabled, "mailboxes": mailboxes,
                "aliases": aliases}
