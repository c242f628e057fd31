"""Allow and deny lists of senders (rspamd on port 25): list, add, remove. A domain
administrator edits their domains' entries and sees the global ones."""
from __future__ import annotations

from flask import Blueprint, g, redirect, request, url_for

from ..web import attempt, render, requires

bp = Blueprint("antispam", __name__, url_prefix="/antispam")
NAV = ("Sender lists", "antispam.index", "any")
GLOBAL = "*"


@bp.route("/")
@requires("any")
def index():
    domain = request.args.get("domain", "")[:253] or None
    kind = request.args.get("kind") if request.args.get("kind") in ("allow", "deny") else None
    entries: list = []
    attempt(lambda: entries.extend(g.rp.antispam_lists.list(domain, kind)))
    domains = g.rp.domains.page(None, g.admin.domain_scope, limit=500, with_counts=False)["rows"]
    return render("antispam.html", entries=entries, domains=domains, domain=domain or "", kind=kind or "")


@bp.route("/set", methods=["POST"])
@requires("write")
def set_entry():
    form = request.form
    kind = form.get("kind", "")
    domain = form.get("domain", "").strip() or GLOBAL
    attempt(lambda: g.rp.antispam_lists.set(kind, form.get("sender", "")[:320], domain, form.get("comment", "")[:1000]),
            "Sender list updated.")
    return redirect(url_for("antispam.index", domain="" if domain == GLOBAL else domain))


@bp.route("/remove", methods=["POST"])
@requires("write")
def remove():
    domain = request.form.get("domain", GLOBAL)[:253]
    attempt(lambda: g.rp.antispam_lists.remove(request.form.get("sender", "")[:320], domain),
            "Sender removed from the list.")
    return redirect(url_for("antispam.index"))
