"""LDAP domains against a real Samba Active Directory DC (tests/support/samba_ad.py), in its
own network namespace: what the slapd look-alike cannot prove. Simple binds refused without
TLS, the DC's own CA, userAccountControl, nested groups through the in-chain rule, paging past
the DC's MaxPageSize, objectGUID as the identity across renames, failover between URIs.

Creates a network namespace: run under `flock /tmp/rupost-netns.lock`.
"""
from __future__ import annotations

import imaplib
import json
import smtplib
import time
import uuid

import pytest

from mailclients import message, smtp, smtps, wait_for_subject
from rupost.ldap.client import DirectoryError, Settings
from rupost.services.cache import flush_dovecot_auth_cache
from support import samba_ad as sa
from support.instance import free_ports
from test_cli import cli
from test_directories import _deploy, _imap_login_fails


@pytest.fixture(scope="module")
def staff(node, samba, tmp_path_factory):
    """LDAP domain `smbstaff` (OU=Staff over LDAPS, the DC's CA) registered by the CLI, synced
    and deployed: dovecot checks staff.samba.test passwords by a bind to the DC."""
    ca = tmp_path_factory.mktemp("samba-ca") / "ca.pem"
    ca.write_text(samba.ca_pem)
    # tests/test_kerberos_sso.py (earlier in a whole run) leaves the mail domain and the
    # mailboxes its sync made under the same LDAP domain name, which this one adopts
    if sa.STAFF_DOMAIN not in {d["name"] for d in node.app.domains.list()}:
        assert cli(node, "domains", "add", sa.STAFF_DOMAIN).exit_code == 0
    r = cli(node, "ldap-domains", "add", "smbstaff", "--type", "ad", "--uri", samba.ldaps_uri,
            "--base-dn", sa.STAFF_DN, "--bind-dn", sa.SERVICE_DN, "--bind-password-stdin", "--ca-file", str(ca),
            "--mail-domain", sa.STAFF_DOMAIN, input=sa.SERVICE_PASSWORD + "\n")
    assert r.exit_code == 0, r.output
    _deploy(node)
    yield "smbstaff"
    node.app.directories.remove("smbstaff", force=True)


def _settings(samba, **kw) -> Settings:
    base = dict(name="probe", kind="ad", uris=[samba.ldaps_uri], security="ldaps", ca_pem=samba.ca_pem,
                bind_dn=sa.SERVICE_DN, bind_password=sa.SERVICE_PASSWORD, base_dn=sa.STAFF_DN)
    return Settings(**(base | kw))


def _imap_ok(node, user, password):
    imap = imaplib.IMAP4_SSL("127.0.0.1", node.ports["imaps"])
    try:
        imap.login(user, password)
    finally:
        imap.shutdown()


# ----------------------------------------------------------------- connection and registration
def test_simple_bind_needs_tls_and_the_dcs_ca(node, samba):
    d = node.app.directories
    assert d.test_settings(_settings(samba))["ok"]
    starttls = d.test_settings(_settings(samba, uris=[samba.ldap_uri], security="starttls"))
    assert starttls["ok"], starttls
    # `ldap server require strong auth`: a simple bind in clear text is refused by the DC, and said so
    plain = d.test_settings(_settings(samba, uris=[samba.ldap_uri], security="plain"))
    assert not plain["ok"] and "requires TLS" in plain["error"], plain
    wrong_ca = d.test_settings(_settings(samba, ca_pem=samba.other_ca_pem))
    assert not wrong_ca["ok"] and "not trusted" in wrong_ca["error"], wrong_ca
    bad_pw = d.test_settings(_settings(samba, bind_password="wrong"))
    assert not bad_pw["ok"] and "invalid credentials" in bad_pw["error"]
    bad_base = d.test_settings(_settings(samba, base_dn=f"OU=Nobody,{sa.SUFFIX}"))
    assert bad_base["bind"] and "does not exist" in bad_base["error"]


