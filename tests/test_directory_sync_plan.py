"""The directory sync plan (rupost.services.directory_sync): pure, no directory or
database needed."""
from __future__ import annotations

import datetime as dt
from dataclasses import replace

from rupost.ldap.client import DirectoryUser
from rupost.services.directory_sync import (
    DELETED_REASON,
    DISABLED_REASON,
    AccountRow,
    AddAlias,
    AliasRow,
    CreateAccount,
    CreateMailbox,
    Existing,
    MailboxRow,
    RenameMailbox,
    SetAliasEnabled,
    SetDisplayName,
    SetMailboxEnabled,
    UpdateAccount,
    plan_sync,
)

DOMAIN = "corp.example"
MARKER = "!directory:corp"
EARLIER = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
NOW = dt.datetime(2024, 6, 1, tzinfo=dt.UTC)


def _user(name: str, *, dn: str = "", disabled: bool = False, extra=(), gal=None) -> DirectoryUser:
    return DirectoryUser(dn=dn or f"cn={name},ou=users,dc=corp", stable_id=f"g-{name}", login=name,
                         mail=f"{name}@{DOMAIN}", extra=list(extra), disabled=disabled, groups=[],
                         gal=gal if gal is not None else {"display_name": f"{name.capitalize()} User"})


def _account(name: str, mailbox_id: int, **fields) -> AccountRow:
    return AccountRow(f"g-{name}", mailbox_id, dn=f"cn={name},ou=users,dc=corp", login=name, mail=f"{name}@{DOMAIN}",
                      gal={"display_name": f"{name.capitalize()} User"}, synced_at=EARLIER, **fields)


def _mailbox(name: str, mailbox_id: int, password_hash: str = MARKER) -> MailboxRow:
    return MailboxRow(mailbox_id, f"{name}@{DOMAIN}", password_hash, True, f"{name.capitalize()} User")


def _plan(users, existing, **kwargs):
    return plan_sync("corp", "objectGUID", [DOMAIN], users, existing, share=kwargs.get("share", 0.5),
                     force=kwargs.get("force", False), now=NOW)


def test_new_changed_disabled_and_gone_users_give_their_actions():
    existing = Existing(
        domain_ids={DOMAIN: 1},
        accounts=(_account("changed", 10), _account("off", 11), _account("gone", 12, aliases=[f"gone.x@{DOMAIN}"])),
        mailboxes=(_mailbox("changed", 10), _mailbox("off", 11), _mailbox("gone", 12)),
        aliases=(AliasRow(f"gone.x@{DOMAIN}", f"gone@{DOMAIN}"),),
        linked=frozenset({10, 11, 12}))
    new_gal = {"display_name": "Changed Person", "title": "Boss"}
    users = [_user("new", extra=[f"new.x@{DOMAIN}"]),
             _user("changed", dn="cn=changed,ou=moved,dc=corp", gal=new_gal),
             _user("off", disabled=True),
             DirectoryUser(dn="cn=other", stable_id="g-other", login="other", mail="other@elsewhere.example",
                           extra=[], disabled=False, groups=[], gal={})]
    plan = _plan(users, existing)
    assert plan.refusal is None
    assert plan.actions == [
        CreateAccount("g-new", "cn=new,ou=users,dc=corp", "new", f"new@{DOMAIN}"),
        CreateMailbox("g-new", f"new:new@{DOMAIN}", f"new@{DOMAIN}", 1, "New User", True),
        UpdateAccount("g-new", {"gal": {"display_name": "New User"}, "synced_at": NOW}, "changed in the directory"),
        AddAlias(f"new.x@{DOMAIN}", 1, f"new@{DOMAIN}", True),
        UpdateAccount("g-new", {"aliases": [f"new.x@{DOMAIN}"]}, "its extra addresses changed"),
        SetDisplayName(10, "Changed Person"),
        UpdateAccount("g-changed", {"dn": "cn=changed,ou=moved,dc=corp", "gal": new_gal, "synced_at": NOW},
                      "changed in the directory"),
        SetMailboxEnabled(11, False, DISABLED_REASON),
        UpdateAccount("g-off", {"state": "disabled", "state_reason": DISABLED_REASON}, "changed in the directory"),
        UpdateAccount("g-gone", {"state": "deleted", "state_reason": DELETED_REASON}, DELETED_REASON),
        SetMailboxEnabled(12, False, DELETED_REASON),
        SetAliasEnabled(f"gone.x@{DOMAIN}", False, DELETED_REASON),
    ]
    assert plan.summary == {"seen": 4, "created": 1, "updated": 3, "renamed": 0, "disabled": 1, "deleted": 1,
                            "enabled": 0, "aliases_added": 1, "aliases_removed": 0, "skipped": 1, "conflicts": 0,
                            "problems": []}


def test_a_directory_that_loses_most_accounts_is_refused_unless_forced():
    names = [f"u{i}" for i in range(5)]
    existing = Existing(domain_ids={DOMAIN: 1}, accounts=tuple(_account(n, i) for i, n in enumerate(names, 1)),
                        mailboxes=tuple(_mailbox(n, i) for i, n in enumerate(names, 1)), linked=frozenset(range(1, 6)))
    refused = _plan([], existing)
    assert refused.actions == [] and (refused.refusal.losing, refused.refusal.active) == (5, 5)
    assert "would disable 5 of 5" in refused.refusal.message("corp")
    forced = _plan([], existing, force=True)
    assert forced.refusal is None and forced.summary["deleted"] == 5
    assert [a.mailbox for a in forced.actions if isinstance(a, SetMailboxEnabled)] == [1, 2, 3, 4, 5]


