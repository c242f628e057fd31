"""Allow and deny lists of senders (docs/antispam.md#allow-and-deny-lists): kept in the data
database, served by the node's policy server as an HTTP map rspamd polls, real rspamd on
port 25. Senders arrive as remote clients (PROXY header on port 25's socket, as in
tests/test_antispam.py). The module's node polls the map every second
(antispam_lists_refresh), so a change shows within a few seconds without a deploy.
"""
from __future__ import annotations

import email.utils
import smtplib
import time
import uuid

import pytest
from click.testing import CliRunner
from mailclients import message
from test_antispam import deploy_with, remote, stored_messages, wait_stored

from rupost.cli import main as rupost
from rupost.errors import PermissionDeniedError, ValidationError
from rupost.services import Actor
from support.dns_zone import Zone

POLL = 30  # seconds a change may take to reach rspamd: several of its polls on a loaded machine
REJECT_SCORE = 9  # a bare message (BARE below) scores above it, a proper one far below


@pytest.fixture(scope="module")
def zone():
    z = Zone()  # knows none of the sender domains: each lookup fails at once
    yield z
    z.close()


@pytest.fixture(scope="module")
def lists_node(node, zone):
    """rspamd asking the test's name server (which knows none of the sender domains), polling
    the lists every second, rejecting from REJECT_SCORE; greylisting off."""
    before = dict(node.app.settings.get("template_parameters") or {})
    deploy_with(node, antispam_dns_servers=[f"127.0.0.1:{zone.port}"], antispam_greylisting=False,
                antispam_lists_refresh=1, antispam_reject_score=REJECT_SCORE, antispam_add_header_score=6)
    yield node
    node.app.settings.set("template_parameters", before)
    node.deploy()


def cli(node, *args):
    return CliRunner().invoke(rupost, ["--root", str(node.root), "antispam", *args], catch_exceptions=False)


def send(node, sender: str, rcpt: str, subject: str, body: str = "hello\n", client_ip: str = "198.51.100.21",
         bare: bool = False):
    """What port 25 answers at the end of DATA: None accepted, else (code, text). A `bare`
    message (no Date, no Message-ID, from a domain without DNS) scores above REJECT_SCORE."""
    msg = message(sender, rcpt, subject, body)
    if not bare:
        msg["Date"] = email.utils.formatdate()
        msg["Message-ID"] = email.utils.make_msgid(domain=sender.rpartition("@")[2])
    with remote(node, client_ip) as client:
        try:
            client.send_message(msg)
        except smtplib.SMTPResponseException as exc:
            return exc.smtp_code, exc.smtp_error.decode(errors="replace")
    return None


