"""Distribution lists against a real slapd and the real mail stack: static and dynamic
members, the updater's safety rules, sender policy, filter validation and escaping."""
from __future__ import annotations

import smtplib
import uuid

import pytest

from mailclients import message, smtp, smtps, wait_for_subject
from rupost.ldap import client as dl
from rupost.errors import ConflictError, NotFoundError, ValidationError
from support.slapd import TempSlapd
from test_directories import _deploy, _register


@pytest.fixture(scope="module")
def ad(workdir):
    server = TempSlapd(workdir / f"slapd-lists-{uuid.uuid4().hex[:6]}", "ad").start()
    yield server
    server.destroy()


@pytest.fixture(scope="module")
def bound(node, ad):
    name, mail_domain = _register(node, ad, "ad")
    _deploy(node)
    yield name, mail_domain
    for item in node.app.distribution_lists.list(mail_domain):
        node.app.distribution_lists.remove(item["address"])
    for f in node.app.ldap_filters.list():
        if f["ldap_domain"] == name:
            node.app.ldap_filters.remove(f["name"])
    node.app.directories.remove(name, force=True)


def _users(node, ad, bound, departments):
    """One directory user per department entry; synced; returns [(address, password, dn)]."""
    name, mail_domain = bound
    out = []
    for dept in departments:
        login = f"m{uuid.uuid4().hex[:8]}"
        address, password = f"{login}@{mail_domain}", f"Pw-{uuid.uuid4().hex[:10]}"
        dn, _ = ad.add_user(login, address, password, department=dept)
        out.append((address, password, dn))
    node.app.directories.sync(name)
    return out


def test_filters_are_validated_and_user_input_is_escaped(node, bound):
    name, _ = bound
    f = node.app.ldap_filters
    for bad, why in [("department=Sales", "enclosed in parentheses"), ("(department=Sales", "unclosed"),
                     ("(department=Sales))", "unbalanced"), ("(&(a=b)(c=d)", "unclosed"), ("(|)", "malformed"),
                     ("(!(a=b)(c=d))", "malformed"), ("(a b=c)", "not an attribute name"),
                     ("(department=)", "has no value"), ("(cn=a\\zz)", "two hex digits"), ("", "empty")]:
        with pytest.raises(ValidationError, match=why):
            f.add(f"bad{uuid.uuid4().hex[:6]}", name, bad)
    assert all(not x["name"].startswith("bad") for x in f.list())
    # values that come from user input never change a filter's structure
    assert dl.escape("*)(uid=*") == "\\2a\\29\\28uid=\\2a"
    assert dl.escape("a\\b") == "a\\5cb"
    # an administrator login is escaped before it goes into the directory search
    assert node.app.directories.authenticate_admin("*)(objectClass=*", "x") is None


def test_dynamic_list_delivers_to_exactly_the_matching_users_and_follows_changes(node, ad, bound):
    name, mail_domain = bound
    tag = uuid.uuid4().hex[:6]
    sales_a, sales_b, other = _users(node, ad, bound, [f"Sales{tag}", f"Sales{tag}", f"Support{tag}"])
    filter_name = f"sales-{tag}"
    node.app.ldap_filters.add(filter_name, name, f"(department=Sales{tag})")
    preview = node.app.ldap_filters.test(filter_name)
    assert sorted(preview["sample"]) == sorted([sales_a[0], sales_b[0]])
    address = f"sales-{tag}@{mail_domain}"
    created = node.app.distribution_lists.add(address, filter_name=filter_name)
    assert created["update"]["status"] == "updated" and created["update"]["members"] == 2
    subject = f"list {uuid.uuid4().hex}"
    with smtp(node.ports["smtp"]) as client:
        assert client.send_message(message("someone@example.org", address, subject)) == {}
    for addr, pw, _ in (sales_a, sales_b):
        wait_for_subject(node.ports["imaps"], addr, pw, subject)
    with pytest.raises(AssertionError):
        wait_for_subject(node.ports["imaps"], other[0], other[1], subject, timeout=2)
    # membership change in the directory, then an updater run
    ad.replace(other[2], department=f"Sales{tag}")
    ad.replace(sales_b[2], department=f"Marketing{tag}")
    (result,) = node.app.distribution_lists.update(address)
    assert result["status"] == "updated" and (result["added"], result["dropped"]) == (1, 1)
    members = {m["address"] for m in node.app.distribution_lists.show(address)["members"]}
    assert members == {sales_a[0], other[0]}
    subject2 = f"list2 {uuid.uuid4().hex}"
    with smtp(node.ports["smtp"]) as client:
        client.send_message(message("someone@example.org", address, subject2))
    wait_for_subject(node.ports["imaps"], other[0], other[1], subject2)
    wait_for_subject(node.ports["imaps"], sales_a[0], sales_a[1], subject2)
    with pytest.raises(AssertionError):
        wait_for_subject(node.ports["imaps"], sales_b[0], sales_b[1], subject2, timeout=2)
    # the filter is in use: it cannot be removed from under the list
    with pytest.raises(ConflictError):
        node.app.ldap_filters.remove(filter_name)


