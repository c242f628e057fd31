"""Queue actions on another node of the cluster: node A's CLI asks, node B's agent acts on
B's real postfix queue (the request goes through the shared PostgreSQL, LISTEN/NOTIFY)."""
from __future__ import annotations

import json
import os
import signal
import time
import uuid

from sqlalchemy import select

from mailclients import UNREACHABLE  # no route to it from a node's namespace either
from rupost.db.models import AuditRecord
from support.cluster import queue_on, run, wait_until



def raw_queue(node) -> dict[str, dict]:
    """Node's queue as its own postfix reports it (postqueue -j on its queue), by queue id."""
    conf = node.layout.component_config("postfix")
    out = run("postqueue", "-c", conf, "-j").stdout
    return {m["queue_id"]: m for m in (json.loads(line) for line in out.splitlines() if line.strip())}


def queued_for(node, rcpt) -> str | None:
    """The queue id of the deferred message for `rcpt`, once postfix has deferred it."""
    found = [m for m in raw_queue(node).values() if m["recipients"][0]["address"] == rcpt]
    return found[0]["queue_id"] if len(found) == 1 and found[0]["queue_name"] == "deferred" else None


def audited(node, action, target):
    with node.app.dbs.session("logs") as s:
        return s.scalars(select(AuditRecord).where(AuditRecord.action == action, AuditRecord.target == target)
                         .order_by(AuditRecord.id)).all()


def test_queue_actions_from_node_a_change_node_bs_queue_and_a_silent_node_is_named(cluster):
    a, b = cluster.node("nodea"), cluster.node("nodeb")
    tag = uuid.uuid4().hex[:6]
    rcpts = [f"far{i}-{tag}@[{UNREACHABLE}]" for i in range(2)]
    for rcpt in rcpts:
        queue_on(b, rcpt, 1)
    first = wait_until(lambda: queued_for(b, rcpts[0]), 60)
    second = wait_until(lambda: queued_for(b, rcpts[1]), 60)
    assert first and second, raw_queue(b)
    assert first not in raw_queue(a)
    for node in (a, b):
        node.start_agent(interval=1, hold_down=300)
    try:
        assert wait_until(lambda: all(a.app.nodes.agent_alive(n) for n in a.app.nodes.list()), 30)

        # the cluster's queues from A, with the node column
        listed = json.loads(a.rupost("mailqueues", "list", "--cluster", "--json", "--match", f"recipient={tag}").stdout)
        assert {(m["node"], m["id"]) for m in listed["messages"]} == {("nodeb", first), ("nodeb", second)}
        table = a.rupost("mailqueues", "list", "--cluster").stdout
        assert "NODE" in table and first in table

        # hold on B, asked from A
        out = a.rupost("mailqueues", "hold", first, "--node", "nodeb")
        assert f"nodeb: held 1 message(s): {first}" in out.stdout, out.stdout
        assert raw_queue(b)[first]["queue_name"] == "hold"
        assert (b.layout.postfix_queue / "hold" / first).exists()
        record = audited(a, "mailqueue.hold", first)[-1]
        assert record.details["node"] == "nodeb" and record.details["requested_from"] == "nodea"

        # release by a filter
        out = a.rupost("mailqueues", "release", "--all-matching", f"recipient={tag}", "--node", "nodeb", "--json")
        assert json.loads(out.stdout)["done"] == [first]
        assert raw_queue(b)[first]["queue_name"] in ("deferred", "active", "incoming")
        # B's errors reach A with B's name, and change nothing
        out = a.rupost("mailqueues", "release", second, "--node", "nodeb", check=False)
        assert out.returncode == 1 and f"node nodeb: not on hold: {second}" in out.stderr, out.stderr
        assert a.rupost("mailqueues", "flush", "--node", "nodeb").returncode == 0
        assert audited(a, "mailqueue.flush", "all")[-1].details["node"] == "nodeb"
        # requeue: B's cleanup takes the message again under a new queue id
        out = a.rupost("mailqueues", "requeue", second, "--node", "nodeb")
        assert "nodeb: requeued 1 message(s)" in out.stdout, out.stdout
        old = second
        second = wait_until(lambda: (lambda qid: qid if qid and qid != old else None)(queued_for(b, rcpts[1])), 60)
        assert second and old not in raw_queue(b), raw_queue(b)

        # delete
        out = a.rupost("mailqueues", "delete", first, "--node", "nodeb")
        assert f"nodeb: deleted 1 message(s): {first}" in out.stdout
        assert first not in raw_queue(b) and second in raw_queue(b)
        # the relay's round trip (A's core in this process asks, B's agent runs postqueue -f): printed
        took = []
        for _ in range(5):
            started = time.monotonic()
            assert a.app.mailqueues.flush(node="nodeb")["node"] == "nodeb"
            took.append(time.monotonic() - started)
        print(f"\nrelayed flush A->B: median {sorted(took)[2] * 1000:.0f} ms, max {max(took) * 1000:.0f} ms")

        # B's agent hangs (still counted alive by its heartbeat): A gives up after its timeout,
        # naming B; the request expires and is not run when B's agent wakes up
        os.kill(b.agent.pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            out = a.rupost("mailqueues", "hold", second, "--node", "nodeb", "--timeout", "5", check=False)
            took = time.monotonic() - started
        finally:
            os.kill(b.agent.pid, signal.SIGCONT)
        assert out.returncode == 1 and "node nodeb did not answer within 5 s" in out.stderr, out.stderr
        assert took < 30, took
        a.rupost("mailqueues", "list", "--node", "nodeb")  # B's agent serves again (its own shared queue read)
        time.sleep(3)  # a few agent ticks
        assert raw_queue(b)[second]["queue_name"] == "deferred"

        # B's agent stopped: the request fails at once, naming B
        b.stop_agent()
        started = time.monotonic()
        out = a.rupost("mailqueues", "delete", second, "--node", "nodeb", check=False)
        assert out.returncode == 1 and "node nodeb did not answer" in out.stderr, out.stderr
        assert "not running" in out.stderr and time.monotonic() - started < 30
        assert raw_queue(b)[second]["queue_name"] == "deferred"
    finally:
        for node in (a, b):
            node.stop_agent()
        b.rupost("mailqueues", "delete", "--all-matching", f"recipient={tag}", check=False)
