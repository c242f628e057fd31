"""A highly available database (Patroni + etcd, three members, synchronous mode) under two
RuPost nodes: the daemons reach the primary through each node's HAProxy, the core through
libpq's read-write target; mail keeps flowing while the primary dies or is switched over."""
from __future__ import annotations

import json
import uuid

import pytest
from mailclients import inbox_subjects

from support.cluster import send, wait_until
from support.ha_scenarios import failover_run, listeners_on, lookup_sessions_on_replicas, queue_locks_on
from support.held_session import HeldSession


@pytest.fixture(scope="module")
def users(ha_cluster):
    app = ha_cluster.nodes[0].app
    domain = f"h{uuid.uuid4().hex[:6]}.test"
    app.domains.add(domain)
    made = []
    for local in ("ann", "bob", "cid"):
        app.mailboxes.add(f"{local}@{domain}", f"{local}-password-1")
        made.append(f"{local}@{domain}")
    return domain, made


def db_status(node) -> dict:
    return json.loads(node.rupost("db", "status", "--json").stdout)


def check_results(node) -> dict:
    out = json.loads(node.rupost("check", "--only", "database-ha", "--json", check=False).stdout)
    return {r["target"]: (r["status"], r["detail"]) for r in out["results"]}


def test_every_way_reaches_the_primary(ha_cluster, patroni, users):
    leader = patroni.leader()
    for node in ha_cluster.nodes:
        status = db_status(node)
        assert status["ha"] is True and status["primary"] == leader.address
        assert {m["host"] for m in status["members"]} == {m.address for m in patroni.members}
        assert status["reaches"]["core"] == f"{leader.address} (primary)"
        assert status["reaches"]["db_primary"] == f"{leader.address} (primary)"
        assert status["reaches"]["db_lookup"] == f"{leader.address} (primary)"  # the primary while there is one
        # postfix's tables and dovecot's SQL go through HAProxy on loopback
        pgsql = (node.layout.current / "postfix").glob("pgsql-*.cf")
        port = node.app.config.port("db_lookup")
        hosts = " ".join(f"127.0.0.{i}:{port}" for i in range(1, 7))
        assert all(f"hosts = {hosts}\n" in p.read_text() for p in pgsql)
        sql = (node.layout.current / "dovecot" / "dovecot-sql.conf.ext").read_text()
        dovecot_hosts = " ".join(f"host='127.0.0.{i}'" for i in range(1, 7))
        assert f"connect = {dovecot_hosts} port='{port}' " in sql
        assert " maxconns=1\n" in sql
        assert {target: status for target, (status, _) in check_results(node).items()} == {
            "primary": "ok", **{m.name: "ok" for m in patroni.members if m is not leader}, "haproxy": "ok"}
        assert wait_until(lambda: listeners_on(patroni, node.address) >= 1, 30)


def test_a_replica_never_answers_no_such_mailbox(ha_cluster, patroni, users):
    """What exists is found on a replica; a miss there is an error (a temporary failure for
    postfix and dovecot), not "550 User unknown" or "unknown user": the replica may be behind
    the primary (data migrations 0013_data_replica_misses, 0014_data_auth_lookups: dovecot's
    passdb and userdb functions). The primary answers as before."""
    domain, recipients = users
    data = ha_cluster.nodes[0].app.dbs.name("data")
    replica = next(m for m in patroni.members if m is not patroni.leader())
    assert wait_until(lambda: patroni.psql(f"SELECT count(*) FROM lookup_mailboxes WHERE address = '{recipients[0]}'",
                                           data, replica).strip() == "1", 30)
    for function in ("lookup_login", "lookup_user"):
        assert patroni.psql(f"SELECT address FROM {function}('{recipients[0]}')", data, replica).strip() == \
            recipients[0]
    assert patroni.psql(f"SELECT lookup_recipient_access('{recipients[0]}', '+')", data, replica).strip() == "DUNNO"
    missing = f"nobody@{domain}"
    for sql in (f"SELECT * FROM lookup_login('{missing}')", f"SELECT * FROM lookup_user('{missing}')",
                f"SELECT lookup_recipient_access('{missing}', '+')"):
        with pytest.raises(RuntimeError, match="on this replica"):
            patroni.psql(sql, data, replica)
    assert patroni.psql(f"SELECT lookup_recipient_access('{missing}', '+')", data).strip() == \
        "550 5.1.1 User unknown in virtual mailbox table"
    for function in ("lookup_login", "lookup_user"):
        assert patroni.psql(f"SELECT count(*) FROM {function}('{missing}')", data).strip() == "0"
    # postfix's domain lookup as the node renders it: "yes" anywhere, "no" (which its lookup
    # cache keeps) only from the primary; a replica answers a domain it does not host with no
    # row, which postfix does not cache
    rendered = (ha_cluster.nodes[0].layout.component_config("postfix") / "pgsql-domains.cf").read_text()
    query = next(line for line in rendered.splitlines() if line.startswith("query = "))[len("query = "):]
    for member, answers in ((replica, ("yes", "")), (None, ("yes", "no"))):
        assert tuple(patroni.psql(query.replace("%s", name), data, member).strip()
                     for name in (domain, "not-hosted.example")) == answers


