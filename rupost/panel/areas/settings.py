"""Settings: the mail host name, the panel's session timeout and lockout thresholds, the SRS
secret (its state and a rotation, `rupost srs status|rotate`)."""
from __future__ import annotations

import datetime as dt

from flask import Blueprint, flash, g, redirect, request, url_for

from ... import validation
from ...errors import ValidationError
from ...services.admins import DEFAULTS
from ..web import attempt, render, requires

bp = Blueprint("settings", __name__, url_prefix="/settings")
NAV = ("Settings", "settings.index", "global")

LIMITS = {"panel.session_timeout_minutes": (5, 24 * 60), "panel.lockout_user_failures": (3, 100),
          "panel.lockout_address_failures": (3, 1000), "panel.lockout_minutes": (1, 24 * 60)}


@bp.route("/")
@requires("global")
def index():
    rp = g.rp
    values = {key: rp.admins.setting(key) for key in DEFAULTS}
    return render("settings.html", mail_host=rp.settings.mail_host(), values=values, limits=LIMITS,
                  srs=_srs_state())


def _srs_state() -> dict:
    state = g.rp.srs.status()
    pending = state["pending_signs_from"]
    state["pending_at"] = (dt.datetime.fromtimestamp(pending, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
                           if pending else None)
    return state


@bp.route("/", methods=["POST"])
@requires("super")
def save():
    rp = g.rp

    def apply():
        changes = {}
        host = request.form.get("mail_host", "").strip()
        if host and host != rp.settings.mail_host():
            validation.mail_host(host)  # checked with the others, before any is stored
        for key, (low, high) in LIMITS.items():
            raw = request.form.get(key, "").strip()
            if not raw.isdigit() or not low <= int(raw) <= high:
                raise ValidationError(f"{key}: {raw[:20]!r} is not a whole number from {low} to {high}")
            if int(raw) != rp.admins.setting(key):
                changes[key] = int(raw)
        for key, value in changes.items():  # all checked before any is stored
            rp.settings.set(key, value)
        if host and host != rp.settings.mail_host():
            for note in rp.settings.set_mail_host(host)["notes"]:
                flash(note, "warning")
        return changes

    attempt(apply, "Settings saved.")
    return redirect(url_for("settings.index"))


@bp.route("/srs/rotate", methods=["POST"])
@requires("super")
def srs_rotate():
    attempt(lambda: g.rp.srs.rotate(), "SRS secret rotation started: every node verifies with the new secret now "
                                      "and signs with it in a minute.")
    return redirect(url_for("settings.index") + "#srs")
