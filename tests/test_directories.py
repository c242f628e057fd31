"""LDAP domains against a real slapd: registration and its errors, materialisation of
directory users, authentication by bind over IMAPS and submission, disabled accounts."""
from __future__ import annotations

import imaplib
import random
import smtplib
import uuid

import pytest

from mailclients import IMAPSFrom, message, smtp, smtps, wait_for_subject
from rupost.ldap.client import DirectoryError
from rupost.errors import NotFoundError, ValidationError
from rupost.services.cache import flush_dovecot_auth_cache
from rupost.services.directories import SyncRefused
from support.slapd import TempSlapd


@pytest.fixture(scope="module")
def ad(workdir):
    server = TempSlapd(workdir / f"slapd-ad-{uuid.uuid4().hex[:6]}", "ad").start()
    yield server
    server.destroy()


@pytest.fixture(scope="module")
def ipa(workdir):
    server = TempSlapd(workdir / f"slapd-ipa-{uuid.uuid4().hex[:6]}", "freeipa").start()
    yield server
    server.destroy()


def _deploy(node):
    node.deploy()
    # a dovecot reload restarts its auth process; each long-lived postfix smtpd then fails
    # its next SMTP AUTH once with "454 Connection lost to authentication server" (postfix
    # reconnects only after that). Reloading postfix retires those smtpd processes.
    node.app.backend.reload("postfix", node.app.components.process_spec("postfix"))
    _wait_ready(node)


def _wait_ready(node, timeout: float = 60):
    """Every public port answers its protocol three times in a row (a deploy that reloaded
    or restarted components leaves them settling for a moment on a loaded machine)."""
    import time

    from adapters import probes

    checks = [(probes.probe_smtp, "smtp"), (probes.probe_submissions, "submissions"),
              (probes.probe_imaps, "imaps"), (probes.probe_https, "https")]
    deadline, streak = time.monotonic() + timeout, 0
    while streak < 3:
        results = [probe("127.0.0.1", node.ports[port]) for probe, port in checks]
        streak = streak + 1 if all(r.ok for r in results) else 0
        if time.monotonic() > deadline:
            raise AssertionError(f"node not ready after the deploy: {[r for r in results if not r.ok]}")
        time.sleep(0.5)


def _register(node, server, kind, security="ldaps"):
    mail_domain = f"{kind}{uuid.uuid4().hex[:8]}.test"
    node.app.domains.add(mail_domain)
    name = f"{kind}{uuid.uuid4().hex[:6]}"
    uri = server.ldaps_uri if security == "ldaps" else server.ldap_uri
    node.app.directories.add(name, kind, [uri], server.users_dn, server.service_dn, server.service_password,
                             security=security, ca_pem=server.ca_pem, mail_domains=[mail_domain])
    return name, mail_domain


@pytest.fixture(scope="module")
def ad_bound(node, ad):
    """An AD-shaped LDAP domain bound to a fresh mail domain, deployed (dovecot LDAP passdb)."""
    name, mail_domain = _register(node, ad, "ad")
    _deploy(node)
    yield name, mail_domain
    node.app.directories.remove(name, force=True)


@pytest.fixture(scope="module")
def ipa_bound(node, ipa, ad_bound):
    name, mail_domain = _register(node, ipa, "freeipa", security="starttls")
    _deploy(node)
    yield name, mail_domain
    node.app.directories.remove(name, force=True)


def _login(prefix="u"):
    return f"{prefix}{uuid.uuid4().hex[:8]}"


def _imap_login_fails(node, user, password):
    # a fresh client address each time: dovecot's auth penalty doubles the delay of each
    # further failure from one address (2, 4, 8, 15 s)
    source = f"127.0.{random.randint(64, 250)}.{random.randint(2, 250)}"
    imap = IMAPSFrom("127.0.0.1", node.ports["imaps"], source)
    try:
        with pytest.raises(imaplib.IMAP4.error):
            imap.login(user, password)
    finally:
        imap.shutdown()


