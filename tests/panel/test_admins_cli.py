"""`rupost admins ...` and the wizard's default administrator, through the service layer."""
from __future__ import annotations

import json
import uuid

from click.testing import CliRunner

from rupost.cli import main as rupost
from rupost.services.admins import AdminIdentity, Authenticator


def cli(node, *args, input=None):
    return CliRunner().invoke(rupost, ["--root", str(node.root), *args], input=input)


def test_admins_add_list_passwd_set_role_remove(node, domain):
    login = f"cli-{uuid.uuid4().hex[:6]}"
    r = cli(node, "admins", "add", login, "--role", "domain_admin", "--domain", domain, "--password-stdin",
            input="cli-password-1\n")
    assert r.exit_code == 0, r.output
    listed = {a["login"]: a for a in json.loads(cli(node, "admins", "list", "--json").output)}
    assert listed[login]["role"] == "domain_admin" and listed[login]["domains"] == [domain]
    assert node.app.admins.login(login, "cli-password-1", "192.0.2.10").domains == (domain,)
    assert cli(node, "admins", "passwd", login, "--password-stdin", input="cli-password-2\n").exit_code == 0
    assert node.app.admins.login(login, "cli-password-2", "192.0.2.10").login == login
    r = cli(node, "admins", "set-role", login, "readonly")
    assert r.exit_code == 0 and "readonly" in r.output
    r = cli(node, "admins", "set-role", login, "domain_admin")
    assert r.exit_code == 1 and "at least one domain" in r.output
    r = cli(node, "admins", "set-role", login, "domain_admin", "--domain", "missing-domain.test")
    assert r.exit_code == 1 and "do not exist" in r.output
    assert cli(node, "admins", "remove", login).exit_code == 0
    r = cli(node, "admins", "remove", login)
    assert r.exit_code == 1 and "does not exist" in r.output


def test_bad_input_is_named(node):
    r = cli(node, "admins", "add", "bad login!", "--password-stdin", input="password-123\n")
    assert r.exit_code == 1 and "invalid administrator login" in r.output
    r = cli(node, "admins", "add", f"short-{uuid.uuid4().hex[:4]}", "--password-stdin", input="short\n")
    assert r.exit_code == 1 and "too short" in r.output
    r = cli(node, "admins", "add", f"x-{uuid.uuid4().hex[:4]}", "--role", "readonly", "--domain", "a.test",
            "--password-stdin", input="password-123\n")
    assert r.exit_code == 1 and "only a domain_admin" in r.output


def test_last_superadmin_cannot_be_removed_or_demoted(node):
    login = f"only-{uuid.uuid4().hex[:6]}"
    node.app.admins.add(login, "password-123", "superadmin")
    others = [a["login"] for a in node.app.admins.list()
              if a["role"] == "superadmin" and a["enabled"] and a["login"] != login]
    for other in others:
        node.app.admins.set_enabled(other, False)
    try:
        for args in (("remove", login), ("set-role", login, "readonly")):
            r = cli(node, "admins", *args)
            assert r.exit_code == 1 and "last superadmin" in r.output, args
    finally:
        for other in others:
            node.app.admins.set_enabled(other, True)
    if others:  # with other superadmins enabled again it can go (else it stays: the last one)
        assert cli(node, "admins", "remove", login).exit_code == 0


def test_wizard_creates_the_default_administrator_once(node, monkeypatch):
    from wizard.cli import ADMIN_PASSWORD_ENV, _default_administrator

    login = f"wiz-{uuid.uuid4().hex[:6]}"
    monkeypatch.delenv(ADMIN_PASSWORD_ENV, raising=False)
    try:
        _default_administrator(node.layout, login)
        raise AssertionError("no password: must fail")
    except Exception as exc:
        assert ADMIN_PASSWORD_ENV in str(exc)
    monkeypatch.setenv(ADMIN_PASSWORD_ENV, "wizard-password-1")
    assert "created" in _default_administrator(node.layout, login)
    monkeypatch.setenv(ADMIN_PASSWORD_ENV, "another-password")
    assert "kept" in _default_administrator(node.layout, login)
    assert node.app.admins.login(login, "wizard-password-1", "192.0.2.11").role == "superadmin"
    node.app.admins.remove(login)


def test_a_plugged_in_authenticator_logs_in_and_its_role_is_kept(node, domain):
    """The interface the LDAP engineer implements: an identity from elsewhere becomes a panel_admins row."""

    class Directory(Authenticator):
        name = "ldap"

        def authenticate(self, login, password):
            if login == "ldap-user" and password == "directory-secret":
                return AdminIdentity(login=login, role="domain_admin", domains=(domain,), source="ldap")
            return None

    admins = type(node.app.admins)(node.app)
    admins.register_authenticator(Directory())
    identity = admins.login("ldap-user", "directory-secret", "192.0.2.12")
    assert identity.source == "ldap" and identity.domains == (domain,)
    assert node.app.admins.show("ldap-user")["source"] == "ldap"
    assert node.app.admins.identity("ldap-user").role == "domain_admin"
    node.app.admins.remove("ldap-user")


def test_a_directory_password_never_opens_a_local_account_of_the_same_name(node):
    local = f"same-{uuid.uuid4().hex[:6]}"
    node.app.admins.add(local, "local-password-1", "superadmin")

    class Directory(Authenticator):
        name = "ldap"

        def authenticate(self, login, password):
            if password == "directory-secret":
                return AdminIdentity(login=login, role="readonly", source="ldap")
            return None

    admins = type(node.app.admins)(node.app)
    admins.register_authenticator(Directory())
    try:
        admins.login(local, "directory-secret", "192.0.2.13")
        raise AssertionError("a directory password opened the local account")
    except Exception as exc:
        assert "wrong login" in str(exc)
    assert node.app.admins.show(local)["source"] == "local" and node.app.admins.show(local)["role"] == "superadmin"
    assert admins.login(local, "local-password-1", "192.0.2.13").source == "local"
    if len([a for a in node.app.admins.list() if a["role"] == "superadmin" and a["enabled"]]) > 1:
        node.app.admins.remove(local)  # (kept when it is the only superadmin of the test database)


def test_admins_disable_and_enable(node):
    login = f"cli-{uuid.uuid4().hex[:6]}"
    node.app.admins.add(login, "cli-password-1", "readonly")
    assert cli(node, "admins", "disable", login).exit_code == 0
    assert node.app.admins.identity(login) is None
    assert cli(node, "admins", "enable", login).exit_code == 0
    assert node.app.admins.identity(login).login == login
    r = cli(node, "admins", "disable", "nobody-" + login)
    assert r.exit_code == 1 and "does not exist" in r.output
    node.app.admins.remove(login)
