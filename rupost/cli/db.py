"""rupost db: CLI commands (thin: parse, call the service layer, print)."""
from __future__ import annotations

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
    from ..db import migrate

    emit(migrate.status(c.app.dbs), as_json, ["database", "current", "head", "up_to_date"])