# ----------------------------------------------------------------- registration
def test_add_validates_input_before_touching_anything(node, ad):
    d = node.app.directories
    with pytest.raises(ValidationError, match="invalid directory type"):
        d.add("x1", "novell", [ad.ldaps_uri], ad.users_dn, ad.service_dn, "pw")
    with pytest.raises(ValidationError, match="must start with ldaps://"):
        d.add("x1", "ad", [ad.ldap_uri], ad.users_dn, ad.service_dn, "pw")
    with pytest.raises(ValidationError, match="clear text"):
        d.add("x1", "ad", [ad.ldap_uri], ad.users_dn, ad.service_dn, "pw", security="plain")
    with pytest.raises(ValidationError, match="not a valid distinguished name"):
        d.add("x1", "ad", [ad.ldaps_uri], "not a dn", ad.service_dn, "pw", ca_pem=ad.ca_pem)
    with pytest.raises(ValidationError, match="unclosed"):
        d.add("x1", "ad", [ad.ldaps_uri], ad.users_dn, ad.service_dn, "pw", user_filter="(department=Sales")
    with pytest.raises(ValidationError, match=r"approximate matches \(~=\) cannot be applied by SOGo"):
        d.add("x1", "ad", [ad.ldaps_uri], ad.users_dn, ad.service_dn, "pw", user_filter="(department~=Sales)")
    with pytest.raises(NotFoundError, match="does not exist"):
        d.add("x1", "ad", [ad.ldaps_uri], ad.users_dn, ad.service_dn, "pw", ca_pem=ad.ca_pem,
              mail_domains=["nowhere-at-all.test"], check=False)
    assert all(r["name"] != "x1" for r in d.list())


def test_connection_test_names_each_problem(node, ad):
    from rupost.ldap.client import Settings

    d = node.app.directories

    def settings(**kw):
        base = dict(name="probe", kind="ad", uris=[ad.ldaps_uri], security="ldaps", ca_pem=ad.ca_pem,
                    bind_dn=ad.service_dn, bind_password=ad.service_password, base_dn=ad.users_dn)
        base.update(kw)
        return Settings(**base)

    good = d.test_settings(settings())
    assert good["ok"] and good["bind"] and good["base_dn"], good
    bad_pw = d.test_settings(settings(bind_password="wrong"))
    assert not bad_pw["ok"] and "invalid credentials" in bad_pw["error"]
    bad_base = d.test_settings(settings(base_dn="ou=Nobody,dc=corp,dc=test"))
    assert bad_pw["bind"] is False and bad_base["bind"] and not bad_base["base_dn"]
    assert "base DN 'ou=Nobody,dc=corp,dc=test' does not exist" in bad_base["error"]
    from support.instance import free_ports

    dead = d.test_settings(settings(uris=[f"ldaps://127.0.0.1:{free_ports(1)[0]}"], timeout=3))
    assert not dead["ok"] and not dead["servers"][0]["reachable"] and "connection refused" in dead["error"]
    wrong_ca = d.test_settings(settings(ca_pem=ad.other_ca_pem))
    assert not wrong_ca["ok"] and "certificate" in wrong_ca["error"] and "not trusted" in wrong_ca["error"]
    # failover: a dead first server, the second one answers
    failover = d.test_settings(settings(uris=[f"ldaps://127.0.0.1:{free_ports(1)[0]}", ad.ldaps_uri]))
    assert failover["ok"] and failover["server_used"].endswith(str(ad.ldaps_port))
    starttls = d.test_settings(settings(uris=[ad.ldap_uri], security="starttls"))
    assert starttls["ok"], starttls
    # `add` refuses a directory it cannot use, and says why
    with pytest.raises(DirectoryError, match="invalid credentials"):
        d.add("badpw", "ad", [ad.ldaps_uri], ad.users_dn, ad.service_dn, "wrong", ca_pem=ad.ca_pem)


