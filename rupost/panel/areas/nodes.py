"""Nodes of the cluster: state, components, heartbeat; drain, enable, remove one that left;
the database this node reaches (a highly available one: its members, their roles and lag, and
which member each of this node's ways reaches now, as `rupost db status` shows them)."""
from __future__ import annotations

from flask import Blueprint, abort, g, redirect, url_for

from .. import jobs
from ..web import attempt, render, requires

bp = Blueprint("nodes", __name__, url_prefix="/nodes")
NAV = ("Nodes", "nodes.index", "global")


@bp.route("/")
@requires("global")
def index():
    rp = g.rp
    nodes = rp.nodes.list()
    for node in nodes:
        node["alive"] = rp.nodes.alive(node)
        node["agent"] = rp.nodes.agent_alive(node)
        node["component_states"] = {k: v for k, v in (node["components"] or {}).items() if isinstance(v, dict)}
    return render("nodes.html", nodes=nodes, this_node=rp.config.node_name, database=rp.database_ha.status())


def role_class(member) -> str:
    """The CSS class of a database member's row: running (the primary) or streaming (a
    replica) is well; stopped, starting or not answering is not."""
    return "ok" if member.state in ("running", "streaming") else "bad"


bp.add_app_template_filter(role_class, "db_member_class")


@bp.route("/<name>/<action>", methods=["POST"])
@requires("super")
def change(name, action):
    if action == "remove":  # a node that left the cluster: refused while it still reports heartbeats
        attempt(lambda: g.rp.nodes.remove(name), "Node removed.")
        return redirect(url_for("nodes.index"))
    if action not in ("drain", "enable"):
        abort(404)
    attempt(lambda: g.rp.nodes.set_admin_state(name, action == "drain"),
            "Node drained: clients go to the other nodes." if action == "drain" else "Node enabled.")
    return redirect(url_for("nodes.index"))


@bp.route("/evacuate", methods=["POST"])
@requires("super")
def evacuate():
    """Deliver the queues of failed nodes through this node (what the evacuator timer runs)."""

    def work(rp, progress):
        progress(5, "looking for failed nodes with mail in their queue")
        reports = rp.evacuation.evacuate()
        if not reports:
            return {"result": "no failed node has mail in its queue"}
        return {"result": "; ".join(f"{r['node']}: {r['result']}" for r in reports),
                "steps": [{"step": f"evacuate {r['node']}", "ok": r["result"] in ("done", "skipped"),
                           "detail": r.get("message", "")} for r in reports]}

    job_id = jobs.submit(g.rp, "evacuate", work)
    return redirect(url_for("jobs.show", job_id=job_id))
