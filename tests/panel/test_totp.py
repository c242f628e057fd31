"""The second factor cannot be stripped with a session alone, nor a code replayed (issue 26).

Codes are taken for the current time-step and the next one: the service accepts one step
either side of now, so a test that crosses a 30-second boundary still uses valid codes."""
from __future__ import annotations

import time

import pyotp
from click.testing import CliRunner

from rupost.cli import main as rupost

from .conftest import PASSWORD, audit_rows, text


def _enable(node, login: str) -> pyotp.TOTP:
    """A second factor for `login`, confirmed with the current code (which is then spent)."""
    secret = node.app.admins.new_totp_secret()
    totp = pyotp.TOTP(secret)
    node.app.admins.enable_totp(login, secret, totp.now())
    return totp


def _next_code(totp: pyotp.TOTP) -> str:
    return totp.at(time.time() + 30)


def test_account_page_removal_needs_the_password_and_a_fresh_code(admin_factory, make_client, node):
    login = admin_factory("readonly")
    client = make_client()
    client.login(login)  # a session opened before: what a stolen session cookie gives
    totp = _enable(node, login)
    used = totp.now()

    def remove(**form):
        client.post("/account", {"action": "totp-disable", **form})
        return node.app.admins.show(login)["totp"]

    # four refusals: a fifth would lock the login out (panel.lockout_user_failures), as at login
    assert remove(code=_next_code(totp)) is True  # no password
    assert remove(password=PASSWORD) is True  # no code
    assert remove(password="wrong-password", code=_next_code(totp)) is True
    assert remove(password=PASSWORD, code=used) is True  # the code that enabled it is spent
    assert len(audit_rows(node, "admin.totp_disable.refused", login)) == 4
    page = text(client.get("/account"))
    assert "password or the code is wrong" in page
    assert remove(password=PASSWORD, code=_next_code(totp)) is False
    (record,) = audit_rows(node, "admin.totp_disable", login)
    assert record.actor == login and record.source == "panel" and record.details["by"] == "self"


def test_enabling_does_not_replace_a_factor_already_set(admin_factory, node):
    login = admin_factory("readonly")
    _enable(node, login)
    other = pyotp.TOTP(node.app.admins.new_totp_secret())
    try:
        node.app.admins.enable_totp(login, other.secret, other.now())
        raise AssertionError("a second factor was replaced without the current one")
    except Exception as exc:
        assert "already has a second factor" in str(exc)


def test_superadmin_resets_another_administrators_factor_on_its_page(superadmin, admin_factory, node):
    login = admin_factory("readonly")
    _enable(node, login)
    superadmin.post(f"/admins/{login}/totp-reset")
    assert node.app.admins.show(login)["totp"] is False
    (record,) = audit_rows(node, "admin.totp_reset", login)
    assert record.source == "panel" and record.details["by"] == record.actor and record.actor != login


def test_only_a_superadmin_resets_and_not_its_own(admin_factory, make_client, readonly, node):
    login = admin_factory("readonly")
    _enable(node, login)
    assert readonly.post(f"/admins/{login}/totp-reset").status_code == 403
    assert node.app.admins.show(login)["totp"] is True
    boss = admin_factory("superadmin")
    client = make_client()
    client.login(boss)
    _enable(node, boss)
    client.post(f"/admins/{boss}/totp-reset")
    assert node.app.admins.show(boss)["totp"] is True
    assert "Account page" in text(client.get("/admins/"))


def test_cli_totp_reset_is_journaled(admin_factory, node):
    login = admin_factory("readonly")
    _enable(node, login)
    r = CliRunner().invoke(rupost, ["--root", str(node.root), "admins", "totp-reset", login])
    assert r.exit_code == 0, r.output
    assert node.app.admins.show(login)["totp"] is False
    (record,) = audit_rows(node, "admin.totp_reset", login)
    assert record.source == "cli"
    r = CliRunner().invoke(rupost, ["--root", str(node.root), "admins", "totp-reset", login])
    assert r.exit_code == 1 and "no second factor" in r.output


def test_a_code_is_accepted_once_at_login(admin_factory, make_client, node):
    login = admin_factory("readonly")
    totp = _enable(node, login)
    spent = totp.now()
    make_client().login(login, totp=spent, expect=401)  # spent when the factor was enabled
    code = _next_code(totp)
    make_client().login(login, totp=code)
    make_client().login(login, totp=code, expect=401)  # replayed
    reasons = [r.details["reason"] for r in audit_rows(node, "panel.login.failed", login)]
    assert reasons == ["second factor code already used"] * 2


# ---------------------------------------------------------------- administrator passwords: Argon2id

def _stored_hash(node, login: str) -> str:
    from sqlalchemy import select

    from rupost.db.panel_models import PanelAdmin

    with node.app.dbs.session("main") as s:
        return s.scalar(select(PanelAdmin.password_hash).where(PanelAdmin.login == login))


def test_a_new_administrator_gets_an_argon2id_hash(admin_factory, node):
    login = admin_factory("readonly")
    assert _stored_hash(node, login).startswith("$argon2id$")
    node.app.admins.set_password(login, "another-Secret-1")
    assert _stored_hash(node, login).startswith("$argon2id$")


def test_an_old_sha512_crypt_administrator_logs_in_and_is_rehashed(admin_factory, make_client, node):
    from sqlalchemy import update

    from rupost.db.panel_models import PanelAdmin
    from rupost.passwords import hash_password

    login = admin_factory("readonly")
    old = hash_password(PASSWORD)  # what every administrator had before Argon2id
    with node.app.dbs.session("main") as s:
        s.execute(update(PanelAdmin).where(PanelAdmin.login == login).values(password_hash=old))
    make_client().login(login, password="wrong-password", expect=401)
    assert _stored_hash(node, login) == old  # a wrong password changes nothing
    make_client().login(login)
    new = _stored_hash(node, login)
    assert new.startswith("$argon2id$")
    make_client().login(login)  # and the new hash verifies
    assert _stored_hash(node, login) == new