# ----------------------------------------------------------------- materialisation + bind auth
def test_directory_user_logs_in_with_directory_password_and_receives_on_both_addresses(node, ad, ad_bound):
    name, mail_domain = ad_bound
    login = _login("alice")
    primary, extra = f"{login}@{mail_domain}", f"{login}.extra@{mail_domain}"
    password = f"Dir-{uuid.uuid4().hex[:10]}"
    ad.add_user(login, primary, password, extra=(extra, "someone@elsewhere.example"), department="Sales",
                title="Engineer")
    result = node.app.directories.sync(name)
    assert result["created"] >= 1 and result["aliases_added"] >= 1
    box = node.app.mailboxes.show(primary)
    assert box["enabled"] and box["display_name"] == f"Test {login.capitalize()}"
    assert [a["destinations"] for a in node.app.aliases.list(mail_domain) if a["address"] == extra] == [[primary]]
    subjects = [f"to-primary {uuid.uuid4().hex}", f"to-extra {uuid.uuid4().hex}"]
    with smtp(node.ports["smtp"]) as client:
        assert client.send_message(message("someone@example.org", primary, subjects[0])) == {}
        assert client.send_message(message("someone@example.org", extra, subjects[1])) == {}
    for subject in subjects:
        wait_for_subject(node.ports["imaps"], primary, password, subject)
    # submission with the directory password
    subject = f"submitted {uuid.uuid4().hex}"
    with smtps(node.ports["submissions"]) as client:
        client.login(primary, password)
        assert client.send_message(message(primary, primary, subject)) == {}
    wait_for_subject(node.ports["imaps"], primary, password, subject)
    # the password is nowhere in RuPost
    with node.app.dbs.session("data") as s:
        from rupost.db.models import Mailbox
        from sqlalchemy import select

        stored = s.scalar(select(Mailbox.password_hash).where(Mailbox.address == primary))
    assert stored == f"!directory:{name}"


def test_wrong_directory_password_is_refused(node, ad, ad_bound):
    name, mail_domain = ad_bound
    login = _login("wrong")
    primary = f"{login}@{mail_domain}"
    ad.add_user(login, primary, "Right-pass-1")
    node.app.directories.sync(name)
    _imap_login_fails(node, primary, "Wrong-pass-1")
    with smtps(node.ports["submissions"]) as client:
        with pytest.raises(smtplib.SMTPAuthenticationError):
            client.login(primary, "Wrong-pass-1")
    # a local mailbox's password does not work for a directory user either, and vice versa:
    # the marker '!directory:...' is never a usable hash
    _imap_login_fails(node, primary, f"!directory:{name}")


def test_local_mailboxes_keep_their_local_passwords(node, mailbox, ad_bound):
    address, password = mailbox("local")
    raw_subject = f"local {uuid.uuid4().hex}"
    with smtp(node.ports["smtp"]) as client:
        client.send_message(message("someone@example.org", address, raw_subject))
    wait_for_subject(node.ports["imaps"], address, password, raw_subject)


def test_freeipa_user_over_starttls_directory(node, ipa, ipa_bound):
    name, mail_domain = ipa_bound
    login = _login("ipa")
    primary, extra = f"{login}@{mail_domain}", f"{login}-alias@{mail_domain}"
    password = "Ipa-pass-123"
    ipa.add_user(login, primary, password, extra=(extra,), ou="Accounting", title="Clerk")
    result = node.app.directories.sync(name)
    assert result["created"] == 1
    subject = f"ipa {uuid.uuid4().hex}"
    with smtp(node.ports["smtp"]) as client:
        client.send_message(message("someone@example.org", extra, subject))
    wait_for_subject(node.ports["imaps"], primary, password, subject)
    _imap_login_fails(node, primary, "not-it")
    gal = [g for g in node.app.directories.gal(login) if g["mail"] == primary]
    assert gal and gal[0]["department"] == "Accounting" and gal[0]["title"] == "Clerk"


