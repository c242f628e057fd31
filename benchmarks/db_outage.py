#!/usr/bin/env python3
"""A PostgreSQL outage on one node (issue 32): what mail and logins meet while the database is
away and after it is back, with the node agent's recovery and without it.

The scenario is tests/support/db_outage.py's (run_outage): steady SMTP to five known
recipients (three warm: mail and IMAP logins all along; two cold: known to postfix's cache,
forgotten by dovecot's), PostgreSQL stopped for OUTAGE seconds, started again. Figures per
run: messages refused to known recipients and their window, messages accepted but not in a
mailbox after the bounded wait (undelivered), seconds from the database's return to the
delivery of the mail deferred meanwhile (bounded: SETTLE), IMAP logins refused,
seconds until an uncached account logs in, and, of a stream of logins of uncached accounts
started at the stop, when the last refusal after the return was answered. Two modes on one
node, in one run:

- ``recovery``: the agent runs (`rupost run`): the lookup cache is kept, the lookups revived,
  the queue flushed;
- ``daemons_alone``: no agent, the daemons recover on their own (postfix's pgsql client holds
  the server dead for 60 s, dovecot's SQL client reconnects on its back-off, deferred mail
  waits for postfix's queue run): the baseline, and what the issue measured before, minus the
  old agent's flushes (which emptied the caches at the reconnect and refused every known
  recipient for 62 s).

Usage: benchmarks/db_outage.py [--runs N] [--modes recovery,daemons_alone] [--json FILE]   (root; loopback only)
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # tests/support

from rupost.config import DatabaseSettings  # noqa: E402
from support.db_outage import run_outage  # noqa: E402
from support.instance import Instance, free_ports  # noqa: E402
from support.postgres import TempPostgres  # noqa: E402

OUTAGE = 10.0
SETTLE = 120.0  # seconds waited for the deferred mail (postfix's own queue run is 300 s away)


def figures(run) -> dict:
    return {"accepted": len(run.accepted), "refused": len(run.mail.refused()),
            "refusal_window_s": round(run.refusal_window_s(), 1),
            # accepted, not in a mailbox by the end of the bounded wait (still queued, or lost)
            "undelivered": len(run.lost),
            "deferred_delivered_after_s": None if run.delivered_after_s is None else round(run.delivered_after_s, 1),
            "logins": len(run.logins.answers), "logins_refused": len(run.logins.refused()),
            "uncached_login_after_s": None if run.cold_login_s is None else round(run.cold_login_s, 1),
            # a stream of logins of accounts dovecot had not cached, from the stop on: its last
            # refusal answered after the return, seconds after the return (0: none)
            "uncached_logins": len(run.cold_logins.answers),
            "uncached_refused_until_s": round(run.cold_refused_until_s, 1),
            # an IMAP session opened before the stop and idle through it: 1 still open after
            "held_session_kept": int(run.held_counts[1] is not None)}


def median(values: list) -> float | None:
    known = [v for v in values if v is not None]
    return round(statistics.median(known), 1) if known else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=1, help="runs per mode (default 1)")
    ap.add_argument("--json", metavar="FILE")
    ap.add_argument("--modes", default="recovery,daemons_alone",
                    help="comma-separated modes to run (default both: recovery,daemons_alone)")
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="rpo", dir="/tmp"))
    os.chmod(base, 0o755)
    pg = TempPostgres(base / "pg", free_ports(1)[0]).start()
    inst = Instance(base / "node", DatabaseSettings(host="127.0.0.1", port=pg.port, user="rupost",
                                                    password="bench-db-secret"))
    results: dict[str, list[dict]] = {mode: [] for mode in ("recovery", "daemons_alone")
                                      if mode in args.modes.split(",")}
    try:
        inst.configure()
        inst.deploy()
        for _ in range(args.runs):
            for mode in results:
                run = run_outage(pg, inst, f"b{uuid.uuid4().hex[:8]}.test", OUTAGE, with_agent=mode == "recovery",
                                 settle=SETTLE)
                results[mode].append(figures(run))
                print(mode, json.dumps(results[mode][-1]), flush=True)
    finally:
        inst.stop()
        pg.destroy()
        shutil.rmtree(base, ignore_errors=True)
    summary = {f"db_outage_{mode}_{key}_median": median([r[key] for r in runs])
               for mode, runs in results.items() for key in runs[0]}
    for key, value in summary.items():
        print(f"{key:60} {value}")
    if args.json:
        Path(args.json).write_text(json.dumps({"figures": summary, "runs": results}, indent=1))


if __name__ == "__main__":
    main()
