"""rupost panel rotate-session-key (issue 26): every session ends at its next request, a
cookie signed with the old key opens nothing, even one forged to look newer than the rotation;
logging in again works; the rotation is journaled and refused to a domain administrator."""
from __future__ import annotations

import hashlib
import time

import pytest
from click.testing import CliRunner
from flask.json.tag import TaggedJSONSerializer
from itsdangerous import URLSafeTimedSerializer

from rupost.cli import main as rupost
from rupost.errors import PermissionDeniedError

from .conftest import audit_rows


def _forged(key: str, login: str) -> str:
    """A session cookie as Flask signs it, with `key`, started in the future."""
    signer = URLSafeTimedSerializer(key, salt="cookie-session", serializer=TaggedJSONSerializer(),
                                    signer_kwargs={"key_derivation": "hmac", "digest_method": hashlib.sha1})
    now = time.time() + 60
    return signer.dumps({"login": login, "started": now, "seen": now, "csrf": "forged"})


def _status(client, cookie: str | None = None) -> int:
    if cookie is not None:
        client.http.set_cookie("rupost_panel", cookie, domain="localhost")
    return client.get("/account").status_code


def test_rotation_ends_every_session_and_old_key_cookies(admin_factory, make_client, node, panel_app):
    login = admin_factory("superadmin")
    client = make_client()
    client.login(login)
    assert _status(client) == 200
    old_key = panel_app.secret_key
    assert _status(make_client(), _forged(old_key, login)) == 200  # what a leaked key gives today

    r = CliRunner().invoke(rupost, ["--root", str(node.root), "panel", "rotate-session-key"])
    assert r.exit_code == 0, r.output
    assert "sessions of" in r.output and audit_rows(node, "panel.rotate_session_key")

    assert _status(client) == 302  # the open session: back to the login page
    assert panel_app.secret_key != old_key
    assert _status(make_client(), _forged(old_key, login)) == 302
    again = make_client()
    again.login(login)
    assert _status(again) == 200


def test_domain_administrator_cannot_rotate(node):
    from rupost.services import Actor

    scoped = node.app.as_actor(Actor("domainadmin", source="panel", domains=frozenset({"example.test"})))
    with pytest.raises(PermissionDeniedError):
        scoped.admins.rotate_session_key()