def delivered_folder(node, address: str, subject: str, timeout: float = 30) -> str:
    """Where an accepted message was filed: "" (INBOX) or ".Junk" (marked as spam)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for folder in ("", ".Junk"):
            if [m for m in stored_messages(node, address, folder) if f"Subject: {subject}".encode() in m]:
                return folder
        time.sleep(0.3)
    raise AssertionError(f"no message {subject!r} for {address} after {timeout}s")


def until(node, sender, rcpt, accepted: bool) -> tuple[str, object]:
    """Send fresh messages until port 25 accepts (or refuses) one, bounded by POLL seconds:
    the subject of the last one sent and the last answer."""
    deadline = time.monotonic() + POLL
    while True:
        subject = f"list {uuid.uuid4().hex[:8]}"
        answer = send(node, sender, rcpt, subject)
        if (answer is None) == accepted or time.monotonic() > deadline:
            return subject, answer
        time.sleep(0.5)


def test_a_denied_sender_is_refused_and_a_change_needs_no_deploy(lists_node, mailbox):
    address, _ = mailbox("denier")
    domain = address.split("@")[1]
    sender = f"pest{uuid.uuid4().hex[:6]}@annoying.example"
    generation = lists_node.layout.current.resolve()
    assert send(lists_node, sender, address, "before the deny") is None
    result = cli(lists_node, "deny", sender, "--domain", domain, "--comment", "keeps writing")
    assert result.exit_code == 0 and f"{sender}: deny for mail to {domain}" in result.output
    _, answer = until(lists_node, sender, address, accepted=False)
    assert answer is not None and 500 <= answer[0] < 600, answer
    assert f"Sender {sender} is refused by the policy of {domain}" in answer[1]
    # another sender of the same domain, and the same sender to another domain, still pass
    other_domain = f"o{uuid.uuid4().hex[:10]}.test"
    lists_node.app.domains.add(other_domain)
    other_rcpt = f"bystander@{other_domain}"
    lists_node.app.mailboxes.add(other_rcpt, f"pw-{uuid.uuid4().hex[:12]}")
    assert send(lists_node, "other@annoying.example", address, "a neighbour") is None
    assert send(lists_node, sender, other_rcpt, "to another domain") is None
    listed = cli(lists_node, "list", "--domain", domain).output
    assert sender in listed and "deny" in listed and "keeps writing" in listed
    assert cli(lists_node, "remove", sender, "--domain", domain).exit_code == 0
    subject, answer = until(lists_node, sender, address, accepted=True)
    assert answer is None
    assert lists_node.layout.current.resolve() == generation  # no deploy in between
    wait_stored(lists_node, address, subject, folder=delivered_folder(lists_node, address, subject))


def test_a_denied_sender_domain_globally_is_refused_for_every_domain(lists_node, mailbox):
    address, _ = mailbox("globaldeny")
    bad = f"b{uuid.uuid4().hex[:8]}.example"
    assert cli(lists_node, "deny", f"@{bad}").exit_code == 0
    try:
        refused, answer = until(lists_node, f"anyone@{bad}", address, accepted=False)
        assert answer is not None and f"Sender {bad} is refused by the policy of this mail system" in answer[1]
    finally:
        cli(lists_node, "remove", bad)
    # the messages sent before rspamd's poll were accepted (marked); the refused one is nowhere
    assert not [m for f in ("", ".Junk") for m in stored_messages(lists_node, address, f) if refused.encode() in m]


def test_an_allowed_sender_is_not_rejected_for_its_score(lists_node, mailbox):
    """A bare message scores above the reject threshold: refused. Once its sender's domain is
    allowed for the recipient's domain, the same message is delivered to the INBOX, unmarked."""
    address, _ = mailbox("allower")
    domain = address.split("@")[1]
    sender = f"partner{uuid.uuid4().hex[:6]}@sloppy.example"
    answer = send(lists_node, sender, address, "before the allow", bare=True)
    assert answer is not None and 500 <= answer[0] < 600 and "Spam message rejected" in answer[1], answer
    assert lists_node.app.antispam_lists.set("allow", "sloppy.example", domain)["kind"] == "allow"
    deadline = time.monotonic() + POLL
    while True:
        subject = f"allowed {uuid.uuid4().hex[:8]}"
        answer = send(lists_node, sender, address, subject, bare=True)
        if answer is None or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert answer is None, answer
    raw = wait_stored(lists_node, address, subject)  # the INBOX: not marked, not in Junk
    status = [line for line in raw.decode().splitlines() if line.startswith("X-Spam-Status:")]
    assert status and status[0].startswith("X-Spam-Status: No, score=-"), status
    assert b"\nX-Spam: Yes" not in raw


def test_deny_wins_over_allow_and_allow_does_not_override_a_reject_verdict(lists_node, mailbox):
    """GTUBE stands for what rspamd refuses whatever the score (its pre-results: a virus, a
    DMARC p=reject failure): an allowed sender's GTUBE is still refused."""
    address, _ = mailbox("gtubeallow")
    domain = address.split("@")[1]
    sender = f"friend{uuid.uuid4().hex[:6]}@partner.example"
    lists_node.app.antispam_lists.set("allow", sender, domain)
    lists_node.app.antispam_lists.set("deny", "partner.example")  # global deny of the whole domain
    try:
        _, answer = until(lists_node, sender, address, accepted=False)
        assert answer is not None and "refused by the policy of this mail system" in answer[1]
    finally:
        lists_node.app.antispam_lists.remove("partner.example")
    from test_antispam import GTUBE

    with remote(lists_node, "198.51.100.22") as client:
        with pytest.raises(smtplib.SMTPDataError) as refused:
            client.send_message(message(sender, address, "gtube allowed", f"{GTUBE}\n"))
    assert 500 <= refused.value.smtp_code < 600


def test_a_domain_administrator_edits_only_their_domains_lists(lists_node):
    mine, other = (f"s{uuid.uuid4().hex[:10]}.test" for _ in range(2))
    for name in (mine, other):
        lists_node.app.domains.add(name)
    lists_node.app.antispam_lists.set("deny", "kept@spam.example", other)
    scoped = lists_node.app.as_actor(Actor("lists-admin", "panel", "192.0.2.7", domains=frozenset({mine})))
    assert scoped.antispam_lists.set("deny", "x@spam.example", mine)["domain"] == mine
    for attempt in (lambda: scoped.antispam_lists.set("allow", "y@spam.example", other),
                    lambda: scoped.antispam_lists.remove("kept@spam.example", other),
                    lambda: scoped.antispam_lists.list(other)):
        with pytest.raises(PermissionDeniedError, match=f"not {other}"):
            attempt()
    with pytest.raises(PermissionDeniedError, match="every domain"):
        scoped.antispam_lists.set("deny", "z@spam.example")
    assert {e["domain"] for e in scoped.antispam_lists.list()} <= {mine, "*"}
    assert [e["sender"] for e in lists_node.app.antispam_lists.list(other)] == ["kept@spam.example"]


