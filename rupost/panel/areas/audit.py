"""The audit journal: filtered and paginated in SQL, exported as CSV."""
from __future__ import annotations

import csv
import datetime as dt
import io
import json

from flask import Blueprint, Response, g, request

from ..web import fail, page_args, render, requires

bp = Blueprint("audit", __name__, url_prefix="/audit")
NAV = ("Audit log", "audit.index", "global")
FILTERS = ("actor", "action", "target", "source", "since", "until")


def _filters() -> tuple[dict, dict]:
    """(the filter values as typed, the keyword arguments for AuditService.page)."""
    raw = {k: request.args.get(k, "")[:200].strip() for k in FILTERS}
    kwargs: dict[str, str | dt.datetime | None] = {k: raw[k] or None for k in ("actor", "action", "target", "source")}
    for key in ("since", "until"):
        if raw[key]:
            try:
                day = dt.date.fromisoformat(raw[key])
            except ValueError:
                fail(f"{key}: {raw[key]!r} is not a date (YYYY-MM-DD)")
                raw[key] = ""
                continue
            if key == "until":
                day += dt.timedelta(days=1)  # inclusive
            kwargs[key] = dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)
    return raw, kwargs


@bp.route("/")
@requires("global")
def index():
    page, size = page_args(100)
    raw, kwargs = _filters()
    result = g.rp.audit.page(**kwargs, limit=size, offset=(page - 1) * size)
    for row in result["rows"]:  # plain text, autoescaped like every other cell
        row["details_text"] = json.dumps(row["details"], ensure_ascii=False, sort_keys=True)
    return render("audit.html", result=result, page=page, size=size, f=raw)


@bp.route("/export.csv")
@requires("global")
def export():
    _, kwargs = _filters()
    rp = g.rp

    def lines():
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["id", "at", "actor", "source", "action", "target", "details"])
        before = None
        while True:  # batches by id: the whole journal streams without being held in memory
            rows = rp.audit.page(**kwargs, limit=1000, with_total=False, before_id=before)["rows"]
            for r in rows:
                # a cell starting with = + - @ would be a formula in a spreadsheet: prefix it with '
                writer.writerow([_cell(v) for v in (r["id"], r["at"], r["actor"], r["source"], r["action"],
                                                    r["target"], json.dumps(r["details"], ensure_ascii=False,
                                                                            sort_keys=True))])
            yield out.getvalue()
            out.seek(0)
            out.truncate()
            if len(rows) < 1000:
                return
            before = rows[-1]["id"]

    return Response(lines(), mimetype="text/csv",
                    headers={"Content-Disposition": "attachment; filename=rupost-audit.csv"})


def _cell(value) -> str:
    text = str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text
