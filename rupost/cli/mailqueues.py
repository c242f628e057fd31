"""rupost mailqueues: mail queues of the cluster's nodes."""
from __future__ import annotations

import click

from . import emit, json_option, main, pass_ctx


@main.group()
def mailqueues():
    """Manage mail queues."""


@mailqueues.command("evacuate")
@click.option("--node", default=None, help="Only this failed node.")
@click.option("--timeout", default=600.0, show_default=True, help="Seconds allowed per node.")
@json_option
@pass_ctx
def mailqueues_evacuate(c, node, timeout, as_json):
    """Deliver the queued mail of failed nodes through this node (what the evacuator timer runs)."""
    reports = c.app.queues.evacuate(node, timeout)
    if as_json:
        emit(reports, True)
        return
    if not reports:
        click.echo("nothing to evacuate: no failed node has queued mail")
    for r in reports:
        if r["result"] == "skipped":
            click.echo(f"{r['node']}: skipped ({r['message']})")
        else:
            click.echo(f"{r['node']}: {r['result']}: {r['delivered']} of {r['found']} delivered, "
                       f"{r['remaining']} remaining")
