"""Aliases: an address in a served domain forwarded to one or more destinations."""
from __future__ import annotations

import builtins
from typing import TYPE_CHECKING

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.exc import IntegrityError

from .. import validation
from ..db.directory_models import DistributionList
from ..db.models import Alias, Domain, Mailbox
from ..errors import ConflictError, NotFoundError, ValidationError

if TYPE_CHECKING:
    from . import Services


class AliasService:
    def __init__(self, app: Services) -> None:
        self.app = app

    def add(self, address: str, destinations: list[str]) -> dict:
        local, domain_name = validation.address(address)
        full = f"{local}@{domain_name}"
        if not destinations:
            raise ValidationError("an alias needs at least one destination address")
        targets = []
        for dest in destinations:
            for part in dest.split(","):
                if part.strip():
                    targets.append("@".join(validation.address(part)))
        if full in targets:
            raise ValidationError(f"alias {full} cannot point to itself")
        try:
            with self.app.dbs.session("data") as s:
                domain = self.app.domains.get(s, domain_name)
                if s.scalar(select(Mailbox.id).where(Mailbox.address == full)):
                    raise ConflictError(f"{full} is already a mailbox")
                if s.scalar(select(DistributionList.id).where(DistributionList.address == full)):
                    raise ConflictError(f"{full} is already a distribution list")
                alias = Alias(domain_id=domain.id, address=full, destinations=",".join(dict.fromkeys(targets)),
                              enabled=True)
                s.add(alias)
                s.flush()
                out = self._as_dict(alias)
        except IntegrityError:
            raise ConflictError(f"alias {full} already exists") from None
        self.app.audit.record("alias.add", full, destinations=targets)
        return out

    def list(self, domain: str | None = None) -> list[dict]:
        with self.app.dbs.session("data") as s:
            query = select(Alias).order_by(Alias.address)
            if domain:
                query = query.where(Alias.domain_id == self.app.domains.get(s, domain).id)
            elif (scope := self.app.scoped(None)) is not None:  # a domain administrator: their domains
                query = query.where(Alias.domain_id.in_(select(Domain.id).where(Domain.name.in_(scope))))
            return [self._as_dict(a) for a in s.scalars(query)]

    def page(self, search: str | None = None, domains: builtins.list[str] | None = None, limit: int = 50,
             offset: int = 0) -> dict:
        """One page of aliases by address, filtered and counted in SQL (`domains`: None for all)."""
        conditions: list[ColumnElement[bool]] = []
        domains = self.app.scoped(domains)
        if domains is not None:
            conditions.append(Alias.domain_id.in_(select(Domain.id).where(Domain.name.in_(domains))))
        if search:
            text = search.strip().lower()
            conditions.append(Alias.address.contains(text, autoescape=True)
                              | Alias.destinations.contains(text, autoescape=True))
        with self.app.dbs.session("data") as s:
            total = s.scalar(select(func.count()).select_from(Alias).where(*conditions))
            rows = s.scalars(select(Alias).where(*conditions).order_by(Alias.address)
                             .limit(max(1, min(limit, 500))).offset(max(0, offset)))
            return {"rows": [self._as_dict(a) for a in rows], "total": total}

    def show(self, address: str) -> dict:
        local, domain = validation.address(address)
        self.app.require_domain(domain)
        with self.app.dbs.session("data") as s:
            alias = s.scalar(select(Alias).where(Alias.address == f"{local}@{domain}"))
            if alias is None:
                raise NotFoundError(f"alias {local}@{domain} does not exist")
            return self._as_dict(alias)

    def remove(self, address: str) -> None:
        local, domain = validation.address(address)
        self.app.require_domain(domain)
        with self.app.dbs.session("data") as s:
            alias = s.scalar(select(Alias).where(Alias.address == f"{local}@{domain}"))
            if alias is None:
                raise NotFoundError(f"alias {local}@{domain} does not exist")
            s.delete(alias)
        self.app.audit.record("alias.remove", f"{local}@{domain}")

    @staticmethod
    def _as_dict(a: Alias) -> dict:
        return {"address": a.address, "destinations": a.destinations.split(","), "enabled": a.enabled}
