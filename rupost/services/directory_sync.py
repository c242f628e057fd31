"""What a sync of an LDAP domain changes: the plan, without I/O.

``plan_sync`` takes the users read from the directory and a snapshot of the rows the
data database holds for it (``Existing``) and returns the actions that bring the
materialised mailboxes, aliases and account rows in line, with the summary the
faces show. DirectoryService applies the actions in one session
(rupost.services.directory_apply). Deciding apart from applying keeps the rules
testable without a directory or a database, and a dry run reports exactly what a
real run would do.
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TypedDict

from rupost.ldap.client import DirectoryUser

from .. import validation
from ..errors import ValidationError

# the password "hash" of a mailbox whose owner authenticates against a directory:
# never a valid hash, so the local passdb (and SOGo's SQL source) can never accept it
DIRECTORY_PASSWORD_PREFIX = "!directory:"
DROP_CHECK_MINIMUM = 5  # below this many affected accounts the share is not checked
DISABLED_REASON = "disabled in the directory"
DELETED_REASON = "no longer in the directory (or outside its filter)"


def directory_password(directory: str) -> str:
    return DIRECTORY_PASSWORD_PREFIX + directory


def _domain_of(address: str) -> str:
    return address.rpartition("@")[2]


# ---------------------------------------------------------------- the summary
class SyncCounts(TypedDict):
    seen: int
    created: int
    updated: int
    renamed: int
    disabled: int
    deleted: int
    enabled: int
    aliases_added: int
    aliases_removed: int
    skipped: int
    conflicts: int
    problems: list[str]


class SyncSummary(SyncCounts, total=False):
    """What ``DirectoryService.sync`` returns; the CLI, the panel and the audit record
    read it by these keys (and ``last_sync`` stores it)."""

    name: str
    ok: bool
    seconds: float


def new_summary(seen: int) -> SyncSummary:
    return SyncSummary(seen=seen, created=0, updated=0, renamed=0, disabled=0, deleted=0, enabled=0,
                       aliases_added=0, aliases_removed=0, skipped=0, conflicts=0, problems=[])


# ---------------------------------------------------------------- what the database holds
# (the planner works on copies of these rows: it never changes its input)
@dataclass
class AccountRow:
    stable_id: str
    mailbox_id: int | None = None
    dn: str = ""
    login: str = ""
    mail: str = ""
    state: str = "active"
    state_reason: str = ""
    aliases: list[str] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)
    gal: dict = field(default_factory=dict)
    synced_at: dt.datetime | None = None
    written_aliases: list[str] = field(default_factory=list)  # RuPost's own (write-back), not the directory's


@dataclass(frozen=True)
class MailboxRow:
    id: int
    address: str
    password_hash: str
    enabled: bool = True
    display_name: str = ""


@dataclass
class AliasRow:
    address: str
    destinations: str
    enabled: bool = True


@dataclass(frozen=True)
class Existing:
    """The rows of one LDAP domain's mail domains when its sync starts."""

    domain_ids: Mapping[str, int]  # bound mail domain -> its id
    accounts: tuple[AccountRow, ...] = ()  # this directory's account rows
    mailboxes: tuple[MailboxRow, ...] = ()  # in the bound mail domains
    aliases: tuple[AliasRow, ...] = ()  # in the bound mail domains
    linked: frozenset[int] = frozenset()  # mailboxes owned by an account row of any directory


# ---------------------------------------------------------------- actions
# an existing mailbox by its id; one this sync creates by "new:ADDRESS" (it has no id yet)
MailboxKey = int | str


@dataclass(frozen=True)
class CreateAccount:
    stable_id: str
    dn: str
    login: str
    mail: str
    reason: str = "new in the directory"


@dataclass(frozen=True)
class UpdateAccount:
    stable_id: str
    changes: Mapping[str, object]  # DirectoryAccount column -> new value
    reason: str


@dataclass(frozen=True)
class CreateMailbox:
    stable_id: str  # the account that owns it
    key: str
    address: str
    domain_id: int
    display_name: str
    enabled: bool
    reason: str = "new in the directory"


@dataclass(frozen=True)
class AdoptMailbox:
    stable_id: str
    mailbox: MailboxKey
    reason: str = "the directory's own mailbox, left by an earlier account row (e.g. re-added after a removal)"


@dataclass(frozen=True)
class RenameMailbox:
    mailbox: MailboxKey
    old: str
    new: str
    domain_id: int
    replaces_alias: bool  # the new address was one of its own extra addresses
    reason: str = "the primary address changed in the directory"


@dataclass(frozen=True)
class SetMailboxEnabled:
    mailbox: MailboxKey
    enabled: bool
    reason: str


@dataclass(frozen=True)
class SetDisplayName:
    mailbox: MailboxKey
    display_name: str
    reason: str = "the display name changed in the directory"


