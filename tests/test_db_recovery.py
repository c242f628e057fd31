"""A database that recovers costs no refused mail (issue 32, single node).

Measured before: after PostgreSQL was stopped for a few seconds and started again, every
message to a known recipient got 451 for 62 s (the agent emptied memcached as soon as it
reconnected, while postfix's PostgreSQL client still held the server dead for its hard-coded
60 s), the first IMAP logins failed, mail deferred meanwhile waited for postfix's next queue
run, and `rupost check` said all was well. These tests stop this node's own PostgreSQL (not
the session's shared one) while mail flows, with the node's real agent running.
"""
from __future__ import annotations

import subprocess
import time
import uuid

import pytest

from mailclients import message, smtp
from rupost.config import DatabaseSettings
from rupost.services.cache import flush_dovecot_auth_cache
from rupost.services.lookup_probe import revive_lookups
from support.cluster import wait_until
from support.db_outage import (Agent, LoginFlow, MailFlow, listeners, login, memcached_flushes, rupost_check,
                               statuses, wait_delivered)
from support.instance import Instance, free_ports
from support.postgres import TempPostgres

OUTAGE_S = 10.0  # the scenario of the issue: how long the database is away, not a limit on anything


@pytest.fixture(scope="module")
def outage(workdir):
    pg = TempPostgres(workdir / "pg-outage", free_ports(1)[0]).start()
    inst = Instance(workdir / "outage", DatabaseSettings(host="127.0.0.1", port=pg.port, user="rupost",
                                                         password="outage-db-secret"))
    try:
        inst.configure()
        inst.deploy()
        yield pg, inst
    finally:
        inst.stop()
        pg.destroy()


def accounts(app, domain: str, prefix: str, count: int) -> dict[str, str]:
    made = {f"{prefix}{i}@{domain}": f"pw-{uuid.uuid4().hex[:12]}" for i in range(count)}
    for address, password in made.items():
        app.mailboxes.add(address, password)
    return made


def revived_at(monitor: str) -> float:
    """When the agent said the lookups answer again (the monitor log's line, local time)."""
    import datetime as dt

    line = next(ln for ln in reversed(monitor.splitlines()) if "lookups answer" in ln)
    return dt.datetime.fromisoformat(line.split()[0]).timestamp()


def test_rupost_check_fails_while_lookups_fail_though_the_database_answers(outage):
    """The refusal window of the issue, without an agent to end it: the database answers a
    ping again, postfix's lookups still fail (its client holds the server dead), and the
    lookup check says so; once revived (what the agent does), it passes."""
    pg, inst = outage
    conf = inst.app.layout.component_config("postfix")
    pg.stop("fast")
    try:
        failed = subprocess.run(["postmap", "-c", str(conf), "-q", "someone@example.org",
                                 f"proxy:pgsql:{conf}/pgsql-recipient_access.cf"], capture_output=True, text=True)
        assert "query error" in failed.stderr, failed.stderr
    finally:
        pg.start()
    code, report = rupost_check(inst.root, "database", "lookup")
    found = statuses(report)
    assert found.get(f"database:{inst.app.dbs.name('data')}") == "ok", report
    assert found.get("lookup:postfix") == "critical", report
    assert code == 1
    assert "pgsql-recipient_access.cf" in next(r["detail"] for r in report["results"] if r["target"] == "postfix")

    assert revive_lookups(inst.app, 30) == []
    code, report = rupost_check(inst.root, "database", "lookup")
    assert code == 0, report
    assert set(statuses(report).values()) == {"ok"}