def test_cli_test_and_sync_materialise_the_staff(node, samba, staff):
    r = cli(node, "ldap-domains", "test", staff, "--json")
    report = json.loads(r.output)
    assert r.exit_code == 0 and report["ok"] and report["users"], r.output
    r = cli(node, "ldap-domains", "sync", staff, "--json")
    assert r.exit_code == 0, r.output
    accounts = {a["login"]: a for a in node.app.directories.accounts(staff)}
    assert set(sa.STAFF) <= set(accounts)
    alice = accounts["alice"]
    assert alice["id"] == samba.guid(sa.STAFF["alice"].dn)  # objectGUID, read as AD stores it
    # SMTP: is the primary, smtp: the aliases; X400: is no mail address
    assert sorted(alice["aliases"]) == [f"a.smith@{sa.STAFF_DOMAIN}", f"alice.smith@{sa.STAFF_DOMAIN}"]
    assert node.app.mailboxes.show(sa.STAFF["alice"].mail)["enabled"] is True
    assert node.app.mailboxes.show(sa.STAFF["dave"].mail)["enabled"] is False  # userAccountControl 514
    gal = {g["mail"]: g for g in node.app.directories.gal("alice")}
    assert gal[sa.STAFF["alice"].mail]["title"] == "Engineer"
    assert gal[sa.STAFF["alice"].mail]["department"] == "Sales"


# ----------------------------------------------------------------- logins by bind
def test_imap_and_submission_log_in_with_the_ad_password(node, samba, staff):
    node.app.directories.sync(staff)
    alice = sa.STAFF["alice"]
    subject = f"to-alias {uuid.uuid4().hex}"
    with smtp(node.ports["smtp"]) as client:
        assert client.send_message(message("someone@example.org", f"a.smith@{sa.STAFF_DOMAIN}", subject)) == {}
    wait_for_subject(node.ports["imaps"], alice.mail, alice.password, subject)
    with smtps(node.ports["submissions"]) as client:
        client.login(alice.mail, alice.password)
    _imap_login_fails(node, alice.mail, "Wrong-Pass-1")
    _imap_login_fails(node, sa.STAFF["dave"].mail, sa.STAFF["dave"].password)  # disabled in AD


def test_disabled_in_ad_refused_at_once_and_mailbox_disabled_by_the_next_sync(node, samba, staff):
    import base64

    from adapters.probes import https_request

    bob = sa.STAFF["bob"]
    node.app.directories.sync(staff)
    _imap_ok(node, bob.mail, bob.password)

    def propfind(password):
        auth = "Basic " + base64.b64encode(f"{bob.mail}:{password}".encode()).decode()
        return https_request("127.0.0.1", node.ports["https"], "PROPFIND", f"/SOGo/dav/{bob.mail}/Calendar/",
                             headers={"Authorization": auth, "Depth": "0"})[0]

    assert propfind(bob.password) == 207
    samba.set_disabled(bob.dn, True)
    try:
        flush_dovecot_auth_cache(node.app)  # the cache of the last good login, not the directory
        _imap_login_fails(node, bob.mail, bob.password)
        with smtps(node.ports["submissions"]) as client:
            with pytest.raises(smtplib.SMTPAuthenticationError):
                client.login(bob.mail, bob.password)
        result = node.app.directories.sync(staff)
        assert result["disabled"] == 1
        assert node.app.mailboxes.show(bob.mail)["enabled"] is False
        assert propfind(bob.password) == 401
        with smtp(node.ports["smtp"]) as client:
            with pytest.raises(smtplib.SMTPRecipientsRefused):
                client.send_message(message("someone@example.org", bob.mail, "after"))
    finally:
        samba.set_disabled(bob.dn, False)
    assert node.app.directories.sync(staff)["enabled"] == 1
    _imap_ok(node, bob.mail, bob.password)


def test_rename_keeps_the_objectguid_identity_and_the_mail(node, samba, staff):
    login = f"ren{uuid.uuid4().hex[:6]}"
    old, new = f"{login}@{sa.STAFF_DOMAIN}", f"{login}.new@{sa.STAFF_DOMAIN}"
    password = "Rename-Pass-1"
    dn = samba.add_user(login, old, password)
    node.app.directories.sync(staff)
    guid = samba.guid(dn)
    subject = f"kept {uuid.uuid4().hex}"
    with smtp(node.ports["smtp"]) as client:
        client.send_message(message("someone@example.org", old, subject))
    wait_for_subject(node.ports["imaps"], old, password, subject)
    # a new CN (a new DN), a new login and a new primary address: the same account
    dn = samba.rename(dn, f"{login} renamed")
    samba.modify(dn, sAMAccountName=login + "x", mail=new, proxyAddresses=[f"SMTP:{new}"])
    assert samba.guid(dn) == guid
    assert node.app.directories.sync(staff)["renamed"] == 1
    account = [a for a in node.app.directories.accounts(staff) if a["id"] == guid]
    assert len(account) == 1 and account[0]["mail"] == new and old in account[0]["aliases"]
    wait_for_subject(node.ports["imaps"], new, password, subject)
    samba.delete(dn)
    assert node.app.directories.sync(staff)["deleted"] == 1
    assert node.app.mailboxes.show(new)["enabled"] is False
    with smtp(node.ports["smtp"]) as client:
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            client.send_message(message("someone@example.org", new, "gone"))


