"""Inbound mail hygiene (docs/antispam.md): rspamd on port 25 with its Redis, real daemons.

Senders are *remote* clients: rspamd skips SPF, DKIM and DMARC for loopback clients, and
every client of a single test host is one. A remote client reaches postfix through HAProxy,
which puts the client's address in a PROXY v2 header on port 25's Unix socket; the tests
speak that same header on that socket, claiming addresses of TEST-NET-2 (no packet goes
there). Their SPF, DKIM and DMARC records are served by a UDP name server of the test
(tests/support/dns_zone.py) that rspamd is pointed at (template parameter
antispam_dns_servers).
"""
from __future__ import annotations

import base64
import ipaddress
import smtplib
import socket
import struct
import subprocess
import time
import uuid

import dkim
import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from mailclients import IMAPSFrom, message, smtps

from adapters.probes import wait_for_unix_socket
from adapters.redis import socket_path as redis_socket
from adapters.rspamd import controller_socket, milter_socket
from rupost.errors import DeployError, RuPostError
from rupost.templating import load_document
from support.dns_zone import Zone

GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
PROXY_V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


class RemoteSMTP(smtplib.SMTP):
    """An SMTP client arriving from `client_ip` as HAProxy presents it to port 25's smtpd."""

    def __init__(self, socket_path: str, client_ip: str) -> None:
        self._socket_path, self._client_ip = socket_path, client_ip
        super().__init__(timeout=30)
        self.connect("remote", 25)
        self.ehlo("mx.sender.example")

    def _get_socket(self, host, port, timeout):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        sock.connect(self._socket_path)
        addresses = ipaddress.IPv4Address(self._client_ip).packed + ipaddress.IPv4Address("192.0.2.25").packed
        body = addresses + struct.pack("!HH", 40000, 25)
        sock.sendall(PROXY_V2_SIGNATURE + bytes([0x21, 0x11]) + struct.pack("!H", len(body)) + body)
        return sock


def remote(node, client_ip: str = "198.51.100.7") -> RemoteSMTP:
    return RemoteSMTP(str(node.layout.postfix_queue / "private" / "smtpd-haproxy"), client_ip)


def deploy_with(node, **parameters) -> None:
    current = dict(node.app.settings.get("template_parameters") or {})
    node.app.settings.set("template_parameters", {**current, **parameters})
    node.deploy()


@pytest.fixture(scope="module")
def zone():
    z = Zone()
    yield z
    z.close()


@pytest.fixture(scope="module")
def antispam(node, zone):
    """The session's node with rspamd asking the test's name server; greylisting off (a
    first-time remote sender would get 451 and the tests would have to retry)."""
    before = dict(node.app.settings.get("template_parameters") or {})
    deploy_with(node, antispam_dns_servers=[f"127.0.0.1:{zone.port}"], antispam_greylisting=False)
    yield node
    node.app.settings.set("template_parameters", before)
    node.deploy()


def stored_messages(node, address: str, folder: str = "") -> list[bytes]:
    """Messages in the INBOX (folder ""), or in a folder such as ".Junk" (Maildir++)."""
    local, domain = address.split("@")
    base = node.layout.mail_storage / domain / local / "Maildir" / folder
    return [p.read_bytes() for sub in ("new", "cur") for p in sorted((base / sub).glob("*"))]


def wait_stored(node, address: str, subject: str, timeout: float = 30, folder: str = "") -> bytes:
    deadline = time.monotonic() + timeout
    while True:
        for raw in stored_messages(node, address, folder):
            if f"Subject: {subject}".encode() in raw:
                return raw
        if time.monotonic() > deadline:
            raise AssertionError(f"no message {subject!r} for {address} after {timeout}s")
        time.sleep(0.3)


def sender_domain(zone: Zone, name: str, *, dmarc: str, spf: str = "v=spf1 -all", dkim_key: str | None = None,
                  selector: str = "s1") -> None:
    lines = [f"{name}. 60 IN TXT \"{spf}\"", f"_dmarc.{name}. 60 IN TXT \"{dmarc}\"",
             f"{name}. 60 IN A 192.0.2.80"]
    if dkim_key:
        record = f"v=DKIM1; k=rsa; p={dkim_key}"  # TXT strings hold 255 bytes at most
        chunks = " ".join(f'"{record[i:i + 250]}"' for i in range(0, len(record), 250))
        lines.append(f"{selector}._domainkey.{name}. 60 IN TXT {chunks}")
    zone.load(lines + zone_lines(zone))


def zone_lines(zone: Zone) -> list[str]:
    """What the zone serves already, so domains accumulate across tests."""
    lines = []
    for (name, _), rrset in zone.records.items():
        for rdata in rrset:
            lines.append(f"{name} {rrset.ttl} IN {dns_type(rrset)} {rdata.to_text()}")
    return lines


def dns_type(rrset) -> str:
    import dns.rdatatype

    return dns.rdatatype.to_text(rrset.rdtype)


