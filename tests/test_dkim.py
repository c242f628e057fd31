"""Per-domain DKIM keys kept by the core, signing by OpenDKIM on the submission services:
a message sent through submission arrives with a signature dkimpy verifies against the
published key; rotation switches the selector at once, with no reload of any other daemon."""
from __future__ import annotations

import json
import os
import pwd
import smtplib
import uuid

import dkim
import pytest
from click.testing import CliRunner

from mailclients import insecure_tls, message, wait_for_subject
from rupost.cli import main as rupost
from rupost.errors import ConflictError, NotFoundError, ValidationError
from rupost.services.dkim import generate_rsa, txt_value


def cli(node, *args):
    return CliRunner().invoke(rupost, ["--root", str(node.root), *args], catch_exceptions=False)


def send(node, sender, password, to, subject, source="127.0.0.70"):
    client = smtplib.SMTP_SSL("127.0.0.1", node.ports["submissions"], timeout=15, context=insecure_tls(),
                              source_address=(source, 0))
    try:
        client.ehlo("client.example.org")
        client.login(sender, password)
        client.send_message(message(sender, to, subject))
    finally:
        client.close()


def dns_of(records: dict):
    """A resolver for dkimpy: the TXT records we would have published."""
    def lookup(name, timeout=5):
        return records.get(name.decode().rstrip(".").lower(), "").encode() or None
    return lookup


def signature_tags(raw: bytes) -> dict:
    from email import message_from_bytes

    header = message_from_bytes(raw)["DKIM-Signature"]
    return dict(part.strip().split("=", 1) for part in "".join(header.split()).split(";") if "=" in part)


def test_submission_mail_is_signed_and_rotation_switches_the_key(node, domain, mailbox):
    sender, password = mailbox("signer")
    opendkim_pid = node.app.backend.pid("opendkim")
    others = {c: node.app.backend.pid(c) for c in ("dovecot", "postfix", "nginx")}

    r = cli(node, "domains", "dkim", "generate", domain, "--selector", "first")
    assert r.exit_code == 0, r.output
    assert f"first._domainkey.{domain}. IN TXT \"v=DKIM1; k=rsa; p=" in r.output
    shown = json.loads(cli(node, "domains", "dkim", "show", domain, "--json").output)
    assert shown["selector"] == "first" and shown["bits"] == 2048
    key_file = node.layout.state / "opendkim" / "keys" / f"{domain}.first.private"
    st = key_file.stat()
    assert st.st_mode & 0o777 == 0o600 and st.st_uid == pwd.getpwnam("opendkim").pw_uid

    subject = f"signed {uuid.uuid4().hex[:6]}"
    send(node, sender, password, sender, subject)
    raw = wait_for_subject(node.ports["imaps"], sender, password, subject, source="127.0.0.70")
    tags = signature_tags(raw)
    assert tags["d"] == domain and tags["s"] == "first" and tags["a"] == "rsa-sha256"
    published = {shown["record"]: shown["txt"]}
    assert dkim.verify(raw, dnsfunc=dns_of(published))
    # a different key under the same name does not verify: the check is real
    assert not dkim.verify(raw, dnsfunc=dns_of({shown["record"]: txt_value(generate_rsa(1024)[1])}))

    rotated = json.loads(cli(node, "domains", "dkim", "rotate", domain, "--selector", "second", "--json").output)
    assert rotated["selector"] == "second" and rotated["previous"][0]["selector"] == "first"
    assert not key_file.exists()
    subject = f"rotated {uuid.uuid4().hex[:6]}"
    send(node, sender, password, sender, subject)
    raw = wait_for_subject(node.ports["imaps"], sender, password, subject, source="127.0.0.70")
    assert signature_tags(raw)["s"] == "second"
    assert dkim.verify(raw, dnsfunc=dns_of({rotated["record"]: rotated["txt"]}))

    # OpenDKIM re-read its tables (SIGUSR1); no daemon was restarted or reloaded for the keys
    assert node.app.backend.pid("opendkim") == opendkim_pid
    assert {c: node.app.backend.pid(c) for c in others} == others


def test_mail_from_a_domain_without_a_key_is_not_signed(node, domain, mailbox):
    sender, password = mailbox("plain")
    subject = f"unsigned {uuid.uuid4().hex[:6]}"
    send(node, sender, password, sender, subject, source="127.0.0.71")
    raw = wait_for_subject(node.ports["imaps"], sender, password, subject, source="127.0.0.71")
    assert b"DKIM-Signature" not in raw


def test_dkim_commands_refuse_bad_input(node, domain):
    r = cli(node, "domains", "dkim", "generate", f"missing-{domain}")
    assert r.exit_code == 1 and "does not exist" in r.output
    r = cli(node, "domains", "dkim", "show", domain)
    assert r.exit_code == 1 and f"domains dkim generate {domain}" in r.output
    r = cli(node, "domains", "dkim", "rotate", domain)
    assert r.exit_code == 1 and "has no DKIM key yet" in r.output
    with pytest.raises(ValidationError, match="not a valid DKIM selector"):
        node.app.dkim.generate(domain, selector="bad selector!")
    with pytest.raises(ValidationError, match="not a supported RSA key size"):
        node.app.dkim.generate(domain, bits=512)
    r = cli(node, "domains", "dkim", "generate", domain, "--bits", "1024")
    assert r.exit_code == 0 and "RSA 1024 bits" in r.output
    with pytest.raises(ConflictError, match="already has a DKIM key"):
        node.app.dkim.generate(domain)
    selector = node.app.dkim.show(domain)["selector"]
    with pytest.raises(ConflictError, match="already used"):
        node.app.dkim.rotate(domain, selector=selector)
    with pytest.raises(NotFoundError):
        node.app.dkim.show(f"other-{domain}")
    assert os.path.exists(node.layout.state / "opendkim" / "keys" / f"{domain}.{selector}.private")


def test_a_key_made_on_another_node_reaches_this_nodes_opendkim(node, domain):
    """Another node writes only the database: this node's policy server notices within
    15 s, rewrites OpenDKIM's tables and signals it."""
    import time

    from rupost.db.security_models import DkimKey

    pem, public = generate_rsa(1024)
    with node.app.dbs.session("main") as s:
        s.add(DkimKey(domain=domain, selector="elsewhere", bits=1024, private_key=pem, public_key=public,
                      active=True))
    key_file = node.layout.state / "opendkim" / "keys" / f"{domain}.elsewhere.private"
    deadline = time.monotonic() + 60
    while not key_file.exists():
        assert time.monotonic() < deadline, "the key written by another node never reached this node"
        time.sleep(0.5)
    assert key_file.read_text() == pem
    table = (node.layout.state / "opendkim" / "signing.table").read_text()
    assert f"*@{domain} elsewhere._domainkey.{domain}" in table