def test_sync_refuses_to_disable_most_accounts_and_keeps_state_when_unreachable(node, workdir, ad_bound):
    # a directory of its own so that the share is exact
    server = TempSlapd(workdir / f"slapd-drop-{uuid.uuid4().hex[:6]}", "ad").start()
    try:
        name, mail_domain = _register(node, server, "ad")
        dns = [server.add_user(f"d{i}", f"d{i}@{mail_domain}", "Pw-12345678")[0] for i in range(8)]
        assert node.app.directories.sync(name)["created"] == 8
        for dn in dns[:6]:
            server.delete(dn)
        with pytest.raises(SyncRefused, match="would disable 6 of 8"):
            node.app.directories.sync(name)
        assert all(a["state"] == "active" for a in node.app.directories.accounts(name))
        server.stop()
        with pytest.raises(DirectoryError, match="no server could be used"):
            node.app.directories.sync(name)
        assert all(a["state"] == "active" for a in node.app.directories.accounts(name))
        server.start()
        assert node.app.directories.sync(name, force=True)["deleted"] == 6
        journal = [r["action"] for r in node.app.audit.recent(20)]
        assert "ldap_domain.sync.refused" in journal and "ldap_domain.sync.failed" in journal
        node.app.directories.remove(name, force=True)
    finally:
        server.destroy()


def test_gal_entries_are_visible_through_sogo_carddav(node, ad, ad_bound, mailbox):
    """The GAL is an address book of the directory's mail domain: its users see it, a user of
    another domain does not (issue 24)."""
    import base64
    import re

    from adapters.probes import https_request

    name, mail_domain = ad_bound
    login = _login("gal")
    primary = f"{login}@{mail_domain}"
    ad.add_user(login, primary, "Gal-pass-123", given="Galina", surname="Petrova", title="Chief Accountant",
                department="Finance", mobile="+7 900 000 00 00", company="RuPost Test")
    node.app.directories.sync(name)
    gal = {g["mail"]: g for g in node.app.directories.gal(login)}
    assert gal[primary]["title"] == "Chief Accountant" and gal[primary]["department"] == "Finance"
    port = node.ports["https"]

    def gal_cards(reader: str, password: str) -> list[str]:
        auth = {"Authorization": "Basic " + base64.b64encode(f"{reader}:{password}".encode()).decode()}
        folder = f"/SOGo/dav/{reader}/Contacts/rupost_gal/"
        status, _, body = https_request("127.0.0.1", port, "PROPFIND", folder, headers={**auth, "Depth": "1"})
        assert status == 207 and b"Global Address List" in body, body[:500]
        cards = []
        for href in dict.fromkeys(re.findall(r"<D:href>([^<]+/rupost_gal/gal-[0-9]+)</D:href>", body.decode())):
            status, headers, card = https_request("127.0.0.1", port, "GET", href, headers=auth)
            assert status == 200 and "vcard" in headers.get("content-type", "")
            cards.append(card.decode())
        return cards

    mine = [c for c in gal_cards(primary, "Gal-pass-123") if primary in c]
    assert len(mine) == 1, mine
    assert "BEGIN:VCARD" in mine[0] and "Petrova" in mine[0] and "Chief Accountant" in mine[0], mine[0]
    assert not [c for c in gal_cards(*mailbox("galreader")) if mail_domain in c]


def test_directory_group_members_are_panel_administrators(node, ad, ad_bound):
    from rupost.services.admins import AuthenticationError

    name, mail_domain = ad_bound
    boss, helper, nobody = _login("boss"), _login("help"), _login("nob")
    dns = {}
    for login in (boss, helper, nobody):
        dns[login], _ = ad.add_user(login, f"{login}@{mail_domain}", f"Adm-{login}")
    admins_group = ad.add_group(f"mail-admins-{boss}", [dns[boss]])
    helpers_group = ad.add_group(f"mail-helpers-{helper}", [dns[helper]])
    d = node.app.directories
    d.admin_map_add(name, "group", admins_group, "superadmin")
    d.admin_map_add(name, "group", helpers_group, "domain_admin", [mail_domain])
    with pytest.raises(ValidationError, match="needs at least one mail domain"):
        d.admin_map_add(name, "group", helpers_group, "domain_admin")
    assert d.authenticate_admin(f"{boss}@{mail_domain}", f"Adm-{boss}") == ("superadmin", [])
    assert d.authenticate_admin(boss, f"Adm-{boss}") == ("superadmin", [])  # the directory login works too
    assert d.authenticate_admin(helper, f"Adm-{helper}") == ("domain_admin", [mail_domain])
    assert d.authenticate_admin(boss, "wrong") is None
    assert d.authenticate_admin(nobody, f"Adm-{nobody}") is None  # valid password, no role
    assert d.authenticate_admin(boss, "") is None
    # through the panel's login (lockout, audit, the stored row)
    identity = node.app.admins.login(boss, f"Adm-{boss}", "127.0.0.1")
    assert identity.role == "superadmin" and identity.source == "ldap"
    with pytest.raises(AuthenticationError):
        node.app.admins.login(nobody, f"Adm-{nobody}", "127.0.0.1")
    # disabled in the directory: no longer an administrator
    ad.set_disabled(dns[boss], True)
    assert d.authenticate_admin(boss, f"Adm-{boss}") is None


