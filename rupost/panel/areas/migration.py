"""Migration jobs: the mailboxes of `rupost migrate imap` and the users of `rupost migrate
groupware` (calendars and contacts), each with its last run's report."""
from __future__ import annotations

from flask import Blueprint, abort, g

from ..web import render, requires

bp = Blueprint("migration", __name__, url_prefix="/migration")
NAV = ("Migration", "migration.index", "global")


@bp.route("/")
@requires("global")
def index():
    groupware = g.rp.groupware_migration.status()
    for row in groupware:
        row["added"] = sum(c.get("added", 0) for c in row["counts"].values())
        row["existing"] = sum(c.get("existing", 0) for c in row["counts"].values())
    return render("migration.html", mailboxes=g.rp.migration.status(), groupware=groupware)


@bp.route("/groupware/<int:job>")
@requires("global")
def groupware(job: int):
    row = next((r for r in g.rp.groupware_migration.status() if r["id"] == job), None)
    if row is None:
        abort(404)
    return render("migration_groupware.html", job=row)
