"""Antivirus (docs/antispam.md#antivirus): clamd behind its adapter, asked by rspamd's
antivirus module on port 25 and on submission; real clamd, rspamd, postfix.

Debian's clamav-daemon ships no signatures and this machine has no network (freshclam cannot
run): the fixture writes a one-signature custom database (EICAR's test string, ClamAV's .ndb
format) that stands in for the official databases. clamd loads it as it would main.cvd and
daily.cvd; the database's age check reads the same files' times.
"""
from __future__ import annotations

import os
import smtplib
import time
import uuid
from email.message import EmailMessage

import pytest
from mailclients import message, smtps
from test_antispam import deploy_with, remote, stored_messages, wait_stored

from adapters.clamd import socket_path
from adapters.probes import wait_for_unix_socket
from rupost.errors import DeployError
from support.dns_zone import Zone

EICAR = r"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"


@pytest.fixture(scope="module")
def signatures(node):
    """The stand-in for the official databases: EICAR's signature, readable by clamav."""
    directory = node.root / "clamav-test-db"
    directory.mkdir(exist_ok=True)
    os.chmod(directory, 0o755)
    database = directory / "rupost-test-eicar.ndb"
    database.write_text(f"Rupost.Test.EICAR:0:*:{EICAR.encode().hex()}\n")
    os.chmod(database, 0o644)
    return database


@pytest.fixture(scope="module")
def av_node(node, signatures):
    zone = Zone()  # answers at once: rspamd's DNS checks do not wait for this machine's resolver
    before = dict(node.app.settings.get("template_parameters") or {})
    deploy_with(node, antispam_dns_servers=[f"127.0.0.1:{zone.port}"], antispam_greylisting=False,
                antivirus="clamav", antivirus_database_dir=str(signatures.parent))
    yield node
    node.app.settings.set("template_parameters", before)
    node.deploy()
    zone.close()


def infected(sender: str, rcpt: str, subject: str) -> EmailMessage:
    msg = message(sender, rcpt, subject, "the invoice is attached\n")
    msg.add_attachment(EICAR.encode(), maintype="application", subtype="octet-stream", filename="invoice.com")
    return msg


def everything(node, address: str) -> list[bytes]:
    return [m for folder in ("", ".Junk") for m in stored_messages(node, address, folder)]


def test_eicar_is_refused_on_port_25_and_nothing_is_delivered(av_node, mailbox):
    address, _ = mailbox("avin")
    with remote(av_node, "198.51.100.31") as client:
        with pytest.raises(smtplib.SMTPDataError) as refused:
            client.send_message(infected("billing@sender.example", address, "invoice"))
    assert 500 <= refused.value.smtp_code < 600
    assert b"Virus found: Rupost.Test.EICAR" in refused.value.smtp_error, refused.value.smtp_error
    clean = f"clean {uuid.uuid4().hex[:8]}"
    with remote(av_node, "198.51.100.31") as client:
        client.send_message(message("billing@sender.example", address, clean))
    # the clean message after it arrives: the infected one would have been there first
    deadline = time.monotonic() + 30
    while not [m for m in everything(av_node, address) if clean.encode() in m] and time.monotonic() < deadline:
        time.sleep(0.3)
    assert [m for m in everything(av_node, address) if clean.encode() in m]
    assert not [m for m in everything(av_node, address) if b"invoice.com" in m]


def test_eicar_is_refused_on_submission_and_users_are_still_not_scored(av_node, mailbox):
    address, password = mailbox("avsender")
    rcpt, _ = mailbox("avrcpt")
    with smtps(av_node.ports["submissions"]) as client:
        client.login(address, password)
        with pytest.raises(smtplib.SMTPDataError) as refused:
            client.send_message(infected(address, rcpt, "outbound invoice"))
        assert 500 <= refused.value.smtp_code < 600
        assert b"Virus found" in refused.value.smtp_error
        bare = f"bare from a user {uuid.uuid4().hex[:8]}"  # no Date, no Message-ID: spam on port 25
        client.send_message(message(address, rcpt, bare))
    raw = wait_stored(av_node, rcpt, bare)  # the INBOX: not marked
    assert b"\nX-Spam: Yes" not in raw.replace(b"\r\n", b"\n")
    assert not [m for m in everything(av_node, rcpt) if b"invoice.com" in m]


