"""Real protocol clients used by the tests, with a chosen source address so the
tests can check that the client's address reaches the daemons."""
from __future__ import annotations

import imaplib
import smtplib
import socket
import ssl
import time
from email.message import EmailMessage

# A mail server address that refuses at once: 240.0.0.1 (class E, reserved, never
# assigned), for which the test session adds an "unreachable" route (tests/conftest.py), so
# postfix's connection fails with "No route to host" and the message stays deferred. Not a
# TEST-NET address: this machine's default gateway is 192.0.2.1 (a connection to it waited
# 30 s for its timeout with the message "active") and its PyPI mirror is in 203.0.113.0/24;
# the cluster's namespaces have no route to any of them.
UNREACHABLE = "240.0.0.1"
UNREACHABLE_NET = "240.0.0.1/32"


def insecure_tls() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


class IMAPSFrom(imaplib.IMAP4_SSL):
    """IMAP4_SSL bound to a local source address."""

    def __init__(self, host, port, source="127.0.0.1"):
        self._source = source
        super().__init__(host, port, ssl_context=insecure_tls(), timeout=15)

    def _create_socket(self, timeout):
        sock = socket.create_connection((self.host, self.port), timeout, source_address=(self._source, 0))
        return self.ssl_context.wrap_socket(sock, server_hostname=self.host)


def imap_login_works(port: int, user: str, password: str, source: str = "127.0.0.1", host: str = "127.0.0.1") -> bool:
    """Whether IMAPS accepts this login (a refusal is False, any other failure raises)."""
    imap = IMAPSFrom(host, port, source)
    try:
        imap.login(user, password)
        return True
    except imaplib.IMAP4.error:
        return False
    finally:
        imap.shutdown()


def message(sender: str, to: str, subject: str, body: str = "hello from the tests\n") -> EmailMessage:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = sender, to, subject
    msg.set_content(body)
    return msg


def smtp(port: int, source: str = "127.0.0.1") -> smtplib.SMTP:
    client = smtplib.SMTP("127.0.0.1", port, timeout=15, source_address=(source, 0))
    client.ehlo("client.example.org")
    return client


def smtps(port: int) -> smtplib.SMTP_SSL:
    client = smtplib.SMTP_SSL("127.0.0.1", port, timeout=15, context=insecure_tls())
    client.ehlo("client.example.org")
    return client


def wait_for_subject(port: int, user: str, password: str, subject: str, timeout: float = 20,
                     source: str = "127.0.0.1") -> bytes:
    """Log in over IMAPS and poll INBOX until a message with the subject arrives; return it."""
    deadline = time.monotonic() + timeout
    imap = IMAPSFrom("127.0.0.1", port, source)
    try:
        imap.login(user, password)
        while True:
            imap.select("INBOX")
            _, data = imap.search(None, "SUBJECT", f'"{subject}"')
            ids = data[0].split()
            if ids:
                _, fetched = imap.fetch(ids[-1], "(RFC822)")
                return fetched[0][1]
            if time.monotonic() > deadline:
                raise AssertionError(f"no message with subject {subject!r} in {user}'s INBOX after {timeout}s")
            time.sleep(0.3)
    finally:
        try:
            imap.logout()
        except (OSError, imaplib.IMAP4.error):
            pass


def inbox_subjects(host: str, port: int, user: str, password: str, source: str = "127.0.0.1") -> list[str]:
    """The subjects of every message in the user's INBOX, oldest first (read without marking them seen)."""
    imap = IMAPSFrom(host, port, source)
    try:
        imap.login(user, password)
        imap.select("INBOX")
        _, data = imap.search(None, "ALL")
        subjects = []
        for msg_id in data[0].split():
            _, fetched = imap.fetch(msg_id, "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
            subjects.append(fetched[0][1].decode().split(":", 1)[1].strip())
        return subjects
    finally:
        try:
            imap.logout()
        except (OSError, imaplib.IMAP4.error):
            pass
