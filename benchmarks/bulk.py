"""Bulk provisioning: `rupost mailboxes import CSV` of N new mailboxes on a live node.

The CSV has one distinct password per mailbox (so every one is really hashed),
a quota and a display name. The clock covers the whole command (process start,
checks, SHA512-CRYPT hashing across processes, one transaction). Afterwards every
row is counted in the database, a sample of the new mailboxes logs in over IMAPS
through the public port, and the daemons' own logs must show zero reloads.
"""
from __future__ import annotations

import imaplib
import os
import random
import subprocess
import sys
import time
from pathlib import Path

from sqlalchemy import text

from support.evidence import reload_evidence

from .imap import _tls


def measure(inst, count: int, workdir: Path, domain: str = "import.test", sample: int = 5) -> dict:
    app = inst.app
    app.domains.add(domain)
    csv_file = workdir / "import.csv"
    with csv_file.open("w") as f:
        f.write("address,password,quota,name\n")
        for i in range(count):
            f.write(f"imp{i}@{domain},import-pw-{i:06d},2G,Imported User {i}\n")
    before = reload_evidence(inst.layout, app.backend, app.adapters)
    rupost = Path(sys.executable).with_name("rupost")
    argv = [str(rupost) if rupost.exists() else "rupost", "--root", str(inst.root), "mailboxes", "import", str(csv_file)]
    t0 = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=900, env={**os.environ})
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"import failed: {proc.stderr.strip()}")
    with app.dbs.engine("data").connect() as conn:
        stored = conn.execute(text("SELECT count(*) FROM mailboxes m JOIN domains d ON d.id = m.domain_id "
                                   "WHERE d.name = :d"), {"d": domain}).scalar()
    if stored != count:
        raise RuntimeError(f"{stored} of {count} imported mailboxes are in the database")
    for i in random.Random(count).sample(range(count), min(sample, count)):
        imap = imaplib.IMAP4_SSL("127.0.0.1", inst.ports["imaps"], ssl_context=_tls(), timeout=30)
        try:
            imap.login(f"imp{i}@{domain}", f"import-pw-{i:06d}")
        finally:
            imap.logout()
    after = reload_evidence(inst.layout, app.backend, app.adapters)
    reloads = sum(after[c]["reloads"] - before[c]["reloads"] for c in after)
    restarts = sum(1 for c in after if after[c]["pid"] != before[c]["pid"])
    csv_file.unlink()
    return {"mailboxes": count, "seconds": round(elapsed, 2), "per_s": round(count / elapsed, 1),
            "logins_checked": min(sample, count), "daemon_reloads": reloads, "daemon_restarts": restarts,
            "cpus": os.cpu_count()}