def test_directory_user_logs_in_to_sogo_with_the_directory_password(node, ad, ad_bound):
    import base64

    from adapters.probes import https_request

    name, mail_domain = ad_bound
    login = _login("web")
    primary = f"{login}@{mail_domain}"
    dn, _ = ad.add_user(login, primary, "Web-pass-123")
    node.app.directories.sync(name)

    def propfind(password):
        auth = "Basic " + base64.b64encode(f"{primary}:{password}".encode()).decode()
        status, _, body = https_request("127.0.0.1", node.ports["https"], "PROPFIND", f"/SOGo/dav/{primary}/Calendar/",
                                        headers={"Authorization": auth, "Depth": "0"})
        return status

    assert propfind("Web-pass-123") == 207
    assert propfind("Wrong-pass-1") == 401
    assert propfind(f"!directory:{name}") == 401
    ad.set_disabled(dn, True)
    node.app.directories.sync(name)  # flushes SOGo's cached logins
    assert propfind("Web-pass-123") == 401


def test_every_ldap_passdb_names_one_ca_bundle_regression_libldap_global_tls():
    """libldap's TLS options are process-wide: with one CA file per passdb the last one
    configured won for all directories and the others failed certificate checks."""
    from pathlib import Path

    from adapters.base import RenderContext
    from adapters.dovecot import render_ldap_passdbs
    from rupost.config import DatabaseSettings, NodeConfig
    from rupost.paths import Layout

    ctx = RenderContext(Layout.at("/x"), NodeConfig(database=DatabaseSettings()), DatabaseSettings(), Path("/gen"))
    base = {"bind_dn": "cn=svc,dc=a", "bind_password": "p#w", "base": "dc=a", "filter": "(mail=%Lu)"}
    lines, files = render_ldap_passdbs([
        {**base, "name": "one", "uris": ["ldaps://a:636"], "ca_pem": "CA-ONE", "domains": ["a.test"]},
        {**base, "name": "two", "uris": ["ldap://b:389"], "starttls": True, "ca_pem": "CA-TWO",
         "domains": ["b.test", "c.test"]}], ctx)
    by_name = {f.path: f.content for f in files}
    assert by_name["ldap-ca.pem"] == "CA-ONE\nCA-TWO\n"
    for name in ("one", "two"):
        conf = by_name[f"dovecot-ldap-{name}.conf.ext"]
        assert "tls_ca_cert_file = /gen/dovecot/ldap-ca.pem" in conf and "auth_bind = yes" in conf
        assert 'dnpass = "p#w"' in conf  # a '#' would start a comment
    assert "tls = yes" in by_name["dovecot-ldap-two.conf.ext"]
    assert "  username_filter = *@b.test *@c.test" in lines
    with pytest.raises(ValueError, match="line break"):
        render_ldap_passdbs([{**base, "name": "x", "uris": ["ldaps://a"], "domains": ["a.test"],
                              "bind_password": "a\nb"}], ctx)