def test_a_local_mailbox_at_the_users_address_is_a_conflict_and_not_taken_over():
    existing = Existing(domain_ids={DOMAIN: 1}, mailboxes=(_mailbox("local", 7, password_hash="$6$local"),))
    plan = _plan([_user("local")], existing)
    assert plan.actions == [
        CreateAccount("g-local", "cn=local,ou=users,dc=corp", "local", f"local@{DOMAIN}"),
        UpdateAccount("g-local", {"state": "conflict", "state_reason": f"local@{DOMAIN} is already a local mailbox",
                                  "gal": {"display_name": "Local User"}, "synced_at": NOW},
                      f"local@{DOMAIN} is already a local mailbox"),
    ]
    assert plan.summary["conflicts"] == 1 and plan.summary["created"] == 0
    assert plan.summary["problems"] == [f"cn=local,ou=users,dc=corp: local@{DOMAIN} is already a mailbox not owned "
                                        "by this directory; not taken over"]


def test_addresses_the_write_back_wrote_are_left_to_rupost():
    """An extra address in the directory that RuPost's write-back wrote (``written_aliases``) is
    RuPost's alias: the sync neither takes it over nor reports it while the alias exists, and
    does not bring it back once it was removed in RuPost (the next write-back removes it); an
    address set in the directory by hand is still adopted."""
    mine, hand = f"mine@{DOMAIN}", f"hand@{DOMAIN}"
    account = _account("ann", 10, written_aliases=[mine])
    users = [_user("ann", extra=[mine, hand])]
    for aliases in ((AliasRow(mine, f"ann@{DOMAIN}"),), ()):
        existing = Existing(domain_ids={DOMAIN: 1}, accounts=(account,), mailboxes=(_mailbox("ann", 10),),
                            aliases=aliases, linked=frozenset({10}))
        plan = _plan(users, existing)
        assert [a for a in plan.actions if isinstance(a, AddAlias)] == [AddAlias(hand, 1, f"ann@{DOMAIN}", True)]
        assert plan.summary["problems"] == [] and plan.summary["aliases_removed"] == 0
        assert [a.changes for a in plan.actions if isinstance(a, UpdateAccount)] == [{"aliases": [hand]}]


def test_unranked_mail_values_in_another_order_are_not_a_rename():
    """FreeIPA / ALD Pro keep the write-back's aliases as further ``mail`` values, and LDAP keeps
    no order among values: a search that returns the alias first renames nothing while the
    mailbox's address is still a value; a value of an unserved domain first does not make the
    user look gone. Active Directory's single ``mail`` stays the primary it names."""
    alias, elsewhere = f"ann.alias@{DOMAIN}", "ann@elsewhere.example"
    existing = Existing(domain_ids={DOMAIN: 1}, accounts=(_account("ann", 10, written_aliases=[alias]),),
                        mailboxes=(_mailbox("ann", 10),), aliases=(AliasRow(alias, f"ann@{DOMAIN}"),),
                        linked=frozenset({10}))
    for first in (alias, elsewhere):
        values = (first, f"ann@{DOMAIN}", alias if first != alias else elsewhere)
        reordered = replace(_user("ann"), mail=first, extra=list(values[1:]), unranked=values)
        plan = _plan([reordered], existing)
        assert not [a for a in plan.actions if isinstance(a, RenameMailbox | SetMailboxEnabled)], plan.actions
        assert plan.summary["renamed"] == plan.summary["deleted"] == plan.summary["skipped"] == 0
    ranked = replace(_user("ann"), mail=alias, extra=[f"ann@{DOMAIN}"])  # AD: mail changed, old one kept
    plan = _plan([ranked], Existing(domain_ids={DOMAIN: 1}, accounts=(_account("ann", 10),),
                                    mailboxes=(_mailbox("ann", 10),), linked=frozenset({10})))
    assert [a for a in plan.actions if isinstance(a, RenameMailbox)] == [
        RenameMailbox(10, f"ann@{DOMAIN}", alias, 1, False)]


def test_the_directory_client_ranks_ad_and_single_mail_values_only():
    from rupost.ldap.client import to_user

    class Shape:
        kind, id_attr, login_attr, gal = "ipa", "ipaUniqueID", "uid", {}

    raw = {"ipauniqueid": ["u-1"], "uid": ["ann"], "mail": ["ann.alias@corp.example", "ann@corp.example"]}
    user = to_user(Shape(), "uid=ann", raw)
    assert user.unranked == ("ann.alias@corp.example", "ann@corp.example")
    assert user.keeping("ann@corp.example").mail == "ann@corp.example"
    assert user.keeping("ann@corp.example").extra == ["ann.alias@corp.example"]
    single = to_user(Shape(), "uid=ann", {**raw, "mail": ["ann@corp.example"]})
    Shape.kind = "ad"
    assert single.unranked == () and to_user(Shape(), "cn=ann", raw).unranked == ()
