"""Checks and monitoring thresholds: the last state of each self-diagnosis check, running
them now (a job), and the thresholds the checks warn at (`rupost check`, `rupost settings
thresholds`)."""
from __future__ import annotations

from flask import Blueprint, g, redirect, request, url_for

from .. import jobs
from ..web import attempt, render, requires

bp = Blueprint("checks", __name__, url_prefix="/checks")
NAV = ("Checks", "checks.index", "global")


@bp.route("/")
@requires("global")
def index():
    states = sorted(g.rp.checks.last_states().items())
    return render("checks.html", states=states, thresholds=g.rp.settings.thresholds())


@bp.route("/run", methods=["POST"])
@requires("super")
def run():
    def work(rp, progress):
        progress(5, "running the checks")
        results = rp.checks.run()
        return {"result": rp.checks.worst(results),
                "steps": [{"step": f"{r.check}: {r.target}", "ok": r.status == "ok",
                           "detail": f"{r.status}: {r.detail}"} for r in results]}

    return redirect(url_for("jobs.show", job_id=jobs.submit(g.rp, "checks", work)))


@bp.route("/thresholds", methods=["POST"])
@requires("super")
def thresholds():
    current = g.rp.settings.thresholds()

    def save():
        values, unset = {}, []
        for key, now in current.items():
            raw = request.form.get(key, "").strip()[:20]
            if not raw:
                if now["set"]:
                    unset.append(key)  # an emptied field returns to the default
            elif not now["set"] or raw != str(now["value"]):
                values[key] = raw  # the service checks them all before storing any
        return g.rp.settings.set_thresholds(values, unset)

    attempt(save, "Thresholds saved.")
    return redirect(url_for("checks.index"))