def test_impersonation_account_opens_a_directory_users_mailbox(node, ad, ad_bound):
    """A directory user's passdb is an LDAP bind, which cannot look a user up without the
    password: the master login must rely on the userdb (the materialised mailbox)."""
    from test_impersonation import _login as imp_login, _make_live

    name, mail_domain = ad_bound
    login = _login("imp")
    primary = f"{login}@{mail_domain}"
    ad.add_user(login, primary, "Imp-target-1")
    node.app.directories.sync(name)
    subject = f"for the archive {uuid.uuid4().hex}"
    with smtp(node.ports["smtp"]) as client:
        client.send_message(message("someone@example.org", primary, subject))
    wait_for_subject(node.ports["imaps"], primary, "Imp-target-1", subject)
    account = f"arch{uuid.uuid4().hex[:6]}"
    node.app.impersonation.add(account, "Archive-secret-1", [mail_domain])
    _make_live(node)
    imap = imp_login(node, f"{primary}*{account}", "Archive-secret-1")
    try:
        imap.select("INBOX")
        _, found = imap.search(None, "SUBJECT", f'"{subject}"')
        assert found[0].split()
    finally:
        imap.logout()
    assert [u["target"] for u in node.app.impersonation.uses(account)] == [primary]
    node.app.impersonation.remove(account)


def test_sogo_source_filter_is_the_ldap_filter_as_an_eoqualifier():
    """SOGo's LDAP sources take an EOQualifier and write it back as the LDAP filter, keys and
    values verbatim: every construct of the account filters has a faithful spelling."""
    from adapters.sogo import source_filter
    from rupost.ldap.client import eoqualifier

    flt = source_filter({"filter": "(&(objectClass=user)(|(dept=mail)(dept=mail-*)(cn=O'B\\2a*))"
                                   "(!(userAccountControl:1.2.840.113556.1.4.803:=2))(uid=*))",
                         "domains": ["a.test", "b*.test"]})
    assert flt.endswith("(|(mail=*@a.test)(mail=*@b\\2a.test)))")
    assert eoqualifier(flt) == (
        """((("objectClass" = 'user') AND (("dept" = 'mail') OR ("dept" = 'mail-*') OR ("cn" = 'O\\27B\\2a*')) """
        """AND (NOT ("userAccountControl:1.2.840.113556.1.4.803:" = '2')) AND ("uid" = '*')) """
        """AND (("mail" = '*@a.test') OR ("mail" = '*@b\\2a.test')))""")
    assert eoqualifier("(:dn:2.5.13.5:=x)") == """(":dn:2.5.13.5:" = 'x')"""
    assert eoqualifier("(n>=5)") == """("n" >= '5')"""


def test_sogo_applies_the_directory_user_filter(node, ad, ad_bound):
    """Only the accounts the LDAP domain's user filter selects may log in, in SOGo as in
    dovecot: SOGo's source filter (an EOQualifier) is the domain's whole LDAP filter."""
    import base64

    from adapters.probes import https_request

    mail_domain = f"flt{uuid.uuid4().hex[:8]}.test"
    node.app.domains.add(mail_domain)
    name = f"flt{uuid.uuid4().hex[:6]}"
    node.app.directories.add(name, "ad", [ad.ldaps_uri], ad.users_dn, ad.service_dn, ad.service_password,
                             ca_pem=ad.ca_pem, mail_domains=[mail_domain],
                             user_filter="(|(departmentNumber=mail)(departmentNumber=mail-*))")
    try:
        _deploy(node)
        users = {}
        for dept in ("mail", "mail-north", "sales"):
            login = _login("f")
            users[dept] = (f"{login}@{mail_domain}", f"Pw-{login}-1")
            ad.add_user(login, users[dept][0], users[dept][1], departmentNumber=dept)
        node.app.directories.sync(name)

        def propfind(address, password):
            auth = "Basic " + base64.b64encode(f"{address}:{password}".encode()).decode()
            return https_request("127.0.0.1", node.ports["https"], "PROPFIND", f"/SOGo/dav/{address}/Calendar/",
                                 headers={"Authorization": auth, "Depth": "0"})[0]

        assert {dept: propfind(*users[dept]) for dept in users} == {"mail": 207, "mail-north": 207, "sales": 401}
    finally:
        node.app.directories.remove(name, force=True)
        _deploy(node)
