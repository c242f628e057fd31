"""Backups: those in this node's backup directory, and a new one now (a job, as `rupost
backup` without --dir: the databases, the configuration and, if asked, the mail storage)."""
from __future__ import annotations

from flask import Blueprint, g, redirect, request, url_for

from .. import jobs
from ..web import render, requires

bp = Blueprint("backups", __name__, url_prefix="/backups")
NAV = ("Backups", "backups.index", "global")


@bp.route("/")
@requires("global")
def index():
    return render("backups.html", backups=g.rp.backups.list(), directory=g.rp.backups.directory)


@bp.route("/create", methods=["POST"])
@requires("super")
def create():
    with_mail = request.form.get("with_mail") == "1"

    def work(rp, progress):
        progress(5, "dumping the databases" + (" and archiving the mail storage" if with_mail else ""))
        manifest = rp.backups.create(with_mail=with_mail)
        return {"result": manifest["path"],
                "steps": [{"step": name, "ok": True, "detail": f"{f['size']} bytes, sha256 {f['sha256'][:16]}…"}
                          for name, f in sorted(manifest["files"].items())]}

    return redirect(url_for("jobs.show", job_id=jobs.submit(g.rp, "backup", work)))
