"""Impersonation accounts (dovecot master users that open the mailboxes of their domains,
for archiving and migration tools) with the journal of their uses, and push endpoints (URLs
told of new mail) with their failures (`rupost impersonation|push`). Superadministrators
change them; domain administrators do not see them."""
from __future__ import annotations

from flask import Blueprint, abort, flash, g, redirect, request, url_for

from ..web import attempt, render, requires

bp = Blueprint("integrations", __name__, url_prefix="/integrations")
NAV = ("Impersonation and push", "integrations.index", "global")


def _domains(text: str) -> list[str]:
    return [d for d in text.replace(",", " ").split() if d][:1000]


@bp.route("/")
@requires("global")
def index():
    rp = g.rp
    return render("integrations.html", accounts=rp.impersonation.list(), uses=rp.impersonation.uses(limit=50),
                  endpoints=rp.push.list(), failures=rp.push.failures(20))


def _hint(hint: str) -> None:
    """The first account or endpoint switches a dovecot feature on: at the next deploy."""
    if hint:
        flash(hint, "warning")


@bp.route("/impersonation/add", methods=["POST"])
@requires("super")
def impersonation_add():
    form = request.form
    if attempt(lambda: g.rp.impersonation.add(form.get("name", "")[:64], form.get("password", "")[:1024],
                                              _domains(form.get("domains", "")[:20000]),
                                              form.get("description", "")[:1000]),
               "Impersonation account added."):
        _hint(g.rp.impersonation.deploy_hint())
    return redirect(url_for("integrations.index"))


@bp.route("/impersonation/<name>/<action>", methods=["POST"])
@requires("super")
def impersonation_change(name, action):
    accounts = g.rp.impersonation
    if action in ("enable", "disable"):
        attempt(lambda: accounts.set(name, enabled=action == "enable"), "Impersonation account changed.")
    elif action == "password":
        attempt(lambda: accounts.set(name, password=request.form.get("password", "")[:1024]), "Password changed.")
    elif action == "remove":
        attempt(lambda: accounts.remove(name), "Impersonation account removed.")
    else:
        abort(404)
    return redirect(url_for("integrations.index"))


@bp.route("/push/add", methods=["POST"])
@requires("super")
def push_add():
    form = request.form
    if attempt(lambda: g.rp.push.add(form.get("name", "")[:64], form.get("url", "")[:2048],
                                     _domains(form.get("domains", "")[:20000]), form.get("secret", "")[:1024]),
               "Push endpoint added."):
        _hint(g.rp.push.deploy_hint())
    return redirect(url_for("integrations.index"))


@bp.route("/push/<name>/<action>", methods=["POST"])
@requires("super")
def push_change(name, action):
    if action == "test":
        attempt(lambda: g.rp.push.test(name), "Test event delivered (HTTP {result[status]}).")
    elif action == "remove":
        attempt(lambda: g.rp.push.remove(name), "Push endpoint removed.")
    else:
        abort(404)
    return redirect(url_for("integrations.index"))
