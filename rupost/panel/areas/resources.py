"""Calendar resources (rooms, equipment) that SOGo users book: list, add, change, make
bookable again, remove (`rupost resources`); domain administrators for their domains."""
from __future__ import annotations

from flask import Blueprint, abort, g, redirect, request, url_for

from ..web import attempt, check_address, render, requires

bp = Blueprint("resources", __name__, url_prefix="/resources")
NAV = ("Resources", "resources.index", "any")


@bp.route("/")
@requires("any")
def index():
    return render("resources.html", resources=g.rp.resources.list())


@bp.route("/add", methods=["POST"])
@requires("write")
def add():
    form = request.form
    address = form.get("address", "").strip()[:320]
    check_address(address, write=True)
    attempt(lambda: g.rp.resources.add(address, form.get("kind", "room"),
                                       display_name=form.get("display_name", "")[:256],
                                       multiple_bookings=form.get("multiple_bookings", "1")[:8],
                                       owner=form.get("owner", "").strip()[:320] or None,
                                       description=form.get("description", "")[:1000]),
            "Resource added (calendar: {result[calendar]}).")
    return redirect(url_for("resources.index"))


@bp.route("/<address>/<action>", methods=["POST"])
@requires("write")
def change(address, action):
    check_address(address, write=True)
    form = request.form
    if action == "set":
        attempt(lambda: g.rp.resources.set(address, multiple_bookings=form.get("multiple_bookings", "1")[:8],
                                           owner=form.get("owner", "").strip()[:320],
                                           display_name=form.get("display_name", "")[:256]),
                "Resource changed.")
    elif action == "provision":
        attempt(lambda: g.rp.resources.provision(address), "The resource is bookable in SOGo.")
    elif action == "remove":
        attempt(lambda: g.rp.resources.remove(address), "Resource removed.")
    else:
        abort(404)
    return redirect(url_for("resources.index"))
