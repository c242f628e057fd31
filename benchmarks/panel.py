"""Control panel: latency of the mailbox list page and the dashboard with 100 and 100,000 mailboxes.

The panel runs as in production (`rupost panel serve`: gunicorn, TLS, 2 workers) on a
throwaway node; one administrator logs in and requests, one at a time over a kept-alive
HTTPS connection, the first page of the mailbox list (50 rows, sorted by address, with the
total count) and searches: a narrow one (one address matches) and a wide one (a substring
matching about 11 % of the mailboxes: the page plus the count of all matches), and the
dashboard (`/`: node, queue, storage and certificate tiles, the statistics chart and the quota
tile, whose totals and ten largest mailboxes are SQL over `mailbox_usage`). Mailboxes are
added with COPY (`common.bulk_mailboxes`); every other one gets a 1 GiB quota and every one a
measured use (as a `doveadm quota get -A` run would record it, see `fill_usage`), and the
tables are analysed before timing. The queue tile reads postfix's queue at most every 15 s
(`QUEUE_TTL`), so a few samples include that reading.

    python3 -m benchmarks.panel [--samples N] [--json FILE]

`section(ctx)` gives the same figures to benchmarks/suite.py (on ctx.inst).
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
from urllib.parse import urlencode

from support.instance import free_ports

from .common import bulk_mailboxes, node_instance, percentile

PASSWORD = "bench-panel-password"
CASES = {"first_page": "/mailboxes/", "search_one": "/mailboxes/?q=u{one}%40", "search_wide": "/mailboxes/?q=u1",
         "dashboard": "/"}


def fill_usage(inst) -> None:
    """A measured use for every mailbox and a recent complete measurement, as
    `rupost.services.quota_usage` records them (so the dashboard starts no measurement)."""
    from rupost.db.models import utcnow
    from rupost.services.quota_usage import QuotaUsageService

    with inst.app.dbs.engine("data").connect() as conn:
        conn.exec_driver_sql("UPDATE mailboxes SET quota_bytes = 1073741824 WHERE quota_bytes = 0 AND id %% 2 = 0")
        conn.exec_driver_sql(
            "INSERT INTO mailbox_usage (mailbox_id, domain_id, quota_bytes, used_bytes, messages, measured_at) "
            "SELECT id, domain_id, quota_bytes, (hashtext(address)::bigint & 1073741823), (hashtext(address) & 4095), "
            "now() FROM mailboxes "
            "ON CONFLICT (mailbox_id) DO NOTHING")
        conn.commit()
        conn.exec_driver_sql("ANALYZE mailbox_usage")
        conn.commit()
    count = inst.app.mailboxes.page(None, None, limit=1)["total"]
    QuotaUsageService(inst.app)._store_last_run({
        "measured_at": utcnow().isoformat(), "seconds": 0,
        "measured": count, "mailboxes": count, "complete": True, "timed_out": False, "errors": []})


class PanelServer:
    def __init__(self, inst):
        self.inst, self.port = inst, free_ports(1)[0]

    def __enter__(self):
        self.proc = subprocess.Popen([sys.executable, "-m", "rupost.cli", "--root", str(self.inst.root), "panel",
                                      "serve", "--bind", f"127.0.0.1:{self.port}", "--workers", "2",
                                      "--access-log", "/dev/null"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("rupost panel serve did not start")

    def __exit__(self, *exc):
        os.killpg(self.proc.pid, signal.SIGTERM)
        self.proc.wait(30)


class Session:
    def __init__(self, port: int):
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        self.conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=60, context=ctx)
        self.cookie = ""

    def request(self, method: str, path: str, body: str | None = None) -> tuple[int, str]:
        headers = {"Cookie": self.cookie} if self.cookie else {}
        if body is not None:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        self.conn.request(method, path, body=body, headers=headers)
        response = self.conn.getresponse()
        text = response.read().decode()
        if response.getheader("Set-Cookie"):
            self.cookie = response.getheader("Set-Cookie").split(";")[0]
        return response.status, text

    def login(self, login: str) -> None:
        _, page = self.request("GET", "/login")
        token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
        status, _ = self.request("POST", "/login", urlencode({"csrf_token": token, "login": login,
                                                               "password": PASSWORD}))
        assert status == 302, "the benchmark administrator could not log in"


def measure(inst, count: int, samples: int) -> dict:
    bulk_mailboxes(inst, count)
    with inst.app.dbs.engine("data").connect() as conn:
        conn.exec_driver_sql("COMMIT")
        conn.exec_driver_sql("ANALYZE mailboxes")
    fill_usage(inst)
    login = "bench-admin"
    if login not in [a["login"] for a in inst.app.admins.list()]:
        inst.app.admins.add(login, PASSWORD, "superadmin")
    out = {}
    with PanelServer(inst) as server:
        session = Session(server.port)
        session.login(login)
        for name, path in CASES.items():
            path = path.format(one=count // 2)
            status, page = session.request("GET", path)
            assert status == 200 and ("mailboxes" in page or name == "dashboard"), (path, status)
            if name == "search_one":
                assert f"u{count // 2}@bench.test" in page
            if name == "dashboard":
                assert 'id="largest-mailboxes"' in page and 'id="queue-sizes"' in page, page[-3000:]
            for _ in range(5):
                session.request("GET", path)
            times = []
            for _ in range(samples):
                t0 = time.perf_counter()
                status, _ = session.request("GET", path)
                times.append(time.perf_counter() - t0)
                assert status == 200
            out[f"panel_{name}_p50_ms_{_label(count)}"] = round(percentile(times, 50) * 1000, 2)
            out[f"panel_{name}_p95_ms_{_label(count)}"] = round(percentile(times, 95) * 1000, 2)
    return out


def _label(count: int) -> str:
    return f"{count // 1000}k" if count >= 1000 else str(count)


def section(ctx) -> dict:
    """For benchmarks/suite.py: the figures at 100 and 100,000 mailboxes on ctx.inst."""
    samples = 50 if getattr(ctx, "quick", False) else 200
    return {**measure(ctx.inst, 100, samples), **measure(ctx.inst, 100_000, samples)}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    results = {}
    with node_instance("panelbench") as (inst, _pg):
        for count in (100, 100_000):
            results.update(measure(inst, count, args.samples))
            print(json.dumps({k: v for k, v in results.items() if k.endswith(_label(count))}, indent=1),
                  flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)
    return results


if __name__ == "__main__":
    main()
