"""A database that recovers costs no refused mail (issue 32, single node).

Measured before: after PostgreSQL was stopped for a few seconds and started again, every
message to a known recipient got 451 for 62 s (the agent emptied memcached as soon as it
reconnected, while postfix's PostgreSQL client still held the server dead for its hard-coded
60 s), the first IMAP logins failed, mail deferred meanwhile waited for postfix's next queue
run, and `rupost check` said all was well. These tests stop this node's own PostgreSQL (not
the session's shared one) while mail flows, with the node's real agent running.
"""
from __future__ import annotations

import uuid

import pytest

from rupost.config import DatabaseSettings
from rupost.services.lookup_probe import lookup_problems, revive_lookups
from support.db_outage import run_outage, rupost_check, statuses
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


def revived_at(monitor: str) -> float:
    """When the agent said the lookups answer again (the monitor log's line, local time)."""
    import datetime as dt

    line = next(ln for ln in reversed(monitor.splitlines()) if "lookups answer" in ln)
    return dt.datetime.fromisoformat(line.split()[0]).timestamp()


def test_rupost_check_fails_while_lookups_fail_though_the_database_answers(outage):
    """The refusal window of the issue, without an agent to end it: the database answers a
    ping again, the daemons' own lookups still fail (postfix's client holds the server dead,
    dovecot's reconnects on its back-off), and the lookup check says so; once revived (what
    the agent does when it hears the database again), it passes."""
    pg, inst = outage
    pg.stop("fast")
    try:
        # every table and the userdb asked while the database is away, as mail would
        down = lookup_problems(inst.app)
        assert len(down) >= 2 and any("pgsql-recipient_access.cf" in p for p in down), down
    finally:
        pg.start()
    assert lookup_problems(inst.app), "the daemons' lookups still fail right after the restart"
    code, report = rupost_check(inst.root, "database", "lookup")
    found = statuses(report)
    assert found.get(f"database:{inst.app.dbs.name('data')}") == "ok", report
    assert "critical" in (found.get("lookup:postfix"), found.get("lookup:dovecot")), report
    assert code == 1

    assert revive_lookups(inst.app, 30) == []
    code, report = rupost_check(inst.root, "database", "lookup")
    assert code == 0, report
    assert set(statuses(report).values()) == {"ok"}


def test_a_database_outage_refuses_no_known_recipient_and_loses_nothing(outage):
    pg, inst = outage
    run = run_outage(pg, inst, f"o{uuid.uuid4().hex[:8]}.test", OUTAGE_S)
    mail, logins = run.mail, run.logins

    code, during = run.check_during
    assert code == 1 and statuses(during).get("lookup:postfix") == "critical", during
    assert mail.refused() == [], f"refused: {mail.refused()[:5]}"
    # nothing changed while the database was away: the agent's listeners came back and kept
    # the lookup cache (the database counts the announcements they might have missed)
    assert run.cache_flushes == 0
    assert mail.count("during") >= 5 and mail.count("after") >= 10
    # dovecot's auth process is replaced once the database is back (its SQL pool would wait out
    # a reconnect timer): a login in the middle of its handshake at that instant can fail;
    # every other login of an account dovecot had cached succeeds, during the outage too
    revived = revived_at(run.monitor)
    assert logins.refused("before") == [], f"logins refused: {logins.refused()[:5]}"
    early = [a for a in logins.refused("during") if a.at < run.back]
    assert early == [], f"cached logins refused while the database was away: {early[:5]}"
    # asked once the lookups answer again (the log's times are to the second)
    late = [a for a in logins.refused() if a.started is not None and a.started > revived + 1]
    assert late == [], f"logins refused once the lookups answered again: {late[:5]}"
    assert run.cold_login_s is not None, "an account dovecot had not cached logs in again after the outage"
    # the stream of logins of uncached accounts: refused while the database is away, then
    # logging in once the lookups were revived (the figure is the benchmark's)
    assert run.cold_logins.refused("during"), "uncached accounts cannot log in without the database"
    cold_late = [a for a in run.cold_logins.refused() if a.started is not None and a.started > revived + 1]
    assert cold_late == [], f"uncached logins asked once the lookups answered refused: {cold_late[:5]}"
    # the IMAP session left idle through the outage goes on and sees the mail delivered meanwhile
    # (the revival does not reload dovecot, whose master would end idle sessions)
    held_before, held_after = run.held_counts
    assert held_after is not None, "the IMAP session held through the outage was ended"
    assert held_after > held_before
    # the restart ended the session holding the agent's lock on the node's queue: taken again
    assert run.queue_locked[0] >= 1 and run.queue_locked[1] >= 1, run.queue_locked
    assert "queue held: the queue lock was lost" in run.monitor, run.monitor[-2000:]

    accepted = run.accepted
    assert run.lost == [], f"accepted and not delivered: {[(s, accepted[s].who, accepted[s].phase) for s in run.lost][:10]}"
    assert run.deferred, "mail for the accounts dovecot had forgotten was accepted during the outage"
    assert all(run.arrived[s] >= run.back for s in run.deferred), "dovecot cannot deliver it without its database"
    assert run.delivered_after_s is not None
    assert "queue flushed" in run.monitor and "lookups answer" in run.monitor, run.monitor[-2000:]
    print(f"\ndb outage {OUTAGE_S:.0f} s: {len(accepted)} accepted ({mail.count('during')} during), 0 refused, "
          f"0 lost; deferred mail delivered {run.delivered_after_s:.1f} s after the database was back; "
          f"{len(logins.answers)} IMAP logins of cached accounts, {len(logins.refused())} refused (in flight when "
          f"dovecot's auth process was replaced); lookups revived {revived - run.back:.1f} s after the database was back; an uncached account "
          f"logged in {run.cold_login_s:.1f} s after, the last refusal of an uncached login "
          f"{run.cold_refused_until_s:.1f} s after ({len(run.cold_logins.answers)} uncached logins)")


def test_a_primary_whose_postmaster_dies_reads_as_a_switch_over(workdir):
    """SIGKILL to the postmaster (Patroni's `postgres` failover case): the backend of an open
    session ends with 'terminating connection due to unexpected postmaster exit'. For an HA
    core that is a failover in progress (retry), not a database that refuses the login."""
    import os
    import signal
    import time

    import psycopg
    import sqlalchemy as sa

    from rupost.config import DatabaseMember
    from rupost.db.engine import describe_db_error, switching_over

    pg = TempPostgres(workdir / "pg-killed", free_ports(1)[0]).start()
    try:
        conn = psycopg.connect(host="127.0.0.1", port=pg.port, user="postgres", password=pg.password,
                               dbname="postgres")
        conn.execute("select 1")
        os.kill(int((pg.data / "postmaster.pid").read_text().split()[0]), signal.SIGKILL)
        time.sleep(1.0)
        with pytest.raises(psycopg.OperationalError) as died:
            conn.execute("select 1")
        assert switching_over(died.value), str(died.value)
        ha = DatabaseSettings(user="rupost", members=[DatabaseMember(host="10.0.0.1", port=5432),
                                                      DatabaseMember(host="10.0.0.2", port=5432)])
        said = describe_db_error(sa.exc.OperationalError("select 1", {}, died.value), ha, "rupost_data")
        assert "switching over" in said and "nothing of this operation was applied" in said, said
    finally:
        pg.destroy()