def test_the_panel_shows_the_members_and_the_ways(ha_cluster, patroni):
    """The Nodes page of the panel: every member with its role, and which member each of this
    node's ways reaches (what `rupost db status` says)."""
    from panel.conftest import PASSWORD, PanelClient

    from rupost.panel import create_app

    node = ha_cluster.nodes[0]
    login = f"ha-{uuid.uuid4().hex[:8]}"
    node.app.admins.add(login, PASSWORD, "superadmin", [])  # the cluster's only one: it goes with the cluster
    client = PanelClient(create_app(node.app, testing=True))
    client.login(login)
    page = client.get("/nodes/").get_data(as_text=True)
    leader = patroni.leader()
    assert 'id="db-members"' in page and all(f"{m.address}:5432" in page for m in patroni.members), page[-3000:]
    assert page.count("leader") >= 1 and "sync_standby" in page
    assert f"{leader.name} ({leader.address})" in page  # the primary, named
    assert f"<td>core</td><td class=\"ok\">{leader.address} (primary)</td>" in page, page[-3000:]
    # the loopback ways are the node's own (its HAProxy in its namespace; this test process is
    # outside it, `rupost db status` above asks them from inside): listed, whatever they say here
    assert all(f"<td>{way}</td>" in page for way in ("db_primary", "db_lookup")), page[-3000:]


def imap_login_retried(address: str, user: str, password: str, source: str, tries: int = 3):
    """(INBOX subjects, logins refused with a temporary failure before one succeeded)."""
    import imaplib
    import time

    for failures in range(tries):
        try:
            return inbox_subjects(address, 993, user, password, source), failures
        except imaplib.IMAP4.error as exc:
            if "UNAVAILABLE" not in str(exc) or failures == tries - 1:
                raise
            time.sleep(1)
    raise AssertionError("unreachable")


def held_session(node, user: str, password: str, source: str) -> HeldSession:
    return HeldSession(node.address, 993, user, password, source, node.layout.logs)


def lookups_on_the_primary(ha_cluster) -> bool:
    """No node's lookups read a replica any more (sessions opened there while no primary was
    up are shut once one is: a replica may not yet have what was just written)."""
    return all(wait_until(lambda n=n: lookup_sessions_on_replicas(n) == 0, 30) for n in ha_cluster.nodes)


def listeners_back(ha_cluster, patroni, before: dict) -> bool:
    """Every node holds as many LISTEN connections on the (new) primary as before the event."""
    return all(wait_until(lambda n=n: listeners_on(patroni, n.address) >= before[n.name], 60)
               for n in ha_cluster.nodes)


