"""Security blocks: client addresses and accounts blocked after failed logins (the policy
server's and the panel's), and lifting one (`rupost security blocks|unblock`)."""
from __future__ import annotations

from flask import Blueprint, g, redirect, request, url_for

from ..web import attempt, render, requires

bp = Blueprint("security", __name__, url_prefix="/security")
NAV = ("Security blocks", "security.index", "global")


@bp.route("/")
@requires("global")
def index():
    expired = request.args.get("expired") == "1"
    return render("security.html", blocks=g.rp.blocklist.list(expired), expired=expired)


@bp.route("/unblock", methods=["POST"])
@requires("super")
def unblock():
    value = request.form.get("value", "").strip()[:320]
    attempt(lambda: g.rp.blocklist.unblock(value), "Block lifted.")
    return redirect(url_for("security.index"))
