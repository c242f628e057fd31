"""Abuse protection on a deployed node: failed-login blocking shared through Postgres
(IMAP, submission, webmail), the outbound rate limit per sender, postscreen on port 25
and external milters with the administrator's default action.

The module deploys the shared node once with small limits (3 failures, a 45-second
block, 3 messages per sender, postscreen with a 2-second greeting wait, one milter
that cannot be reached) and restores the previous parameters afterwards. Client
addresses are 127.0.0.6x: the node sees them through the PROXY protocol.
"""
from __future__ import annotations

import http.client
import imaplib
import json
import smtplib
import socket
import subprocess
import time
import uuid

import pytest
from click.testing import CliRunner

from mailclients import IMAPSFrom, insecure_tls, message, wait_for_subject
from rupost.cli import main as rupost
from rupost.errors import NotFoundError, ValidationError
from rupost.services.blocklist import Limits
from rupost.services.settings import TEMPLATE_PARAMETERS
from support.instance import free_ports

UNREACHABLE_MILTER_PORT = free_ports(1)[0]
TUNED = {
    "auth_ip_failure_limit": 3,
    "auth_account_failure_limit": 1000,
    "auth_failure_window": 120,
    "auth_block_time": 45,
    # dovecot's own delay, on top of its per-address penalty: postfix waits 10 s at most for
    # an answer from dovecot's SASL before it gives up with 454 4.7.0
    "auth_failure_delay": "0 secs",
    "sender_rate_limit": 3,
    "sender_rate_window": 3600,
    "postscreen": True,
    "postscreen_greet_wait": "2s",
    "milters": [f"inet:127.0.0.1:{UNREACHABLE_MILTER_PORT}"],
    "milter_default_action": "accept",
}


def cli(node, *args):
    return CliRunner().invoke(rupost, ["--root", str(node.root), *args], catch_exceptions=False)


def redeploy(node, params: dict) -> None:
    node.app.settings.set(TEMPLATE_PARAMETERS, params)
    node.app.deploys.deploy()


@pytest.fixture(scope="module")
def tuned(node):
    before = dict(node.app.settings.get(TEMPLATE_PARAMETERS, {}) or {})
    redeploy(node, {**before, **TUNED})
    yield node
    redeploy(node, before)


def imap_login(node, source: str, user: str, password: str) -> None:
    imap = IMAPSFrom("127.0.0.1", node.ports["imaps"], source)
    try:
        imap.login(user, password)
    finally:
        try:
            imap.logout()
        except (OSError, imaplib.IMAP4.error):
            pass


def submission(node, source: str) -> smtplib.SMTP_SSL:
    client = smtplib.SMTP_SSL("127.0.0.1", node.ports["submissions"], timeout=15, context=insecure_tls(),
                              source_address=(source, 0))
    client.ehlo("client.example.org")
    return client


def submission_login(node, source: str, user: str, password: str) -> None:
    """One AUTH PLAIN (smtplib's login() would try a second mechanism after a failure)."""
    client = submission(node, source)
    try:
        client.user, client.password = user, password
        client.auth("PLAIN", client.auth_plain)
    finally:
        client.close()