def test_a_planned_switchover_refuses_nothing(ha_cluster, patroni, users):
    domain, recipients = users
    before = {n.name: listeners_on(patroni, n.address) for n in ha_cluster.nodes}
    session = held_session(ha_cluster.nodes[0], recipients[0], "ann-password-1", ha_cluster.client_address(11))
    r = failover_run(ha_cluster, patroni, domain, recipients, "switchover", client=1)
    print(f"\nswitchover: {r.figures()}")
    assert r.new_leader and r.new_leader != r.old_leader
    assert (r.refused_5xx, r.tempfail_4xx, r.connection_failures) == (0, 0, 0), r.figures()
    assert (r.lost, r.duplicated) == (0, 0), r.figures()
    assert r.first_write_s is not None, r.write_errors
    assert all("switching over" in e for e in r.write_errors), r.write_errors
    assert listeners_back(ha_cluster, patroni, before)
    assert lookups_on_the_primary(ha_cluster)
    # the IMAP session opened before the switch goes on, and sees the mail delivered meanwhile
    assert session.after() > session.count
    # the first login of an account no dovecot has seen, on either node, succeeds at once: each
    # auth process still held idle SQL connections the old primary had closed (issue 32)
    for k, node in enumerate(ha_cluster.nodes):
        inbox_subjects(node.address, 993, r.new_mailbox, "write-password-1", ha_cluster.client_address(12 + k))


def test_a_replica_down_sends_lookups_to_the_primary_and_the_check_names_it(ha_cluster, patroni, users):
    domain, recipients = users
    leader, sync = patroni.leader(), patroni.sync_standby()
    replica = next(m for m in patroni.members if m not in (leader, sync))
    node = ha_cluster.nodes[1]
    patroni.stop_member(replica)
    try:
        named = wait_until(lambda: [(t, st) for t, (st, detail) in check_results(node).items()
                                    if replica.address in detail and st == "warning"], 30)
        assert named, check_results(node)
        assert json.loads(node.rupost("db", "status", "--json").stdout)["reaches"]["db_lookup"] == \
            f"{leader.address} (primary)"
        send(node.address, ha_cluster.client_address(4), recipients[0], f"replica down {uuid.uuid4().hex}")
    finally:
        patroni.start_patroni(replica)
        patroni.wait_healthy()


@pytest.mark.parametrize("how,client", [("postgres", 2), ("member", 3)])
def test_mail_flows_through_the_primarys_death(ha_cluster, patroni, users, how, client):
    """SIGKILL to the primary's PostgreSQL (Patroni restarts it, or fails over), then to its
    whole host (the synchronous standby takes over): known recipients are never refused
    (4xx retried is acceptable), nothing is lost or duplicated, writes work again, the
    LISTEN consumers are back on the primary and a deploy goes through."""
    domain, recipients = users
    before = {n.name: listeners_on(patroni, n.address) for n in ha_cluster.nodes}
    assert all(queue_locks_on(patroni, n.address) >= 1 for n in ha_cluster.nodes)
    session = held_session(ha_cluster.nodes[1], recipients[1], "bob-password-1", ha_cluster.client_address(13 + client))
    r = failover_run(ha_cluster, patroni, domain, recipients, how, client=client)
    print(f"\n{how}: {r.figures()}")
    assert r.refused_5xx == 0, r.figures()
    assert (r.lost, r.duplicated) == (0, 0), r.figures()
    assert r.first_write_s is not None and r.new_mailbox, r.write_errors
    assert [e for e in r.write_errors if "switching over" not in e] == [], r.write_errors
    assert listeners_back(ha_cluster, patroni, before)
    assert lookups_on_the_primary(ha_cluster)
    # each agent took its node's queue lock again on the new primary (lost with the old
    # session): without it the other node's evacuator may deliver a queue whose postfix runs
    assert all(wait_until(lambda n=n: queue_locks_on(patroni, n.address) >= 1, 30) for n in ha_cluster.nodes)
    # the IMAP session opened before the event goes on, and sees the mail delivered meanwhile
    assert session.after() > session.count
    # the mailbox created after the event receives mail and logs in over IMAP on either node,
    # the first time: dovecot walks through its SQL connections the old server closed, and
    # one stuck in its reconnect back-off was replaced when the agent revived the lookups
    for k, node in enumerate(ha_cluster.nodes):
        source = ha_cluster.client_address(20 + 2 * client + k)
        subjects, failures = imap_login_retried(node.address, r.new_mailbox, "write-password-1", source)
        print(f"{node.name}: IMAP logins failed before one succeeded: {failures}")
        assert failures == 0
        assert any(s.startswith("flow ") for s in subjects), subjects
    assert ha_cluster.nodes[1].rupost("deploy", "--this-node", check=False).returncode == 0
    if how == "member":
        patroni.revive_member(patroni.member(r.old_leader))
        patroni.wait_healthy(180)
