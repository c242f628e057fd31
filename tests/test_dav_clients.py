"""vdirsyncer (PyPI), the synchroniser behind khal and khard, discovers a user's calendars and
address books from nothing but the host name (RFC 6764: https://HOST/) and syncs an event and a
contact both ways. caldav-server-tester (PyPI, from the python-caldav project) runs its CalDAV
checks and compares what it finds with what python-caldav knows of SOGo."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

from adapters.probes import https_request
from test_web import _auth

VDIRSYNCER = shutil.which("vdirsyncer") or str(Path(sys.executable).with_name("vdirsyncer"))
CALDAV_SERVER_TESTER = (shutil.which("caldav-server-tester")
                        or str(Path(sys.executable).with_name("caldav-server-tester")))


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
    other_card = uuid.uuid4().hex
    contact = (f"BEGIN:VCARD\r\nVERSION:3.0\r\nUID:{other_card}\r\nFN:Olga Sidorova\r\nN:Sidorova;Olga;;;\r\n"
               "EMAIL:olga@example.org\r\nEND:VCARD\r\n")
    status, _, _ = https_request("127.0.0.1", node.ports["https"], "PUT",
                                 f"/SOGo/dav/{user}/Contacts/{books[0].name}/{other_card}.vcf",
                                 body=contact.encode(), headers={**_auth(user, password), "Content-Type": "text/vcard"})
    assert status in (201, 204)
    vdirsyncer(conf, "sync")
    assert any("Booked in webmail" in p.read_text() for p in calendars[0].iterdir())
    assert any("Olga Sidorova" in p.read_text() for p in books[0].iterdir()), "the server's contact did not arrive"


# python-caldav's support levels: a feature "works" when it is full or quirk (usable with care)
WORKS = {"full", "quirk"}
# what must have been probed for the comparison to mean anything (not "unknown" afterwards)
PROBED = ["create-calendar", "delete-calendar", "save-load.event", "save-load.todo", "search.time-range.event",
          "sync-token", "scheduling.auto-schedule", "scheduling.freebusy-query"]


def test_caldav_server_tester_finds_nothing_worse_than_sogo_is_known_for(node, mailbox, tmp_path):
    """Every check of caldav-server-tester, as two users (the second for the scheduling checks),
    against the expectations python-caldav keeps for SOGo ("features: sogo"): a feature that
    profile says works must work here. The URL is the DAV root: python-caldav follows the bare
    host name's redirect with a body-less PROPFIND (docs/clients.md). Of its ~40 s, 30 are the
    tool's wait for an invitation in the attendee's schedule inbox, where SOGo delivers none (the
    profile expects that); its timezone check reads events with vobject (test extra)."""
    def account(user: str, password: str) -> dict:  # a section of python-caldav's configuration file
        return {"url": f"https://127.0.0.1:{node.ports['https']}/SOGo/dav/", "username": user, "password": password,
                "ssl_verify_cert": str(node.layout.current / "tls" / "mail.crt"), "features": "sogo"}

    conf = tmp_path / "calendar.conf"
    conf.write_text(json.dumps({"user": account(*mailbox("davcheck")), "peer": account(*mailbox("davpeer"))}))
    done = subprocess.run([CALDAV_SERVER_TESTER, "--config-section", "user", "--config-section", "peer",
                           "--diff", "--format", "json"], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "HOME": str(tmp_path), "CALDAV_CONFIG_FILE": str(conf)})
    assert done.returncode == 0, done.stdout + done.stderr
    diff = json.loads(done.stdout)["diff"]  # feature -> expected (the SOGo profile) and observed support
    assert not [f for f in PROBED if diff.get(f, {}).get("observed") == "unknown"], diff
    worse = {feature: levels for feature, levels in diff.items()
             if levels["expected"] in WORKS and levels["observed"] not in WORKS | {"unknown"}}
    assert not worse, f"worse than python-caldav's SOGo profile: {worse}\n{done.stderr}"
