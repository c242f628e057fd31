"""Mail in and out through the real stack: HAProxy -> nginx/postfix -> LMTP -> dovecot."""
from __future__ import annotations

import smtplib
import socket
import subprocess
import time
import uuid

import pytest

from mailclients import IMAPSFrom, imap_login_works, insecure_tls, message, smtp, smtps, wait_for_subject


def test_inbound_smtp_delivered_over_lmtp_and_read_over_imaps(node, mailbox):
    address, password = mailbox("alice")
    subject = f"inbound {uuid.uuid4().hex}"
    with smtp(node.ports["smtp"], source="127.0.0.7") as client:
        refused = client.send_message(message("someone@example.org", address, subject))
    assert refused == {}
    raw = wait_for_subject(node.ports["imaps"], address, password, subject, source="127.0.0.8")
    assert b"hello from the tests" in raw
    assert b"Received: from client.example.org" in raw


def test_client_addresses_reach_postfix_and_dovecot_logs(node, mailbox):
    address, password = mailbox("ipcheck")
    subject = f"ip {uuid.uuid4().hex}"
    with smtp(node.ports["smtp"], source="127.0.0.23") as client:
        client.send_message(message("someone@example.org", address, subject))
    wait_for_subject(node.ports["imaps"], address, password, subject, source="127.0.0.24")
    postfix_log = node.layout.log_file("postfix").read_text()
    dovecot_log = node.layout.log_file("dovecot").read_text()
    # the hops between HAProxy, nginx and the daemons all come from 127.0.0.1;
    # only the PROXY protocol can carry these addresses to the daemons
    assert "connect from unknown[127.0.0.23]" in postfix_log
    # port 25's hop is a Unix socket (PROXY v2 over it): no loopback TCP connection
    haproxy = (node.layout.current / "haproxy" / "haproxy.cfg").read_text()
    assert f"server local unix@{node.layout.postfix_queue}/private/smtpd-haproxy send-proxy-v2" in haproxy
    master = (node.layout.current / "postfix" / "master.cf").read_text()
    assert f"127.0.0.1:{node.ports['postfix_smtp']} " not in master
    assert f"user=<{address}>" in dovecot_log and "rip=127.0.0.24" in dovecot_log


def test_authenticated_submission_over_implicit_tls(node, mailbox):
    sender, sender_pw = mailbox("sender")
    rcpt, rcpt_pw = mailbox("rcpt")
    subject = f"submission {uuid.uuid4().hex}"
    with smtps(node.ports["submissions"]) as client:
        client.login(sender, sender_pw)
        assert client.send_message(message(sender, rcpt, subject)) == {}
    wait_for_subject(node.ports["imaps"], rcpt, rcpt_pw, subject)


def test_submission_refuses_wrong_password_and_forged_sender(node, mailbox):
    sender, sender_pw = mailbox("honest")
    other, _ = mailbox("victim")
    with smtps(node.ports["submissions"]) as client:
        with pytest.raises(smtplib.SMTPAuthenticationError):
            client.login(sender, "not-the-password")
    with smtps(node.ports["submissions"]) as client:
        client.login(sender, sender_pw)
        with pytest.raises(smtplib.SMTPRecipientsRefused) as err:
            client.send_message(message(other, sender, "forged"), from_addr=other)
        assert b"not owned by user" in list(err.value.recipients.values())[0][1]


def test_relay_to_foreign_domain_without_auth_is_refused(node, domain):
    with smtp(node.ports["smtp"]) as client:
        client.mail("someone@example.org")
        code, reply = client.rcpt("victim@foreign.example.net")
    assert code == 554 and b"Relay access denied" in reply


def test_unknown_local_recipient_rejected_at_rcpt(node, domain):
    with smtp(node.ports["smtp"]) as client:
        client.mail("someone@example.org")
        code, reply = client.rcpt(f"nobody-{uuid.uuid4().hex[:6]}@{domain}")
    assert code == 550 and b"User unknown" in reply


