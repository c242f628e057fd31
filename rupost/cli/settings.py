"""rupost settings: cluster-wide settings (thin: parse, call the service layer, print)."""
from __future__ import annotations

import click

from . import emit, json_option, main, pass_ctx


@main.group()
def settings():
    """Cluster-wide settings: the mail host name, monitoring thresholds."""


@settings.command("mail-host")
@click.argument("name", required=False)
@click.option("--allow-unqualified-host", is_flag=True,
              help="Accept a name that is not fully qualified or is a loopback name (a test machine).")
@json_option
@pass_ctx
def settings_mail_host(c, name, allow_unqualified_host, as_json):
    """Show the mail host name, or set it to NAME: the SMTP banner and EHLO, the MX target,
    what mail clients are told and the certificates' name, for every node."""
    if name is None:
        state = c.app.settings.mail_host_state()
        state["notes"] = [f"{state['mail_host']} {state['problem']}"] if state["problem"] else []
    else:
        state = c.app.settings.set_mail_host(name, allow_unqualified_host)
    if as_json:
        emit(state, True)
        return
    if name is not None:
        click.echo(f"mail host name {'set to' if state['changed'] else 'already'} {state['mail_host']}")
    else:
        click.echo(f"mail host name: {state['mail_host']}" + ("" if state["stored"] else " (the node's FQDN: not set)"))
    click.echo(f"mail clients are told: {state['client_host']}")
    for note in state["notes"]:
        click.echo(f"note: {note}", err=True)


@settings.command("thresholds")
@click.argument("assignments", nargs=-1, metavar="[KEY=VALUE]...")
@click.option("--unset", "unset", multiple=True, metavar="KEY", help="Return KEY to its default (repeat).")
@json_option
@pass_ctx
def settings_thresholds(c, assignments, unset, as_json):
    """Show the monitoring thresholds of `rupost check` (disk, queue, capacity, database lag),
    or set some: KEY=VALUE with whole numbers; all are checked before any is stored."""
    updates = {}
    for item in assignments:
        key, sep, value = item.partition("=")
        if not sep:
            raise click.UsageError(f"{item!r}: write KEY=VALUE")
        updates[key.strip()] = value
    state = (c.app.settings.set_thresholds(updates, list(unset)) if updates or unset
             else c.app.settings.thresholds())
    if as_json:
        emit(state, True)
        return
    emit([{"key": k, **v} for k, v in state.items()], False, ["key", "value", "default", "set"])
