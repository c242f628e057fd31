"""Aliases: paginated list searched in SQL, add, remove (domain administrators: their domains only)."""
from __future__ import annotations

from flask import Blueprint, g, redirect, request, url_for

from ..web import attempt, check_address, page_args, render, requires

bp = Blueprint("aliases", __name__, url_prefix="/aliases")
NAV = ("Aliases", "aliases.index", "any")


@bp.route("/")
@requires("any")
def index():
    page, size = page_args()
    search = request.args.get("q", "")[:200]
    result = g.rp.aliases.page(search or None, g.admin.domain_scope, size, (page - 1) * size)
    return render("aliases.html", result=result, page=page, size=size, q=search)


@bp.route("/add", methods=["POST"])
@requires("write")
def add():
    address = request.form.get("address", "").strip()
    check_address(address, write=True)
    back = request.form.get("back")
    if back:
        check_address(back)
    destinations = [d for d in request.form.get("destinations", "").replace("\n", ",").split(",") if d.strip()]
    attempt(lambda: g.rp.aliases.add(address, destinations), "Alias added.")
    return redirect(url_for("mailboxes.show", address=back) if back else url_for("aliases.index"))


@bp.route("/<address>/remove", methods=["POST"])
@requires("write")
def remove(address):
    check_address(address, write=True)
    attempt(lambda: g.rp.aliases.remove(address), "Alias removed.")
    return redirect(url_for("aliases.index"))