def test_list_keeps_its_members_while_the_directory_is_down(node, workdir):
    server = TempSlapd(workdir / f"slapd-down-{uuid.uuid4().hex[:6]}", "ad").start()
    try:
        name, mail_domain = _register(node, server, "ad")
        _deploy(node)
        users = _users(node, server, (name, mail_domain), ["Ops", "Ops"])
        node.app.ldap_filters.add(f"ops-{name}", name, "(department=Ops)")
        address = f"ops@{mail_domain}"
        node.app.distribution_lists.add(address, filter_name=f"ops-{name}")
        server.stop()
        (result,) = node.app.distribution_lists.update(address)
        assert result["status"] == "kept" and "no server could be used" in result["error"]
        assert len(node.app.distribution_lists.show(address)["members"]) == 2
        subject = f"down {uuid.uuid4().hex}"
        with smtp(node.ports["smtp"]) as client:
            assert client.send_message(message("someone@example.org", address, subject)) == {}
        # delivery needs no directory (materialised); reading does (bind): start it again;
        # dovecot reconnects to the directory on its next lookups
        server.start()
        _wait_until_login_works(node, users[0][0], users[0][1])
        for addr, pw, _ in users:
            wait_for_subject(node.ports["imaps"], addr, pw, subject)
        assert node.app.distribution_lists.show(address)["last_update_status"].startswith("kept")
        node.app.distribution_lists.remove(address)
        node.app.ldap_filters.remove(f"ops-{name}")
        node.app.directories.remove(name, force=True)
    finally:
        server.destroy()


def _wait_until_login_works(node, user, password, timeout=30):
    import imaplib
    import random
    import time

    from mailclients import IMAPSFrom

    deadline = time.monotonic() + timeout
    while True:
        imap = IMAPSFrom("127.0.0.1", node.ports["imaps"], f"127.0.{random.randint(64, 250)}.{random.randint(2, 250)}")
        try:
            imap.login(user, password)
            imap.logout()
            return
        except imaplib.IMAP4.error:
            imap.shutdown()
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


def test_update_refuses_to_drop_most_members(node, ad, bound):
    name, mail_domain = bound
    tag = uuid.uuid4().hex[:6]
    users = _users(node, ad, bound, [f"Big{tag}"] * 8)
    node.app.ldap_filters.add(f"big-{tag}", name, f"(department=Big{tag})")
    address = f"big-{tag}@{mail_domain}"
    node.app.distribution_lists.add(address, filter_name=f"big-{tag}")
    for _, _, dn in users[:6]:
        ad.replace(dn, department=f"Left{tag}")
    (result,) = node.app.distribution_lists.update(address)
    assert result["status"] == "refused" and "would drop 6 of 8" in result["error"]
    assert len(node.app.distribution_lists.show(address)["members"]) == 8
    journal = [(r["action"], r["target"]) for r in node.app.audit.recent(10)]
    assert ("distribution_list.update.refused", address) in journal
    # a per-list share lets it through; so does --force
    node.app.distribution_lists.set(address, max_drop_share=0.8)
    (result,) = node.app.distribution_lists.update(address)
    assert result["status"] == "updated" and len(node.app.distribution_lists.show(address)["members"]) == 2