@pytest.mark.parametrize("sender, domain, named", [
    ("not an address", None, "'not an address' is not a valid domain name"),
    ("a@@b.example", None, "is not a mail address"),
    ("bad local@x.example", None, "invalid local part"),
    ("ok@example.org", "no_such_domain", "'no_such_domain' is not a valid domain name"),
    ("", None, "sender is empty"),
])
def test_bad_input_is_refused_by_name_and_nothing_is_stored(lists_node, sender, domain, named):
    before = lists_node.app.antispam_lists.count()
    with pytest.raises(ValidationError, match=named.replace("(", r"\(")):
        lists_node.app.antispam_lists.set("deny", sender, domain)
    result = CliRunner().invoke(rupost, ["--root", str(lists_node.root), "antispam", "deny", sender,
                                         *(["--domain", domain] if domain else [])])
    assert result.exit_code != 0 and named in result.output
    assert lists_node.app.antispam_lists.count() == before


def test_the_policy_server_serves_the_map_with_an_entity_tag(lists_node):
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", lists_node.app.config.port("auth_policy"), timeout=10)
    conn.request("GET", "/antispam/lists")
    first = conn.getresponse()
    body, etag = first.read().decode(), first.getheader("ETag")
    assert first.status == 200 and body.startswith("# RuPost allow/deny lists") and etag
    conn.request("GET", "/antispam/lists", headers={"If-None-Match": etag})
    again = conn.getresponse()
    again.read()
    assert again.status == 304


def filter_totals(node, domain: str) -> dict:
    node.app.stats.ingest()
    totals = node.app.stats.series(hours=2, domain=domain)["totals"]
    return {k: totals[k] for k in ("filter_scanned", "filter_rejected", "filter_greylisted")}


def test_the_filters_verdicts_are_counted_per_domain_and_hour(lists_node, mailbox):
    """rspamd's log, read by `rupost stats`: one accepted and one denied message to a fresh
    domain are two scanned, one rejected by the filter."""
    address, _ = mailbox("counted")
    domain = address.split("@")[1]
    assert filter_totals(lists_node, domain) == {"filter_scanned": 0, "filter_rejected": 0, "filter_greylisted": 0}
    sender = f"s{uuid.uuid4().hex[:6]}@counted.example"
    assert send(lists_node, sender, address, "counted, accepted") is None
    lists_node.app.antispam_lists.set("deny", sender, domain)
    _, answer = until(lists_node, sender, address, accepted=False)
    assert answer is not None and 500 <= answer[0] < 600
    deadline = time.monotonic() + 30
    while True:  # rspamd writes its log line after the answer
        got = filter_totals(lists_node, domain)
        if got["filter_rejected"] >= 1 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert got["filter_rejected"] == 1 and got["filter_scanned"] >= 2 and got["filter_greylisted"] == 0, got
    result = CliRunner().invoke(rupost, ["--root", str(lists_node.root), "stats", "--domain", domain, "--no-ingest"])
    assert "FILTER_SCANNED" in result.output and "FILTER_REJECTED" in result.output


def test_greylisting_verdicts_are_counted_from_rspamds_log_lines():
    """The line rspamd writes for a greylisted message (its format, as in rspamd.log), and a
    retry that passes: one greylisted, two scanned; a message to two domains counts on each."""
    from rupost.services.stats import Counts
    from rupost.services.stats_rspamd import RspamdParser

    counts = Counts({"a.test", "b.test"})
    parser = RspamdParser(counts, {})
    head = "#1(rspamd_proxy) <0a1b2c>; proxy; rspamd_task_write_log: id: <x@y>, qid: <4F1>, ip: 198.51.100.7, "
    lines = [
        head + "from: <s@out.example>, (default: F (soft reject): [4.50/15.00] [R_SPF_NA(0.00){},"
               "GREYLIST(0.00){greylisted;Mon, 07 Dec 2026 16:00:00 GMT;new record;}]), len: 900, time: 20.1ms, "
               "dns req: 3, digest: <ab> rcpts: <u@a.test>,  mime_rcpt: <u@a.test>, ",
        head + "from: <s@out.example>, (default: F (no action): [4.50/15.00] [GREYLIST(0.00){pass;}]), len: 900, "
               "time: 20.1ms, dns req: 3, digest: <ab> rcpts: <u@a.test>,  mime_rcpt: <u@a.test>, ",
        head + "from: <s@out.example>, (default: T (reject): [16.00/15.00] [GTUBE(0.00){}]), len: 900, "
               "time: 1ms, dns req: 0, digest: <cd> rcpts: <u@a.test>,<v@b.test>,  mime_rcpt: <u@a.test>, ",
    ]
    for line in lines:
        assert parser.wanted(line)
        parser.line("2026-12-07T16:00:00+00:00", line)
    hour = "2026-12-07T16:00:00+00:00"
    assert {k: v for k, v in counts.data[(hour, "a.test")].items() if v} == \
        {"filter_scanned": 3, "filter_greylisted": 1, "filter_rejected": 1}
    assert {k: v for k, v in counts.data[(hour, "b.test")].items() if v} == {"filter_scanned": 1, "filter_rejected": 1}
