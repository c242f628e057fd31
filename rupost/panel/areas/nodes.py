"""Nodes of the cluster: state, components, heartbeat; drain and enable."""
from __future__ import annotations

from flask import Blueprint, abort, g, redirect, url_for

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
    return render("nodes.html", nodes=nodes, this_node=rp.config.node_name)


@bp.route("/<name>/<action>", methods=["POST"])
@requires("super")
def change(name, action):
    if action not in ("drain", "enable"):
        abort(404)
    attempt(lambda: g.rp.nodes.set_admin_state(name, action == "drain"),
            "Node drained: clients go to the other nodes." if action == "drain" else "Node enabled.")
    return redirect(url_for("nodes.index"))
