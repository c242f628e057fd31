"""REST API: latency of the list endpoints with 100 and 100,000 mailboxes, and the bulk import
of 10,000 mailboxes through the API.

The API runs as in production (`rupost panel serve`: gunicorn, TLS, 2 workers, /api/v1 on the
panel's port) on a throwaway node. One superadministrator's token requests, one at a time over
a kept-alive HTTPS connection: the first page of mailboxes (50, by address, with the total), a
narrow search (one address matches), a wide one (about 11 % match: the page plus the count of
the matches), the domains and the aliases. Mailboxes are added with COPY
(`common.bulk_mailboxes`) and analysed before timing, as benchmarks/panel.py does for the panel's
pages (the same figures side by side). The import posts a 10,000-row CSV
(`POST /api/v1/mailboxes/import`) and polls its job until it is done: the seconds from the
request to the job's end, and the job's own seconds.

    python3 -m benchmarks.api [--samples N] [--json FILE]
"""
from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import ssl
import time

from .common import bulk_mailboxes, node_instance, percentile
from .panel import PanelServer, _label

CASES = {"mailboxes_first_page": "/api/v1/mailboxes", "mailboxes_search_one": "/api/v1/mailboxes?search=u{one}%40",
         "mailboxes_search_wide": "/api/v1/mailboxes?search=u1", "domains": "/api/v1/domains",
         "aliases": "/api/v1/aliases"}


class Client:
    def __init__(self, port: int, secret: str):
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        self.conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=120, context=ctx)
        self.headers = {"Authorization": f"Bearer {secret}"}

    def request(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        headers = dict(self.headers)
        data = None
        if body is not None:
            headers["Content-Type"] = "application/json"
            data = json.dumps(body)
        self.conn.request(method, path, body=data, headers=headers)
        response = self.conn.getresponse()
        return response.status, json.loads(response.read() or b"{}")


def token(inst) -> str:
    name = f"bench-{int(time.time() * 1000)}"
    return inst.app.api_tokens.add(name, "superadmin")["token"]


def measure(inst, count: int, samples: int) -> dict:
    bulk_mailboxes(inst, count)
    with inst.app.dbs.engine("data").connect() as conn:
        conn.exec_driver_sql("COMMIT")
        conn.exec_driver_sql("ANALYZE mailboxes")
    out = {}
    with PanelServer(inst) as server:
        client = Client(server.port, token(inst))
        for name, path in CASES.items():
            path = path.format(one=count // 2)
            status, page = client.request("GET", path)
            assert status == 200, (path, status, page)
            if name == "mailboxes_search_one":
                assert [m["address"] for m in page["items"]] == [f"u{count // 2}@bench.test"], page
            for _ in range(5):
                client.request("GET", path)
            times = []
            for _ in range(samples):
                t0 = time.perf_counter()
                status, _ = client.request("GET", path)
                times.append(time.perf_counter() - t0)
                assert status == 200
            out[f"api_{name}_p50_ms_{_label(count)}"] = round(percentile(times, 50) * 1000, 2)
            out[f"api_{name}_p95_ms_{_label(count)}"] = round(percentile(times, 95) * 1000, 2)
    return out


def bulk_import(inst, rows: int = 10_000) -> dict:
    try:
        inst.app.domains.add("import.bench.test")
    except Exception:
        pass
    csv = "address,password,quota\n" + "\n".join(f"i{i}@import.bench.test,Import-pw-{i:07d},1G" for i in range(rows))
    with PanelServer(inst) as server:
        client = Client(server.port, token(inst))
        t0 = time.perf_counter()
        status, job = client.request("POST", "/api/v1/mailboxes/import", {"csv": csv})
        assert status == 202, (status, job)
        while job["status"] not in ("done", "failed"):
            time.sleep(0.2)
            status, job = client.request("GET", f"/api/v1/jobs/{job['id']}")
        elapsed = time.perf_counter() - t0
    assert job["status"] == "done" and job["result"]["imported"] == rows, job
    own = (dt.datetime.fromisoformat(job["finished_at"]) - dt.datetime.fromisoformat(job["started_at"])).total_seconds()
    return {"api_import_10k_s": round(elapsed, 2), "api_import_10k_job_s": round(own, 2),
            "api_import_10k_rows_per_s": round(rows / elapsed)}


def section(ctx) -> dict:
    samples = 50 if getattr(ctx, "quick", False) else 200
    return {**measure(ctx.inst, 100, samples), **measure(ctx.inst, 100_000, samples), **bulk_import(ctx.inst)}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    results = {}
    with node_instance("apibench") as (inst, _pg):
        for count in (100, 100_000):
            results.update(measure(inst, count, args.samples))
            print(json.dumps({k: v for k, v in results.items() if k.endswith(_label(count))}, indent=1), flush=True)
        results.update(bulk_import(inst))
        print(json.dumps({k: v for k, v in results.items() if "import" in k}, indent=1), flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)
    return results


if __name__ == "__main__":
    main()
