"""Mail statistics from the real postfix and dovecot logs of the node: exact counts, no double
counting after a parser restart or across a log rotation."""
from __future__ import annotations

import datetime as dt
import json
import smtplib
import time
import uuid

from click.testing import CliRunner

from mailclients import UNREACHABLE, message, smtp, smtps, wait_for_subject
from rupost.cli import main as rupost
from rupost.db.stats_models import FILTER_COUNTERS, StatsLogState
from rupost.services import RuPost
from rupost.services.stats import Counts, PostfixParser, StatsService
from test_mailqueues import cli as queue_cli

ZERO = dict.fromkeys(("received", "sent", "delivered", "deferred", "bounced", "rejected"), 0)


def totals(node, domain: str, fresh_parser: bool = False) -> dict:
    """Ingest, then the domain's totals of postfix's and dovecot's counters over the last two
    hours (rspamd's are tests/test_antispam_lists.py's). `fresh_parser`: a new core (new
    process state, new connections), as after a restart of the parser."""
    app = RuPost.open(node.root, actor="test") if fresh_parser else node.app
    try:
        app.stats.ingest()
        return {k: v for k, v in app.stats.series(hours=2, domain=domain)["totals"].items() if k in ZERO}
    finally:
        if fresh_parser:
            app.close()


def wait_for_totals(node, domain, expected, timeout=90.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        got = totals(node, domain)
        if got == expected:
            return got
        if time.monotonic() > deadline or any(got[k] > expected[k] for k in got):
            raise AssertionError(f"statistics of {domain}: expected {expected}, got {got}")
        time.sleep(0.5)


def inbound(node, sender, rcpt, subject):
    with smtp(node.ports["smtp"]) as client:
        assert client.send_message(message(sender, rcpt, subject)) == {}


def rejected(node, domain, count):
    with smtp(node.ports["smtp"]) as client:
        client.mail("someone@example.org")
        for _ in range(count):
            code, _ = client.rcpt(f"nobody-{uuid.uuid4().hex[:6]}@{domain}")
            assert code == 550


def outbound(node, user, password, count):
    with smtps(node.ports["submissions"]) as client:
        client.login(user, password)
        for _ in range(count):
            assert client.send_message(message(user, f"far-{uuid.uuid4().hex[:6]}@[{UNREACHABLE}]", "out")) == {}


def test_counts_are_exact_and_survive_parser_restarts_and_log_rotation(node, domain, mailbox):
    app = node.app
    app.stats.ingest()  # everything logged before this test is already counted
    user, password = mailbox("stats")
    full, _ = mailbox("full", quota="1")  # one byte: any message bounces (552 quota exceeded)
    try:
        subjects = [f"stats {i} {uuid.uuid4().hex}" for i in range(3)]
        for s in subjects:
            inbound(node, "someone@example.org", user, s)
        for s in subjects:
            wait_for_subject(node.ports["imaps"], user, password, s)
        rejected(node, domain, 2)
        outbound(node, user, password, 2)
        inbound(node, "someone@example.org", full, "over quota")
        expected = {**ZERO, "received": 6, "delivered": 3, "deferred": 2, "bounced": 1, "rejected": 2}
        wait_for_totals(node, domain, expected)

        # a restarted parser (a new core) reads nothing twice
        assert totals(node, domain, fresh_parser=True) == expected
        assert totals(node, domain, fresh_parser=True) == expected

        # rotation: the files are renamed; what the daemons still write into the renamed files
        # before they reopen their logs, and what they write into the new ones, both count once
        logs = node.layout.logs
        tag = uuid.uuid4().hex[:6]
        for name in ("postfix", "dovecot"):
            (logs / f"{name}.log").rename(logs / f"{name}.log.stats-{tag}")
        late = f"before reopen {uuid.uuid4().hex}"
        inbound(node, "someone@example.org", user, late)
        wait_for_subject(node.ports["imaps"], user, password, late)
        rejected(node, domain, 1)
        expected = {**expected, "received": 7, "delivered": 4, "rejected": 3}
        wait_for_totals(node, domain, expected)
        result = CliRunner().invoke(rupost, ["--root", str(node.root), "components", "reopen-logs"])
        assert result.exit_code == 0, result.output
        after = f"after reopen {uuid.uuid4().hex}"
        inbound(node, "someone@example.org", user, after)
        wait_for_subject(node.ports["imaps"], user, password, after)
        expected = {**expected, "received": 8, "delivered": 5}
        wait_for_totals(node, domain, expected)
        assert f"to=<{user}>" in (logs / "postfix.log").read_text()  # the daemons write into the new file
        assert totals(node, domain, fresh_parser=True) == expected

        # the CLI shows the same figures
        out = CliRunner().invoke(rupost, ["--root", str(node.root), "stats", "--hours", "2", "--domain", domain,
                                          "--json"], catch_exceptions=False)
        assert out.exit_code == 0, out.output
        data = json.loads(out.output)
        assert {k: v for k, v in data["totals"].items() if k in ZERO} == expected and len(data["hours"]) == 2
        assert sum(data["series"]["delivered"]) == 5
        table = CliRunner().invoke(rupost, ["--root", str(node.root), "stats", "--hours", "2"])
        assert domain in table.output and "RECEIVED" in table.output
    finally:
        queue_cli(node, "delete", "--all-matching", f"sender={user}")


def test_series_is_zero_filled_and_inputs_are_validated(node, domain):
    data = node.app.stats.series(hours=5, domain=domain)
    assert len(data["hours"]) == 5 and data["totals"] == {**ZERO, **dict.fromkeys(FILTER_COUNTERS, 0)}
    hours = [dt.datetime.fromisoformat(h) for h in data["hours"]]
    assert all(b - a == dt.timedelta(hours=1) for a, b in zip(hours, hours[1:]))
    runner = CliRunner()
    for args, expected in ((["--hours", "0"], "0 is not in the range"),
                           (["--domain", "not a domain"], "not a valid domain name"),
                           (["retention", "0"], "0 is not in the range")):
        result = runner.invoke(rupost, ["--root", str(node.root), "stats", "--no-ingest", *args])
        assert result.exit_code != 0 and expected in result.output, (args, result.output)
    result = runner.invoke(rupost, ["--root", str(node.root), "stats", "retention", "30"])
    assert result.exit_code == 0 and "30 days" in result.output
    assert node.app.stats.retention_days() == 30
    node.app.settings.set("stats_retention_days", None)
    assert node.app.stats.retention_days() == 90


# ---------------------------------------------------------------- the file position logic alone
LINE = ("Nov 29 08:54:26 mail postfix-rupost/smtpd[1]: NOQUEUE: reject: RCPT from x[127.0.0.1]: 550 5.1.1 "
        "<a@{d}>: Recipient address rejected; from=<s@example.org> to=<a@{d}> proto=ESMTP helo=<x>\n")


def _run(path, state, domain):
    counts = Counts({domain})
    StatsService(None)._ingest_file(path, state, PostfixParser(counts, {}), dt.datetime.now(dt.timezone.utc))
    return sum(v["rejected"] for (_, d), v in counts.data.items() if d == domain)


def test_offsets_inodes_and_first_line_hash(tmp_path):
    d = "offsets.test"
    log = tmp_path / "postfix.log"
    state = StatsLogState(node="n", source="postfix", path=str(log), inode=0, offset=0, first_line_hash="",
                          memory={}, lines=0)
    log.write_text(LINE.format(d=d) * 3 + LINE.format(d=d)[:40])  # a partial last line is left for later
    assert _run(log, state, d) == 3
    with open(log, "a") as fh:
        fh.write(LINE.format(d=d)[40:])
    assert _run(log, state, d) == 1
    assert _run(log, state, d) == 0
    # rotation by rename: two more lines land in the old file, then the new file starts
    with open(log, "a") as fh:
        fh.write(LINE.format(d=d) * 2)
    log.rename(tmp_path / "postfix.log.1")
    log.write_text(LINE.format(d=d))
    assert _run(log, state, d) == 3
    assert _run(log, state, d) == 0
    # truncated in place (copytruncate) and rewritten: read from the start
    log.write_text(LINE.format(d=d).replace("08:54:26", "09:00:00"))
    assert _run(log, state, d) == 1
    # replaced by another file of the same size under the same inode: the first line tells
    log.write_text(LINE.format(d=d).replace("08:54:26", "09:00:01"))
    assert _run(log, state, d) == 1
    # the log disappears: nothing read, nothing lost
    (tmp_path / "postfix.log.1").unlink()
    log.unlink()
    assert _run(log, state, d) == 0
    log.write_text(LINE.format(d=d))
    assert _run(log, state, d) == 1


def test_refused_message_at_data_is_not_received(node, domain):
    """A recipient refused at RCPT is counted as rejected; nothing is received."""
    node.app.stats.ingest()
    with smtp(node.ports["smtp"]) as client:
        try:
            client.sendmail("someone@example.org", [f"nobody@{domain}"], b"Subject: x\r\n\r\nx\r\n")
        except smtplib.SMTPRecipientsRefused:
            pass
    wait_for_totals(node, domain, {**ZERO, "rejected": 1})


def test_a_parser_dying_before_its_commit_counts_nothing_twice(node, domain, monkeypatch):
    """Counts and file positions are committed together: a run that dies after reading the
    lines but before committing leaves both as they were, and the next run counts them once."""
    import pytest

    node.app.stats.ingest()
    rejected(node, domain, 2)
    log = node.layout.log_file("postfix")
    assert wait_until_text(log, f"@{domain}>")
    before = {p["source"]: p["offset"] for p in node.app.stats.positions()}

    def die(*args, **kwargs):
        raise RuntimeError("killed between reading and committing")

    monkeypatch.setattr(StatsService, "_store", staticmethod(die))
    with pytest.raises(RuntimeError):
        node.app.stats.ingest()
    monkeypatch.undo()
    assert {p["source"]: p["offset"] for p in node.app.stats.positions()} == before
    assert totals(node, domain, fresh_parser=True) == {**ZERO, "rejected": 2}
    assert totals(node, domain) == {**ZERO, "rejected": 2}


def wait_until_text(path, text, timeout=20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text(errors="replace"):
            return True
        time.sleep(0.2)
    return False


def test_mail_sent_out_to_another_server_counts_as_sent(node, domain, mailbox, workdir):
    """Outbound mail relayed to an external SMTP server (postfix's smtp-sink on loopback, reached
    through the template parameter transport_routes) counts as sent, once, across parser restarts."""
    import os
    import subprocess

    from support.instance import free_ports

    port = free_ports(1)[0]
    dumps = workdir / f"sink-{uuid.uuid4().hex[:6]}"
    dumps.mkdir()
    os.chmod(dumps, 0o777)
    sink = subprocess.Popen(["smtp-sink", "-u", "postfix", "-d", f"{dumps}/", f"127.0.0.1:{port}", "50"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    outside = f"sink{uuid.uuid4().hex[:6]}.test"
    user, password = mailbox("sender")
    try:
        result = node.app.deploys.deploy(node.app.deploys.plan(
            {**node.parameters, "transport_routes": f"{outside}=[127.0.0.1]:{port}"}))
        assert result.result == "applied"
        table = (node.layout.current / "postfix" / "table-transport").read_text()
        assert table == f"{outside} smtp:[127.0.0.1]:{port}\n"
        node.app.stats.ingest()  # what was logged before is counted already
        total = 3
        with smtps(node.ports["submissions"]) as client:
            client.login(user, password)
            for i in range(total):
                assert client.send_message(message(user, f"partner{i}@{outside}", f"outbound {i}")) == {}
        deadline = time.monotonic() + 60
        while len(list(dumps.iterdir())) < total and time.monotonic() < deadline:
            time.sleep(0.3)
        assert len(list(dumps.iterdir())) == total, sink.stderr.read1().decode() if sink.poll() is not None else ""
        expected = {**ZERO, "received": total, "sent": total}
        wait_for_totals(node, domain, expected)
        log = node.layout.log_file("postfix").read_text()
        assert log.count(f"relay=127.0.0.1[127.0.0.1]:{port}") >= total and "status=sent" in log
        # a restarted parser counts nothing twice
        assert totals(node, domain, fresh_parser=True) == expected
        out = CliRunner().invoke(rupost, ["--root", str(node.root), "stats", "--hours", "2", "--domain", domain,
                                          "--json"], catch_exceptions=False)
        assert out.exit_code == 0 and json.loads(out.output)["totals"]["sent"] == total, out.output
        table = CliRunner().invoke(rupost, ["--root", str(node.root), "stats", "--hours", "2"]).output
        assert "SENT" in table and domain in table
    finally:
        os.killpg(sink.pid, 9)
        sink.wait()
        node.app.deploys.deploy(node.app.deploys.plan(node.parameters))
        queue_cli(node, "delete", "--all-matching", f"sender={user}")


def test_outbound_routing_parameters_are_checked(node):
    """relayhost and transport_routes take postfix next-hop syntax only: anything else is refused
    before it is stored."""
    before = node.app.settings.get("template_parameters")
    runner = CliRunner()
    for assignment in ("transport_routes=partner.example", "transport_routes=a.example=[10.0.0.1]:25 x",
                       "relayhost=smtp.example.org;rm", "relayhost=mx one.example"):
        result = runner.invoke(rupost, ["--root", str(node.root), "template", "set", assignment])
        assert result.exit_code != 0 and "does not match" in result.output, (assignment, result.output)
    assert node.app.settings.get("template_parameters") == before
