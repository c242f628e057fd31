"""A highly available database (Patroni + etcd, three members, synchronous mode) under two
RuPost nodes: the daemons reach the primary through each node's HAProxy, the core through
libpq's read-write target; mail keeps flowing while the primary dies or is switched over."""
from __future__ import annotations

import json
import time
import uuid

import pytest

from rupost.errors import DatabaseError
from support.cluster import wait_until
from support.mailflow import MailFlow


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


def listeners_on(patroni, node_address: str) -> int:
    """LISTEN connections (application rupost-listen) a node holds on the current primary."""
    return int(patroni.psql("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'rupost-listen' "
                            f"AND client_addr = '{node_address}'").strip() or 0)


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
        assert all(f"hosts = 127.0.0.1:{node.app.config.port('db_lookup')}" in p.read_text() for p in pgsql)
        checks = json.loads(node.rupost("check", "--only", "database-ha", "--json", check=False).stdout)
        assert {r["target"]: r["status"] for r in checks["results"]} == {
            "primary": "ok", **{m.name: "ok" for m in patroni.members if m is not leader}, "haproxy": "ok"}
        assert wait_until(lambda: listeners_on(patroni, node.address) >= 1, 30)
