"""rupost mailboxes: CLI commands (thin: parse, call the service layer, print)."""
from __future__ import annotations

import click

from . import emit, json_option, main, pass_ctx, read_password


@main.group()
def mailboxes():
    """Manage mailboxes."""


@mailboxes.command("add")
@click.argument("address")
@click.option("--password-stdin", is_flag=True, help="Read the password from the first line of stdin.")
@click.option("--quota", default="0", show_default=True, help="Quota, e.g. 2G or 500M; 0 is unlimited.")
@click.option("--name", "display_name", default="", help="Display name.")
@pass_ctx
def mailboxes_add(c, address, password_stdin, quota, display_name):
    m = c.app.mailboxes.add(address, read_password(password_stdin), quota, display_name)
    click.echo(f"mailbox {m['address']} added")


@mailboxes.command("list")
@click.option("--domain", default=None)
@click.option("--search", default=None, help="Substring of the address.")
@click.option("--limit", default=1000, show_default=True)
@click.option("--offset", default=0)
@json_option
@pass_ctx
def mailboxes_list(c, domain, search, limit, offset, as_json):
    emit(c.app.mailboxes.list(domain, search, limit, offset), as_json,
         ["address", "display_name", "quota_bytes", "enabled"])


@mailboxes.command("show")
@click.argument("address")
@json_option
@pass_ctx
def mailboxes_show(c, address, as_json):
    emit(c.app.mailboxes.show(address), True)


@mailboxes.command("passwd")
@click.argument("address")
@click.option("--password-stdin", is_flag=True)
@pass_ctx
def mailboxes_passwd(c, address, password_stdin):
    c.app.mailboxes.set_password(address, read_password(password_stdin, "New password"))
    click.echo(f"password of {address} changed")


@mailboxes.command("quota")
@click.argument("address")
@click.argument("quota")
@pass_ctx
def mailboxes_quota(c, address, quota):
    c.app.mailboxes.set_quota(address, quota)
    click.echo(f"quota of {address} set to {quota}")


@mailboxes.command("disable")
@click.argument("address")
@pass_ctx
def mailboxes_disable(c, address):
    c.app.mailboxes.set_enabled(address, False)
    click.echo(f"mailbox {address} disabled")


@mailboxes.command("enable")
@click.argument("address")
@pass_ctx
def mailboxes_enable(c, address):
    c.app.mailboxes.set_enabled(address, True)
    click.echo(f"mailbox {address} enabled")


@mailboxes.command("remove")
@click.argument("address")
@pass_ctx
def mailboxes_remove(c, address):
    c.app.mailboxes.remove(address)
    click.echo(f"mailbox {address} removed (its stored mail is kept on disk)")
