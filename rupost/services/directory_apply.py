"""Carrying out a directory sync plan (rupost.services.directory_sync) in the data
database: reading the rows the plan starts from, and applying its actions in the same
session, in order."""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from ..db.directory_models import DirectoryAccount
from ..db.models import Alias, Domain, Mailbox
from .directory_sync import (
    AccountRow,
    Action,
    AddAlias,
    AdoptMailbox,
    AliasRow,
    CreateAccount,
    CreateMailbox,
    Existing,
    MailboxKey,
    MailboxRow,
    RemoveAlias,
    RenameMailbox,
    SetAliasEnabled,
    SetDisplayName,
    SetMailboxEnabled,
    UpdateAccount,
    UpdateAlias,
    directory_password,
)

if TYPE_CHECKING:
    from sqlalchemy.orm import Session


@dataclass
class DirectoryRows:
    """The rows a sync of one LDAP domain reads and may change."""

    domains: dict[str, Domain]  # the bound mail domains
    accounts: dict[str, DirectoryAccount]  # by stable id
    mailboxes: dict[MailboxKey, Mailbox]  # in the bound mail domains
    aliases: dict[str, Alias]  # in the bound mail domains, by address
    linked: set[int]  # mailboxes owned by an account row of any directory

    @classmethod
    def read(cls, s: Session, directory: str, mail_domains: list[str]) -> DirectoryRows:
        domains = {d.name: d for d in s.scalars(select(Domain).where(Domain.name.in_(set(mail_domains))))}
        accounts = {a.stable_id: a for a in s.scalars(
            select(DirectoryAccount).where(DirectoryAccount.directory == directory))}
        domain_ids = [d.id for d in domains.values()]
        mailboxes: dict[MailboxKey, Mailbox] = {
            m.id: m for m in s.scalars(select(Mailbox).where(Mailbox.domain_id.in_(domain_ids)))}
        aliases = {a.address: a for a in s.scalars(select(Alias).where(Alias.domain_id.in_(domain_ids)))}
        linked = set(s.scalars(select(DirectoryAccount.mailbox_id).where(DirectoryAccount.mailbox_id.is_not(None))))
        return cls(domains, accounts, mailboxes, aliases, linked)  # type: ignore[arg-type]  # no None: is_not(None)

    def snapshot(self) -> Existing:
        return Existing(
            domain_ids={name: d.id for name, d in self.domains.items()},
            accounts=tuple(AccountRow(a.stable_id, a.mailbox_id, a.dn, a.login, a.mail, a.state, a.state_reason,
                                      list(a.aliases), list(a.groups), dict(a.gal), a.synced_at,
                                      list(a.written_aliases or []))
                           for a in self.accounts.values()),
            mailboxes=tuple(MailboxRow(m.id, m.address, m.password_hash, m.enabled, m.display_name)
                            for m in self.mailboxes.values()),
            aliases=tuple(AliasRow(a.address, a.destinations, a.enabled) for a in self.aliases.values()),
            linked=frozenset(self.linked))


def apply_plan(s: Session, directory: str, rows: DirectoryRows, actions: list[Action], *, storage: Path,
               dry_run: bool) -> None:
    """Apply ``actions`` to ``rows`` in session ``s``; on a dry run the mail storage is
    left as it is (the caller rolls the session back)."""
    _Applier(s, directory, rows, storage, dry_run).run(actions)


class _Applier:
    def __init__(self, s: Session, directory: str, rows: DirectoryRows, storage: Path, dry_run: bool) -> None:
        self.s, self.directory, self.rows = s, directory, rows
        self.storage, self.dry_run = storage, dry_run
        self.new_mailboxes: list[tuple[DirectoryAccount, Mailbox]] = []

    def run(self, actions: list[Action]) -> None:
        handlers: dict[type, Callable[[Any], None]] = {
            CreateAccount: self.create_account, UpdateAccount: self.update_account,
            CreateMailbox: self.create_mailbox, AdoptMailbox: self.adopt_mailbox,
            RenameMailbox: self.rename_mailbox, SetMailboxEnabled: self.set_mailbox_enabled,
            SetDisplayName: self.set_display_name, AddAlias: self.add_alias, UpdateAlias: self.update_alias,
            SetAliasEnabled: self.set_alias_enabled, RemoveAlias: self.remove_alias}
        for action in actions:
            handlers[type(action)](action)
        self.s.flush()  # new mailboxes get their ids: one flush for all of them
        for acc, mb in self.new_mailboxes:
            acc.mailbox_id = mb.id

    def create_account(self, a: CreateAccount) -> None:
        acc = DirectoryAccount(directory=self.directory, stable_id=a.stable_id, aliases=[], groups=[], gal={},
                               state="active", state_reason="", dn=a.dn, login=a.login, mail=a.mail)
        self.s.add(acc)
        self.rows.accounts[a.stable_id] = acc

    def update_account(self, a: UpdateAccount) -> None:
        acc = self.rows.accounts[a.stable_id]
        for key, value in a.changes.items():
            setattr(acc, key, value)

    def create_mailbox(self, a: CreateMailbox) -> None:
        mb = Mailbox(domain_id=a.domain_id, local_part=a.address.split("@")[0], address=a.address,
                     password_hash=directory_password(self.directory), display_name=a.display_name, quota_bytes=0,
                     enabled=a.enabled)
        self.s.add(mb)
        self.rows.mailboxes[a.key] = mb
        self.new_mailboxes.append((self.rows.accounts[a.stable_id], mb))

    def adopt_mailbox(self, a: AdoptMailbox) -> None:
        self.rows.accounts[a.stable_id].mailbox_id = self.rows.mailboxes[a.mailbox].id

    def rename_mailbox(self, a: RenameMailbox) -> None:
        if a.replaces_alias:
            self.s.delete(self.rows.aliases.pop(a.new))
            self.s.flush()
        if not self.dry_run:
            move_mail_storage(self.storage, a.old, a.new)
        mb = self.rows.mailboxes[a.mailbox]
        mb.address, mb.local_part, mb.domain_id = a.new, a.new.split("@")[0], a.domain_id

    def set_mailbox_enabled(self, a: SetMailboxEnabled) -> None:
        self.rows.mailboxes[a.mailbox].enabled = a.enabled

    def set_display_name(self, a: SetDisplayName) -> None:
        self.rows.mailboxes[a.mailbox].display_name = a.display_name

    def add_alias(self, a: AddAlias) -> None:
        alias = Alias(domain_id=a.domain_id, address=a.address, destinations=a.destination, enabled=a.enabled)
        self.s.add(alias)
        self.rows.aliases[a.address] = alias

    def update_alias(self, a: UpdateAlias) -> None:
        alias = self.rows.aliases[a.address]
        alias.destinations, alias.enabled = a.destination, a.enabled

    def set_alias_enabled(self, a: SetAliasEnabled) -> None:
        self.rows.aliases[a.address].enabled = a.enabled

    def remove_alias(self, a: RemoveAlias) -> None:
        self.s.delete(self.rows.aliases.pop(a.address))


def move_mail_storage(storage: Path, old: str, new: str) -> None:
    """Mail is stored under DOMAIN/LOCAL: a changed primary address moves the directory."""
    old_local, old_domain = old.split("@")
    new_local, new_domain = new.split("@")
    src, dst = storage / old_domain / old_local, storage / new_domain / new_local
    if src.is_dir() and not dst.exists():
        dst.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.chown(dst.parent, src.parent.stat().st_uid, src.parent.stat().st_gid)
        except OSError:
            pass
        os.rename(src, dst)
