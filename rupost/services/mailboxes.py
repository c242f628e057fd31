"""Mailboxes of the local user directory. Creating one writes rows, never a file."""
from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from .. import validation
from ..db.models import Alias, Mailbox
from ..errors import ConflictError, NotFoundError
from ..passwords import hash_password
from .cache import flush_sogo_cache


class MailboxService:
    def __init__(self, app):
        self.app = app

    def add(self, address: str, password: str, quota: str | int = 0, display_name: str = "") -> dict:
        local, domain_name = validation.address(address)
        full = f"{local}@{domain_name}"
        quota_bytes = validation.size_bytes(quota)
        password_hash = hash_password(password)
        try:
            with self.app.dbs.session("data") as s:
                domain = self.app.domains.get(s, domain_name)
                if s.scalar(select(Alias.id).where(Alias.address == full)):
                    raise ConflictError(f"{full} is already an alias")
                mailbox = Mailbox(domain_id=domain.id, local_part=local, address=full, password_hash=password_hash,
                                  display_name=display_name.strip(), quota_bytes=quota_bytes, enabled=True)
                s.add(mailbox)
                s.flush()
                out = self._as_dict(mailbox)
        except IntegrityError:
            raise ConflictError(f"mailbox {full} already exists") from None
        self.app.audit.record("mailbox.add", full, quota_bytes=quota_bytes)
        return out

    def _get(self, session, address: str) -> Mailbox:
        local, domain = validation.address(address)
        mailbox = session.scalar(select(Mailbox).where(Mailbox.address == f"{local}@{domain}"))
        if mailbox is None:
            raise NotFoundError(f"mailbox {local}@{domain} does not exist")
        return mailbox

    def show(self, address: str) -> dict:
        with self.app.dbs.session("data") as s:
            return self._as_dict(self._get(s, address))

    def list(self, domain: str | None = None, search: str | None = None, limit: int = 1000,
             offset: int = 0) -> list[dict]:
        with self.app.dbs.session("data") as s:
            query = select(Mailbox).order_by(Mailbox.address).limit(limit).offset(offset)
            if domain:
                query = query.where(Mailbox.domain_id == self.app.domains.get(s, domain).id)
            if search:
                query = query.where(Mailbox.address.contains(search.lower(), autoescape=True))
            return [self._as_dict(m) for m in s.scalars(query)]

    def set_password(self, address: str, password: str) -> None:
        password_hash = hash_password(password)
        with self.app.dbs.session("data") as s:
            self._get(s, address).password_hash = password_hash
        flush_sogo_cache(self.app)
        self.app.audit.record("mailbox.passwd", address)

    def set_quota(self, address: str, quota: str | int) -> None:
        quota_bytes = validation.size_bytes(quota)
        with self.app.dbs.session("data") as s:
            self._get(s, address).quota_bytes = quota_bytes
        self.app.audit.record("mailbox.quota", address, quota_bytes=quota_bytes)

    def set_enabled(self, address: str, enabled: bool) -> None:
        with self.app.dbs.session("data") as s:
            self._get(s, address).enabled = enabled
        flush_sogo_cache(self.app)
        self.app.audit.record("mailbox.enable" if enabled else "mailbox.disable", address)

    def remove(self, address: str) -> None:
        """Remove the mailbox from the directory; its stored mail stays on disk (never lost implicitly)."""
        with self.app.dbs.session("data") as s:
            s.delete(self._get(s, address))
        flush_sogo_cache(self.app)
        self.app.audit.record("mailbox.remove", address)

    @staticmethod
    def _as_dict(m: Mailbox) -> dict:
        return {"address": m.address, "display_name": m.display_name, "quota_bytes": m.quota_bytes,
                "enabled": m.enabled}