@dataclass(frozen=True)
class AddAlias:
    address: str
    domain_id: int
    destination: str
    enabled: bool
    reason: str = "an extra address in the directory"


@dataclass(frozen=True)
class UpdateAlias:
    address: str
    destination: str
    enabled: bool
    reason: str = "follows its mailbox"


@dataclass(frozen=True)
class SetAliasEnabled:
    address: str
    enabled: bool
    reason: str


@dataclass(frozen=True)
class RemoveAlias:
    address: str
    reason: str = "no longer an extra address of its account"


Action = (CreateAccount | UpdateAccount | CreateMailbox | AdoptMailbox | RenameMailbox | SetMailboxEnabled
          | SetDisplayName | AddAlias | UpdateAlias | SetAliasEnabled | RemoveAlias)


@dataclass(frozen=True)
class Refusal:
    """The sync would disable too large a share of the active accounts."""

    losing: int
    active: int
    share: float

    def message(self, directory: str) -> str:
        return (f"LDAP domain {directory}: sync refused: it would disable {self.losing} of "
                f"{self.active} active mailbox(es) ({self.losing / self.active:.0%}, more than the allowed "
                f"{self.share:.0%}); check the directory and the user filter, then run "
                "`rupost ldap-domains sync --force` if this is intended")


@dataclass
class SyncPlan:
    summary: SyncSummary
    actions: list[Action] = field(default_factory=list)
    refusal: Refusal | None = None  # set: no actions, nothing may change


# ---------------------------------------------------------------- planning
def plan_sync(directory: str, id_attr: str, mail_domains: list[str], users: list[DirectoryUser],
              existing: Existing, *, share: float, force: bool, now: dt.datetime) -> SyncPlan:
    """The actions that materialise ``users`` of LDAP domain ``directory`` (whose stable
    id is the attribute ``id_attr``); a refusal instead when more than ``share`` of its
    active accounts would be lost and ``force`` is not given."""
    summary = new_summary(len(users))
    wanted = select_users(users, mail_domains, id_attr, summary)
    refusal = None if force else drop_refusal(existing.accounts, wanted, share)
    if refusal is not None:
        return SyncPlan(summary, refusal=refusal)
    planner = _Planner(directory, mail_domains, existing, now, summary)
    for user in wanted.values():
        planner.present(user)
    planner.departed(wanted)
    return SyncPlan(summary, planner.actions)


def select_users(users: list[DirectoryUser], mail_domains: list[str], id_attr: str,
                 summary: SyncSummary) -> dict[str, DirectoryUser]:
    """The users to materialise, by stable id; the others are counted as skipped."""
    bound = set(mail_domains)
    wanted: dict[str, DirectoryUser] = {}
    for u in users:
        served = [a for a in u.unranked if _domain_of(a) in bound]
        if served and _domain_of(u.mail) not in bound:
            u = u.keeping(served[0])  # unranked values: one of a served domain is the primary
        if not u.stable_id:
            summary["skipped"] += 1
            summary["problems"].append(f"{u.dn}: no {id_attr}; skipped")
        elif _domain_of(u.mail) not in bound:
            summary["skipped"] += 1  # a user of a mail domain this directory does not serve
        elif u.stable_id in wanted:
            summary["problems"].append(f"{u.dn}: duplicate {id_attr} {u.stable_id}; skipped")
        else:
            try:
                validation.address(u.mail)
            except ValidationError as exc:
                summary["skipped"] += 1
                summary["problems"].append(f"{u.dn}: {exc}")
                continue
            wanted[u.stable_id] = u
    return wanted


def drop_refusal(accounts: tuple[AccountRow, ...], wanted: Mapping[str, DirectoryUser],
                 share: float) -> Refusal | None:
    # a directory answering with few users (a wrong filter, a broken replica) must not
    # disable most mailboxes at once
    active = [a for a in accounts if a.state == "active"]
    losing = [a for a in active if a.stable_id not in wanted or wanted[a.stable_id].disabled]
    if len(losing) >= DROP_CHECK_MINIMUM and active and len(losing) / len(active) > share:
        return Refusal(len(losing), len(active), share)
    return None


@dataclass
class _Mailbox:
    """A mailbox as the plan changes it: its key stays when it is renamed; one the plan
    creates has no id yet."""

    key: MailboxKey
    id: int | None
    address: str
    password_hash: str
    enabled: bool
    display_name: str


def _state_change(acc: AccountRow, state: str, reason: str) -> dict:
    return {} if (acc.state, acc.state_reason) == (state, reason) else {"state": state, "state_reason": reason}