def test_a_database_outage_refuses_no_known_recipient_and_loses_nothing(outage):
    pg, inst = outage
    app = inst.app
    domain = f"o{uuid.uuid4().hex[:8]}.test"
    app.domains.add(domain)
    warm = accounts(app, domain, "warm", 3)  # mail and logins all along: every cache knows them
    cold = accounts(app, domain, "cold", 2)  # known to postfix's cache only when the database goes
    everyone = {**warm, **cold}
    storage = app.layout.mail_storage
    flushes = memcached_flushes(inst.ports["memcached"])
    agent = Agent(inst.root, app.layout.logs).start()
    mail = logins = None
    try:
        assert wait_until(lambda: listeners(pg) >= 2, 60, 0.2), "the agent listens on both databases"
        # each listener empties memcached when it starts (it cannot know what it missed before)
        assert wait_until(lambda: memcached_flushes(inst.ports["memcached"]) >= flushes + 2, 60, 0.2)
        # one message to everyone: postfix caches every answer it needs in memcached
        with smtp(inst.ports["smtp"]) as client:
            for address in everyone:
                assert client.send_message(message("sender@example.org", address, f"hello {address}")) == {}
        assert len(wait_delivered(storage, list(everyone), {f"hello {a}" for a in everyone}, 60)) == len(everyone)
        # dovecot forgets them all (as when its 5-minute auth cache ran out), and then hears
        # of the warm ones again: mail and logins keep reaching them
        assert flush_dovecot_auth_cache(app)
        mail = MailFlow(inst.ports["smtp"], list(warm)).start()
        logins = LoginFlow(inst.ports["imaps"], warm).start()
        assert wait_until(lambda: mail.count("before") >= 2 * len(warm) and logins.count("before") >= len(warm),
                          120, 0.2), "the flows run"

        mail.recipients = list(everyone)
        mail.phase = logins.phase = "during"
        pg.stop("fast")
        stopped = time.monotonic()
        try:
            assert wait_until(lambda: mail.count("during") >= len(everyone), OUTAGE_S, 0.2)
            code, during = rupost_check(inst.root, "database", "lookup")
            wait_until(lambda: False, max(0.0, OUTAGE_S - (time.monotonic() - stopped)), 0.5)
        finally:
            pg.start()
        back = time.time()
        mail.phase = logins.phase = "after"
        # an account dovecot has not cached cannot log in until its SQL client reconnects
        # (the agent makes it reconnect once it hears the database): measured, not bounded
        cold_login = wait_until(lambda: login(inst.ports["imaps"], *next(iter(cold.items())), "after").ok, 60, 0.5)
        cold_login_s = time.time() - back

        during_subjects = {a.subject for a in mail.answers if a.phase == "during" and a.ok}
        arrived = wait_delivered(storage, list(everyone), during_subjects, 120)
        wait_until(lambda: mail.count("after") >= 2 * len(everyone) and logins.count("after") >= len(warm), 60, 0.2)
    finally:
        for flow in (mail, logins):
            if flow is not None:
                flow.stop()
        agent.stop()

    assert code == 1 and statuses(during).get("lookup:postfix") == "critical", during
    assert mail.refused() == [], f"refused: {mail.refused()[:5]}"
    assert logins.refused("before") == logins.refused("during") == [], f"logins refused: {logins.refused()[:5]}"
    # dovecot is reloaded once the database is back (its auth process would escape every key
    # to '' for a minute or more): a login in the middle of its handshake at that instant fails
    revived = revived_at(app.layout.monitor_log.read_text())
    late = [a for a in logins.refused("after") if a.at > revived + 1]  # the log's times are to the second
    assert late == [], f"logins refused once the lookups answered again: {late[:5]}"
    assert cold_login, "an account dovecot had not cached logs in again after the outage"
    assert mail.count("during") >= len(everyone) and mail.count("after") >= 2 * len(everyone)

    accepted = mail.accepted()
    arrived = wait_delivered(storage, list(everyone), set(accepted), 60)
    lost = sorted(set(accepted) - set(arrived))
    assert lost == [], (f"accepted and not delivered: {[(s, accepted[s].who, accepted[s].phase) for s in lost][:10]}; "
                        f"queue: {subprocess.run(['postqueue', '-c', str(app.layout.component_config('postfix')), '-p'], capture_output=True, text=True).stdout[-3000:]}")
    deferred = [s for s in during_subjects if accepted[s].who in cold]
    assert deferred, "mail for the accounts dovecot had forgotten was accepted during the outage"
    assert all(arrived[s] >= back for s in deferred), "dovecot cannot have delivered it without its database"
    monitor = app.layout.monitor_log.read_text()
    assert "queue flushed" in monitor and "lookups answer" in monitor, monitor[-2000:]
    print(f"\ndb outage {OUTAGE_S:.0f} s: {len(accepted)} accepted ({mail.count('during')} during), 0 refused, "
          f"0 lost; deferred mail delivered {max(arrived[s] for s in deferred) - back:.1f} s after the database "
          f"was back; {len(logins.answers)} IMAP logins of cached accounts, {len(logins.refused())} refused (at "
          f"dovecot's reload); lookups revived {revived - back:.1f} s after the database was back; an uncached account "
          f"logged in {cold_login_s:.1f} s after the database was back")
