"""Directories (LDAP domains): list, add, test the connection, sync now.

Node-wide: domain administrators get 403. Read-only administrators see the list and may
run a connection test (it reads the directory and changes nothing); adding and syncing
are for superadministrators. A sync runs as a background job (``rupost.panel.jobs``)
because a large directory takes a while. Everything calls ``rupost.services.directories``
(audited there); the service account password is never shown back."""
from __future__ import annotations

from flask import Blueprint, g, redirect, request, url_for

from ...directories.ldap import KINDS, SECURITY
from ...errors import RuPostError
from .. import jobs
from ..web import attempt, render, requires

bp = Blueprint("directories", __name__, url_prefix="/directories")
NAV = ("Directories", "directories.index", "global")


def _index(report=None, status=200):
    return render("directories.html", directories=g.rp.directories.list(), report=report, kinds=KINDS,
                  securities=SECURITY), status


@bp.route("/")
@requires("global")
def index():
    return _index()


@bp.route("/add", methods=["POST"])
@requires("super")
def add():
    form = request.form
    try:
        timeout = int(form.get("timeout", "10") or 10)
    except ValueError:
        timeout = -1  # refused by the service with its own message
    mail_domains = [d for d in form.get("mail_domains", "").replace(",", " ").split() if d]
    attempt(lambda: g.rp.directories.add(
        form.get("name", ""), form.get("kind", ""), [form.get("uris", "")[:4000]], form.get("base_dn", "")[:2000],
        form.get("bind_dn", "")[:2000], form.get("bind_password", "")[:1000], security=form.get("security", "ldaps"),
        ca_pem=form.get("ca_pem", "")[:200_000], mail_domains=mail_domains,
        user_filter=form.get("user_filter", "")[:4000], group_filter=form.get("group_filter", "")[:4000],
        timeout=timeout, allow_plain=form.get("allow_plain") == "1", check=form.get("no_check") != "1"),
        "LDAP domain added. Run a deploy to use it for authentication, then sync it.")
    return redirect(url_for("directories.index"))


@bp.route("/<name>/test", methods=["POST"])
@requires("global")
def test(name):
    try:
        report = g.rp.directories.test(name, sample=5)
    except RuPostError as exc:
        report = {"name": name, "ok": False, "error": str(exc), "servers": [], "bind": False, "base_dn": False,
                  "users": []}
    return _index(report=report)


@bp.route("/<name>/sync", methods=["POST"])
@requires("super")
def sync(name):
    if not attempt(lambda: g.rp.directories.show(name)):
        return redirect(url_for("directories.index"))
    directory = g.rp.directories.show(name)["name"]

    def work(rp, progress):
        progress(5, f"reading the users of LDAP domain {directory}")
        r = rp.directories.sync(directory)
        return {"result": (f"{r['name']}: {r['seen']} user(s) seen, {r['created']} created, {r['renamed']} renamed, "
                           f"{r['disabled']} disabled, {r['enabled']} re-enabled, {r['deleted']} gone, "
                           f"{r['aliases_added']}/{r['aliases_removed']} alias(es) added/removed, "
                           f"{r['conflicts']} conflict(s)"),
                "steps": [{"step": "problem", "ok": False, "detail": p} for p in r.get("problems", [])[:50]]}

    job_id = jobs.submit(g.rp, "ldap-sync", work)
    return redirect(url_for("jobs.show", job_id=job_id))
