"""LDAP domains against a real 389 Directory Server shaped like FreeIPA / ALD Pro
(tests/support/ds389.py): RuPost's schema loaded from its own CLI output, ipaUniqueID as the
identity, nsAccountLock refused by the server itself, nested groups through 389-ds's memberOf
plugin, secure binds required."""
from __future__ import annotations

import uuid

import pytest

from mailclients import message, smtp, wait_for_subject
from rupost.ldap.client import Settings
from rupost.services.cache import flush_dovecot_auth_cache
from support import ds389 as ds
from test_cli import cli
from test_directories import _deploy, _imap_login_fails
from test_samba_ad import _imap_ok


@pytest.fixture(scope="module")
def ipa(node, workdir):
    server = ds.DS389(workdir / f"ds389-{uuid.uuid4().hex[:6]}")
    try:
        server.create()
        server.start()
        schema = cli(node, "ldap-domains", "schema", "--format", "389ds")
        assert schema.exit_code == 0
        server.configure(schema.output)
        yield server
    finally:
        server.destroy()


@pytest.fixture(scope="module")
def bound(node, ipa):
    mail_domain = f"ipa{uuid.uuid4().hex[:8]}.test"
    node.app.domains.add(mail_domain)
    name = f"ds{uuid.uuid4().hex[:6]}"
    node.app.directories.add(name, "freeipa", [ipa.ldap_uri], ds.USERS_DN, ds.SERVICE_DN, ds.SERVICE_PASSWORD,
                             security="starttls", ca_pem=ipa.ca_pem, mail_domains=[mail_domain])
    _deploy(node)
    yield name, mail_domain
    node.app.directories.remove(name, force=True)


def test_rupost_schema_is_loaded_by_389ds(ipa):
    schema = ipa.ldapsearch("cn=schema", "(objectClass=*)", "objectClasses", "attributeTypes")
    assert "NAME 'ruPostMailAccount'" in schema and "1.3.6.1.4.1.57980.3.1.2.1 NAME 'proxyAddresses'" in schema


def test_connection_needs_tls_and_the_ca(node, ipa):
    base = dict(name="probe", kind="freeipa", uris=[ipa.ldaps_uri], security="ldaps", ca_pem=ipa.ca_pem,
                bind_dn=ds.SERVICE_DN, bind_password=ds.SERVICE_PASSWORD, base_dn=ds.USERS_DN)
    d = node.app.directories
    assert d.test_settings(Settings(**base))["ok"]
    assert d.test_settings(Settings(**(base | {"uris": [ipa.ldap_uri], "security": "starttls"})))["ok"]
    plain = d.test_settings(Settings(**(base | {"uris": [ipa.ldap_uri], "security": "plain"})))
    assert not plain["ok"] and "requires TLS" in plain["error"], plain  # nsslapd-require-secure-binds
    wrong_ca = d.test_settings(Settings(**(base | {"ca_pem": ipa.other_ca_pem})))
    assert not wrong_ca["ok"] and "not trusted" in wrong_ca["error"]


def test_sync_login_and_locked_account(node, ipa, bound):
    name, mail_domain = bound
    login = f"ivan{uuid.uuid4().hex[:6]}"
    mail, alias, password = f"{login}@{mail_domain}", f"{login}.alias@{mail_domain}", "Ivan-Pass-123"
    dn, unique = ipa.add_user(login, mail, password, extra=(alias,), ou="Accounting", title="Clerk")
    _, locked_unique = ipa.add_user(f"l{login}", f"l{login}@{mail_domain}", "Locked-Pass-1", locked=True)
    result = node.app.directories.sync(name)
    assert result["created"] == 2, result
    accounts = {a["id"]: a for a in node.app.directories.accounts(name)}
    assert accounts[unique]["mail"] == mail and accounts[unique]["aliases"] == [alias]
    assert node.app.mailboxes.show(f"l{login}@{mail_domain}")["enabled"] is False
    subject = f"ipa {uuid.uuid4().hex}"
    with smtp(node.ports["smtp"]) as client:
        assert client.send_message(message("someone@example.org", alias, subject)) == {}
    wait_for_subject(node.ports["imaps"], mail, password, subject)
    _imap_login_fails(node, mail, "Wrong-Pass-1")
    # locked in the directory: 389-ds refuses the bind at once; the next sync disables the mailbox
    ipa.replace(dn, nsAccountLock="TRUE")
    flush_dovecot_auth_cache(node.app)
    _imap_login_fails(node, mail, password)
    assert node.app.directories.sync(name)["disabled"] == 1
    assert node.app.mailboxes.show(mail)["enabled"] is False
    ipa.replace(dn, nsAccountLock=None)
    assert node.app.directories.sync(name)["enabled"] == 1
    _imap_ok(node, mail, password)
    # a rename (new uid, new DN) keeps the ipaUniqueID identity
    ipa.ldapmodify(f"dn: {dn}\nchangetype: modrdn\nnewrdn: uid={login}x\ndeleteoldrdn: 1\n")
    node.app.directories.sync(name)
    renamed = [a for a in node.app.directories.accounts(name) if a["id"] == unique]
    assert len(renamed) == 1 and renamed[0]["dn"].lower().startswith(f"uid={login}x,")


