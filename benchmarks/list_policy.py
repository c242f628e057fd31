"""Sender policy of distribution lists: what a recipient costs at RCPT (docs/directories.md).

    python3 -m benchmarks.list_policy [--samples 300] [--json FILE]

A whole node; in one SMTP session per case, after a first accepted recipient (postfix
opens the queue file there), ``--samples`` further ``RCPT TO`` of the same address, timed
one by one: a mailbox, a list with sender policy ``anyone``, ``internal`` (submission only)
and ``members`` (the RuPost policy server asked through ``check_policy_service``), on
port 25 (unauthenticated, envelope sender a member) and on submission (logged in as a
member).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from pathlib import Path

from .common import node_instance, summary_ms


def rcpt_times(client, sender: str, first: str, rcpt: str, samples: int) -> list[float]:
    client.docmd(f"MAIL FROM:<{sender}>")
    client.docmd(f"RCPT TO:<{first}>")
    out = []
    for _ in range(samples):
        started = time.perf_counter()
        code, text = client.docmd(f"RCPT TO:<{rcpt}>")
        out.append(time.perf_counter() - started)
        if code != 250:
            raise RuntimeError(f"RCPT {rcpt}: {code} {text!r}")
    client.docmd("RSET")
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks.list_policy")
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from mailclients import smtp, smtps

    results = {}
    with node_instance("listpolicy") as (inst, _pg):
        inst.deploy()
        app = inst.app
        dom = f"b{uuid.uuid4().hex[:6]}.test"
        app.domains.add(dom)
        member, other = f"m1@{dom}", f"m2@{dom}"
        app.mailboxes.add(member, "bench-pass-1")
        app.mailboxes.add(other, "bench-pass-1")
        cases = [("mailbox", other)]
        for policy in ("anyone", "internal", "members"):
            app.distribution_lists.add(f"{policy}@{dom}", members=[member, other], sender_policy=policy)
            cases.append((f"list {policy}", f"{policy}@{dom}"))
        for label, rcpt in cases:
            if label != "list internal":  # refused on port 25 by design
                with smtp(inst.ports["smtp"]) as client:
                    results[f"port 25, {label}"] = summary_ms(rcpt_times(client, member, other, rcpt, args.samples))
            client = smtps(inst.ports["submissions"])
            try:
                client.login(member, "bench-pass-1")
                results[f"submission, {label}"] = summary_ms(rcpt_times(client, member, other, rcpt, args.samples))
            finally:
                client.quit()
    for name, summary in results.items():
        print(f"{name:28} p50 {summary['p50_ms']:7.2f} ms  p99 {summary['p99_ms']:7.2f} ms")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
