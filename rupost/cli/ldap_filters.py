"""rupost ldap-filters: CLI commands (thin: parse, call the service layer, print)."""
from __future__ import annotations

import click

from . import emit, json_option, main, pass_ctx


@main.group("ldap-filters")
def ldap_filters():
    """Manage named LDAP filters (the members of dynamic distribution lists)."""


@ldap_filters.command("add")
@click.argument("name")
@click.argument("filter_text", metavar="FILTER")
@click.option("--ldap-domain", required=True, help="The LDAP domain the filter searches.")
@click.option("--description", default="")
@pass_ctx
def add(c, name, filter_text, ldap_domain, description):
    out = c.app.ldap_filters.add(name, ldap_domain, filter_text, description)
    click.echo(f"LDAP filter {out['name']} added: {out['filter']}")


@ldap_filters.command("list")
@json_option
@pass_ctx
def list_(c, as_json):
    emit(c.app.ldap_filters.list(), as_json, ["name", "ldap_domain", "filter", "description"])


@ldap_filters.command("set")
@click.argument("name")
@click.argument("filter_text", metavar="FILTER")
@pass_ctx
def set_(c, name, filter_text):
    out = c.app.ldap_filters.set_filter(name, filter_text)
    click.echo(f"LDAP filter {out['name']}: {out['filter']} (run `rupost distribution-lists update`)")


@ldap_filters.command("test")
@click.argument("name", required=False)
@click.option("--ldap-domain", default=None, help="With --filter: try a filter before saving it.")
@click.option("--filter", "filter_text", default=None)
@click.option("--limit", default=20, show_default=True)
@json_option
@pass_ctx
def test(c, name, ldap_domain, filter_text, limit, as_json):
    """Show who a filter matches now."""
    out = c.app.ldap_filters.test(name, ldap_domain=ldap_domain, text=filter_text, limit=limit)
    if as_json:
        emit(out, True)
        return
    click.echo(f"{out['filter']} in {out['ldap_domain']}: {out['count']} user(s)")
    for address in out["sample"]:
        click.echo(f"  {address}")
    if out["count"] > len(out["sample"]):
        click.echo(f"  ... and {out['count'] - len(out['sample'])} more")


@ldap_filters.command("remove")
@click.argument("name")
@pass_ctx
def remove(c, name):
    c.app.ldap_filters.remove(name)
    click.echo(f"LDAP filter {name} removed")