def test_administrators_by_nested_group_through_memberof(node, ipa, bound):
    name, mail_domain = bound
    login = f"adm{uuid.uuid4().hex[:6]}"
    dn, _ = ipa.add_user(login, f"{login}@{mail_domain}", "Adm-Pass-123")
    inner = ipa.add_group(f"tier2-{login}", [dn])
    outer = ipa.add_group(f"mail-admins-{login}", [inner])
    d = node.app.directories
    d.admin_map_add(name, "group", outer, "superadmin")
    try:
        assert d.authenticate_admin(login, "Adm-Pass-123") == ("superadmin", [])
        assert d.authenticate_admin(login, "Wrong-Pass-1") is None
    finally:
        d.admin_map_remove(name, "group", outer)


def test_writeback_adds_mail_proxyaddresses_and_the_class_only(node, ipa, bound):
    name, mail_domain = bound
    login = f"wb{uuid.uuid4().hex[:6]}"
    dn, unique = ipa.add_user(login, None, "Wb-User-Pass-1")
    before = ipa.entry(dn)
    d = node.app.directories
    d.writeback_set(name, pattern="{login}", bind_dn=ds.WRITEBACK_DN, bind_password=ds.WRITEBACK_PASSWORD)
    try:
        plan = d.writeback(name, dry_run=True)["planned"]
        assert [p["mail"] for p in plan if p["dn"] == dn] == [f"{login}@{mail_domain}"]
        assert ipa.entry(dn) == before
        report = d.writeback(name)
        assert report["written"] == 1 and report["sync"]["created"] >= 1, report  # others may be new too
        after = ipa.entry(dn)
        assert {k for k in set(before) | set(after) if before.get(k) != after.get(k)} == \
            {"mail", "proxyaddresses", "objectclass"}
        assert after["mail"] == [f"{login}@{mail_domain}"]
        assert set(after["objectclass"]) - set(before["objectclass"]) == {"rupostmailaccount"}
        assert [a["mail"] for a in d.accounts(name) if a["id"] == unique] == [f"{login}@{mail_domain}"]
        _imap_ok(node, f"{login}@{mail_domain}", "Wb-User-Pass-1")
    finally:
        d.writeback_set(name, enabled=False)


def test_writeback_of_aliases_as_further_mail_values(node, ipa, bound):
    """On 389-ds (FreeIPA / ALD Pro) a RuPost alias is a further `mail` value: the first one stays
    the primary address (the sync renames nothing and adopts nothing), and the value goes when
    the alias does."""
    name, mail_domain = bound
    login = f"al{uuid.uuid4().hex[:6]}"
    mail, alias = f"{login}@{mail_domain}", f"alias.{login}@{mail_domain}"
    dn, unique = ipa.add_user(login, mail, "Al-User-Pass-1")
    d = node.app.directories
    d.sync(name)
    node.app.aliases.add(alias, [mail])
    before = ipa.entry(dn)
    d.writeback_set(name, pattern="{login}", bind_dn=ds.WRITEBACK_DN, bind_password=ds.WRITEBACK_PASSWORD)
    try:
        report = d.writeback(name)
        assert [p["add"] for p in report["planned"] if p["dn"] == dn] == [[f"mail: {alias}"]], report
        after = ipa.entry(dn)
        assert {k for k in set(before) | set(after) if before.get(k) != after.get(k)} == {"mail"}
        assert after["mail"] == sorted([mail, alias])
        for summary in (report["sync"], d.sync(name)):
            assert summary["renamed"] == 0 and not [p for p in summary["problems"] if login in p], summary
        account = next(a for a in d.accounts(name) if a["id"] == unique)
        assert (account["mail"], account["aliases"]) == (mail, [])
        node.app.aliases.remove(alias)
        d.writeback(name)
        assert ipa.entry(dn) == before
    finally:
        d.writeback_set(name, enabled=False)
