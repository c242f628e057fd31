"""Capacity and statistics: the sizing estimate for a number of mailboxes (and storing its
parameters), mail flow per domain and how long the statistics are kept (`rupost sizing`,
`rupost stats --by-domain`, `rupost stats retention`)."""
from __future__ import annotations

from flask import Blueprint, g, redirect, request, url_for

from ...errors import RuPostError, ValidationError
from ..web import attempt, fail, render, requires

bp = Blueprint("capacity", __name__, url_prefix="/capacity")
NAV = ("Capacity and statistics", "capacity.index", "global")
HOURS = (24, 24 * 7, 24 * 31)


def _number(name: str, default: str, kind=int):
    raw = request.values.get(name, default).strip()[:12]
    try:
        return kind(raw)
    except ValueError:
        raise ValidationError(f"{name}: {raw!r} is not a number") from None


@bp.route("/")
@requires("global")
def index():
    rp = g.rp
    estimate = None
    if request.args.get("mailboxes"):
        try:
            estimate = rp.sizing.estimate(_number("mailboxes", "0"), _number("sessions_per_user", "1", float))
        except RuPostError as exc:
            fail(str(exc))
    hours = _number("hours", "24") if request.args.get("hours", "24").isdigit() else 24
    hours = hours if hours in HOURS else 24
    return render("capacity.html", estimate=estimate, args=request.args, hours=hours, choices=HOURS,
                  traffic=rp.stats.by_domain(hours)[:200], retention=rp.stats.retention_days())


@bp.route("/apply", methods=["POST"])
@requires("super")
def apply():
    rp = g.rp

    def store():
        estimate = rp.sizing.estimate(_number("mailboxes", "0"), _number("sessions_per_user", "1", float))
        return rp.sizing.apply(estimate)

    attempt(store, "Load parameters stored: deploy to apply them.")
    return redirect(url_for("capacity.index", mailboxes=request.form.get("mailboxes", "")[:12],
                            sessions_per_user=request.form.get("sessions_per_user", "")[:12]))


@bp.route("/retention", methods=["POST"])
@requires("super")
def retention():
    attempt(lambda: g.rp.stats.set_retention(_number("days", "0")), "Retention saved.")
    return redirect(url_for("capacity.index"))
