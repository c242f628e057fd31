"""rupost resources: calendar resources (rooms, equipment) booked through SOGo."""
from __future__ import annotations

import click

from . import emit, json_option, main, pass_ctx


def _service(c):

    return c.app.resources


@main.group("resources")
def resources():
    """Manage calendar resources: rooms and equipment that accept bookings by themselves."""


@resources.command("add")
@click.argument("address")
@click.option("--kind", type=click.Choice(["room", "equipment"]), default="room", show_default=True)
@click.option("--name", "display_name", default="", help="Display name in the address book and invitations.")
@click.option("--bookings", "multiple_bookings", type=int, default=1, show_default=True,
              help="Simultaneous bookings allowed (1: no overlaps; 0: no limit).")
@click.option("--owner", default=None, help="Mailbox that manages the resource's calendar.")
@click.option("--description", default="")
@json_option
@pass_ctx
def add(c, address, kind, display_name, multiple_bookings, owner, description, as_json):
    out = _service(c).add(address, kind, display_name=display_name, multiple_bookings=multiple_bookings,
                          owner=owner, description=description)
    if as_json:
        emit(out, True)
        return
    click.echo(f"{out['kind']} {out['address']} added (simultaneous bookings: "
               f"{out['multiple_bookings'] or 'no limit'}; owner: {out['owner'] or 'none'}); "
               f"calendar: {out['calendar']}")


@resources.command("list")
@click.option("--domain", default=None)
@json_option
@pass_ctx
def list_(c, domain, as_json):
    emit(_service(c).list(domain), as_json, ["address", "kind", "display_name", "multiple_bookings", "owner"])


@resources.command("set")
@click.argument("address")
@click.option("--bookings", "multiple_bookings", type=int, default=None,
              help="Simultaneous bookings allowed (1: no overlaps; 0: no limit).")
@click.option("--owner", default=None, help="New booking owner (an empty string: none).")
@click.option("--name", "display_name", default=None)
@pass_ctx
def set_(c, address, multiple_bookings, owner, display_name):
    out = _service(c).set(address, multiple_bookings=multiple_bookings, owner=owner, display_name=display_name)
    click.echo(f"{out['address']}: simultaneous bookings {out['multiple_bookings'] or 'no limit'}, "
               f"owner {out['owner'] or 'none'}" + (f"; calendar: {out['calendar']}" if "calendar" in out else ""))


@resources.command("provision")
@click.argument("address")
@pass_ctx
def provision(c, address):
    """Create the resource's calendar in SOGo and set its rights again (after a failure)."""
    out = _service(c).provision(address)
    click.echo(f"{out['address']}: calendar ready")


@resources.command("remove")
@click.argument("address")
@click.confirmation_option(prompt="Remove this resource? Its bookings stay in SOGo's tables.")
@pass_ctx
def remove(c, address):
    _service(c).remove(address)
    click.echo(f"resource {address} removed")
