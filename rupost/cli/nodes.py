"""rupost nodes: the cluster's nodes (thin: parse, call the service layer, print)."""
from __future__ import annotations

import click

from . import emit, json_option, main, pass_ctx


@main.group()
def nodes():
    """Manage cluster nodes."""


@nodes.command("list")
@json_option
@pass_ctx
def nodes_list(c, as_json):
    rows = c.app.nodes.list()
    for row in rows:
        row["alive"] = c.app.nodes.alive(row)
    emit(rows, as_json, ["name", "address", "state", "admin_state", "alive", "applied_generation", "software_version",
                         "last_heartbeat"])


@nodes.command("show")
@click.argument("name")
@pass_ctx
def nodes_show(c, name):
    emit(c.app.nodes.show(name), True)


@nodes.command("drain")
@click.argument("name")
@pass_ctx
def nodes_drain(c, name):
    c.app.nodes.set_admin_state(name, drained=True)
    click.echo(f"node {name} drained: its health endpoint reports down within a few seconds and clients "
               "go to the other nodes")


@nodes.command("enable")
@click.argument("name")
@pass_ctx
def nodes_enable(c, name):
    c.app.nodes.set_admin_state(name, drained=False)
    click.echo(f"node {name} enabled")


@nodes.command("remove")
@click.argument("name")
@click.option("--force", is_flag=True, help="Remove even if the node still reports heartbeats.")
@pass_ctx
def nodes_remove(c, name, force):
    c.app.nodes.remove(name, force)
    click.echo(f"node {name} removed; redeploy the other nodes so their HA agents forget it (rupost deploy)")
