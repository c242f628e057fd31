"""Mail domains: list (paginated, searched in SQL), add, enable/disable, remove."""
from __future__ import annotations

from flask import Blueprint, abort, g, redirect, request, url_for

from ..web import attempt, check_domain, page_args, render, requires

bp = Blueprint("domains", __name__, url_prefix="/domains")
NAV = ("Domains", "domains.index", "any")


@bp.route("/")
@requires("any")
def index():
    page, size = page_args()
    search = request.args.get("q", "")[:200]
    result = g.rp.domains.page(search or None, g.admin.domain_scope, limit=size, offset=(page - 1) * size)
    return render("domains.html", result=result, page=page, size=size, q=search)


@bp.route("/add", methods=["POST"])
@requires("super")
def add():
    name = request.form.get("name", "")
    attempt(lambda: g.rp.domains.add(name, request.form.get("description", "")[:1000].strip()),
            "Domain added.")
    return redirect(url_for("domains.index"))


@bp.route("/<name>/<action>", methods=["POST"])
@requires("super")
def change(name, action):
    check_domain(name, write=True)
    if action == "enable":
        attempt(lambda: g.rp.domains.set_enabled(name, True), "Domain enabled.")
    elif action == "disable":
        attempt(lambda: g.rp.domains.set_enabled(name, False), "Domain disabled.")
    elif action == "remove":
        attempt(lambda: g.rp.domains.remove(name), "Domain removed.")
    else:
        abort(404)
    return redirect(url_for("domains.index"))