def test_clamd_down_tempfails_and_nothing_is_lost(av_node, mailbox):
    address, _ = mailbox("avdown")
    subject = f"while clamd is down {uuid.uuid4().hex[:8]}"
    spec = av_node.app.components.process_spec("clamd")
    av_node.app.backend.stop("clamd", spec)  # as if it died
    try:
        down = {r.target: r for r in av_node.app.checks.run(record=False, only=["antivirus"])}
        assert down["clamd"].status == "critical" and "tempfailed" in down["clamd"].detail
        with remote(av_node, "198.51.100.32") as client:
            with pytest.raises(smtplib.SMTPResponseException) as deferred:
                client.send_message(message("someone@sender.example", address, subject))
        assert 400 <= deferred.value.smtp_code < 500, deferred.value
        assert b"Virus scanner unavailable" in deferred.value.smtp_error
    finally:
        av_node.app.backend.start("clamd", spec)
    assert wait_for_unix_socket(str(socket_path(av_node.layout)), 60)
    for _ in range(30):  # the sender's retries, bounded
        try:
            with remote(av_node, "198.51.100.32") as client:
                client.send_message(message("someone@sender.example", address, subject))
            break
        except smtplib.SMTPResponseException as exc:
            assert 400 <= exc.smtp_code < 500, exc
            time.sleep(1)
    deadline = time.monotonic() + 30
    while not [m for m in everything(av_node, address) if subject.encode() in m] and time.monotonic() < deadline:
        time.sleep(0.3)
    assert len([m for m in everything(av_node, address) if subject.encode() in m]) == 1


def test_an_old_signature_database_fails_the_check(av_node, signatures):
    fresh = {r.target: r.status for r in av_node.app.checks.run(record=False, only=["antivirus"])}
    assert fresh == {"clamd": "ok", "signatures": "ok"}
    stat = signatures.stat()
    os.utime(signatures, (stat.st_atime, time.time() - 3 * 86400))  # past the 48 h warning
    try:
        assert {r.target: r.status for r in av_node.app.checks.run(record=False, only=["antivirus"])}[
            "signatures"] == "warning"
        os.utime(signatures, (stat.st_atime, time.time() - 10 * 86400))  # past the 7 days
        old = {r.target: r for r in av_node.app.checks.run(record=False, only=["antivirus"])}
        assert old["signatures"].status == "critical"
        assert "rupost-test-eicar.ndb updated 240 h ago" in old["signatures"].detail
        assert "freshclam" in old["signatures"].detail
    finally:
        os.utime(signatures, (stat.st_atime, stat.st_mtime))


def test_a_directory_without_signatures_is_refused_before_the_switch(av_node, tmp_path):
    live = av_node.layout.current.resolve()
    empty = tmp_path / "no-signatures"
    empty.mkdir()
    parameters = {**av_node.app.settings.get("template_parameters"), "antivirus_database_dir": str(empty)}
    with pytest.raises(DeployError) as err:
        av_node.app.deploys.deploy(av_node.app.deploys.plan(parameters))
    assert f"clamd: configuration check failed: no signature database in {empty}" in str(err.value)
    assert "nothing was changed" in str(err.value)
    assert av_node.layout.current.resolve() == live


def test_turning_antivirus_off_stops_clamd(av_node):
    """Last in the module: the fixture's teardown deploys the parameters of before anyway."""
    assert av_node.app.components.states()["clamd"]["running"]
    deploy_with(av_node, antivirus="off")
    assert "clamd" not in av_node.app.components.states()
    assert not av_node.app.backend.is_running("clamd")
    assert av_node.app.checks.run(record=False, only=["antivirus"]) == []
