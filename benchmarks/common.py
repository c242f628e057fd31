"""Shared set-up for benchmarks: a throwaway PostgreSQL and node, bulk data, timing."""
from __future__ import annotations

import contextlib
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from rupost.config import DatabaseSettings
from rupost.passwords import hash_password
from support.instance import Instance, free_ports
from support.postgres import TempPostgres


@contextlib.contextmanager
def node_instance(name: str = "bench"):
    base = Path(tempfile.mkdtemp(prefix="rpb", dir="/tmp"))
    os.chmod(base, 0o755)
    pg = TempPostgres(base / "pg", free_ports(1)[0]).start()
    # the load generators connect from 127.0.0.1, a trusted relay by default: with no trusted
    # network, port 25's check of hosted senders runs for every message, as for an outside client
    inst = Instance(base / name, DatabaseSettings(port=pg.port, password="bench-db-pass"),
                    parameters={"reject_unknown_sender_domain": False, "trusted_relay_networks": [],
                                # the filter-free path; section antispam_cost measures rspamd on against off
                                "antispam": False})
    try:
        inst.configure()
        # settle() checkpoints after bulk loads (benchmark only: the node's role needs no such right)
        pg.psql(f'GRANT pg_checkpoint TO "{inst.app.config.database.user}"')
        yield inst, pg
    finally:
        inst.stop()
        pg.destroy()
        shutil.rmtree(base, ignore_errors=True)


def bulk_mailboxes(inst: Instance, count: int, domain: str = "bench.test") -> None:
    """Rows straight into rupost_data with COPY (one shared hash): this measures what the
    deploy does with many mailboxes present, not how fast they are created."""
    app = inst.app
    try:
        app.domains.add(domain)
    except Exception:
        pass
    password = hash_password("bench-password")
    engine = app.dbs.engine("data")
    with engine.raw_connection() as raw:
        cur = raw.cursor()
        cur.execute("SELECT id FROM domains WHERE name = %s", (domain,))
        domain_id = cur.fetchone()[0]
        cur.execute("SELECT count(*) FROM mailboxes WHERE domain_id = %s", (domain_id,))
        have = cur.fetchone()[0]
        with cur.copy("COPY mailboxes (domain_id, local_part, address, password_hash, display_name, "
                      "quota_bytes, enabled) FROM STDIN") as copy:
            for i in range(have, count):
                copy.write_row((domain_id, f"u{i}", f"u{i}@{domain}", password, "", 0, True))
        raw.commit()
    if count > have:
        settle(inst)


def settle(inst: Instance) -> None:
    """After a bulk COPY, do now what autovacuum would do in the next minute (VACUUM ANALYZE
    of the new rows), so that what follows measures the steady state, not a 2-core machine
    busy with the vacuum of 90,000 fresh rows (a deploy timed right after the COPY of 99,900
    mailboxes took 0.8 s longer)."""
    engine = inst.app.dbs.engine("data")
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("VACUUM (ANALYZE) mailboxes")
        conn.exec_driver_sql("VACUUM (ANALYZE) domains")
        conn.exec_driver_sql("CHECKPOINT")  # the pages dirtied above written now, not during what follows



def shrink_mailboxes(inst: Instance, count: int, domain: str = "bench.test") -> None:
    """Back down to the mailboxes u0..u{count-1} of bulk_mailboxes, then VACUUM FULL: the
    table and its indexes rewritten at the new size, as if it had never grown (a plain
    VACUUM would leave indexes sized for the larger table)."""
    engine = inst.app.dbs.engine("data")
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql(
            "DELETE FROM mailboxes m USING domains d WHERE m.domain_id = d.id AND d.name = %(domain)s "
            "AND m.local_part ~ '^u[0-9]+$' AND substr(m.local_part, 2)::int >= %(count)s",
            {"domain": domain, "count": count})
        conn.exec_driver_sql("VACUUM (FULL, ANALYZE) mailboxes")
        conn.exec_driver_sql("CHECKPOINT")


def timed(fn, repeat: int = 1, setup=None) -> tuple[float, list[float]]:
    """Median and all wall times of fn; setup runs before each repeat, untimed."""
    times = []
    for _ in range(repeat):
        if setup:
            setup()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))
    return ordered[rank - 1]


def summary_ms(seconds: list[float]) -> dict:
    """p50/p99/max in milliseconds and the sample count."""
    return {"p50_ms": round(percentile(seconds, 50) * 1000, 3), "p99_ms": round(percentile(seconds, 99) * 1000, 3),
            "max_ms": round(max(seconds) * 1000, 3), "samples": len(seconds)}


def wait_until(predicate, timeout: float, interval: float = 0.1):
    """Poll predicate() until it returns a true value or timeout passes; returns the last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def maildir_count(maildir: Path) -> int:
    """Messages in a Maildir (new + cur), whatever has been read or not."""
    total = 0
    for sub in ("new", "cur"):
        try:
            total += sum(1 for _ in os.scandir(maildir / sub))
        except FileNotFoundError:
            pass
    return total