def test_static_list_with_external_member_and_internal_sender_policy(node, ad, bound, mailbox):
    name, mail_domain = bound
    (member,) = _users(node, ad, bound, ["Static"])
    local, local_pw = mailbox("local")
    address = f"static-{uuid.uuid4().hex[:6]}@{mail_domain}"
    node.app.distribution_lists.add(address, members=[member[0], local, "partner@external.example"],
                                    sender_policy="internal")
    with pytest.raises(ConflictError):
        node.app.distribution_lists.add(member[0])
    # from outside (port 25, unauthenticated): refused at RCPT
    with smtp(node.ports["smtp"]) as client:
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            client.send_message(message("someone@example.org", address, "outside"))
    # from a logged-in user: delivered to the local members (the external one is relayed)
    subject = f"inside {uuid.uuid4().hex}"
    with smtps(node.ports["submissions"]) as client:
        client.login(member[0], member[1])
        assert client.send_message(message(member[0], address, subject)) == {}
    wait_for_subject(node.ports["imaps"], local, local_pw, subject)
    wait_for_subject(node.ports["imaps"], member[0], member[1], subject)
    assert node.app.distribution_lists.remove_members(address, ["partner@external.example"]) == 1
    with pytest.raises(NotFoundError):
        node.app.distribution_lists.remove_members(address, ["nobody@external.example"])


def test_cli_lists_and_filters(node, ad, bound):
    from click.testing import CliRunner

    from rupost.cli import main

    name, mail_domain = bound
    runner = CliRunner()
    root = ["--root", str(node.root)]
    tag = uuid.uuid4().hex[:6]
    _users(node, ad, bound, [f"Cli{tag}"])
    r = runner.invoke(main, root + ["ldap-filters", "add", f"cli-{tag}", "(department=Cli", "--ldap-domain", name])
    assert r.exit_code == 1 and "unclosed" in r.output
    r = runner.invoke(main, root + ["ldap-filters", "add", f"cli-{tag}", f"(department=Cli{tag})",
                                    "--ldap-domain", name])
    assert r.exit_code == 0, r.output
    r = runner.invoke(main, root + ["ldap-filters", "test", f"cli-{tag}"])
    assert r.exit_code == 0 and "1 user(s)" in r.output
    r = runner.invoke(main, root + ["distribution-lists", "add", f"cli-{tag}@{mail_domain}", "--filter", f"cli-{tag}"])
    assert r.exit_code == 0 and "updated 1" in r.output, r.output
    r = runner.invoke(main, root + ["distribution-lists", "update", f"cli-{tag}@{mail_domain}"])
    assert r.exit_code == 0 and "unchanged" in r.output
    r = runner.invoke(main, root + ["ldap-domains", "test", name])
    assert r.exit_code == 0 and "bind: ok" in r.output and "base DN: ok" in r.output


