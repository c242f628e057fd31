"""Administrators and roles; lockouts."""
from __future__ import annotations

from flask import Blueprint, abort, g, redirect, request, url_for

from ...services.admins import LANGUAGES, ROLES
from ..web import attempt, fail, render, requires

bp = Blueprint("admins", __name__, url_prefix="/admins")
NAV = ("Administrators", "admins.index", "global")


def _domains() -> list[str]:
    return [d.strip() for d in request.form.get("domains", "").replace("\n", ",").split(",") if d.strip()]


@bp.route("/")
@requires("global")
def index():
    return render("admins.html", admins=g.rp.admins.list(), lockouts=g.rp.admins.lockouts(), roles=ROLES,
                  languages=LANGUAGES, mappings=g.rp.directories.admin_map_list(),
                  directories=[d["name"] for d in g.rp.directories.list()])


# ------------------------------------------------ LDAP administrators: directory group or user -> role
# (what `rupost ldap-domains admins add/list/remove` does; the password is checked by a bind)
@bp.route("/ldap-mappings/add", methods=["POST"])
@requires("super")
def mapping_add():
    form = request.form
    attempt(lambda: g.rp.directories.admin_map_add(form.get("directory", "")[:200], form.get("kind", "")[:16],
                                                   form.get("value", "")[:2000], form.get("role", ""), _domains()),
            "LDAP administrator mapping added.")
    return redirect(url_for("admins.index") + "#ldap-admins")


@bp.route("/ldap-mappings/remove", methods=["POST"])
@requires("super")
def mapping_remove():
    form = request.form
    attempt(lambda: g.rp.directories.admin_map_remove(form.get("directory", "")[:200], form.get("kind", "")[:16],
                                                      form.get("value", "")[:2000]),
            "LDAP administrator mapping removed.")
    return redirect(url_for("admins.index") + "#ldap-admins")


@bp.route("/add", methods=["POST"])
@requires("super")
def add():
    password = request.form.get("password", "")
    if password != request.form.get("password2", ""):
        fail("the two passwords differ")
        return redirect(url_for("admins.index"))
    source = request.form.get("source", "local")
    attempt(lambda: g.rp.admins.add(request.form.get("login", ""), password or None, request.form.get("role", ""),
                                    _domains(), request.form.get("language", "ru"), source),
            "Administrator added.")
    return redirect(url_for("admins.index"))


@bp.route("/<login>/<action>", methods=["POST"])
@requires("super")
def change(login, action):
    admins = g.rp.admins
    if action == "role":
        attempt(lambda: admins.set_role(login, request.form.get("role", ""), _domains()), "Role changed.")
    elif action == "password":
        password = request.form.get("password", "")
        if password != request.form.get("password2", ""):
            fail("the two passwords differ")
        else:
            attempt(lambda: admins.set_password(login, password), "Password changed.")
    elif action in ("enable", "disable"):
        attempt(lambda: admins.set_enabled(login, action == "enable"),
                "Administrator enabled." if action == "enable" else "Administrator disabled.")
    elif action == "totp-reset":
        attempt(lambda: admins.reset_totp(login), "Second factor disabled.")
    elif action == "remove":
        if login == g.admin.login:
            fail("you cannot remove yourself")
        else:
            attempt(lambda: admins.remove(login), "Administrator removed.")
    else:
        abort(404)
    return redirect(url_for("admins.index"))


@bp.route("/unlock", methods=["POST"])
@requires("super")
def unlock():
    kind = request.form.get("kind", "")
    if kind not in ("user", "address"):
        abort(400)
    attempt(lambda: g.rp.admins.unlock(kind, request.form.get("key", "")), "Unlocked.")
    return redirect(url_for("admins.index"))
