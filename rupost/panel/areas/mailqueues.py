"""Mail queues of this node: list (searched with the service's filter syntax), show one
message, hold / release / delete / requeue selected messages, flush.

Superadministrators act; read-only administrators see everything; a domain administrator
sees only the messages whose sender or one of whose recipients is in its domains (the
filter is applied here, in the view, to what ``rp.postqueue.list`` returns) and changes
nothing. Every action goes through ``rupost.services.postqueue`` (audited there)."""
from __future__ import annotations

import shlex

from flask import Blueprint, abort, g, redirect, request, url_for

from ...errors import RuPostError
from ...services.postqueue import ACTIONS, format_age
from ..web import attempt, fail, page_args, render, requires

bp = Blueprint("mailqueues", __name__, url_prefix="/mailqueues")
NAV = ("Mail queues", "mailqueues.index", "any")
MAX_FILTER = 1000


def _domain(address: str) -> str:
    return (address or "").rpartition("@")[2].strip().lower()


def _visible(msg: dict) -> bool:
    """Whether the administrator may see this queued message (domain scoping)."""
    scope = g.admin.domain_scope
    if scope is None:
        return True
    mine = {d.lower() for d in scope}
    return _domain(msg["sender"]) in mine or any(_domain(r) in mine for r in msg["recipients"])


def _terms(text: str) -> list[str]:
    """The filter field: terms separated by spaces, quoted when a value has spaces
    (reason="connection refused"); the service parses and checks each term."""
    try:
        return shlex.split(text)
    except ValueError as exc:
        raise RuPostError(f"invalid filter {text!r}: {exc} (quote values with spaces: reason=\"timed out\")") \
            from None


@bp.route("/")
@requires("any")
def index():
    page, size = page_args()
    q = request.args.get("q", "")[:MAX_FILTER].strip()
    messages, nodes, error = [], [], None
    try:
        data = g.rp.postqueue.list(match=_terms(q) or None)
        messages = [m for m in data["messages"] if _visible(m)]
        nodes = data["nodes"]
    except RuPostError as exc:
        error = str(exc)
    total = len(messages)
    shown = messages[(page - 1) * size: page * size]
    return render("mailqueues.html", messages=shown, total=total, nodes=nodes, error=error, q=q, page=page,
                  size=size, format_age=format_age, actions=ACTIONS)


@bp.route("/show/<qid>")
@requires("any")
def show(qid):
    try:
        msg = g.rp.postqueue.show(qid)
    except RuPostError as exc:
        if g.admin.domain_scope is not None:
            abort(404)  # a domain administrator learns nothing about other domains' mail
        fail(str(exc))
        return redirect(url_for("mailqueues.index"))
    if not _visible(msg):
        abort(403)
    return render("mailqueue.html", m=msg, format_age=format_age, actions=ACTIONS)


@bp.route("/act", methods=["POST"])
@requires("super")
def act():
    action = request.form.get("action", "")
    q = request.form.get("q", "")[:MAX_FILTER].strip()
    if action not in ACTIONS:
        fail(f"unknown queue action {action!r} (actions: {', '.join(ACTIONS)})")
        return redirect(url_for("mailqueues.index", q=q or None))
    if request.form.get("scope") == "matching":
        # every message matching the list's filter (as --all-matching), "all" without one
        def run():
            return g.rp.postqueue.act(action, match=_terms(q) or ["all"])
    else:
        ids = [i.strip() for i in request.form.getlist("id") if i.strip()]
        if not ids:
            fail("select one or more messages first")
            return redirect(url_for("mailqueues.index", q=q or None))

        def run():
            return g.rp.postqueue.act(action, ids=ids)
    attempt(run, {"hold": "Held: {result[count]} message(s).", "release": "Released: {result[count]} message(s).",
                  "delete": "Deleted: {result[count]} message(s).",
                  "requeue": "Requeued: {result[count]} message(s)."}[action])
    return redirect(url_for("mailqueues.index", q=q or None))


@bp.route("/flush", methods=["POST"])
@requires("super")
def flush():
    attempt(lambda: g.rp.postqueue.flush(), "Delivery of the queued mail is being attempted now.")
    return redirect(url_for("mailqueues.index"))