# ----------------------------------------------------------------- nested groups
def test_administrators_by_nested_group(node, samba, staff):
    d = node.app.directories
    d.admin_map_add(staff, "group", sa.group_dn("Mail Admins"), "superadmin")
    try:
        # oleg is a direct member; nadia only through Tier2 (memberOf shows Tier2 alone)
        assert d.authenticate_admin("oleg", sa.STAFF["oleg"].password) == ("superadmin", [])
        assert d.authenticate_admin(sa.STAFF["nadia"].mail, sa.STAFF["nadia"].password) == ("superadmin", [])
        assert d.authenticate_admin("nadia", "Wrong-Pass-1") is None
        assert d.authenticate_admin("petr", sa.STAFF["petr"].password) is None  # in no group
    finally:
        d.admin_map_remove(staff, "group", sa.group_dn("Mail Admins"))


def test_dynamic_list_by_nested_membership(node, samba, staff):
    node.app.directories.sync(staff)
    name = f"admins-{uuid.uuid4().hex[:6]}"
    node.app.ldap_filters.add(name, staff, f"(memberOf:1.2.840.113556.1.4.1941:={sa.group_dn('Mail Admins')})")
    address = f"{name}@{sa.STAFF_DOMAIN}"
    try:
        created = node.app.distribution_lists.add(address, filter_name=name)
        assert created["update"]["status"] == "updated", created
        members = {m["address"] for m in node.app.distribution_lists.show(address)["members"]}
        assert members == {sa.STAFF["nadia"].mail, sa.STAFF["oleg"].mail}
        subject = f"nested {uuid.uuid4().hex}"
        with smtp(node.ports["smtp"]) as client:
            assert client.send_message(message("someone@example.org", address, subject)) == {}
        wait_for_subject(node.ports["imaps"], sa.STAFF["nadia"].mail, sa.STAFF["nadia"].password, subject)
    finally:
        node.app.distribution_lists.remove(address)
        node.app.ldap_filters.remove(name)


# ----------------------------------------------------------------- write-back (guide §7.5)
def test_writeback_refusals_dry_run_and_only_mail_and_proxyaddresses_written(node, samba, staff):
    from rupost.errors import ValidationError

    d = node.app.directories
    with pytest.raises(ValidationError, match="not enabled"):
        d.writeback(staff, dry_run=True)
    with pytest.raises(ValidationError, match="separate account"):
        d.writeback_set(staff, bind_dn=sa.SERVICE_DN, bind_password=sa.SERVICE_PASSWORD)
    with pytest.raises(ValidationError, match="pattern"):
        d.writeback_set(staff, pattern="{nickname}", bind_dn=sa.WRITEBACK_DN, bind_password=sa.WRITEBACK_PASSWORD)
    with pytest.raises(DirectoryError, match="invalid credentials"):
        d.writeback_set(staff, bind_dn=sa.WRITEBACK_DN, bind_password="wrong")
    wendy, walter = (f"CN={login},{sa.STAFF_DN}" for login, _, _ in sa.NO_MAIL)
    before = {dn: samba.entry(dn) for dn in (wendy, walter)}
    # an account that may bind but not write: refused, named, nothing written
    d.writeback_set(staff, pattern="{given}.{surname}", bind_dn=sa.STAFF["petr"].dn,
                    bind_password=sa.STAFF["petr"].password)
    with pytest.raises(DirectoryError, match=r"may not write mail, proxyAddresses .*grant it write access"):
        d.writeback(staff)
    assert {dn: samba.entry(dn) for dn in (wendy, walter)} == before
    # the dry run says what it would write, and writes nothing; an address RuPost already
    # uses is never generated for an account
    taken = f"walter.writer@{sa.STAFF_DOMAIN}"
    # (to two mailboxes: a distribution list, which the write-back of aliases skips)
    node.app.aliases.add(taken, [sa.STAFF["alice"].mail, sa.STAFF["bob"].mail])
    d.writeback_set(staff, pattern="{given}.{surname}", bind_dn=sa.WRITEBACK_DN, bind_password=sa.WRITEBACK_PASSWORD)
    r = cli(node, "ldap-domains", "writeback", staff, "--dry-run")
    assert r.exit_code == 0, r.output
    assert f"would write {wendy}: + mail: wendy.writer@{sa.STAFF_DOMAIN}; + proxyAddresses: SMTP:wendy.writer@" \
        in r.output
    assert f"skip  {walter}: {taken}: the address belongs to a RuPost mailbox or alias" in r.output
    assert {dn: samba.entry(dn) for dn in (wendy, walter)} == before
    report = d.writeback(staff)
    assert report["written"] == 1 and report["sync"]["created"] >= 1, report  # others may be new too
    after = samba.entry(wendy)
    changed = {k for k in set(before[wendy]) | set(after) if before[wendy].get(k) != after.get(k)}
    bookkeeping = {"whenChanged", "uSNChanged", "replPropertyMetaData"}
    assert changed - bookkeeping == {"mail", "proxyAddresses"}, changed
    assert after["mail"] == [f"wendy.writer@{sa.STAFF_DOMAIN}"]
    assert after["proxyAddresses"] == [f"SMTP:wendy.writer@{sa.STAFF_DOMAIN}"]
    assert node.app.mailboxes.show(f"wendy.writer@{sa.STAFF_DOMAIN}")["enabled"] is True
    _imap_ok(node, f"wendy.writer@{sa.STAFF_DOMAIN}", "Wendy-Pass-1")
    assert samba.entry(walter) == before[walter]
    d.writeback_set(staff, enabled=False)
    node.app.aliases.remove(taken)


