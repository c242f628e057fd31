"""rupost calendars: delegated calendars through SOGo's ACLs (thin: parse, call, print)."""
from __future__ import annotations

import click

from . import emit, json_option, main, pass_ctx


@main.group("calendars")
def calendars():
    """Delegate calendars: let another user read, change, or see the busy times of one's calendar."""


@calendars.command("delegate")
@click.argument("owner")
@click.argument("delegate")
@click.option("--rights", type=click.Choice(["read", "write", "freebusy"]), default="read", show_default=True)
@pass_ctx
def delegate(c, owner, delegate, rights):
    """DELEGATE is a user, or a distribution list (each member gets the rights, kept in step)."""
    out = c.app.calendar_delegations.delegate(owner, delegate, rights)
    members = f" ({len(out['members'])} member(s))" if out.get("group") else ""
    click.echo(f"{out['delegate']}{members} may now {out['rights']} the calendar of {out['owner']}")


@calendars.command("revoke")
@click.argument("owner")
@click.argument("delegate")
@pass_ctx
def revoke(c, owner, delegate):
    c.app.calendar_delegations.revoke(owner, delegate)
    click.echo(f"{delegate} no longer has rights on the calendar of {owner}")


@calendars.command("list")
@click.argument("owner", required=False)
@json_option
@pass_ctx
def list_(c, owner, as_json):
    """List delegated calendars (of OWNER, or all)."""
    emit(c.app.calendar_delegations.list(owner), as_json, ["owner", "delegate", "rights", "group"])
