"""Webmail and CalDAV through HAProxy -> nginx (TLS) -> SOGo."""
from __future__ import annotations

import base64
import uuid

from rupost.probes import https_request


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