def test_writeback_of_aliases_rupost_s_own_only_and_the_sync_agrees(node, samba, staff):
    """RuPost aliases of a synced account go to proxyAddresses as smtp: values (SMTP: and the rest
    of the entry untouched); the next sync neither adopts, duplicates nor removes them; an alias
    removed in RuPost comes off the entry, the smtp: value an AD admin set by hand stays."""
    from rupost.errors import NotFoundError
    from rupost.services.directory_writeback_aliases import SEVERAL_TARGETS

    d, aliases = node.app.directories, node.app.aliases
    login = f"al{uuid.uuid4().hex[:6]}"
    mail, hand = f"{login}@{sa.STAFF_DOMAIN}", f"hand.{login}@{sa.STAFF_DOMAIN}"
    dn = samba.add_user(login, mail, "Al-Pass-1234", proxyAddresses=[f"SMTP:{mail}", f"smtp:{hand}", "X400:c=RU"])
    d.sync(staff)
    keep, drop, shared = (f"{p}.{login}@{sa.STAFF_DOMAIN}" for p in ("keep", "drop", "list"))
    aliases.add(keep, [mail])
    aliases.add(drop, [mail])
    aliases.add(shared, [mail, sa.STAFF["alice"].mail])
    before = samba.entry(dn)
    d.writeback_set(staff, pattern="{given}.{surname}", bind_dn=sa.WRITEBACK_DN, bind_password=sa.WRITEBACK_PASSWORD)
    try:
        plan = [p for p in d.writeback(staff, dry_run=True)["planned"] if p["dn"] == dn]
        assert [(p["add"], p["remove"]) for p in plan if "changes" in p] == \
            [([f"proxyAddresses: smtp:{drop}", f"proxyAddresses: smtp:{keep}"], [])], plan
        assert [(p["mail"], p["skipped"]) for p in plan if "skipped" in p] == [(shared, SEVERAL_TARGETS)]
        assert samba.entry(dn) == before
        # an account without the rights: the same refusal, naming what to grant; nothing recorded
        d.writeback_set(staff, pattern="{given}.{surname}", bind_dn=sa.STAFF["petr"].dn,
                        bind_password=sa.STAFF["petr"].password)
        with pytest.raises(DirectoryError, match=r"may not write .*proxyAddresses .*grant it write access"):
            d.writeback(staff)
        assert samba.entry(dn) == before
        assert node.app.audit.page(action="ldap_domain.writeback.refused", target=staff, limit=1)["total"]
        d.writeback_set(staff, pattern="{given}.{surname}", bind_dn=sa.WRITEBACK_DN,
                        bind_password=sa.WRITEBACK_PASSWORD)
        report = d.writeback(staff)
        after = samba.entry(dn)
        changed = {k for k in set(before) | set(after) if before.get(k) != after.get(k)}
        assert changed - {"whenChanged", "uSNChanged", "replPropertyMetaData"} == {"proxyAddresses"}, changed
        assert after["proxyAddresses"] == sorted(["X400:c=RU", f"SMTP:{mail}", f"smtp:{hand}", f"smtp:{keep}",
                                                  f"smtp:{drop}"])
        journal = node.app.audit.page(action="ldap_domain.writeback", target=staff, limit=1)["rows"][0]["details"]
        assert {"dn": dn, "add": [f"proxyAddresses: smtp:{drop}", f"proxyAddresses: smtp:{keep}"], "remove": []} \
            in journal["changes"]
        # the sync after it (in the run, and again) takes none of them over and reports nothing
        for summary in (report["sync"], d.sync(staff)):
            assert not [p for p in summary["problems"] if login in p], summary["problems"]
        account = next(a for a in d.accounts(staff) if a["login"] == login)
        assert (account["mail"], account["aliases"], account["written_aliases"]) == (mail, [hand], [drop, keep])
        assert aliases.show(keep)["destinations"] == [mail] and aliases.show(hand)["destinations"] == [mail]
        assert not [p for p in d.writeback(staff, dry_run=True)["planned"] if p["dn"] == dn and "changes" in p]
        # removed in RuPost: the sync does not bring it back from the entry; the write-back
        # removes RuPost's value and keeps the one set by hand
        aliases.remove(drop)
        d.sync(staff)
        with pytest.raises(NotFoundError):
            aliases.show(drop)
        r = cli(node, "ldap-domains", "writeback", staff)
        assert r.exit_code == 0 and f"write {dn}: - proxyAddresses: smtp:{drop}" in r.output, r.output
        assert samba.entry(dn)["proxyAddresses"] == sorted(["X400:c=RU", f"SMTP:{mail}", f"smtp:{hand}",
                                                            f"smtp:{keep}"])
        assert aliases.show(hand)["destinations"] == [mail]
        assert [a["written_aliases"] for a in d.accounts(staff) if a["login"] == login] == [[keep]]
    finally:
        d.writeback_set(staff, enabled=False)
        for address in (keep, shared):
            aliases.remove(address)


