#!/usr/bin/env python3
"""Database high-availability figures (docs/database-ha.md) with the Patroni harness
(tests/support/patroni.py: three members, etcd, synchronous mode) under two RuPost nodes
(tests/support/cluster.py), mail flowing through both nodes to known recipients:

- postgres: the primary's PostgreSQL SIGKILLed (Patroni restarts it or fails over);
- member: the primary's whole host killed (etcd, Patroni, PostgreSQL; the synchronous
  standby takes over), then the member brought back as a replica for the next round;
- switchover: `patronictl switchover` to the synchronous standby.

Per round: seconds from the event to the core's first successful write (a new mailbox;
for a switchover, the first write after patronictl returned), SMTP 4xx answers and their
window, 5xx refusals, connection failures, messages lost and duplicated (counted in the
mailboxes), and whether the first IMAP login, on each node, of the mailbox created after the
event was refused (dovecot's SQL connections the old server closed). The mail flow's steady state before each event is its baseline: 0 refusals.

Usage: flock /tmp/rupost-netns.lock benchmarks/database_ha.py [--rounds N] [--json FILE]
(root; network namespaces of its own, loopback and the test bridge only)
"""
from __future__ import annotations

import argparse
import json
import signal
import statistics
import sys
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # tests/support

from mailclients import imap_login_works  # noqa: E402
from support.cluster import Cluster  # noqa: E402
from support.ha_scenarios import failover_run  # noqa: E402
from support.patroni import PatroniCluster  # noqa: E402

TARGETS = {"first_write_s_max": 30.0, "lost": 0, "duplicated": 0, "switchover_refusals": 0}


def summary(rounds: list[dict]) -> dict:
    writes = [r["first_write_s"] for r in rounds if r["first_write_s"] is not None]
    return {
        "rounds": len(rounds),
        "first_write_s_median": round(statistics.median(writes), 2) if writes else None,
        "first_write_s_max": round(max(writes), 2) if writes else None,
        "writes_failed_rounds": len(rounds) - len(writes),
        "tempfail_4xx_total": sum(r["tempfail_4xx"] for r in rounds),
        "window_4xx_s_max": round(max(r["window_4xx_s"] for r in rounds), 2),
        "refused_5xx_total": sum(r["refused_5xx"] for r in rounds),
        "connection_failures_total": sum(r["connection_failures"] for r in rounds),
        "lost": sum(r["lost"] for r in rounds),
        "duplicated": sum(r["duplicated"] for r in rounds),
        "first_logins_refused": sum(r["first_logins_refused"] for r in rounds),
    }


def _interrupted(signum, frame):
    """A SIGTERM ends the run as Ctrl-C does: the finally clauses tear down the members, the
    nodes, their namespaces and the bridge."""
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> None:
    signal.signal(signal.SIGTERM, _interrupted)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # also when started in the background
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", metavar="FILE")
    args = ap.parse_args()
    patroni = PatroniCluster().start()
    results: dict[str, list[dict]] = {"postgres": [], "member": [], "switchover": []}
    try:
        cluster = Cluster(size=2, ha=patroni).start()
        try:
            for node in cluster.nodes:
                node.start_agent()
            app = cluster.nodes[0].app
            domain = f"ha{uuid.uuid4().hex[:6]}.test"
            app.domains.add(domain)
            recipients = [f"{local}@{domain}" for local in ("ann", "bob", "cid")]
            for address in recipients:
                app.mailboxes.add(address, "bench-password-1")
            client = 0
            for k in range(args.rounds):
                for how in results:
                    client += 1
                    r = failover_run(cluster, patroni, domain, recipients, how, client=client)
                    # the first IMAP login of the account created after the event, on each node
                    refused = sum(1 for k, node in enumerate(cluster.nodes) if not r.new_mailbox or
                                  not imap_login_works(993, r.new_mailbox, "write-password-1",
                                                       cluster.client_address(20 + 2 * client + k), node.address))
                    results[how].append({**r.figures(), "first_logins_refused": refused})
                    print(f"round {k + 1} {how}: {results[how][-1]}", flush=True)
                    if how == "member":
                        patroni.revive_member(patroni.member(r.old_leader))
                    patroni.wait_healthy(180)
        finally:
            cluster.stop()
    finally:
        patroni.stop()
    figures = {how: summary(rounds) for how, rounds in results.items() if rounds}
    sw = figures.get("switchover", {})
    figures["switchover_refusals"] = (sw.get("tempfail_4xx_total", 0) + sw.get("refused_5xx_total", 0)
                                      + sw.get("connection_failures_total", 0))
    print(json.dumps(figures, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps({"figures": figures, "rounds": results}, indent=2))
    worst_write = max((f.get("first_write_s_max") or 0) for how, f in figures.items() if how != "switchover_refusals")
    lost = sum(f.get("lost", 0) for how, f in figures.items() if how != "switchover_refusals")
    duplicated = sum(f.get("duplicated", 0) for how, f in figures.items() if how != "switchover_refusals")
    if worst_write > TARGETS["first_write_s_max"] or lost or duplicated or figures["switchover_refusals"]:
        sys.exit("a target was missed: see above")


if __name__ == "__main__":
    main()
