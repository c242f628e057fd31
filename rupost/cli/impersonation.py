"""rupost impersonation: service accounts that open other users' mailboxes (dovecot master users)."""
from __future__ import annotations

import click

from . import echo_deploy_hint, emit, json_option, main, pass_ctx, read_password


def _service(c):

    return c.app.impersonation


@main.group("impersonation")
def impersonation():
    """Manage impersonation accounts: IMAP login USER@DOMAIN*ACCOUNT with the account's password."""


@impersonation.command("add")
@click.argument("name")
@click.option("--domain", "domains", multiple=True, required=True,
              help="Mail domain whose mailboxes the account may open (repeatable).")
@click.option("--description", default="")
@click.option("--password-stdin", is_flag=True, help="Read the password from the first line of stdin.")
@pass_ctx
def add(c, name, domains, description, password_stdin):
    out = _service(c).add(name, read_password(password_stdin), list(domains), description)
    click.echo(f"impersonation account {out['name']} added for {', '.join(out['domains'])}; "
               f"log in as USER@DOMAIN*{out['name']}")
    echo_deploy_hint(_service(c).deploy_hint())


@impersonation.command("list")
@json_option
@pass_ctx
def list_(c, as_json):
    emit(_service(c).list(), as_json, ["name", "domains", "enabled", "uses", "last_use", "description"])


@impersonation.command("set")
@click.argument("name")
@click.option("--domain", "domains", multiple=True, help="Replace the mail domains (repeatable).")
@click.option("--password", "new_password", is_flag=True, help="Set a new password (prompted).")
@click.option("--password-stdin", is_flag=True, help="Read the new password from the first line of stdin.")
@click.option("--enable/--disable", "enabled", default=None)
@pass_ctx
def set_(c, name, domains, new_password, password_stdin, enabled):
    password = read_password(password_stdin, "New password") if (new_password or password_stdin) else None
    out = _service(c).set(name, password=password, domains=list(domains) or None, enabled=enabled)
    click.echo(f"impersonation account {out['name']}: {', '.join(out['domains'])}, "
               f"{'enabled' if out['enabled'] else 'disabled'}")
    echo_deploy_hint(_service(c).deploy_hint())


@impersonation.command("uses")
@click.argument("name", required=False)
@click.option("--target", default=None, help="Only uses on this mailbox.")
@click.option("--limit", type=int, default=100, show_default=True)
@json_option
@pass_ctx
def uses(c, name, target, limit, as_json):
    """The journal: every mailbox opened by an impersonation account."""
    emit(_service(c).uses(name, target, limit), as_json, ["at", "account", "target", "protocol", "remote_ip", "node"])


@impersonation.command("remove")
@click.argument("name")
@pass_ctx
def remove(c, name):
    _service(c).remove(name)
    click.echo(f"impersonation account {name} removed")
    echo_deploy_hint(_service(c).deploy_hint())