def webmail_login(node, source: str, user: str, password: str) -> tuple[int, bytes]:
    conn = http.client.HTTPSConnection("127.0.0.1", node.ports["https"], context=insecure_tls(), timeout=30,
                                       source_address=(source, 0))
    try:
        conn.request("POST", "/SOGo/connect", body=json.dumps({"userName": user, "password": password,
                                                                 "rememberLogin": 0}),
                     headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def wait_until(check, timeout: float = 30, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    while True:
        try:
            return check()
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(interval)


# ---------------------------------------------------------------- failed logins
def test_failed_logins_block_the_address_everywhere_until_the_block_expires(tuned, mailbox):
    node = tuned
    user, password = mailbox("victim")
    attacker, other = "127.0.0.61", "127.0.0.62"
    # failures count together whatever the protocol: two on IMAP, one on submission
    for _ in range(2):
        with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
            imap_login(node, attacker, user, "wrong-password")
    with pytest.raises(smtplib.SMTPAuthenticationError):
        submission_login(node, attacker, user, "wrong-password")

    # now even the right password is refused from that address, on both protocols
    with pytest.raises(smtplib.SMTPAuthenticationError, match="Too many failed authentications"):
        submission_login(node, attacker, user, password)
    with pytest.raises(imaplib.IMAP4.error, match="Too many failed authentications"):
        imap_login(node, attacker, user, password)
    blocks = {b["value"]: b for b in node.app.blocklist.list()}
    assert blocks[attacker]["kind"] == "ip" and "3 failed authentications" in blocks[attacker]["reason"]
    listed = cli(node, "security", "blocks", "list")
    assert listed.exit_code == 0 and attacker in listed.output

    # the same account from another address still works
    imap_login(node, other, user, password)
    submission_login(node, other, user, password)

    # the block expires (auth_block_time = 45 s; dovecot adds its own growing delay per address)
    wait_until(lambda: imap_login(node, attacker, user, password), timeout=150)
    submission_login(node, attacker, user, password)
    assert attacker not in {b["value"] for b in node.app.blocklist.list()}


def test_webmail_logins_share_the_block_list(tuned, mailbox):
    node = tuned
    user, password = mailbox("web")
    attacker, other = "127.0.0.63", "127.0.0.64"
    for _ in range(3):
        status, body = webmail_login(node, attacker, user, "wrong-password")
        assert status == 403 and b"blocked" not in body
    status, body = webmail_login(node, attacker, user, password)
    assert status == 403 and json.loads(body)["blocked"] is True
    # a block made by webmail failures holds for IMAP too (one list for every protocol and node)
    with pytest.raises(imaplib.IMAP4.error, match="Too many failed authentications"):
        imap_login(node, attacker, user, password)
    status, body = webmail_login(node, other, user, password)
    assert status == 200 and json.loads(body)["cn"] == user
    removed = cli(node, "security", "blocks", "remove", attacker)
    assert removed.exit_code == 0 and f"ip {attacker} unblocked" in removed.output
    imap_login(node, attacker, user, password)


def test_account_blocks_exemptions_and_bad_input(node):
    account = f"acc{uuid.uuid4().hex[:8]}@example.test"
    svc = node.app.blocklist_with(Limits(ip_failures=0, account_failures=3, window=60, block_time=60))
    assert svc.record_failure("192.0.2.1", account, "imap") == []
    assert svc.record_failure("192.0.2.2", account.upper(), "smtp") == []
    blocks = svc.record_failure("192.0.2.3", account, "panel")
    assert [(b["kind"], b["value"]) for b in blocks] == [("account", account)]
    assert svc.is_blocked("198.51.100.7", account)["kind"] == "account"  # from any address
    assert svc.is_blocked("198.51.100.7", "someone-else@example.test") is None
    assert svc.is_blocked("192.0.2.1", "") is None  # ip_failures = 0: addresses are never blocked

    r = cli(node, "security", "blocks", "remove", account.upper())
    assert r.exit_code == 0 and f"account {account} unblocked" in r.output
    assert svc.is_blocked("", account) is None
    r = cli(node, "security", "blocks", "remove", account)
    assert r.exit_code == 1 and "is not on the block list" in r.output
    with pytest.raises(NotFoundError):
        svc.unblock("203.0.113.200")

    exempt = node.app.blocklist_with(Limits(ip_failures=1, account_failures=0, exempt=["10.0.0.0/8"]))
    assert exempt.record_failure("10.1.2.3", "", "imap") == []
    # webmail's own IMAP/SMTP hops come from the loopback address: never blocked
    assert exempt.record_failure("127.0.0.1", "", "imap") == []
    assert exempt.is_blocked("10.1.2.3") is None
    assert [b["kind"] for b in exempt.record_failure("::ffff:203.0.113.9", "", "imap")] == ["ip"]
    assert exempt.is_blocked("203.0.113.9")["value"] == "203.0.113.9"  # IPv4-mapped form normalised
    exempt.unblock("203.0.113.9")

    with pytest.raises(ValidationError, match="is not an IP address"):
        svc.record_failure("not-an-address", account, "imap")
    with pytest.raises(ValidationError, match="is not an account name"):
        svc.is_blocked("192.0.2.1", "two words")


# ---------------------------------------------------------------- outbound rate limit
def test_outbound_rate_limit_refuses_the_next_message(tuned, mailbox):
    node = tuned
    sender, password = mailbox("bulk")
    other, other_pw = mailbox("quiet")
    client = submission(node, "127.0.0.65")
    try:
        client.login(sender, password)
        for i in range(3):
            client.send_message(message(sender, other, f"rate {i}"))
        with pytest.raises(smtplib.SMTPDataError) as refused:
            client.send_message(message(sender, other, "rate 3"))
        assert refused.value.smtp_code == 450 and b"4.7.1" in refused.value.smtp_error
        assert b"at most 3 messages per 3600 s" in refused.value.smtp_error
        client.rset()
    finally:
        client.close()
    # the limit is per sender: another user on the same address is not affected
    client = submission(node, "127.0.0.65")
    try:
        client.login(other, other_pw)
        client.send_message(message(other, sender, "from the quiet one"))
    finally:
        client.close()
    wait_for_subject(node.ports["imaps"], sender, password, "from the quiet one", source="127.0.0.65")


# ---------------------------------------------------------------- postscreen
def swaks(node, source: str, to: str, subject: str, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(["swaks", "--server", f"127.0.0.1:{node.ports['smtp']}", "--local-interface", source,
                           "--helo", "client.example.org", "--from", "sender@example.org", "--to", to,
                           "--header", f"Subject: {subject}", "--timeout", "30", *extra],
                          capture_output=True, text=True, timeout=60)


def test_postscreen_accepts_a_polite_client_and_rejects_a_pregreeting_one(tuned, mailbox):
    node = tuned
    user, password = mailbox("screened")
    master = (node.layout.current / "postfix" / "master.cf").read_text()
    assert f"127.0.0.1:{node.ports['postfix_smtp']} inet n - n - 1 postscreen" in master
    assert "smtpd-haproxy" not in master  # no way around postscreen
    haproxy = (node.layout.current / "haproxy" / "haproxy.cfg").read_text()
    assert f"server local 127.0.0.1:{node.ports['postfix_smtp']} send-proxy-v2" in haproxy
    subject = f"polite {uuid.uuid4().hex[:6]}"
    polite = swaks(node, "127.0.0.66", user, subject)
    assert polite.returncode == 0, polite.stdout + polite.stderr
    wait_for_subject(node.ports["imaps"], user, password, subject, source="127.0.0.66")

    sock = socket.create_connection(("127.0.0.1", node.ports["smtp"]), timeout=15,
                                    source_address=("127.0.0.67", 0))
    try:
        sock.sendall(b"EHLO spammer.example.org\r\n")  # before the server's greeting: a bot
        reader = sock.makefile("rb")

        def reply() -> bytes:
            lines = [reader.readline()]
            while lines[-1][3:4] == b"-":
                lines.append(reader.readline())
            return b"".join(lines)

        # postscreen's "220-" greeting has no last line: the EHLO answer follows it
        greeting = reply()
        assert greeting.startswith(b"220-") and b"\r\n250 " in greeting, greeting
        sock.sendall(b"MAIL FROM:<sender@example.org>\r\n")
        assert reply().startswith(b"250")
        sock.sendall(f"RCPT TO:<{user}>\r\n".encode())
        assert reply().startswith(b"550 5.5.1")
    finally:
        sock.close()
    log = node.layout.log_file("postfix").read_text()
    assert "PREGREET" in log and "[127.0.0.67]" in log


# ---------------------------------------------------------------- milters
def test_milter_failure_takes_the_administrators_default_action(tuned, mailbox):
    node = tuned
    user, password = mailbox("scanned")
    main_cf = (node.layout.current / "postfix" / "main.cf").read_text()
    port25_milters = next(line for line in main_cf.splitlines() if line.startswith("smtpd_milters = "))
    # rspamd (on by default) first, then the administrator's external milter
    assert port25_milters.endswith(f", inet:127.0.0.1:{UNREACHABLE_MILTER_PORT}"), port25_milters
    assert "milter_default_action = accept" in main_cf
    subject = f"milter accept {uuid.uuid4().hex[:6]}"
    accepted = swaks(node, "127.0.0.68", user, subject)
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr
    wait_for_subject(node.ports["imaps"], user, password, subject, source="127.0.0.68")
    assert f"connect to Milter service inet:127.0.0.1:{UNREACHABLE_MILTER_PORT}" in \
        node.layout.log_file("postfix").read_text()

    # tempfail: the deploy's own SMTP probe must pass, so the milter is up while deploying
    # (a relay to the node's OpenDKIM socket: a real milter) and goes away afterwards
    current = node.app.settings.get(TEMPLATE_PARAMETERS, {})
    relay = MilterRelay(node.layout.run_dir("opendkim") / "opendkim.sock")
    redeploy(node, {**current, "milters": [f"inet:127.0.0.1:{relay.port}"], "milter_default_action": "tempfail"})
    try:
        subject = f"milter up {uuid.uuid4().hex[:6]}"
        assert swaks(node, "127.0.0.68", user, subject).returncode == 0
        wait_for_subject(node.ports["imaps"], user, password, subject, source="127.0.0.68")
        assert relay.connections > 0  # postfix really talked to it
        relay.close()
        refused = swaks(node, "127.0.0.68", user, "milter down")
        assert refused.returncode != 0
        assert "451 4.7.1 Service unavailable" in refused.stdout, refused.stdout
    finally:
        relay.close()
        redeploy(node, current)


class MilterRelay:
    """A TCP milter address in front of a unix-socket milter, that the test can take away."""

    def __init__(self, target):
        import threading

        self.target = str(target)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        import threading

        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            upstream = socket.socket(socket.AF_UNIX)
            upstream.connect(self.target)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src, dst):
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self):
        try:
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() and stops listening
        except OSError:
            pass
        self.listener.close()


def test_bad_milter_and_parameter_values_are_refused(tuned):
    node = tuned
    with pytest.raises(ValidationError, match="milter_default_action"):
        node.app.templates.set_parameters({"milter_default_action": "ignore"})
    current = node.app.settings.get(TEMPLATE_PARAMETERS, {})
    with pytest.raises(ValidationError, match=r"not a milter address \(inet:HOST:PORT or unix:/PATH\)"):
        node.app.deploys.plan({**current, "milters": ["127.0.0.1:8891"]})
    with pytest.raises(ValidationError, match="auth_block_time"):
        node.app.templates.set_parameters({"auth_block_time": 0})


def test_policy_and_opendkim_sections_are_checked(node):
    from adapters.opendkim import OpenDKIMAdapter
    from adapters.policy import PolicyAdapter
    from rupost.templating import errors as schema_errors

    policy = PolicyAdapter()
    assert policy.check_model({"limits": {"exempt": ["10.0.0.0/33"]}}) == [
        "components.policy.limits.exempt[0]: '10.0.0.0/33' is not an address or network"]
    problems = schema_errors.validate({"listen": "127.0.0.1:10091", "limits": {"window": 0, "bogus": 1}},
                                      policy.schema, "components.policy")
    assert any("window" in p for p in problems) and any("bogus" in p for p in problems)
    problems = schema_errors.validate({"socket": "relative/path.sock"}, OpenDKIMAdapter().schema,
                                      "components.opendkim")
    assert problems and "components.opendkim.socket" in problems[0]
    with pytest.raises(ValidationError, match="postscreen_greet_wait"):
        node.app.templates.set_parameters({"postscreen_greet_wait": "six seconds"})


# ---------------------------------------------------------------- the policy server itself
def test_policy_server_keeps_connections_alive_and_answers_bad_bodies(node):
    """dovecot asks twice per authentication: one connection serves them all, and a body
    the server will not read ends the connection instead of being taken for a request."""
    from adapters.policy import API_HEADER, read_api_secret

    port = node.ports["auth_policy"]
    # dovecot sends the node's secret header (its file, 0640 root:dovecot)
    secret = {API_HEADER: read_api_secret(node.layout)}
    allow = json.dumps({"login": "someone@example.test", "remote": "198.51.100.20", "protocol": "imap"})
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.connect()
        first = conn.sock
        for path, body in (("/dovecot?command=allow", allow), ("/nowhere", "an unread body"),
                           ("/dovecot?command=report", json.dumps({**json.loads(allow), "success": True})),
                           ("/dovecot?command=allow", allow)):
            conn.request("POST", path, body, {"Content-Type": "application/json", **secret})
            resp = conn.getresponse()
            answer = resp.read()
            assert resp.status == (404 if path == "/nowhere" else 200), answer
            if resp.status == 200:
                assert json.loads(answer) == {"status": 0, "msg": ""}
        assert conn.sock is first  # never reconnected: the same TCP connection throughout

        conn.request("POST", "/dovecot?command=allow", "x" * (70 * 1024),
                     {"Content-Type": "application/json", **secret})
        resp = conn.getresponse()
        assert resp.status == 413 and resp.getheader("Connection") == "close"
        resp.read()
        conn.request("POST", "/dovecot?command=bogus", "{}", secret)  # a new connection: the old one was closed
        resp = conn.getresponse()
        assert resp.status == 500 and b"unknown dovecot auth policy command 'bogus'" in resp.read()
        assert conn.sock is not first
    finally:
        conn.close()


def test_block_view_follows_blocks_and_unblocks_made_anywhere(node):
    """The policy server's in-memory block list: a block made by another node, an unblock,
    an expiry and a row written by hand in SQL all reach it; while its connection is cut it
    asks the database, then listens again."""
    from sqlalchemy import text

    from rupost.services.blocklist import BlockView
    from support.cluster import wait_until as until

    def soon(predicate, timeout: float):
        return until(predicate, timeout, interval=0.02)  # the view's reconnect gap is ~0.2 s

    limits = Limits(ip_failures=1, account_failures=0, window=60, block_time=60)
    elsewhere = node.app.blocklist_with(limits)  # another node: no view of its own
    here = node.app.blocklist_with(limits)
    here.view = BlockView(node.app, refresh=0.5, retry=0.2).start()
    try:
        assert soon(lambda: here.view.live, timeout=10)
        assert here.is_blocked("198.51.100.30") is None
        elsewhere.record_failure("198.51.100.30", "", "imap")
        assert (soon(lambda: here.view.find("198.51.100.30", ""), timeout=5) or {}).get("kind") == "ip"
        assert here.is_blocked("198.51.100.30")["reason"].startswith("1 failed authentications")

        elsewhere.unblock("198.51.100.30")
        assert soon(lambda: here.view.find("198.51.100.30", "") is None, timeout=5)

        # a block recorded through this very service is in its view before the call returns
        here.record_failure("198.51.100.31", "", "imap")
        assert here.view.find("198.51.100.31", "")["value"] == "198.51.100.31"
        here.unblock("198.51.100.31")

        # expiry: counted from the seconds the database had left, not from this host's clock
        node.app.blocklist_with(Limits(ip_failures=1, account_failures=0, block_time=1)).record_failure(
            "198.51.100.32", "", "imap")
        assert soon(lambda: here.view.find("198.51.100.32", ""), timeout=5)
        time.sleep(1.2)
        assert here.view.find("198.51.100.32", "") is None and here.is_blocked("198.51.100.32") is None

        # a row written by hand is seen at the next periodic reload (refresh 0.5 s here)
        with node.app.dbs.engine("main").begin() as conn:
            conn.execute(text("INSERT INTO auth_blocks (kind, value, reason, expires_at) VALUES "
                              "('account', 'hand@example.test', 'by hand', now() + interval '1 minute')"))
        assert (soon(lambda: here.view.find("", "hand@example.test"), timeout=5) or {}).get("reason") == "by hand"

        # connection cut: not live, the database answers; then it listens again by itself
        pid = here.view.backend_pid
        with node.app.dbs.engine("main").begin() as conn:
            conn.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid})
        assert soon(lambda: not here.view.live, timeout=5)
        assert here.is_blocked("", "hand@example.test")["reason"] == "by hand"  # from the database
        assert soon(lambda: here.view.live and here.view.backend_pid != pid, timeout=10)
        elsewhere.unblock("hand@example.test")
        assert soon(lambda: here.is_blocked("", "hand@example.test") is None, timeout=5)
    finally:
        here.view.stop()
        for value in ("198.51.100.30", "198.51.100.31", "198.51.100.32", "hand@example.test"):
            try:
                elsewhere.unblock(value)
            except NotFoundError:
                pass
