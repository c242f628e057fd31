"""rupost aliases: CLI commands (thin: parse, call the service layer, print)."""
from __future__ import annotations

import click

from . import emit, json_option, main, pass_ctx


@main.group()
def aliases():
    """Manage aliases."""


@aliases.command("add")
@click.argument("address")
@click.argument("destinations", nargs=-1, required=True)
@pass_ctx
def aliases_add(c, address, destinations):
    a = c.app.aliases.add(address, list(destinations))
    click.echo(f"alias {a['address']} -> {', '.join(a['destinations'])} added")


@aliases.command("list")
@click.option("--domain", default=None)
@json_option
@pass_ctx
def aliases_list(c, domain, as_json):
    emit(c.app.aliases.list(domain), as_json, ["address", "destinations", "enabled"])


@aliases.command("remove")
@click.argument("address")
@pass_ctx
def aliases_remove(c, address):
    c.app.aliases.remove(address)
    click.echo(f"alias {address} removed")
