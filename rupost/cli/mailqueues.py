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
    reports = c.app.evacuation.evacuate(node, timeout)
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


# ---------------------------------------------------------------- queue contents (this node, or the cluster)
_match_option = click.option("--all-matching", "match", multiple=True, metavar="FILTER",
                             help="Every message matching FILTER: KEY=TEXT (substring), KEY~REGEX, "
                                  "age>DURATION, age<DURATION or all; keys id, queue, sender, recipient, "
                                  "reason, age. Repeat to combine (all must match).")
_node_option = click.option("--node", default=None,
                            help="Another registered node (default: this node); actions are run by that "
                                 "node's agent, asked through the database.")
_timeout_option = click.option("--timeout", default=30.0, show_default=True, type=click.FloatRange(1, 600),
                               help="Seconds to wait for another node's answer.")


def _queue_rows(messages):
    from rupost.services.queue_messages import format_age

    return [{**m, "age": format_age(m["age"]), "recipients": ",".join(m["recipients"]),
             "reason": (m["reason"][:60] + "...") if len(m["reason"]) > 63 else m["reason"]} for m in messages]


@mailqueues.command("list")
@_node_option
@click.option("--cluster", is_flag=True, help="Every registered node (through the shared queue directories, "
                                              "or else through each node's agent).")
@click.option("--match", multiple=True, metavar="FILTER", help="Only messages matching FILTER (as --all-matching).")
@_timeout_option
@json_option
@pass_ctx
def mailqueues_list(c, node, cluster, match, timeout, as_json):
    """Messages in the mail queue: sender, recipients, size, age, reason."""
    if node and cluster:
        raise click.UsageError("--node and --cluster exclude each other")
    data = c.app.mailqueues.list(node=node, cluster=cluster, match=list(match) or None, timeout=timeout)
    if as_json:
        emit(data, True)
        return
    for n in data["nodes"]:
        if not n["reachable"]:
            click.echo(f"node {n['node']}: NOT REACHABLE: {n['error']}")
        elif n.get("truncated"):
            click.echo(f"node {n['node']}: {n['matched']} message(s) match, the first "
                       f"{sum(m['node'] == n['node'] for m in data['messages'])} listed "
                       "(a list relayed from another node is capped; narrow it with --match)")
    if not data["messages"]:
        reachable = [n["node"] for n in data["nodes"] if n["reachable"]]
        click.echo(f"mail queue empty{' (matching the filter)' if match else ''}: {', '.join(reachable) or '-'}")
        return
    cols = (["node"] if cluster else []) + ["id", "queue", "sender", "recipients", "size", "age", "reason"]
    emit(_queue_rows(data["messages"]), False, cols)
    click.echo(f"{len(data['messages'])} message(s)")


@mailqueues.command("show")
@click.argument("queue_id")
@_node_option
@click.option("--headers", "headers_only", is_flag=True, help="Envelope and headers only, without the body.")
@_timeout_option
@json_option
@pass_ctx
def mailqueues_show(c, queue_id, node, headers_only, timeout, as_json):
    """One queued message: its queue entry, envelope and content (postcat -q)."""
    data = c.app.mailqueues.show(queue_id, node=node, headers_only=headers_only, timeout=timeout)
    if as_json:
        emit(data, True)
        return
    from rupost.services.queue_messages import format_age

    click.echo(f"{data['id']} on {data['node']}: {data['queue']}, {data['size']} bytes, "
               f"age {format_age(data['age'])}, from <{data['sender']}> to {', '.join(data['recipients'])}")
    if data["reason"]:
        click.echo(f"reason: {data['reason']}")
    click.echo(data["content"].rstrip("\n"))
    if data["truncated"]:
        click.echo("[... truncated]")


def _queue_action(action: str, verb: str):
    @mailqueues.command(action)
    @click.argument("queue_ids", nargs=-1)
    @_match_option
    @_node_option
    @_timeout_option
    @json_option
    @pass_ctx
    def command(c, queue_ids, match, node, timeout, as_json):
        result = c.app.mailqueues.act(action, ids=list(queue_ids) or None, match=list(match) or None, node=node,
                                     timeout=timeout)
        if as_json:
            emit(result, True)
            return
        click.echo(f"{result['node']}: {verb} {result['count']} message(s)"
                   + (f": {' '.join(result['done'])}" if result["done"] and len(result["done"]) <= 20 else ""))
        if result["skipped"]:
            click.echo(f"skipped {len(result['skipped'])} ({'already on hold' if action == 'hold' else 'not on hold'})")
        if result["not_found"]:
            click.echo(f"left the queue meanwhile: {' '.join(result['not_found'])}")

    command.help = {
        "hold": "Put messages on hold: no delivery is attempted until they are released.",
        "release": "Release held messages: they are delivered again.",
        "delete": "Delete messages from the queue (no bounce is sent).",
        "requeue": "Requeue messages: they go through cleanup again (new queue ids) and are retried now.",
    }[action]
    return command


for _action, _verb in (("hold", "held"), ("release", "released"), ("delete", "deleted"), ("requeue", "requeued")):
    _queue_action(_action, _verb)


@mailqueues.command("flush")
@click.argument("queue_ids", nargs=-1)
@_node_option
@_timeout_option
@json_option
@pass_ctx
def mailqueues_flush(c, queue_ids, node, timeout, as_json):
    """Attempt delivery of every deferred message now (or of the named ones)."""
    result = c.app.mailqueues.flush(list(queue_ids) or None, node=node, timeout=timeout)
    if as_json:
        emit(result, True)
        return
    click.echo(f"{result['node']}: delivery attempted for "
               + ("every queued message" if result["ids"] == "all" else " ".join(result["ids"])))