def test_gtube_is_rejected_on_port_25(antispam, mailbox):
    address, _ = mailbox("gtube")
    with remote(antispam) as client:
        with pytest.raises(smtplib.SMTPDataError) as refused:
            client.send_message(message("spammer@sender.example", address, "gtube", f"{GTUBE}\n"))
    assert refused.value.smtp_code == 554 or 500 <= refused.value.smtp_code < 600
    assert stored_messages(antispam, address) == []


def test_dmarc_reject_domain_failing_is_rejected(antispam, zone, mailbox):
    address, _ = mailbox("dmarc")
    forged = f"f{uuid.uuid4().hex[:8]}.example"
    sender_domain(zone, forged, dmarc="v=DMARC1; p=reject")
    with remote(antispam, "198.51.100.9") as client:
        with pytest.raises(smtplib.SMTPDataError) as refused:
            client.send_message(message(f"ceo@{forged}", address, "wire the money"))
    assert 500 <= refused.value.smtp_code < 600
    assert stored_messages(antispam, address) == []


def test_dkim_signed_message_passes_with_dkim_pass(antispam, zone, mailbox):
    address, _ = mailbox("dkim")
    partner = f"p{uuid.uuid4().hex[:8]}.example"
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = base64.b64encode(key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).decode()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                            serialization.NoEncryption())
    sender_domain(zone, partner, dmarc="v=DMARC1; p=reject", spf="v=spf1 ip4:198.51.100.0/24 -all",
                  dkim_key=public)
    subject = f"signed {uuid.uuid4().hex[:8]}"
    msg = message(f"partner@{partner}", address, subject)
    msg["Message-ID"] = f"<{uuid.uuid4().hex}@{partner}>"
    msg["Date"] = "Mon, 07 Dec 2026 06:00:00 +0000"
    raw = msg.as_bytes()
    signature = dkim.sign(raw, b"s1", partner.encode(), pem, include_headers=[b"From", b"To", b"Subject"])
    with remote(antispam, "198.51.100.10") as client:
        client.sendmail(f"partner@{partner}", [address], signature + raw)
    stored = wait_stored(antispam, address, subject)
    results = [line for line in stored.decode(errors="replace").replace("\r\n", "\n").replace("\n\t", " ")
               .replace("\n ", " ").splitlines() if line.startswith("Authentication-Results:")]
    assert results, stored.decode(errors="replace")[:2000]
    assert f"dkim=pass header.d={partner}" in results[0]
    assert "dmarc=pass" in results[0] and "spf=pass" in results[0]


def test_authenticated_submission_is_not_scored(antispam, mailbox):
    address, password = mailbox("sender")
    rcpt, _ = mailbox("rcpt")
    subject = f"gtube from a user {uuid.uuid4().hex[:8]}"
    with smtps(antispam.ports["submissions"]) as client:
        client.login(address, password)
        client.send_message(message(address, rcpt, subject, f"{GTUBE}\n"))
    wait_stored(antispam, rcpt, subject)


def test_rspamd_down_tempfails_and_nothing_is_lost(antispam, mailbox):
    """postfix follows milter_default_action (tempfail): the sender keeps the message and
    retries, as a sending MTA does; once rspamd is back it is accepted and delivered once."""
    address, _ = mailbox("outage")
    subject = f"during the outage {uuid.uuid4().hex[:8]}"
    assert {(r.target, r.status) for r in antispam.app.checks.run(record=False, only=["antispam"])} == \
        {("redis", "ok"), ("rspamd", "ok")}
    spec = antispam.app.components.process_spec("rspamd")
    antispam.app.backend.stop("rspamd", spec)  # as if it died: not an administrator's stop
    try:
        down = {r.target: r for r in antispam.app.checks.run(record=False, only=["antispam"])}
        assert down["rspamd"].status == "critical" and "milter_default_action" in down["rspamd"].detail
        assert down["redis"].status == "ok"
        with remote(antispam, "198.51.100.11") as client:
            with pytest.raises(smtplib.SMTPResponseException) as deferred:
                client.send_message(message("someone@sender.example", address, subject))
        assert 400 <= deferred.value.smtp_code < 500
    finally:
        antispam.app.backend.start("rspamd", spec)
    assert wait_for_unix_socket(str(milter_socket(antispam.layout)), 60)
    for _ in range(30):  # the sender's retries, bounded
        try:
            with remote(antispam, "198.51.100.11") as client:
                client.send_message(message("someone@sender.example", address, subject))
            break
        except smtplib.SMTPResponseException as exc:
            assert 400 <= exc.smtp_code < 500, exc
            time.sleep(1)
    # a bare message (no Date, no Message-ID) from a domain without DNS: marked, so in Junk
    wait_stored(antispam, address, subject, folder=".Junk")
    assert len([m for folder in ("", ".Junk") for m in stored_messages(antispam, address, folder)
                if subject.encode() in m]) == 1


