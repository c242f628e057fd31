"""Write-back of aliases (guide §7.5): the RuPost aliases of a directory account's mailbox,
written to its entry as ``smtp:ADDRESS`` values of ``proxyAddresses`` (Active Directory) or as
further ``mail`` values (FreeIPA / ALD Pro), next to the primary address, which stays as it is.

Ownership, so that sync and write-back never fight (docs/directories.md#write-back):

- an extra address that was in the directory first is the **directory's**: the sync made its
  alias (``DirectoryAccount.aliases``) and removes it when it leaves the directory; the
  write-back never writes or removes it;
- an alias made in RuPost is **RuPost's**: the write-back adds it to the entry and records it
  (``DirectoryAccount.written_aliases``); the sync skips recorded addresses (neither adopts nor
  reports them), and when the alias goes (removed, disabled, pointed elsewhere) the next
  write-back deletes that value from the entry. A value an administrator set by hand is never
  in the record, so it is never deleted.

Only an alias with exactly one destination, the account's mailbox, is an address of the
account; one with several destinations (a distribution list) is skipped with the reason, as
are disabled aliases and those in a mail domain not bound to the LDAP domain (the sync ignores
those). Planning only: DirectoryWriteback reads the entries and writes the modifies.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import ldap3
from sqlalchemy import select

from rupost.ldap import client as dl

from ..db.directory_models import DirectoryAccount
from ..db.models import Alias, Mailbox

if TYPE_CHECKING:
    from . import Services

SEVERAL_TARGETS = "an alias to several targets (a distribution list), not an address of this account"
DISABLED = "the alias is disabled in RuPost"
TAKEN = "already mail or proxyAddresses of another directory entry"


def alias_attribute(kind: str) -> str:
    return "proxyAddresses" if kind == "ad" else "mail"


def alias_value(kind: str, address: str) -> str:
    return f"smtp:{address}" if kind == "ad" else address


def _address_of(kind: str, value: str) -> str:
    if kind != "ad":
        return value.strip().lower()
    prefix, _, address = value.partition(":")
    return address.strip().lower() if prefix.lower() == "smtp" else ""


def held_values(kind: str, raw: dict) -> dict[str, str]:
    """address -> the exact value holding it in the attribute aliases are written to."""
    out: dict[str, str] = {}
    for value in dl.texts(raw, alias_attribute(kind)):
        address = _address_of(kind, value)
        if address:
            out.setdefault(address, value)
    return out


@dataclass(frozen=True)
class AccountAliases:
    """One materialised account with a mailbox, and the RuPost aliases that name its mailbox."""

    stable_id: str
    mailbox: str
    directory_owned: frozenset[str]  # DirectoryAccount.aliases: made by the sync
    written: tuple[str, ...]  # DirectoryAccount.written_aliases: written by RuPost
    own: tuple[tuple[str, bool], ...]  # (address, enabled) of aliases whose only destination is the mailbox
    shared: tuple[str, ...]  # aliases with the mailbox among several destinations


def read_accounts(app: Services, directory: str) -> dict[str, AccountAliases]:
    """By stable id: the accounts of ``directory`` that have a mailbox (active or disabled)."""
    with app.dbs.session("data") as s:
        rows = s.execute(select(DirectoryAccount, Mailbox.address).join(
            Mailbox, Mailbox.id == DirectoryAccount.mailbox_id).where(
            DirectoryAccount.directory == directory, DirectoryAccount.state.in_(("active", "disabled")))).all()
        addresses = {address for _, address in rows}
        own: dict[str, list[tuple[str, bool]]] = {}
        for alias in s.scalars(select(Alias).where(Alias.destinations.in_(addresses))):
            own.setdefault(alias.destinations, []).append((alias.address, alias.enabled))
        shared: dict[str, list[str]] = {}
        for alias in s.scalars(select(Alias).where(Alias.destinations.contains(","))):
            for target in {t.strip().lower() for t in alias.destinations.split(",")} & addresses:
                shared.setdefault(target, []).append(alias.address)
        return {acc.stable_id: AccountAliases(acc.stable_id, address, frozenset(acc.aliases or []),
                                              tuple(acc.written_aliases or []), tuple(sorted(own.get(address, []))),
                                              tuple(sorted(shared.get(address, []))))
                for acc, address in rows}


def plan_entry(kind: str, bound: set[str], dn: str, login: str, primary: str, raw: dict, acc: AccountAliases,
               taken: Callable[[str], bool]) -> list[dict]:
    """The plan items of one entry: at most one to write (``changes``, ``add``, ``remove``,
    ``written_aliases``: the record after it), and one per skipped alias (``skipped``)."""
    base = {"dn": dn, "login": login, "stable_id": acc.stable_id}
    skipped = [{**base, "mail": a, "skipped": SEVERAL_TARGETS} for a in acc.shared]
    wanted = []
    for address, enabled in acc.own:
        if address in acc.directory_owned:
            continue  # the directory's own address: the sync keeps its alias
        domain = address.rpartition("@")[2]
        why = DISABLED if not enabled else "" if domain in bound else \
            f"mail domain {domain} is not bound to this LDAP domain (the sync would ignore it)"
        if why:
            skipped.append({**base, "mail": address, "skipped": why})
        else:
            wanted.append(address)
    held = held_values(kind, raw)
    everything = set(held) | {m.strip().lower() for m in dl.texts(raw, "mail")} | \
        {_address_of("ad", v) for v in dl.texts(raw, "proxyAddresses")}
    add = []
    for address in wanted:
        if address in everything:
            continue
        if taken(address):
            skipped.append({**base, "mail": address, "skipped": TAKEN})
        else:
            add.append(address)
    remove = [held[a] for a in acc.written if a not in wanted and a in held and a != primary]
    record = sorted((set(acc.written) & set(wanted) & everything) | set(add))
    attr = alias_attribute(kind)
    ops = ([(ldap3.MODIFY_ADD, [alias_value(kind, a) for a in add])] if add else []) + \
        ([(ldap3.MODIFY_DELETE, remove)] if remove else [])
    item = {**base, "mail": primary, "add": [f"{attr}: {alias_value(kind, a)}" for a in add],
            "remove": [f"{attr}: {v}" for v in remove], "written_aliases": record}
    if ops:
        return [{**item, "changes": {attr: ops}}, *skipped]
    # nothing to write, but a recorded alias is gone from RuPost and from the entry already
    return ([item] if record != sorted(acc.written) else []) + skipped


def record_written(app: Services, directory: str, stable_id: str, addresses: list[str]) -> None:
    with app.dbs.session("data") as s:
        acc = s.scalar(select(DirectoryAccount).where(DirectoryAccount.directory == directory,
                                                      DirectoryAccount.stable_id == stable_id))
        if acc is not None:
            acc.written_aliases = list(addresses)