def test_cli_ldap_domain_add_test_and_updater(node, ad, tmp_path):
    from click.testing import CliRunner

    from rupost.cli import main

    runner = CliRunner()
    root = ["--root", str(node.root)]
    mail_domain = f"cli{uuid.uuid4().hex[:8]}.test"
    node.app.domains.add(mail_domain)
    name = f"cli{uuid.uuid4().hex[:6]}"
    ca = tmp_path / "ca.pem"
    ca.write_text(ad.ca_pem)
    add = ["ldap-domains", "add", name, "--type", "ad", "--uri", ad.ldaps_uri, "--base-dn", ad.users_dn,
           "--bind-dn", ad.service_dn, "--bind-password-stdin", "--mail-domain", mail_domain]
    r = runner.invoke(main, root + add + ["--ca-file", str(tmp_path / "missing.pem")], input="x\n")
    assert r.exit_code == 1 and "cannot read the CA file" in r.output
    r = runner.invoke(main, root + add + ["--ca-file", str(ca)], input="wrong\n")
    assert r.exit_code == 1 and "invalid credentials" in r.output, r.output
    r = runner.invoke(main, root + add + ["--ca-file", str(ca)], input=ad.service_password + "\n")
    assert r.exit_code == 0 and "rupost deploy" in r.output, r.output
    r = runner.invoke(main, root + ["ldap-domains", "set", name, "--bind-password-stdin"], input="wrong\n")
    assert r.exit_code == 0
    r = runner.invoke(main, root + ["ldap-domains", "test", name])
    assert r.exit_code == 1 and "bind: FAILED" in r.output and "invalid credentials" in r.output
    r = runner.invoke(main, root + ["ldap-domains", "set", name, "--bind-password-stdin"],
                      input=ad.service_password + "\n")
    ad.add_user(f"c{uuid.uuid4().hex[:6]}", f"someone{uuid.uuid4().hex[:4]}@{mail_domain}", "Cli-pass-1")
    r = runner.invoke(main, root + ["distribution-lists", "update-all"])
    assert f"ldap-domain {name}: synced" in r.output, r.output
    assert len(node.app.directories.accounts(name)) == 1
    r = runner.invoke(main, root + ["ldap-domains", "remove", name])
    assert r.exit_code == 1 and "--force" in r.output
    r = runner.invoke(main, root + ["ldap-domains", "remove", name, "--force"])
    assert r.exit_code == 0 and "1 mailbox(es) disabled" in r.output


def test_an_alias_cannot_take_a_list_address(node, ad, bound, mailbox):
    """Aliases and lists answer through one lookup (lookup_virtual): one address, one meaning."""
    _, mail_domain = bound
    local, _ = mailbox("aliased")
    address = f"team-{uuid.uuid4().hex[:6]}@{mail_domain}"
    node.app.distribution_lists.add(address, members=[local])
    with pytest.raises(ConflictError, match="already a distribution list"):
        node.app.aliases.add(address, [local])


def test_a_directory_group_member_of_a_shared_mailbox_follows_the_directory(node, ad, bound):
    """An LDAP group (a dynamic list) as a member of a shared mailbox: after the updater
    follows a change in the directory, the newcomer opens the shared mailbox at its next
    login and the one who left no longer does; nothing else is run (issue 29)."""
    from mailclients import IMAPSFrom

    name, mail_domain = bound
    tag = uuid.uuid4().hex[:6]
    inside, outside = _users(node, ad, bound, [f"Desk{tag}", f"Other{tag}"])
    node.app.ldap_filters.add(f"desk-{tag}", name, f"(department=Desk{tag})")
    group = f"desk-{tag}@{mail_domain}"
    node.app.distribution_lists.add(group, filter_name=f"desk-{tag}")
    shared = f"helpdesk-{tag}@{mail_domain}"
    node.app.shared_mailboxes.add(shared)
    node.app.shared_mailboxes.set_member(shared, group, "read")

    def opens(user) -> bool:
        session = IMAPSFrom("127.0.0.1", node.ports["imaps"])
        try:
            session.login(user[0], user[1])
            return session.select(f'"Shared/{shared}"')[0] == "OK"
        finally:
            session.logout()

    assert opens(inside) and not opens(outside)
    ad.replace(outside[2], department=f"Desk{tag}")
    ad.replace(inside[2], department=f"Other{tag}")
    (result,) = node.app.distribution_lists.update(group)
    assert result["status"] == "updated", result
    assert opens(outside) and not opens(inside)
    node.app.shared_mailboxes.remove(shared)
    node.app.distribution_lists.remove(group)
    node.app.ldap_filters.remove(f"desk-{tag}")