class _Planner:
    """Walks the users the way the rows will change: each decision sees the effect of
    the ones before it (a mailbox created for one user is taken for the next)."""

    def __init__(self, directory: str, mail_domains: list[str], existing: Existing, now: dt.datetime,
                 summary: SyncSummary) -> None:
        self.bound = set(mail_domains)
        self.marker = directory_password(directory)
        self.domain_ids = dict(existing.domain_ids)
        self.now = now
        self.summary = summary
        self.actions: list[Action] = []
        self.accounts = {a.stable_id: replace(a, aliases=list(a.aliases), groups=list(a.groups), gal=dict(a.gal))
                         for a in existing.accounts}
        self.mailboxes = {m.address: _Mailbox(m.id, m.id, m.address, m.password_hash, m.enabled, m.display_name)
                          for m in existing.mailboxes}
        self.by_id = {m.id: m for m in self.mailboxes.values()}
        self.aliases = {a.address: replace(a) for a in existing.aliases}
        self.linked: set[int | None] = set(existing.linked)

    def present(self, u: DirectoryUser) -> None:
        acc = self.accounts.get(u.stable_id)
        mb = self.by_id.get(acc.mailbox_id) if acc is not None and acc.mailbox_id else None
        if mb is not None:
            u = u.keeping(mb.address)  # values in another order are not a rename
        domain_id = self.domain_ids[_domain_of(u.mail)]
        display = (u.gal.get("display_name") or "")[:256]
        if acc is None:
            acc = self._create_account(u)
        extra = list(u.extra)
        if mb is None:
            mb = self._place_mailbox(acc, u, domain_id, display)
            if mb is None:
                return
        elif mb.address != u.mail:
            extra = self._follow_rename(acc, mb, u, domain_id, extra)
        self._follow_mailbox(mb, u, display)
        self._follow_account(acc, u)
        self._follow_extra_addresses(acc, mb, u, extra)

    def departed(self, wanted: Mapping[str, DirectoryUser]) -> None:
        for stable, acc in self.accounts.items():
            if stable in wanted or acc.state == "deleted":
                continue
            self._update_account(acc, {"state": "deleted", "state_reason": DELETED_REASON}, DELETED_REASON)
            mb = self.by_id.get(acc.mailbox_id) if acc.mailbox_id else None
            if mb is not None and mb.enabled:
                self._set_mailbox_enabled(mb, False, DELETED_REASON)
            for address in acc.aliases or []:
                alias = self.aliases.get(address)
                if alias is not None and alias.enabled:
                    alias.enabled = False
                    self.actions.append(SetAliasEnabled(address, False, DELETED_REASON))
            self.summary["deleted"] += 1

    # ------------------------------------------------------------ one present user
    def _create_account(self, u: DirectoryUser) -> AccountRow:
        acc = AccountRow(u.stable_id, None, u.dn, u.login, u.mail)
        self.accounts[u.stable_id] = acc
        self.actions.append(CreateAccount(u.stable_id, u.dn, u.login, u.mail))
        return acc

    def _place_mailbox(self, acc: AccountRow, u: DirectoryUser, domain_id: int, display: str) -> _Mailbox | None:
        """The mailbox of an account that has none: a new one, or the directory's own
        mailbox at that address; None (a conflict) when the address is someone else's."""
        existing = self.mailboxes.get(u.mail)
        if existing is not None and (existing.password_hash != self.marker or existing.id in self.linked):
            self._conflict(acc, u, f"{u.mail} is already a local mailbox",
                           f"{u.dn}: {u.mail} is already a mailbox not owned by this directory; not taken over")
            return None
        if existing is None and u.mail in self.aliases:
            self._conflict(acc, u, f"{u.mail} is already an alias",
                           f"{u.dn}: {u.mail} is already an alias; not created")
            return None
        if existing is None:
            key = f"new:{u.mail}"
            mb = _Mailbox(key, None, u.mail, self.marker, not u.disabled, display)
            self.mailboxes[u.mail] = mb
            self.actions.append(CreateMailbox(acc.stable_id, key, u.mail, domain_id, display, mb.enabled))
            self.summary["created"] += 1
            return mb
        self.by_id[existing.id] = existing
        self.linked.add(existing.id)
        acc.mailbox_id = existing.id
        self.actions.append(AdoptMailbox(acc.stable_id, existing.key))
        return existing

    def _conflict(self, acc: AccountRow, u: DirectoryUser, reason: str, problem: str) -> None:
        self.summary["conflicts"] += 1
        self.summary["problems"].append(problem)
        self._update_account(acc, {**_state_change(acc, "conflict", reason), **self._refreshed(acc, u)}, reason)

    def _follow_rename(self, acc: AccountRow, mb: _Mailbox, u: DirectoryUser, domain_id: int,
                       extra: list[str]) -> list[str]:
        """A changed primary address renames the mailbox (unless the address is taken);
        the old address becomes an extra one: mail to it keeps arriving."""
        if u.mail in self.mailboxes or u.mail in self.aliases and u.mail not in acc.aliases:
            self.summary["conflicts"] += 1
            self.summary["problems"].append(f"{u.dn}: mail changed to {u.mail}, which is already taken; "
                                            f"the mailbox stays {mb.address}")
            return extra
        old = mb.address
        replaces_alias = self.aliases.pop(u.mail, None) is not None
        self.mailboxes.pop(old, None)
        mb.address = u.mail
        self.mailboxes[u.mail] = mb
        self.actions.append(RenameMailbox(mb.key, old, u.mail, domain_id, replaces_alias))
        self.summary["renamed"] += 1
        return list(dict.fromkeys([*extra, old]))

    def _follow_mailbox(self, mb: _Mailbox, u: DirectoryUser, display: str) -> None:
        if mb.enabled != (not u.disabled):
            self.summary["disabled" if u.disabled else "enabled"] += 1
            self._set_mailbox_enabled(mb, not u.disabled,
                                      DISABLED_REASON if u.disabled else "enabled in the directory")
        if display and mb.display_name != display:
            mb.display_name = display
            self.actions.append(SetDisplayName(mb.key, display))

    def _follow_account(self, acc: AccountRow, u: DirectoryUser) -> None:
        state, reason = ("disabled", DISABLED_REASON) if u.disabled else ("active", "")
        if (acc.dn, acc.login, acc.state, acc.gal, acc.groups) != (u.dn, u.login, state, u.gal, u.groups):
            self.summary["updated"] += 1
        self._update_account(acc, {**_state_change(acc, state, reason), **self._refreshed(acc, u)},
                             "changed in the directory")

    def _refreshed(self, acc: AccountRow, u: DirectoryUser) -> dict:
        # only what changed is written: a sync with nothing to change issues no UPDATE
        # (synced_at is the time of the last change seen)
        new = {"dn": u.dn, "login": u.login, "mail": u.mail, "groups": u.groups, "gal": u.gal}
        changed: dict[str, object] = {k: v for k, v in new.items() if getattr(acc, k) != v}
        if changed or acc.synced_at is None:
            changed["synced_at"] = self.now
        return changed

    def _follow_extra_addresses(self, acc: AccountRow, mb: _Mailbox, u: DirectoryUser, extra: list[str]) -> None:
        for address in extra:
            if _domain_of(address) not in self.bound:
                self.summary["problems"].append(f"{u.dn}: extra address {address} is not in a mail domain of this "
                                                "directory; ignored")
        kept = []
        # what the write-back wrote is RuPost's alias shown in the directory, not the directory's
        # address: neither adopted nor reported (its removal is written back by the next write-back)
        written = set(acc.written_aliases)
        for address in extra:
            if _domain_of(address) in self.bound and address not in written and \
                    self._keep_extra_address(acc, mb, u, address):
                kept.append(address)
        for address in acc.aliases:
            if address not in kept and address in self.aliases and self.aliases[address].destinations == mb.address:
                del self.aliases[address]
                self.actions.append(RemoveAlias(address))
                self.summary["aliases_removed"] += 1
        if acc.aliases != kept:
            self._update_account(acc, {"aliases": kept}, "its extra addresses changed")

    def _keep_extra_address(self, acc: AccountRow, mb: _Mailbox, u: DirectoryUser, address: str) -> bool:
        """Whether ``address`` is (now) an alias of the account's mailbox."""
        alias = self.aliases.get(address)
        if alias is not None:
            if address not in acc.aliases:
                self.summary["problems"].append(f"{u.dn}: extra address {address} is already an alias; "
                                                "not taken over")
                return False
            if alias.destinations != mb.address or alias.enabled != mb.enabled:
                alias.destinations, alias.enabled = mb.address, mb.enabled
                self.actions.append(UpdateAlias(address, mb.address, mb.enabled))
            return True
        if address in self.mailboxes:
            self.summary["problems"].append(f"{u.dn}: extra address {address} is already a mailbox; ignored")
            return False
        self.aliases[address] = AliasRow(address, mb.address, mb.enabled)
        self.actions.append(AddAlias(address, self.domain_ids[_domain_of(address)], mb.address, mb.enabled))
        self.summary["aliases_added"] += 1
        return True

    # ------------------------------------------------------------ recording
    def _update_account(self, acc: AccountRow, changes: dict, reason: str) -> None:
        if not changes:
            return
        for key, value in changes.items():
            setattr(acc, key, value)
        self.actions.append(UpdateAccount(acc.stable_id, changes, reason))

    def _set_mailbox_enabled(self, mb: _Mailbox, enabled: bool, reason: str) -> None:
        mb.enabled = enabled
        self.actions.append(SetMailboxEnabled(mb.key, enabled, reason))