def test_a_message_marked_as_spam_is_filed_into_junk(antispam, mailbox):
    """Scored between the add-header and the reject thresholds (no Date, no Message-ID, a
    sender domain without DNS, a HELO that does not resolve): accepted, marked X-Spam: Yes,
    and the global Sieve rule files it into Junk."""
    address, _ = mailbox("marked")
    subject = f"bare {uuid.uuid4().hex[:8]}"
    with remote(antispam, "198.51.100.12") as client:
        assert client.send_message(message("someone@sender.example", address, subject)) == {}
    raw = wait_stored(antispam, address, subject, folder=".Junk")
    assert b"\nX-Spam: Yes" in raw.replace(b"\r\n", b"\n")
    assert not [m for m in stored_messages(antispam, address) if subject.encode() in m]


def test_a_broken_rspamd_configuration_is_refused_before_the_switch(antispam):
    live = antispam.layout.current.resolve()
    files = {str(p.relative_to(live)): p.read_bytes() for p in sorted(live.rglob("*")) if p.is_file()}
    data = yaml.safe_load(antispam.app.templates.show("standard")["body"])
    data["components"]["rspamd"]["extra_local"] = {"actions.conf": "reject = {\n"}  # an administrator's typo
    doc = load_document(yaml.safe_dump(data, sort_keys=False), "broken-rspamd")
    parameters = antispam.app.settings.get("template_parameters")
    with pytest.raises(DeployError) as err:
        antispam.app.deploys.deploy(antispam.app.deploys.plan(parameters, document=doc))
    assert "rspamd: configuration check failed" in str(err.value)
    assert "nothing was changed" in str(err.value)
    assert antispam.layout.current.resolve() == live
    assert {str(p.relative_to(live)): p.read_bytes() for p in sorted(live.rglob("*")) if p.is_file()} == files


def test_thresholds_out_of_order_are_refused_with_their_names(antispam):
    parameters = {**antispam.app.settings.get("template_parameters"), "antispam_add_header_score": 20}
    with pytest.raises(RuPostError) as err:
        antispam.app.deploys.plan(parameters)
    assert "components.rspamd.add_header_score (20) must be below reject_score (15)" in str(err.value)


def redis(node, *command: str) -> list[str]:
    return subprocess.run(["redis-cli", "-s", str(redis_socket(node.layout)), *command], capture_output=True,
                          text=True, timeout=30, check=True).stdout.split()


def bayes_learned(node) -> dict[str, int]:
    """The Bayes counters, messages learned per statfile, read where rspamd keeps them: the
    set BAYES_SPAM_keys names its hashes (one per user or domain when Bayes is not global),
    each counting learns_spam (learns_ham for BAYES_HAM). `rspamc stat` reports the same
    numbers, but refreshes them from Redis only every half minute or so."""
    learned = {}
    for statfile, field in (("BAYES_SPAM", "learns_spam"), ("BAYES_HAM", "learns_ham")):
        counts = [redis(node, "HGET", key, field) for key in redis(node, "SMEMBERS", f"{statfile}_keys")]
        learned[statfile] = sum(int(c[0]) for c in counts if c and c[0].lstrip("-").isdigit())
    return learned


def rspamc_stat(node) -> str:
    return subprocess.run(["rspamc", "-h", str(controller_socket(node.layout)), "stat"], capture_output=True,
                          text=True, timeout=30, check=True).stdout


def test_moving_into_junk_teaches_spam_and_out_of_it_ham(antispam, mailbox):
    address, password = mailbox("learner")
    before = bayes_learned(antispam)
    imap = IMAPSFrom("127.0.0.1", antispam.ports["imaps"])
    try:
        imap.login(address, password)
        for i in range(20):
            words = " ".join(f"offer{i}x{j} cheap{j} pills{i * j} winner{j}" for j in range(12))
            body = message("promo@sender.example", address, f"deal {i} {uuid.uuid4().hex[:6]}", words + "\n")
            body["Message-ID"] = f"<{uuid.uuid4().hex}@sender.example>"
            imap.append("INBOX", None, None, body.as_bytes())
        imap.select("INBOX")
        assert imap.uid("MOVE", "1:*", "Junk")[0] == "OK"
        after_spam = bayes_learned(antispam)
        assert after_spam.get("BAYES_SPAM", 0) - before.get("BAYES_SPAM", 0) == 20, (before, after_spam)
        imap.select("Junk")
        assert imap.uid("MOVE", "1", "INBOX")[0] == "OK"
        after_ham = bayes_learned(antispam)
        assert after_ham.get("BAYES_HAM", 0) - before.get("BAYES_HAM", 0) == 1, (before, after_ham)
    finally:
        imap.logout()
    assert "Statfile: BAYES_SPAM" in rspamc_stat(antispam)  # the administrator's view of the same counters
