"""What the database HA tests and benchmarks/database_ha.py both run: a primary's failure (or
a planned switchover) under a steady mail flow through two RuPost nodes, and what it cost.

One run: mail flows to known recipients through both nodes; the primary's PostgreSQL is
SIGKILLed (`postgres`), its whole host killed (`member`) or a switchover asked for
(`switchover`); the core tries a write (a new mailbox) every moment until one succeeds,
and the new mailbox joins the flow's recipients; then every accepted message is looked for
in the mailboxes (lost, duplicated).
"""
from __future__ import annotations

import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field

from rupost.errors import RuPostError
from .cluster import Cluster, wait_until
from .mailflow import MailFlow
from .patroni import PatroniCluster


@dataclass
class FailoverResult:
    how: str
    old_leader: str
    new_leader: str
    first_write_s: float | None  # event -> first successful write by the core
    write_errors: list[str] = field(default_factory=list)  # what the failed writes said
    accepted: int = 0
    refused_5xx: int = 0
    tempfail_4xx: int = 0  # 4xx answers (each retried)
    window_4xx_s: float = 0.0
    connection_failures: int = 0
    lost: int = 0
    duplicated: int = 0
    new_mailbox: str = ""
    first_4xx: str = ""  # the first temporary refusal's answer, to tell what failed
    refusals_5xx: list[str] = field(default_factory=list)  # each refusal: when, recipient, answer

    def figures(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "write_errors"}


def listeners_on(patroni: PatroniCluster, node_address: str) -> int:
    """LISTEN connections (application rupost-listen) a node holds on the current primary."""
    out = patroni.psql("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'rupost-listen' "
                       f"AND client_addr = '{node_address}'").strip()
    return int(out or 0)


def queue_locks_on(patroni: PatroniCluster, node_address: str) -> int:
    """Locks on a node's mail queue (rupost/cluster/evacuation.py) its agent holds on the
    current primary: the lock is a property of a database session, lost with the old primary."""
    from rupost.cluster.evacuation import LOCK_CLASS

    out = patroni.psql("SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                       f"WHERE l.locktype = 'advisory' AND l.granted AND l.classid = {LOCK_CLASS}::bigint::oid "
                       f"AND a.client_addr = '{node_address}'").strip()
    return int(out or 0)


def lookup_sessions_on_replicas(node) -> int:
    """Sessions a node's HAProxy holds on replicas in its lookup backend (adapters/haproxy_db.py):
    once a primary is up they are shut, and the daemons read the primary again."""
    from adapters.haproxy import proxy_stats
    from adapters.haproxy_db import LOOKUP

    return sum(int(row.get("scur") or 0) for (proxy, server), row in proxy_stats(node.layout).items()
               if proxy == LOOKUP and server.endswith("_replica"))


def first_write(app, domain: str, since: float, budget: float = 120) -> tuple[float | None, str, list[str]]:
    """Seconds from `since` until a new mailbox could be created; its address; the errors met."""
    errors: list[str] = []
    deadline = time.monotonic() + budget
    while time.monotonic() < deadline:
        address = f"w{uuid.uuid4().hex[:8]}@{domain}"
        try:
            app.mailboxes.add(address, "write-password-1")
            return time.monotonic() - since, address, errors
        except RuPostError as exc:
            errors.append(str(exc))
            time.sleep(0.2)
    return None, "", errors


def _trigger(patroni: PatroniCluster, how: str):
    """Start the event; returns (the old leader, a thread to join when it is over)."""
    leader = patroni.leader()
    assert leader is not None, f"no leader before the run: {patroni.describe()}"
    if how == "postgres":
        patroni.kill_postgres(leader)
        return leader, None
    if how == "member":
        patroni.kill_member(leader)
        return leader, None
    candidate = patroni.sync_standby()
    assert candidate is not None, f"no synchronous standby to switch over to: {patroni.describe()}"
    proc = subprocess.Popen(["patronictl", "-c", str(patroni.members[0].base / "patroni.yml"), "switchover",
                             "--leader", leader.name, "--candidate", candidate.name, "--force"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    waiter = threading.Thread(target=proc.wait, args=(180,), daemon=True)
    waiter.start()
    return leader, waiter


def failover_run(cluster: Cluster, patroni: PatroniCluster, domain: str, recipients: list[str], how: str,
                 client: int, steady: float = 3.0) -> FailoverResult:
    nodes = cluster.nodes
    flow = MailFlow([n.address for n in nodes], cluster.client_address(client), list(recipients)).start()
    try:
        time.sleep(steady)
        event = time.monotonic()
        old, waiter = _trigger(patroni, how)
        if waiter is not None:  # a switchover: writes go on during it; the one timed is after it
            waiter.join(180)
        seconds, address, errors = first_write(nodes[0].app, domain, event)
        if address:
            flow.recipients.append(address)  # a recipient that did not exist before the event
        new = wait_until(lambda: (lambda m: m if m is not None and patroni.sync_standby() else None)(
            patroni.leader()), 120)
        time.sleep(steady)  # the flow goes on after the switch
    finally:
        flow.stop()
    # mail accepted while the database was away may wait in a node's queue for its next run:
    # what an administrator (or the agent, once the database answers again) asks for
    for node in nodes:
        node.rupost("mailqueues", "flush", check=False)
    wanted = set(flow.accepted)
    wait_until(lambda: set(flow.delivered(cluster.shared / "vmail")) >= wanted, 180, interval=1)
    copies = flow.delivered(cluster.shared / "vmail")
    missing = sorted(n for n in wanted if copies[n] == 0)
    if missing:  # where they are: each node's log lines for their queue ids
        print(f"\nundelivered after the run: {missing[:20]}")
        for node in nodes:
            log = node.layout.log_file("postfix").read_text(errors="replace").splitlines()
            ids = {line.split(": ")[1].split(":")[0] for line in log
                   if any(f"<{flow.tag}.{n}@flow.example.org>" in line for n in missing) and ": " in line}
            for line in log:
                if any(f" {qid}: " in line for qid in ids):
                    print(f"{node.name}: {line}")
            print(node.rupost("mailqueues", "list", check=False).stdout[-3000:])
    return FailoverResult(
        how=how, old_leader=old.name, new_leader=new.name if new else "", first_write_s=seconds,
        write_errors=errors, accepted=len(flow.accepted), refused_5xx=len(flow.refused),
        tempfail_4xx=flow.count("4xx", event), window_4xx_s=flow.window("4xx", event),
        connection_failures=flow.count("connection", event),
        lost=sum(1 for n in wanted if copies[n] == 0), duplicated=sum(1 for n in wanted if copies[n] > 1),
        new_mailbox=address,
        first_4xx=next((f"{a.at - event:.1f}s {a.detail}" for a in flow.attempts
                        if a.outcome == "4xx" and a.at >= event), ""),
        refusals_5xx=[f"{a.at - event:.1f}s {a.rcpt} {a.detail}" for a in flow.attempts if a.outcome == "5xx"][:10])
