"""Background jobs (deploys, rollbacks): progress and result."""
from __future__ import annotations

from flask import Blueprint, abort, g

from .. import jobs
from ..web import render, requires

bp = Blueprint("jobs", __name__, url_prefix="/jobs")
NAV = None  # reached from the templates & deploys page


@bp.route("/")
@requires("global")
def index():
    return render("jobs.html", jobs=jobs.recent(g.rp, 50))


@bp.route("/<int:job_id>")
@requires("global")
def show(job_id):
    job = jobs.get(g.rp, job_id)
    if job is None:
        abort(404)
    return render("job.html", job=job)
