"""rupost audit: read the audit journal (thin: parse, call the service layer, print)."""
from __future__ import annotations

import click

from . import emit, json_option, main, pass_ctx


@main.command("audit")
@click.option("--actor", help="Who acted, exactly (a login, token:NAME, ...).")
@click.option("--action", help="The start of the action (mailbox., domain.add, api_token...).")
@click.option("--target", help="Part of the target (an address, a domain...).")
@click.option("--source", help="The face: cli, panel, api, wizard, policy, sync...")
@click.option("--since", type=click.DateTime(), help="From this UTC time (YYYY-MM-DD[ HH:MM:SS]).")
@click.option("--until", type=click.DateTime(), help="Before this UTC time.")
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@click.option("--offset", type=click.IntRange(0), default=0)
@json_option
@pass_ctx
def audit(c, actor, action, target, source, since, until, limit, offset, as_json):
    """Show the audit journal, newest first: who changed what, when, from where."""
    import datetime as dt

    def utc(value):
        return value.replace(tzinfo=dt.UTC) if value is not None else None

    page = c.app.audit.page(actor=actor, action=action, target=target, source=source, since=utc(since),
                            until=utc(until), limit=limit, offset=offset)
    if as_json:
        emit(page, True)
        return
    rows = [{**r, "at": r["at"][:19], "address": (r["details"] or {}).get("address", "")} for r in page["rows"]]
    emit(rows, False, ["id", "at", "actor", "source", "action", "target", "address"])
    click.echo(f"{len(rows)} of {page['total']} record(s)", err=True)
