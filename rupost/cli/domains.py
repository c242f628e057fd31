"""rupost domains: CLI commands (thin: parse, call the service layer, print)."""
from __future__ import annotations

import click

from . import emit, json_option, main, pass_ctx


@main.group()
def domains():
    """Manage mail domains."""


@domains.command("add")
@click.argument("name")
@click.option("--description", default="")
@pass_ctx
def domains_add(c, name, description):
    d = c.app.domains.add(name, description)
    click.echo(f"domain {d['name']} added")


@domains.command("list")
@json_option
@pass_ctx
def domains_list(c, as_json):
    emit(c.app.domains.list(), as_json, ["name", "enabled", "mailboxes", "aliases", "description"])


@domains.command("remove")
@click.argument("name")
@pass_ctx
def domains_remove(c, name):
    c.app.domains.remove(name)
    click.echo(f"domain {name} removed")


@domains.command("disable")
@click.argument("name")
@pass_ctx
def domains_disable(c, name):
    c.app.domains.set_enabled(name, False)
    click.echo(f"domain {name} disabled: its mailboxes and aliases stop receiving and cannot log in")


@domains.command("enable")
@click.argument("name")
@pass_ctx
def domains_enable(c, name):
    c.app.domains.set_enabled(name, True)
    click.echo(f"domain {name} enabled")
