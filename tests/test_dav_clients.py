"""vdirsyncer (PyPI), the synchroniser behind khal and khard, discovers a user's calendars and
address books from nothing but the host name (RFC 6764: https://HOST/) and syncs an event and a
contact both ways."""
from __future__ import annotations

import shutil
import subprocess
import sys
import uuid
from pathlib import Path

from adapters.probes import https_request
from test_web import _auth

VDIRSYNCER = shutil.which("vdirsyncer") or str(Path(sys.executable).with_name("vdirsyncer"))


def vdirsyncer(conf: Path, *args: str) -> str:
    done = subprocess.run([VDIRSYNCER, "-c", str(conf), *args], input="y\n" * 10, capture_output=True, text=True,
                          timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def certificate_fingerprint(node) -> str:
    """The node's self-signed certificate pinned, as a client is told to trust it."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    cert = x509.load_pem_x509_certificate((node.layout.current / "tls" / "mail.crt").read_bytes())
    return cert.fingerprint(hashes.SHA256()).hex(":").upper()


def config(tmp_path: Path, node, user: str, password: str) -> Path:
    base = f"https://127.0.0.1:{node.ports['https']}/"  # the bare host: discovery does the rest
    pin = certificate_fingerprint(node)
    blocks = ["[general]", f'status_path = "{tmp_path}/status/"', ""]
    for kind, dav, ext in (("cal", "caldav", ".ics"), ("card", "carddav", ".vcf")):
        blocks += [f"[pair {kind}]", f'a = "{kind}_local"', f'b = "{kind}_remote"', 'collections = ["from b"]', "",
                   f"[storage {kind}_local]", 'type = "filesystem"', f'path = "{tmp_path}/{kind}/"',
                   f'fileext = "{ext}"', "",
                   f"[storage {kind}_remote]", f'type = "{dav}"', f'url = "{base}"', f'username = "{user}"',
                   f'password = "{password}"', f'verify_fingerprint = "{pin}"', ""]
    path = tmp_path / "vdirsyncer.conf"
    path.write_text("\n".join(blocks))
    return path


def test_vdirsyncer_discovers_from_the_host_name_and_syncs_both_ways(node, mailbox, tmp_path):
    user, password = mailbox("davsync")
    conf = config(tmp_path, node, user, password)
    vdirsyncer(conf, "discover")
    vdirsyncer(conf, "sync")
    calendars = [p for p in (tmp_path / "cal").iterdir() if p.is_dir()]
    # the user's own address book, beside the read-only ones of the users and the GAL
    books = [p for p in (tmp_path / "card").iterdir() if p.name == "personal"]
    assert calendars and books, "discovery found no calendar or personal address book"

    # made locally -> on the server
    uid = uuid.uuid4().hex
    (calendars[0] / f"{uid}.ics").write_text(
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//RuPost tests//EN\r\nBEGIN:VEVENT\r\n"
        f"UID:{uid}\r\nDTSTAMP:20261206T100000Z\r\nDTSTART:20261210T090000Z\r\nDTEND:20261210T100000Z\r\n"
        "SUMMARY:Synced from a laptop\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n")
    card = uuid.uuid4().hex
    (books[0] / f"{card}.vcf").write_text(
        f"BEGIN:VCARD\r\nVERSION:3.0\r\nUID:{card}\r\nFN:Ivan Petrov\r\nN:Petrov;Ivan;;;\r\n"
        "EMAIL:ivan@example.org\r\nEND:VCARD\r\n")
    vdirsyncer(conf, "sync")
    status, _, body = https_request("127.0.0.1", node.ports["https"], "GET",
                                    f"/SOGo/dav/{user}/Calendar/{calendars[0].name}/{uid}.ics",
                                    headers=_auth(user, password))
    assert status == 200 and b"Synced from a laptop" in body
    status, _, body = https_request("127.0.0.1", node.ports["https"], "GET",
                                    f"/SOGo/dav/{user}/Contacts/{books[0].name}/{card}.vcf",
                                    headers=_auth(user, password))
    assert status == 200 and b"Ivan Petrov" in body

    # made on the server -> locally
    other = uuid.uuid4().hex
    event = ("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//RuPost tests//EN\r\nBEGIN:VEVENT\r\n"
             f"UID:{other}\r\nDTSTAMP:20261206T100000Z\r\nDTSTART:20261211T090000Z\r\n"
             "DTEND:20261211T100000Z\r\nSUMMARY:Booked in webmail\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n")
    status, _, _ = https_request("127.0.0.1", node.ports["https"], "PUT",
                                 f"/SOGo/dav/{user}/Calendar/{calendars[0].name}/{other}.ics", body=event.encode(),
                                 headers={**_auth(user, password), "Content-Type": "text/calendar"})
    assert status in (201, 204)
    vdirsyncer(conf, "sync")
    assert any("Booked in webmail" in p.read_text() for p in calendars[0].iterdir())
