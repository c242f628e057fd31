"""Impersonation accounts: service accounts that may open other users' mailboxes.

They are dovecot master users: an IMAP login ``user@domain*account`` with the account's
password opens ``user@domain``'s mailbox. The master passdb query
(templates/builtin/standard.yaml, ``lookup_master_users``) accepts the account only for
targets in its listed domains; the target must exist. Passwords are hashed like mailbox
passwords (SHA512-CRYPT). Every session opened this way is recorded in
``rupost_logs.impersonation_uses`` by dovecot's IMAP post-login script (through the
policy server) before the session starts; a session whose use cannot be recorded does
not start.
"""
from __future__ import annotations

import builtins
import re
from typing import TYPE_CHECKING

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from .. import validation
from ..db.resource_models import ImpersonationAccount, ImpersonationUse
from ..errors import ConflictError, NotFoundError, ValidationError
from ..passwords import hash_password
from . import features
from .cache import accounts_changed

if TYPE_CHECKING:
    from collections.abc import Iterable

    from sqlalchemy.orm import Session

    from . import Services

SEPARATOR = "*"  # auth_master_user_separator of the builtin template
_NAME = re.compile(r"^[a-z][a-z0-9._-]{0,63}$")


def account_name(name: str) -> str:
    name = (name or "").strip().lower()
    if not _NAME.match(name):
        raise ValidationError(f"invalid impersonation account name {name!r}: lowercase letters, digits, '.', '_', "
                              "'-', starting with a letter, at most 64 characters (e.g. migration)")
    return name


def record_use(app: Services, *, account: str, target: str, remote_ip: str = "", mechanism: str = "",
               protocol: str = "imap") -> None:
    """One row per mailbox opened by an impersonation account (called by the policy server)."""
    with app.dbs.session("logs") as s:
        s.add(ImpersonationUse(account=account.strip().lower()[:64], target=target.strip().lower()[:320],
                               remote_ip=remote_ip[:64], mechanism=mechanism[:32], protocol=protocol[:16],
                               node=app.config.node_name[:128]))


class ImpersonationService:
    def __init__(self, app: Services) -> None:
        self.app = app

    def add(self, name: str, password: str, domains: Iterable[str], description: str = "") -> dict:
        name = account_name(name)
        wanted = []
        for item in domains:
            wanted += [d for d in str(item).replace(",", " ").split() if d]
        if not wanted:
            raise ValidationError("an impersonation account needs at least one mail domain (--domain)")
        password_hash = hash_password(password)
        try:
            with self.app.dbs.session("data") as s:
                names = list(dict.fromkeys(self.app.domains.get(s, d).name for d in wanted))
                row = ImpersonationAccount(name=name, password_hash=password_hash, domains=names,
                                           description=description.strip(), enabled=True)
                s.add(row)
                s.flush()
                out = self._as_dict(row)
        except IntegrityError:
            raise ConflictError(f"impersonation account {name} already exists") from None
        self.app.audit.record("impersonation.add", name, domains=names)
        return out

    def template_context(self) -> dict:
        """``impersonation.enabled`` for templates: the master passdb and the post-login hook
        (a script around every IMAP session) are rendered only while an account exists."""
        with self.app.dbs.session("data") as s:
            found = s.scalar(select(ImpersonationAccount.id).where(ImpersonationAccount.enabled).limit(1))
        return {"enabled": found is not None}

    def live_on_this_node(self) -> bool:
        return features.live_on_this_node(self.app, "dovecot", "postlogin.sh")

    def deploy_hint(self) -> str:
        return features.deploy_hint("impersonation (dovecot master users)", self.template_context()["enabled"],
                                    self.live_on_this_node())

    def _get(self, session: Session, name: str) -> ImpersonationAccount:
        row = session.scalar(select(ImpersonationAccount).where(
            ImpersonationAccount.name == (name or "").strip().lower()))
        if row is None:
            raise NotFoundError(f"impersonation account {name} does not exist (rupost impersonation list)")
        return row

    def list(self) -> list[dict]:
        with self.app.dbs.session("logs") as s:
            uses = {a: (n, last) for a, n, last in s.execute(
                select(ImpersonationUse.account, func.count(), func.max(ImpersonationUse.at))
                .group_by(ImpersonationUse.account))}
        with self.app.dbs.session("data") as s:
            out = []
            for row in s.scalars(select(ImpersonationAccount).order_by(ImpersonationAccount.name)):
                n, last = uses.get(row.name, (0, None))
                out.append({**self._as_dict(row), "uses": n, "last_use": last.isoformat() if last else None})
            return out

    def set(self, name: str, *, password: str | None = None, domains: Iterable[str] | None = None,
            enabled: bool | None = None) -> dict:
        password_hash = hash_password(password) if password is not None else None
        with self.app.dbs.session("data") as s:
            row = self._get(s, name)
            if password_hash:
                row.password_hash = password_hash
            if domains is not None:
                wanted = [d for item in domains for d in str(item).replace(",", " ").split() if d]
                if not wanted:
                    raise ValidationError("an impersonation account needs at least one mail domain")
                row.domains = list(dict.fromkeys(self.app.domains.get(s, d).name for d in wanted))
            if enabled is not None:
                row.enabled = enabled
            out = self._as_dict(row)
        accounts_changed(self.app)  # the master passdb caches per target user
        self.app.audit.record("impersonation.set", out["name"], password_changed=password is not None,
                              domains=out["domains"], enabled=enabled)
        return out

    def remove(self, name: str) -> None:
        with self.app.dbs.session("data") as s:
            row = self._get(s, name)
            full = row.name
            s.delete(row)
        accounts_changed(self.app)  # the master passdb caches per target user
        self.app.audit.record("impersonation.remove", full)

    def uses(self, name: str | None = None, target: str | None = None, limit: int = 100) -> builtins.list[dict]:
        """The journal of mailboxes opened by impersonation accounts, newest first."""
        q = select(ImpersonationUse).order_by(ImpersonationUse.id.desc()).limit(max(1, min(limit, 10000)))
        if name:
            q = q.where(ImpersonationUse.account == account_name(name))
        if target:
            q = q.where(ImpersonationUse.target == "@".join(validation.address(target)))
        with self.app.dbs.session("logs") as s:
            return [{"at": u.at.isoformat(), "account": u.account, "target": u.target, "protocol": u.protocol,
                     "remote_ip": u.remote_ip, "node": u.node, "mechanism": u.mechanism} for u in s.scalars(q)]

    @staticmethod
    def login(target: str, name: str) -> str:
        """The IMAP login name that opens ``target``'s mailbox as the account ``name``."""
        return f"{'@'.join(validation.address(target))}{SEPARATOR}{account_name(name)}"

    @staticmethod
    def _as_dict(r: ImpersonationAccount) -> dict:
        return {"name": r.name, "domains": list(r.domains or []), "description": r.description,
                "enabled": r.enabled, "created_at": r.created_at.isoformat() if r.created_at else None}
