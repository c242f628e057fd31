"""Bearer tokens of the REST API (what `rupost api-tokens add/list/revoke` does)."""
from __future__ import annotations

from flask import Blueprint, g, request

from ...errors import PermissionDeniedError, RuPostError
from ...services.admins import ROLES
from ..web import fail, render, requires

bp = Blueprint("api_tokens", __name__, url_prefix="/api-tokens")
NAV = ("API tokens", "api_tokens.index", "super")


def _page(made: dict | None = None):
    return render("api_tokens.html", tokens=g.rp.api_tokens.list(), roles=ROLES, made=made)


@bp.route("/")
@requires("super")
def index():
    return _page()


@bp.route("/add", methods=["POST"])
@requires("super")
def add():
    """The secret is shown on the page answering this POST only, never again (stored hashed)."""
    form = request.form
    domains = [d.strip() for d in form.get("domains", "").replace("\n", ",").split(",") if d.strip()]
    try:
        made = g.rp.api_tokens.add(form.get("name", "")[:64], form.get("role", ""), domains,
                                   form.get("expires", "")[:40] or None)
    except PermissionDeniedError:
        raise
    except RuPostError as exc:
        fail(str(exc))
        return _page()
    return _page(made)


@bp.route("/<name>/revoke", methods=["POST"])
@requires("super")
def revoke(name):
    try:
        g.rp.api_tokens.revoke(name)
    except PermissionDeniedError:
        raise
    except RuPostError as exc:
        fail(str(exc))
    return _page()
