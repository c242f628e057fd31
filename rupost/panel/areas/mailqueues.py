"""Mail queues of the cluster: list (searched with the service's filter syntax) the queue of
this node, of another node or of every node (the node selector; a node column), show one
message, hold / release / delete / requeue selected messages, flush. Messages of another node
are acted on by that node's agent: the service relays the request (services/mailqueues.py).

Superadministrators act; read-only administrators see everything; a domain administrator
sees only the messages whose sender or one of whose recipients is in its domains (the
filter is applied here, in the view, to what ``rp.mailqueues.list`` returns) and changes
nothing. Every action goes through ``rupost.services.mailqueues`` (audited there)."""
from __future__ import annotations

import shlex

from flask import Blueprint, abort, flash, g, redirect, request, url_for

from rupost.cluster.queue_relay import RELAY_LIST_LIMIT
from rupost.services.queue_messages import ACTIONS, format_age

from ...errors import RuPostError
from ..web import fail, page_args, render, requires

bp = Blueprint("mailqueues", __name__, url_prefix="/mailqueues")
NAV = ("Mail queues", "mailqueues.index", "any")
MAX_FILTER = 1000
ALL_NODES = "*"
RELAY_TIMEOUT = 15  # seconds another node's agent gets to answer a page's request (gunicorn allows 120 per request)
SUCCESS = {"hold": "Held: {result[count]} message(s).", "release": "Released: {result[count]} message(s).",
           "delete": "Deleted: {result[count]} message(s).", "requeue": "Requeued: {result[count]} message(s)."}


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


def _selected_node(value: str | None) -> str:
    """The node selector: "" this node, "*" every node, or a node's name (checked by the service)."""
    value = (value or "").strip()[:128]
    return "" if value == g.rp.config.node_name else value


def _back(q: str, node: str):
    return redirect(url_for("mailqueues.index", q=q or None, node=node or None))


def _run_on(node: str, call, success: str) -> None:
    """One service call for one node; its result or error flashed, named by node when it is another."""
    from ..i18n import gettext as _

    me = g.rp.config.node_name
    try:
        result = call()
    except RuPostError as exc:
        fail(str(exc))
        return
    message = _(success).format(result=result)
    flash(message if not node or node == me else f"{node}: {message}", "ok")


@bp.route("/")
@requires("any")
def index():
    page, size = page_args()
    q = request.args.get("q", "")[:MAX_FILTER].strip()
    node = _selected_node(request.args.get("node"))
    messages, nodes, error, names = [], [], None, []
    try:
        names = [n["name"] for n in g.rp.nodes.list()]
        data = g.rp.mailqueues.list(node=None if node in ("", ALL_NODES) else node, cluster=node == ALL_NODES,
                                   match=_terms(q) or None, timeout=RELAY_TIMEOUT)
        messages = [m for m in data["messages"] if _visible(m)]
        nodes = data["nodes"]
    except RuPostError as exc:
        error = str(exc)
    total = len(messages)
    shown = messages[(page - 1) * size: page * size]
    return render("mailqueues.html", messages=shown, total=total, nodes=nodes, error=error, q=q, page=page,
                  size=size, format_age=format_age, actions=ACTIONS, node=node, node_names=names,
                  this_node=g.rp.config.node_name, all_nodes=ALL_NODES, relay_limit=RELAY_LIST_LIMIT)


@bp.route("/show/<qid>")
@requires("any")
def show(qid):
    node = _selected_node(request.args.get("node"))
    if node == ALL_NODES:
        node = ""
    try:
        msg = g.rp.mailqueues.show(qid, node=node or None, timeout=RELAY_TIMEOUT)
    except RuPostError as exc:
        if g.admin.domain_scope is not None:
            abort(404)  # a domain administrator learns nothing about other domains' mail
        fail(str(exc))
        return _back("", node)
    if not _visible(msg):
        abort(403)
    return render("mailqueue.html", m=msg, format_age=format_age, actions=ACTIONS, node=node,
                  this_node=g.rp.config.node_name)


def _by_node(values: list[str], default: str) -> dict[str, list[str]]:
    """Checkbox values "NODE:QUEUEID" (another node's message) or a bare queue id (the selected node,
    this node when all are shown), grouped by node."""
    out: dict[str, list[str]] = {}
    for value in values:
        name, sep, qid = value.strip().rpartition(":")
        out.setdefault(name if sep else default, []).append(qid)
    return out


@bp.route("/act", methods=["POST"])
@requires("super")
def act():
    action = request.form.get("action", "")
    q = request.form.get("q", "")[:MAX_FILTER].strip()
    node = _selected_node(request.form.get("node"))
    if action not in ACTIONS:
        fail(f"unknown queue action {action!r} (actions: {', '.join(ACTIONS)})")
        return _back(q, node)
    me = g.rp.config.node_name
    if request.form.get("scope") == "matching":
        # every message matching the list's filter (as --all-matching), "all" without one,
        # on the selected node or on every node
        try:
            match = _terms(q) or ["all"]
            targets = [n["name"] for n in g.rp.nodes.list()] if node == ALL_NODES else [node or me]
        except RuPostError as exc:
            fail(str(exc))
            return _back(q, node)
        for target in targets:
            _run_on(target, lambda t=target: g.rp.mailqueues.act(action, match=match, node=t, timeout=RELAY_TIMEOUT),
                    SUCCESS[action])
        return _back(q, node)
    ids = [i.strip() for i in request.form.getlist("id") if i.strip()]
    if not ids:
        fail("select one or more messages first")
        return _back(q, node)
    for target, chosen in _by_node(ids, me if node in ("", ALL_NODES) else node).items():
        _run_on(target, lambda t=target, c=chosen: g.rp.mailqueues.act(action, ids=c, node=t, timeout=RELAY_TIMEOUT),
                SUCCESS[action])
    return _back(q, node)


@bp.route("/flush", methods=["POST"])
@requires("super")
def flush():
    node = _selected_node(request.form.get("node"))
    try:
        targets = [n["name"] for n in g.rp.nodes.list()] if node == ALL_NODES else [node or g.rp.config.node_name]
    except RuPostError as exc:
        fail(str(exc))
        return _back("", node)
    for target in targets:
        _run_on(target, lambda t=target: g.rp.mailqueues.flush(node=t, timeout=RELAY_TIMEOUT),
                "Delivery of the queued mail is being attempted now.")
    return _back("", node)
