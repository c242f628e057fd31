#!/usr/bin/env python3
"""Cluster figures with the netns harness (tests/support/cluster.py), two nodes:

- failover: dovecot killed on node A while a client is stuck to A; seconds until A is
  marked out of service and until that client's next message, sent to A's public port,
  is accepted (served by node B);
- evacuation: N messages queued on A (its LMTP target killed), A crashed (every daemon
  SIGKILLed), then an evacuator on B killed after the first deliveries and a second one
  finishing the work; seconds, messages/s, lost and duplicated (from the mailbox:
  each message's queue id on A in its Received header). A second, uninterrupted
  evacuation of the same size in the same run is the baseline the interrupted one is
  compared with.

Usage: benchmarks/cluster.py [--quick] [--json FILE]   (root; loopback and test namespaces only)
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # tests/support

from adapters.haproxy import stick_entries  # noqa: E402
from rupost.cluster.evacuation import count_queue  # noqa: E402
from support.cluster import (Cluster, evacuator, health, kill_node, maildir_queue_ids,  # noqa: E402
                                    queue_on, run, send, wait_until)


def failover(c: Cluster, rcpt: str, k: int) -> dict:
    a, b = c.node("nodea"), c.node("nodeb")
    client = c.client_address(10 + k)
    send(a.address, client, rcpt, f"stick {uuid.uuid4().hex}")
    ids = {n["name"]: n["id"] for n in a.app.nodes.list()}
    assert wait_until(lambda: stick_entries(b.layout).get(client) == ids["nodea"], 10), "no stick entry"
    for node in (a, b):
        node.start_agent(interval=1, hold_down=300)
    try:
        assert wait_until(lambda: a.app.nodes.show("nodea")["state"] == "in_service", 30), "A not in service"
        killed = time.monotonic()
        os.kill(a.app.backend.pid("dovecot"), signal.SIGKILL)
        served = out = None
        b_log = b.layout.log_file("postfix")
        mark = f"connect from unknown[{client}]"
        seen_on_b = b_log.read_text().count(mark)
        deadline = killed + 120
        while time.monotonic() < deadline and (served is None or out is None):
            if out is None and a.app.nodes.show("nodea")["state"] == "out_of_service":
                out = time.monotonic() - killed
            if served is None:
                try:
                    # while A's postfix still runs it accepts (and queues) the message:
                    # only a message that B's postfix took counts as served by the other
                    send(a.address, client, rcpt, f"failover {uuid.uuid4().hex}")
                    if b_log.read_text().count(mark) > seen_on_b:
                        served = time.monotonic() - killed
                except Exception:  # refused or reset while A goes down: try again
                    pass
            time.sleep(0.1)
        return {"out_of_service_s": out, "served_by_other_s": served}
    finally:
        for node in (a, b):
            node.stop_agent()
        a.rupost("components", "start", check=False)
        wait_until(lambda: health(a) == 200, 60)


def evacuation(c: Cluster, rcpt: str, total: int, interrupt: bool) -> dict:
    a, b = c.node("nodea"), c.node("nodeb")
    storage = a.layout.mail_storage
    queue = a.layout.postfix_queue
    # messages A took while going down in the failover rounds wait for their retry time
    a_postfix = a.layout.current / "postfix"
    run("ip", "netns", "exec", a.netns, "postqueue", "-c", a_postfix, "-f", check=False)
    wait_until(lambda: count_queue(queue) == 0, 120)
    before = set(maildir_queue_ids(storage, rcpt, "nodea"))
    already = count_queue(queue)
    os.kill(a.app.backend.pid("dovecot"), signal.SIGKILL)
    queue_on(a, rcpt, total)
    assert wait_until(lambda: count_queue(queue) == already + total, 120), "messages not queued"
    kill_node(a)
    try:
        started = time.monotonic()
        first = evacuator(b)
        if interrupt:
            new = storage / rcpt.split("@")[1] / rcpt.split("@")[0] / "Maildir" / "new"
            wait_until(lambda: len(os.listdir(new)) > len(before) + 20, 120, interval=0.02)
            os.killpg(first.pid, signal.SIGKILL)
            first.wait()
            second = evacuator(b)
            reports = json.loads(second.communicate(timeout=900)[0] or "[]")
        else:
            reports = json.loads(first.communicate(timeout=900)[0] or "[]")
        evacuated = time.monotonic() - started

        def delivered():
            ids = [i for i in maildir_queue_ids(storage, rcpt, "nodea") if i not in before]
            return ids if len(set(ids)) >= total else None

        ids = wait_until(delivered, 120) or [i for i in maildir_queue_ids(storage, rcpt, "nodea")
                                              if i not in before]
        return {"seconds": round(evacuated, 2), "msgs_s": round(total / evacuated, 1),
                "lost": total - len(set(ids)), "duplicated": len(ids) - len(set(ids)),
                "resumed": [r.get("earlier_runs") for r in reports]}
    finally:
        a.rupost("components", "start", check=False)
        wait_until(lambda: health(a) == 200, 60)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", metavar="FILE")
    args = ap.parse_args()
    rounds, total = (1, 500) if args.quick else (3, 2000)
    c = Cluster(size=2).start()
    try:
        app = c.node("nodea").app
        domain = f"bench{uuid.uuid4().hex[:6]}.test"
        app.domains.add(domain)
        rcpt = f"evac@{domain}"
        app.mailboxes.add(rcpt, "bench-password-1")
        send(c.node("nodeb").address, c.client_address(4), rcpt, "welcome")  # the mailbox exists
        fails = [failover(c, rcpt, k) for k in range(rounds)]
        plain = evacuation(c, rcpt, total, interrupt=False)
        cut = evacuation(c, rcpt, total, interrupt=True)
    finally:
        c.stop()
    out_s = [f["out_of_service_s"] for f in fails if f["out_of_service_s"] is not None]
    served_s = [f["served_by_other_s"] for f in fails if f["served_by_other_s"] is not None]
    figures = {
        "failover_out_of_service_s_median": round(statistics.median(out_s), 2) if out_s else None,
        "failover_served_by_other_s_median": round(statistics.median(served_s), 2) if served_s else None,
        "failover_served_by_other_s_max": round(max(served_s), 2) if served_s else None,
        "evacuation_messages": total,
        "evacuation_s": plain["seconds"], "evacuation_msgs_s": plain["msgs_s"],
        "evacuation_interrupted_s": cut["seconds"], "evacuation_interrupted_msgs_s": cut["msgs_s"],
        "evacuation_interrupted_ratio": round(cut["msgs_s"] / plain["msgs_s"], 2),
        "evacuation_lost": plain["lost"] + cut["lost"],
        "evacuation_duplicated": plain["duplicated"] + cut["duplicated"],
    }
    for key, value in figures.items():
        print(f"{key:40} {value}")
    print("failover rounds:", fails)
    print("interrupted run resumed:", cut["resumed"])
    if args.json:
        Path(args.json).write_text(json.dumps({**figures, "failover_rounds": fails,
                                               "resumed": cut["resumed"]}, indent=2))
    if figures["evacuation_lost"] or figures["evacuation_duplicated"]:
        sys.exit("lost or duplicated messages: see above")


if __name__ == "__main__":
    main()