def test_auth_on_plaintext_smtp_is_refused(node, mailbox):
    address, password = mailbox("plain")
    with smtp(node.ports["smtp"]) as client:
        assert not client.has_extn("auth")
        code, _ = client.docmd("AUTH", "PLAIN AGFsaWNlAHNlY3JldA==")
    assert code in (503, 530, 538)


def test_managesieve_refuses_auth_before_starttls(node, mailbox):
    address, password = mailbox("sieve")
    with socket.create_connection(("127.0.0.1", node.ports["sieve"]), timeout=10) as sock:
        greeting = _read_until_ok(sock)
        assert b'"STARTTLS"' in greeting
        sock.sendall(b'AUTHENTICATE "PLAIN" "AHNpZXZlAHNlY3JldA=="\r\n')
        reply = sock.recv(4096)
    assert reply.startswith(b"NO"), reply


SIEVE_SCRIPT = b"""require ["fileinto", "mailbox"];
if header :contains "subject" "[filed]" { fileinto :create "Filed"; }
"""


def test_sieve_script_uploaded_over_managesieve_files_delivered_mail(node, mailbox):
    import base64

    address, password = mailbox("sieve2")
    with socket.create_connection(("127.0.0.1", node.ports["sieve"]), timeout=10) as sock:
        _read_until_ok(sock)
        sock.sendall(b"STARTTLS\r\n")
        assert sock.recv(4096).startswith(b"OK")
        tls = insecure_tls().wrap_socket(sock, server_hostname="localhost")
        _read_until_ok(tls)
        token = base64.b64encode(f"\0{address}\0{password}".encode()).decode()
        tls.sendall(f'AUTHENTICATE "PLAIN" "{token}"\r\n'.encode())
        assert tls.recv(4096).startswith(b"OK")
        tls.sendall(b'PUTSCRIPT "rules" {%d+}\r\n' % len(SIEVE_SCRIPT) + SIEVE_SCRIPT + b"\r\n")
        assert _read_until_ok(tls).startswith(b"OK"), "PUTSCRIPT refused"
        tls.sendall(b'SETACTIVE "rules"\r\n')
        assert _read_until_ok(tls).startswith(b"OK")
    subject = f"[filed] {uuid.uuid4().hex}"
    with smtp(node.ports["smtp"]) as client:
        client.send_message(message("someone@example.org", address, subject))
    imap = IMAPSFrom("127.0.0.1", node.ports["imaps"])
    imap.login(address, password)
    try:
        for _ in range(50):
            status, _ = imap.select("Filed")
            if status == "OK" and imap.search(None, "SUBJECT", f'"{subject}"')[1][0]:
                break
            time.sleep(0.2)
        else:
            raise AssertionError("the sieve script did not file the message into 'Filed'")
        imap.select("INBOX")
        assert imap.search(None, "SUBJECT", f'"{subject}"')[1][0] == b""
    finally:
        imap.logout()


def _read_until_ok(sock) -> bytes:
    data = b""
    while not (data.startswith(b"OK") or b"\r\nOK" in data):
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def test_imaps_is_tls_only_and_login_checks_password(node, mailbox):
    address, password = mailbox("tlsonly")
    with socket.create_connection(("127.0.0.1", node.ports["imaps"]), timeout=5) as sock:
        sock.sendall(b"a1 CAPABILITY\r\n")
        try:
            data = sock.recv(100)
        except OSError:
            data = b""
    assert not data.startswith(b"* OK"), "port 993 answered IMAP in plaintext"
    imap = IMAPSFrom("127.0.0.1", node.ports["imaps"])
    with pytest.raises(Exception):
        imap.login(address, "wrong-password")
    imap.logout()


def test_quota_is_reported(node, mailbox):
    address, password = mailbox("quota", quota="10M")
    imap = IMAPSFrom("127.0.0.1", node.ports["imaps"])
    imap.login(address, password)
    _, data = imap.getquotaroot("INBOX")
    imap.logout()
    assert b"STORAGE 0 10240" in data[1][0]