# ----------------------------------------------------------------- paging
def test_1500_users_synced_past_the_page_size_limit(node, samba):
    """More users than a Windows DC returns to one search (MaxPageSize 1,000), read in pages
    of rupost.ldap.client.PAGE_SIZE by following the DC's paging cookie. Samba 4.17 enforces
    no MaxPageSize (an unpaged search returns all 1,500; measured): what is proven here is
    that the DC pages and RuPost reads every page, not the Windows limit itself."""
    from rupost.ldap.client import PAGE_SIZE

    node.app.domains.add(sa.BULK_DOMAIN)
    node.app.directories.add("smbbulk", "ad", [samba.ldaps_uri], sa.BULK_DN, sa.SERVICE_DN, sa.SERVICE_PASSWORD,
                             ca_pem=samba.ca_pem, mail_domains=[sa.BULK_DOMAIN])
    try:
        conn = samba.admin()
        conn.search(sa.BULK_DN, "(objectClass=user)", attributes=["cn"], paged_size=PAGE_SIZE)
        cookie = conn.result["controls"]["1.2.840.113556.1.4.319"]["value"]["cookie"]
        assert len(conn.entries) == PAGE_SIZE < sa.BULK_USERS and cookie  # one page; more to come
        conn.unbind()
        first = node.app.directories.sync("smbbulk")
        assert (first["seen"], first["created"]) == (sa.BULK_USERS, sa.BULK_USERS), first
        again = node.app.directories.sync("smbbulk")
        assert (again["created"], again["updated"], again["disabled"]) == (0, 0, 0), again
        assert len(node.app.directories.accounts("smbbulk", limit=5000)) == sa.BULK_USERS
    finally:
        node.app.directories.remove("smbbulk", force=True)


# ----------------------------------------------------------------- failover (stops the DC: last)
def test_failover_between_uris_and_dc_outage(node, samba, staff):
    d = node.app.directories
    dead = f"ldaps://127.0.0.1:{free_ports(1)[0]}"
    report = d.test_settings(_settings(samba, uris=[dead, samba.ldaps_uri]))
    assert report["ok"] and report["server_used"].startswith(samba.ip), report
    before = d.accounts(staff)
    samba.stop()
    try:
        with pytest.raises(DirectoryError, match="no server could be used"):
            d.sync(staff)
        assert d.accounts(staff) == before  # nothing changed while the directory was away
    finally:
        samba.start()
    deadline = time.monotonic() + 60
    while not d.test_settings(_settings(samba))["ok"] and time.monotonic() < deadline:
        time.sleep(1)
    assert d.sync(staff)["ok"]
    _imap_ok(node, sa.STAFF["carol"].mail, sa.STAFF["carol"].password)
