"""rupost db: CLI commands (thin: parse, call the service layer, print)."""
from __future__ import annotations

from dataclasses import asdict

import click

from . import emit, json_option, main, pass_ctx


@main.group()
def db():
    """Manage the database."""


@db.command("upgrade")
@pass_ctx
def db_upgrade(c):
    from ..db import migrate

    migrate.upgrade(c.app.dbs)
    click.echo("databases are at the latest schema")


@db.command("status")
@json_option
@pass_ctx
def db_status(c, as_json):
    """The schema revisions and, with a highly available database, its members: role, state,
    lag, and which member each of this node's ways to the database reaches."""
    from ..db import migrate

    revisions = migrate.status(c.app.dbs)
    ha = c.app.database_ha.status()
    if as_json:
        emit({"databases": revisions, **ha.as_dict()}, True)
        return
    emit(revisions, False, ["database", "current", "head", "up_to_date"])
    if ha.ha:
        click.echo("")
        emit([asdict(m) for m in ha.members], False, ["name", "host", "port", "role", "state", "lag_bytes",
                                                      "timeline"])
    click.echo("")
    for way, member in ha.reaches.items():
        click.echo(f"{way}: {member}")
