"""rupost api-tokens: bearer tokens of the REST API (thin: parse, call the service layer, print)."""
from __future__ import annotations

import click

from . import emit, json_option, main, pass_ctx

ROLE = click.Choice(["superadmin", "domain_admin", "readonly"])


@main.group("api-tokens")
def api_tokens():
    """Manage the REST API's bearer tokens (/api/v1 on the panel's port)."""


@api_tokens.command("add")
@click.argument("name")
@click.option("--role", type=ROLE, required=True)
@click.option("--domain", "domains", multiple=True, metavar="NAME",
              help="A domain a domain_admin token manages (repeat).")
@click.option("--expires", metavar="DATE", help="Last day of validity (YYYY-MM-DD, UTC) or an ISO date-time.")
@json_option
@pass_ctx
def api_tokens_add(c, name, role, domains, expires, as_json):
    """Make a token and print its secret: it is shown this once (only its hash is stored)."""
    t = c.app.api_tokens.add(name, role, list(domains), expires)
    if as_json:
        emit(t, True)
        return
    click.echo(f"API token {t['name']} added ({t['role']}" + (f": {', '.join(t['domains'])}" if t["domains"] else "")
               + (f", expires {t['expires_at']}" if t["expires_at"] else "") + ")", err=True)
    click.echo("the secret below is shown once; send it as 'Authorization: Bearer <secret>'", err=True)
    click.echo(t["token"])


@api_tokens.command("list")
@json_option
@pass_ctx
def api_tokens_list(c, as_json):
    emit(c.app.api_tokens.list(), as_json,
         ["name", "role", "domains", "state", "expires_at", "last_used_at", "created_by"])


@api_tokens.command("revoke")
@click.argument("name")
@pass_ctx
def api_tokens_revoke(c, name):
    """Void a token at once (it stays listed as revoked)."""
    c.app.api_tokens.revoke(name)
    click.echo(f"API token {name} revoked")