def test_lookup_tables_answer_every_address_that_receives_mail(node, domain, mailbox):
    """postfix probes substrings of an address (domain, parents, "localpart@", "@domain") only
    when a table has no answer for the full address, each probe one more proxymap round
    trip: the list-policy table answers DUNNO ("found, no action") and the alias table a
    mailbox's own address ("expand into itself once"); unknown addresses answer nothing, so
    "list+tag@" still falls back to the list and "user+tag@" to the user. Port 25's
    recipient-access table answers every address, tagged ones as their owner."""
    a, a_password = mailbox("frank")
    crew = f"crew@{domain}"
    helpdesk = f"helpdesk@{domain}"
    node.app.distribution_lists.add(crew, members=[a], sender_policy="internal")
    node.app.aliases.add(helpdesk, [a, "outside@example.org"])
    config = node.layout.current / "postfix"

    def answer(table: str, key: str) -> str:
        done = subprocess.run(["postmap", "-c", str(config), "-q", key, f"pgsql:{config}/pgsql-{table}.cf"],
                              capture_output=True, text=True, timeout=30)
        assert done.returncode in (0, 1) and not done.stderr, done.stderr  # 1: not found
        return done.stdout.strip()

    assert answer("list_policies", a) == "DUNNO"
    assert answer("list_policies", helpdesk) == "DUNNO"
    assert answer("list_policies", crew) == "permit_sasl_authenticated, reject"
    for unknown in (f"crew+tag@{domain}", f"nobody@{domain}", "someone@example.org"):
        assert answer("list_policies", unknown) == ""
        assert answer("aliases", unknown) == ""
    assert answer("aliases", a) == a
    assert answer("aliases", helpdesk) == f"{a},outside@example.org"
    assert answer("aliases", crew) == a
    assert answer("aliases", domain) == answer("aliases", f"@{domain}") == ""
    # port 25's one lookup per recipient: found for every address, so never a probe
    restricted = "permit_sasl_authenticated, reject"
    for key, verdict in ((a, "DUNNO"), (a.replace("@", "+news@"), "DUNNO"), (helpdesk, "DUNNO"),
                         (crew, restricted), (f"crew+tag@{domain}", restricted),
                         (f"nobody@{domain}", "550 5.1.1 User unknown in virtual mailbox table"),
                         (f"nobody+tag@{domain}", "550 5.1.1 User unknown in virtual mailbox table"),
                         ("someone@example.org", "DUNNO")):
        assert answer("recipient_access", key) == verdict, key

    # and mail still flows: to the list and to the user with a tag (expanded like the user)
    subject = f"tagged {uuid.uuid4().hex}"
    with smtp(node.ports["smtp"]) as client:
        assert client.send_message(message("someone@example.org", a.replace("@", "+news@"), subject)) == {}
    wait_for_subject(node.ports["imaps"], a, a_password, subject)


def test_a_new_password_or_a_disable_counts_at_once_despite_dovecots_auth_cache(node, mailbox):
    """dovecot caches logins for auth_cache_ttl (5 minutes): the service flushes the cache of
    the account it changed, so the old password, or a disabled mailbox, is refused at once."""
    address, old = mailbox("rotated")
    new = f"new-{uuid.uuid4().hex[:12]}"
    assert imap_login_works(node.ports["imaps"], address, old, "127.0.0.81")  # cached now
    node.app.mailboxes.set_password(address, new)
    assert not imap_login_works(node.ports["imaps"], address, old, "127.0.0.82")
    assert imap_login_works(node.ports["imaps"], address, new, "127.0.0.83")
    with smtps(node.ports["submissions"]) as client:
        client.login(address, new)
    node.app.mailboxes.set_enabled(address, False)
    assert not imap_login_works(node.ports["imaps"], address, new, "127.0.0.84")
    with smtps(node.ports["submissions"]) as client:
        with pytest.raises(smtplib.SMTPAuthenticationError):
            client.login(address, new)
    node.app.mailboxes.set_enabled(address, True)
    assert imap_login_works(node.ports["imaps"], address, new, "127.0.0.85")
