"""Webmail and CalDAV through HAProxy -> nginx (TLS) -> SOGo."""
from __future__ import annotations

import base64
import urllib.parse
import uuid

import pytest

from adapters.probes import https_request
from rupost.deploy.plan import build_models


def _auth(user: str, password: str) -> dict:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def test_webmail_login_page_answers(node):
    status, headers, body = https_request("127.0.0.1", node.ports["https"], "GET", "/SOGo/",
                                          headers={"User-Agent": "Mozilla/5.0 Firefox/128.0"})
    assert status == 200
    assert b"SOGo" in body
    assert "max-age=" in headers.get("strict-transport-security", "")


def test_http_redirects_to_https(node):
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", node.ports["http"], timeout=10)
    conn.request("GET", "/SOGo/", headers={"Host": "mail.rupost.test"})
    resp = conn.getresponse()
    assert resp.status == 301
    assert resp.getheader("Location") == f"https://mail.rupost.test:{node.ports['https']}/SOGo/"


@pytest.mark.parametrize("method, path, target", [
    ("GET", "/", "/SOGo/"), ("PROPFIND", "/", "/SOGo/dav/"),
    ("PROPFIND", "/.well-known/caldav", "/SOGo/dav/"), ("PROPFIND", "/.well-known/carddav", "/SOGo/dav/")])
def test_discovery_redirects_keep_the_public_host_and_port(node, mailbox, method, path, target):
    """RFC 6764 discovery and a browser start from the bare host name on the public port:
    every redirect there must lead back to that port, never to nginx's loopback listener."""
    address, password = mailbox("discovery")
    public = f"https://mail.rupost.test:{node.ports['https']}"
    status, headers, _ = https_request("127.0.0.1", node.ports["https"], method, path,
                                       headers={"Host": f"mail.rupost.test:{node.ports['https']}", "Depth": "0"})
    assert status in (301, 302)
    location = urllib.parse.urljoin(public + path, headers["location"])
    assert location == public + target, headers["location"]
    assert str(node.ports["nginx_https"]) not in headers["location"]
    followed, _, _ = https_request("127.0.0.1", node.ports["https"], "PROPFIND" if "dav" in target else "GET",
                                   urllib.parse.urlsplit(location).path,
                                   headers={**_auth(address, password), "Depth": "0",
                                            "User-Agent": "Mozilla/5.0 Firefox/128.0"})
    assert followed in (200, 207), followed


def test_caldav_event_created_and_read_back(node, mailbox):
    address, password = mailbox("calendar")
    uid = uuid.uuid4().hex
    event = (
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//RuPost tests//EN\r\nBEGIN:VEVENT\r\n"
        f"UID:{uid}\r\nDTSTAMP:20261129T100000Z\r\nDTSTART:20261201T090000Z\r\nDTEND:20261201T100000Z\r\n"
        "SUMMARY:Planning meeting\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
    ).encode()
    path = f"/SOGo/dav/{address}/Calendar/personal/{uid}.ics"
    port = node.ports["https"]
    headers = {**_auth(address, password), "Content-Type": "text/calendar; charset=utf-8"}
    status, _, body = https_request("127.0.0.1", port, "PUT", path, body=event, headers=headers)
    assert status == 201, body
    status, _, body = https_request("127.0.0.1", port, "GET", path, headers=_auth(address, password))
    assert status == 200
    assert b"SUMMARY:Planning meeting" in body and uid.encode() in body
    status, headers, _ = https_request("127.0.0.1", port, "OPTIONS", f"/SOGo/dav/{address}/Calendar/",
                                       headers=_auth(address, password))
    assert "calendar-access" in headers.get("dav", "")


def test_caldav_rejects_wrong_password(node, mailbox):
    address, _ = mailbox("calendar2")
    status, _, _ = https_request("127.0.0.1", node.ports["https"], "PROPFIND",
                                 f"/SOGo/dav/{address}/Calendar/", headers={**_auth(address, "wrong-password"),
                                                                            "Depth": "0"})
    assert status == 401


