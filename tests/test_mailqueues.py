"""Mail queue commands against the node's real postfix queue.

Mail stays in the queue because it goes to an address literal that this machine's routing
table refuses (mailclients.UNREACHABLE): every attempt is deferred at once."""
from __future__ import annotations

import json
import shutil
import subprocess
import time
import uuid

from click.testing import CliRunner

from mailclients import UNREACHABLE, message, smtps
from rupost.cli import main as rupost
from rupost.db.models import Node



def cli(node, *args):
    return CliRunner().invoke(rupost, ["--root", str(node.root), "mailqueues", *args], catch_exceptions=False)


def raw_queue(node) -> list[dict]:
    """The queue as postfix itself reports it, independent of the code under test."""
    conf = node.layout.component_config("postfix")
    out = subprocess.run(["postqueue", "-c", str(conf), "-j"], capture_output=True, text=True, check=True).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def of_sender(node, sender) -> dict[str, dict]:
    return {m["queue_id"]: m for m in raw_queue(node) if m["sender"] == sender}


def wait_for(predicate, timeout=60.0, what="condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.3)


def queue_outbound(node, mailbox, count: int, local="qsender") -> tuple[str, list[str]]:
    """Submit `count` messages to unreachable recipients; return (sender, [queue ids in send order])."""
    sender, password = mailbox(local)
    rcpts = [f"far{i}-{uuid.uuid4().hex[:6]}@[{UNREACHABLE}]" for i in range(count)]
    with smtps(node.ports["submissions"]) as client:
        client.login(sender, password)
        for rcpt in rcpts:
            assert client.send_message(message(sender, rcpt, f"queued {rcpt}")) == {}

    def all_deferred():
        msgs = of_sender(node, sender)
        by_rcpt = {m["recipients"][0]["address"]: m for m in msgs.values()}
        if len(by_rcpt) == count and all(m["queue_name"] == "deferred" for m in msgs.values()):
            return [by_rcpt[r]["queue_id"] for r in rcpts]
        return None

    return sender, wait_for(all_deferred, what="the messages to be deferred")


def test_list_shows_sender_recipients_size_age_and_reason(node, mailbox):
    sender, ids = queue_outbound(node, mailbox, 2, "lister")
    try:
        result = cli(node, "list", "--json", "--match", f"sender={sender}")
        assert result.exit_code == 0, result.output
        listed = {m["id"]: m for m in json.loads(result.output)["messages"]}
        assert set(listed) == set(ids)
        raw = of_sender(node, sender)
        for qid in ids:
            m = listed[qid]
            assert m["sender"] == sender and m["queue"] == "deferred" and m["node"] == "node1"
            assert m["recipients"] == [raw[qid]["recipients"][0]["address"]]
            assert m["size"] == raw[qid]["message_size"] > 0
            assert m["age"] >= 0 and UNREACHABLE in m["reason"]
        table = cli(node, "list", "--match", f"sender={sender}")
        assert table.exit_code == 0 and all(qid in table.output for qid in ids)
        assert "SENDER" in table.output and "REASON" in table.output
        capped = node.app.mailqueues.list(match=[f"sender={sender}"], limit=1)
        assert len(capped["messages"]) == 1 and capped["nodes"][0]["matched"] == 2 and capped["nodes"][0]["truncated"]
    finally:
        cli(node, "delete", "--all-matching", f"sender={sender}")


def test_hold_release_delete_requeue_change_the_real_queue(node, mailbox):
    sender, (first, second, third) = queue_outbound(node, mailbox, 3, "actions")
    hold_dir = node.layout.postfix_queue / "hold"
    try:
        # hold: the message moves to postfix's hold queue
        result = cli(node, "hold", first)
        assert result.exit_code == 0 and f"held 1 message(s): {first}" in result.output, result.output
        assert of_sender(node, sender)[first]["queue_name"] == "hold"
        assert (hold_dir / first).exists()
        # a flush does not deliver held mail (it stays held), and deferred mail stays queued
        assert cli(node, "flush").exit_code == 0
        assert of_sender(node, sender)[first]["queue_name"] == "hold"

        # release: back to the deferred queue
        result = cli(node, "release", first)
        assert result.exit_code == 0, result.output
        assert of_sender(node, sender)[first]["queue_name"] in ("deferred", "active", "incoming")
        assert not (hold_dir / first).exists()
        # releasing a message that is not held is an error that changes nothing
        result = cli(node, "release", second)
        assert result.exit_code == 1 and "not on hold" in result.output
        # (the flush above may have the queue manager retrying it right now: active, then deferred)
        assert of_sender(node, sender)[second]["queue_name"] in ("deferred", "active")

        # delete: gone from the queue, the others stay
        result = cli(node, "delete", second)
        assert result.exit_code == 0 and f"deleted 1 message(s): {second}" in result.output, result.output
        assert second not in of_sender(node, sender)
        assert {first, third} <= set(of_sender(node, sender))

        # requeue: the message goes through cleanup again under a new queue id and is retried
        third_rcpt = of_sender(node, sender)[third]["recipients"][0]["address"]
        result = cli(node, "requeue", third)
        assert result.exit_code == 0 and "requeued 1 message(s)" in result.output, result.output

        def requeued():
            msgs = of_sender(node, sender)
            new = [qid for qid, m in msgs.items() if m["recipients"][0]["address"] == third_rcpt]
            return new if new and third not in msgs and all(msgs[q]["queue_name"] == "deferred" for q in new) \
                else None

        new_ids = wait_for(requeued, what="the requeued message under a new id")
        assert len(new_ids) == 1 and new_ids[0] != third
        log = node.layout.log_file("postfix").read_text()
        assert f"orig_id={third}" in log  # postfix's own record of the requeue

        # --all-matching: every message of this sender, by a regular expression on the recipient
        result = cli(node, "hold", "--all-matching", f"sender={sender}", "--all-matching", r"recipient~^far\d-")
        assert result.exit_code == 0 and "held 2 message(s)" in result.output, result.output
        assert {m["queue_name"] for m in of_sender(node, sender).values()} == {"hold"}
        result = cli(node, "release", "--all-matching", f"sender={sender}", "--json")
        assert json.loads(result.output)["count"] == 2
        result = cli(node, "delete", "--all-matching", f"sender={sender}", "--all-matching", "age>0s", "--json")
        assert json.loads(result.output)["count"] == 2
        assert of_sender(node, sender) == {}
    finally:
        cli(node, "delete", "--all-matching", f"sender={sender}")


def test_show_prints_the_envelope_and_the_message(node, mailbox):
    sender, (qid,) = queue_outbound(node, mailbox, 1, "shower")
    try:
        result = cli(node, "show", qid)
        assert result.exit_code == 0, result.output
        assert f"sender: {sender}" in result.output  # envelope record
        assert "Subject: queued far0-" in result.output and "hello from the tests" in result.output
        headers = cli(node, "show", qid, "--headers")
        assert "Subject: queued" in headers.output and "hello from the tests" not in headers.output
        data = json.loads(cli(node, "show", qid, "--json").output)
        assert data["id"] == qid and data["sender"] == sender
    finally:
        cli(node, "delete", qid)


def test_bad_filters_and_ids_are_refused_and_change_nothing(node, mailbox):
    sender, (qid,) = queue_outbound(node, mailbox, 1, "badfilter")
    try:
        cases = [
            (["hold", "--all-matching", "colour=red"], "unknown key 'colour'"),
            (["hold", "--all-matching", "sender~(unclosed"], "bad regular expression"),
            (["delete", "--all-matching", "age>soon"], "invalid duration"),
            (["delete", "--all-matching", "sender>3"], "only age compares"),
            (["delete", "--all-matching", "sender="], "the value is empty"),
            (["delete", "--all-matching", "queue=nowhere"], "unknown queue"),
            (["delete", "no such id!"], "invalid queue id"),
            (["delete", "ABCDEF12345"], "not in the mail queue"),
            (["delete"], "name the messages"),
            (["delete", qid, "--all-matching", "all"], "name the messages"),
            (["hold", qid, "--node", "nosuchnode"], "not registered"),
            (["list", "--node", "nosuchnode"], "not registered"),
        ]
        for args, expected in cases:
            result = cli(node, *args)
            assert result.exit_code == 1, (args, result.output)
            assert expected in result.output, (args, result.output)
        assert of_sender(node, sender)[qid]["queue_name"] == "deferred"
    finally:
        cli(node, "delete", qid)


def test_cluster_list_reads_shared_queue_directories_and_marks_the_unreachable(node, mailbox, tmp_path):
    """Another node's queue on shared storage is read through its queue directory; a node whose
    queue directory is not mounted here is reported, not fatal; actions stay with the owner."""
    sender, (qid,) = queue_outbound(node, mailbox, 1, "cluster")
    shared = tmp_path / "node2-queue"
    # a copy of the queue stands for node2's queue directory on the shared storage
    subprocess.run(["cp", "-a", str(node.layout.postfix_queue), str(shared)], check=True)
    names = [f"qn2-{uuid.uuid4().hex[:6]}", f"qn3-{uuid.uuid4().hex[:6]}"]
    with node.app.dbs.session("main") as s:
        s.add(Node(name=names[0], fqdn="n2.rupost.test", address="127.0.0.2", state="in_service",
                   components={}, admin_state="enabled", queue_directory=str(shared)))
        s.add(Node(name=names[1], fqdn="n3.rupost.test", address="127.0.0.3", state="in_service",
                   components={}, admin_state="enabled", queue_directory="/nonexistent/rupost-queue"))
    try:
        result = cli(node, "list", "--cluster", "--json", "--match", f"sender={sender}")
        assert result.exit_code == 0, result.output
        data = json.loads(result.output)
        seen = {(m["node"], m["id"]) for m in data["messages"]}
        assert ("node1", qid) in seen and (names[0], qid) in seen
        status = {n["node"]: n for n in data["nodes"]}
        assert status["node1"]["reachable"] and status[names[0]]["reachable"]
        assert not status[names[1]]["reachable"] and "did not answer" in status[names[1]]["error"]
        assert status[names[0]]["via"] == "shared storage" and status["node1"]["via"] == "local"
        table = cli(node, "list", "--cluster")
        assert f"node {names[1]}: NOT REACHABLE" in table.output
        # one node only; its queue is not shared here and its agent does not run: asking its core fails
        result = cli(node, "list", "--node", names[1])
        assert result.exit_code == 1 and f"node {names[1]} did not answer" in result.output
        # actions are run by the node that owns the queue (its agent), never on the shared copy
        result = cli(node, "delete", qid, "--node", names[0])
        assert result.exit_code == 1 and f"node {names[0]} did not answer" in result.output, result.output
        assert "agent (`rupost run`) is not running" in result.output and "nothing was changed" in result.output
        assert (shared / "deferred").exists() and of_sender(node, sender)[qid]
    finally:
        with node.app.dbs.session("main") as s:
            for n in s.query(Node).filter(Node.name.in_(names)):
                s.delete(n)
        shutil.rmtree(shared, ignore_errors=True)
        cli(node, "delete", qid)


# ---------------------------------------------------------------- relayed requests (another node's core asks)
class Serving:
    """A node agent's side of the relay, as `rupost run` does it: its liveness mark in `nodes`
    and a loop serving the queue requests (in a thread, with its own core). `name` other than
    node1: a node of that name registered for the test, whose core works on this node's postfix
    (its queue directory is recorded as not reachable, so reading it goes through the relay too)."""

    def __init__(self, node, name: str = "node1"):
        self.node, self.name = node, name
        self.created = name != "node1"
        if self.created:
            with node.app.dbs.session("main") as s:
                s.add(Node(name=name, fqdn=f"{name}.rupost.test", address="127.0.0.9", state="in_service",
                           components={}, admin_state="enabled", queue_directory=f"/nonexistent/{name}/queue"))
        self.saved = node.app.nodes.show(name)["components"]

    def alive(self, yes: bool = True) -> None:
        import datetime as dt

        components = {k: v for k, v in (self.saved or {}).items() if k != "_agent"}
        if yes:
            components["_agent"] = dt.datetime.now(dt.timezone.utc).isoformat()
        with self.node.app.dbs.session("main") as s:
            s.query(Node).filter(Node.name == self.name).update({"components": components})

    def start(self) -> "Serving":
        import threading

        self.stop_flag = threading.Event()
        self.app = other_core(self.node, self.name, "node-agent")

        def loop():
            while not self.stop_flag.is_set():
                self.app.queue_relay.serve()
                self.stop_flag.wait(0.1)

        self.thread = threading.Thread(target=loop, daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stop_flag.set()
        self.thread.join(30)
        self.app.close()

    def restore(self) -> None:
        with self.node.app.dbs.session("main") as s:
            if self.created:
                s.query(Node).filter(Node.name == self.name).delete()
            else:
                s.query(Node).filter(Node.name == "node1").update({"components": self.saved})


def other_core(node, name: str, actor: str):
    """The service layer of another node of the cluster (another node name, same database)."""
    from dataclasses import replace

    from rupost.services import Actor, Runtime

    return Runtime(node.layout, replace(node.app.config, node_name=name)).services(Actor(actor))


def request_rows(node, **where):
    from sqlalchemy import select

    from rupost.db.queue_request_models import QueueRequest

    with node.app.dbs.session("main") as s:
        query = select(QueueRequest).order_by(QueueRequest.id)
        for key, value in where.items():
            query = query.where(getattr(QueueRequest, key) == value)
        return list(s.scalars(query))


def test_actions_asked_by_another_nodes_core_run_here_audited_and_checked(node, mailbox):
    """The relay protocol against this node's real queue: another core (node name `peer`)
    asks; this node's serving loop runs the action through its own postfix and audits it
    naming who asked from where; forged requests are refused by the executing side; a request
    nobody picks up expires and is never run later."""
    import datetime as dt

    import pytest
    from sqlalchemy import func, select

    from rupost.db.models import AuditRecord
    from rupost.db.queue_request_models import QueueRequest
    from rupost.errors import ServiceError, ValidationError

    sender, (first, second) = queue_outbound(node, mailbox, 2, "relayed")
    peer_name = f"peer-{uuid.uuid4().hex[:6]}"
    peer = other_core(node, peer_name, "alice")
    serving = Serving(node)
    serving.alive()
    serving.start()
    try:
        result = peer.mailqueues.act("hold", ids=[first], node="node1")
        assert result["node"] == "node1" and result["done"] == [first]
        assert of_sender(node, sender)[first]["queue_name"] == "hold"
        with node.app.dbs.session("logs") as s:
            record = s.scalars(select(AuditRecord).where(AuditRecord.action == "mailqueue.hold",
                                                         AuditRecord.target == first)).all()[-1]
            assert record.actor == "alice" and record.source == "cli"
            assert record.details["requested_from"] == peer_name and record.details["node"] == "node1"
        assert [m["queue"] for m in json.loads(cli(node, "list", "--json", "--match", f"id={first}").output)["messages"]] \
            == ["hold"]
        result = peer.mailqueues.act("release", match=[f"sender={sender}"], node="node1")
        assert result["done"] == [first] and result["skipped"] == [second]
        assert of_sender(node, sender)[first]["queue_name"] != "hold"
        # errors of the executing node come back with their kind and the node's name
        with pytest.raises(ValidationError, match=f"node node1: not on hold: {second}"):
            peer.mailqueues.act("release", ids=[second], node="node1")
        # bad input is refused by the requester before anything is asked
        asked = len(request_rows(node, requested_from=peer_name))
        for call, expected in ((lambda: peer.mailqueues.act("delete", ids=["../etc"], node="node1"), "invalid queue id"),
                               (lambda: peer.mailqueues.act("delete", match=["colour=red"], node="node1"), "unknown key"),
                               (lambda: peer.mailqueues.act("delete", node="node1"), "name the messages"),
                               (lambda: peer.mailqueues.act("delete", ids=[first], node="node1", timeout=0),
                                "invalid timeout")):
            with pytest.raises(ValidationError, match=expected):
                call()
        assert len(request_rows(node, requested_from=peer_name)) == asked
        # listing through the core when the queue directory is not reachable from the requester
        with node.app.dbs.session("main") as s:
            s.query(Node).filter(Node.name == "node1").update({"queue_directory": "/nonexistent/queue"})
        try:
            listed = peer.mailqueues.list(node="node1", match=[f"sender={sender}"])
            assert {m["id"] for m in listed["messages"]} == {first, second}
            assert listed["nodes"][0]["via"] == "relay"
            assert listed["nodes"][0]["matched"] == 2 and not listed["nodes"][0]["truncated"]
            # a relayed list is capped by the node that reads it; what it leaves out is counted
            capped = peer.mailqueues.list(node="node1", match=[f"sender={sender}"], limit=1)
            assert len(capped["messages"]) == 1 and capped["messages"][0]["id"] in {first, second}
            assert capped["nodes"][0]["matched"] == 2 and capped["nodes"][0]["truncated"]
            assert capped["nodes"][0]["count"] >= 2 and capped["nodes"][0]["queues"]["deferred"] == 2  # all matched
            shown = peer.mailqueues.show(second, node="node1", headers_only=True)
            assert shown["id"] == second and "Subject: queued far" in shown["content"]
        finally:
            with node.app.dbs.session("main") as s:
                s.query(Node).filter(Node.name == "node1").update(
                    {"queue_directory": str(node.layout.postfix_queue)})
        # forged rows (written to the database directly) are checked again by the executing node
        with node.app.dbs.session("main") as s:
            later = func.now() + dt.timedelta(seconds=60)
            forged = [QueueRequest(node_name="node1", action=a, arguments=args, requested_by="mallory",
                                   requested_from=peer_name, source="cli", address="", error="", expires_at=later)
                      for a, args in (("exec", {"ids": [first]}), ("delete", {"ids": ["../../etc/passwd"]}),
                                      ("delete", {"match": ["sender~("]}), ("delete", {"ids": [first], "argv": ["-d"]}),
                                      ("delete", {"ids": "ALL"}), ("list", {"limit": 10 ** 9}))]
            s.add_all(forged)
            s.flush()
            forged_ids = [r.id for r in forged]
        wait_for(lambda: all(r.status == "failed" for r in request_rows(node, requested_by="mallory")), 20,
                 "the forged requests to be refused")
        errors = [r.error for r in request_rows(node, requested_by="mallory") if r.id in forged_ids]
        assert "unknown queue action 'exec'" in errors[0] and "invalid queue id" in errors[1]
        assert "bad regular expression" in errors[2] and "unexpected arguments argv" in errors[3]
        assert "ids must be a list" in errors[4] and "limit must be a number from 1 to 10000" in errors[5]
        assert set(of_sender(node, sender)) == {first, second}

        # nobody serves: the requester reports the node by name within its timeout, and the
        # expired request is not run when the node comes back
        serving.stop()
        started = time.monotonic()
        with pytest.raises(ServiceError, match=r"node node1 did not answer within 2 s") as failure:
            peer.mailqueues.act("delete", ids=[first], node="node1", timeout=2)
        assert "nothing was changed there" in str(failure.value) and time.monotonic() - started < 10
        expired = request_rows(node, requested_from=peer_name, action="delete")[-1]
        assert expired.status == "expired"
        serving.start()
        peer.mailqueues.act("hold", ids=[second], node="node1")  # served: the loop is running again
        assert first in of_sender(node, sender) and request_rows(node, id=expired.id)[0].status == "expired"
        # a node whose agent is not running is reported at once
        serving.alive(False)
        with pytest.raises(ServiceError, match=r"node node1 did not answer: its node agent \(`rupost run`\) is not"):
            peer.mailqueues.flush(node="node1")
        # deletion through the relay, and the real queue is empty of this sender
        serving.alive()
        assert peer.mailqueues.act("delete", match=[f"sender={sender}"], node="node1")["count"] == 2
        assert of_sender(node, sender) == {}
        # request rows older than a day are purged by the agents; recent ones are kept
        with node.app.dbs.session("main") as s:
            long_ago = func.now() - dt.timedelta(hours=25)
            old = QueueRequest(node_name="node1", action="flush", arguments={}, status="done", requested_by="x",
                               requested_from=peer_name, source="cli", address="", error="", created_at=long_ago,
                               expires_at=long_ago)
            s.add(old)
            s.flush()
            old_id = old.id
        agent = other_core(node, "node1", "node-agent")
        try:
            agent.queue_relay.serve()
        finally:
            agent.close()
        assert request_rows(node, id=old_id) == [] and request_rows(node, id=expired.id)
    finally:
        serving.stop()
        serving.restore()
        peer.close()
        cli(node, "delete", "--all-matching", f"sender={sender}")