def test_password_change_takes_effect_in_sogo_at_once(node, mailbox):
    address, old = mailbox("rotate")
    path = f"/SOGo/dav/{address}/Calendar/"
    assert https_request("127.0.0.1", node.ports["https"], "PROPFIND", path,
                         headers={**_auth(address, old), "Depth": "0"})[0] == 207
    node.app.mailboxes.set_password(address, "a-brand-new-password")
    assert https_request("127.0.0.1", node.ports["https"], "PROPFIND", path,
                         headers={**_auth(address, old), "Depth": "0"})[0] == 401
    assert https_request("127.0.0.1", node.ports["https"], "PROPFIND", path,
                         headers={**_auth(address, "a-brand-new-password"), "Depth": "0"})[0] == 207


def test_sogo_reaches_a_database_on_a_unix_socket(node, pg, mailbox, tmp_path):
    """database.host may be a socket directory, as postfix and dovecot take it. SOPE reads the
    server from its database URLs' host and port, where a directory cannot be written, so the
    URLs leave both out and sogod and sogo-tool get them from libpq's PGHOST/PGPORT: sogo-tool,
    reading a sogo.conf rendered for the socket, shares the calendar sogod created over TCP."""
    import dataclasses
    import shutil
    import subprocess

    from adapters.sogo import SOGoAdapter, sogo_tool_command

    address, password = mailbox("socketcal")
    assert https_request("127.0.0.1", node.ports["https"], "PROPFIND", f"/SOGo/dav/{address}/Calendar/",
                         headers={**_auth(address, password), "Depth": "1"})[0] == 207
    database = node.app.config.database
    hba = pg.data / "pg_hba.conf"
    sogo_login = node.app.component_runtime.live_context().consumer_database("sogo").user
    for user in (database.user, sogo_login):
        if f"local all {user} " not in hba.read_text():  # peer authentication is the default for local
            hba.write_text(f"local all {user} scram-sha-256\n" + hba.read_text())
    pg._run(pg.bin / "pg_ctl", "-D", pg.data, "reload")
    socket_db = dataclasses.replace(database, host=str(pg.base))
    deploys = node.app.deploys
    doc = node.app.templates.active()
    model = build_models(node.app.adapters, doc, deploys.template_context(doc.resolve_parameters(node.parameters)))["sogo"]
    conf = tmp_path / "sogo"
    shutil.copytree(node.layout.current / "sogo", conf)
    ctx = dataclasses.replace(node.app.component_runtime.live_context(), database=socket_db)
    sogo_conf = next(f for f in SOGoAdapter().render(model, ctx) if f.path == "sogo.conf").content
    assert f"@{database.host}:" not in sogo_conf and "postgresql://" in sogo_conf
    (conf / "sogo.conf").write_text(sogo_conf)
    shutil.chown(conf / "sogo.conf", group="sogo")
    for path in (tmp_path, conf):
        path.chmod(0o755)

    def manage_acl(db, *args) -> subprocess.CompletedProcess:
        argv, env = sogo_tool_command(conf, ["manage-acl", *args], db)
        return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)

    reader, _ = mailbox("socketreader")
    granted = manage_acl(socket_db, "add", address, "Calendar/personal", reader, '["ObjectViewer"]')
    assert granted.returncode == 0 and "could not open channel" not in granted.stderr, granted.stderr
    roles = pg.psql(f"SELECT c_role FROM sogo_acl WHERE c_uid = '{reader}'", dbname=database.data)
    assert "ObjectViewer" in roles, roles
    # the control: without PGHOST libpq looks for its default socket, finds no server, and
    # sogo-tool cannot see the folder
    lost = manage_acl(database, "get", address, "Calendar/personal", reader)
    assert lost.returncode != 0 and "could not open channel" in lost.stderr, lost.stderr
