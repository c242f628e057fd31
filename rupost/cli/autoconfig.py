"""rupost autoconfig: CLI commands (thin: parse, call the service layer, print)."""
from __future__ import annotations

import click

from . import main, pass_ctx


@main.group()
def autoconfig():
    """Client autoconfiguration (Thunderbird, Outlook, Apple) served behind nginx."""


@autoconfig.command("serve")
@click.option("--socket", "socket_path", default=None,
              help="Unix socket to listen on (default: <root>/run/rupost/autoconfig.sock, what nginx proxies to).")
@click.option("--bind", default=None, help="Listen on HOST:PORT instead of the unix socket.")
@pass_ctx
def autoconfig_serve(c, socket_path, bind):
    """Answer the autoconfig, autodiscover and mobileconfig requests nginx passes on."""
    from rupost.node.autoconfig_server import default_socket, serve

    where = bind or socket_path or str(default_socket(c.app.layout))
    click.echo(f"serving client autoconfiguration on {where}", err=True)
    serve(c.app, socket_path=socket_path, bind=bind)


@autoconfig.command("show")
@click.argument("address")
@click.option("--format", "fmt", type=click.Choice(["thunderbird", "autodiscover", "mobileconfig"]),
              default="thunderbird", show_default=True)
@pass_ctx
def autoconfig_show(c, address, fmt):
    """Print what a client asking for ADDRESS (user@domain, or a domain for thunderbird) receives."""
    from xml.sax.saxutils import escape

    from ..services.autoconfig import AUTODISCOVER_REQUEST_NS

    svc = c.app.autoconfig
    if fmt == "thunderbird":
        domain = address.rsplit("@", 1)[-1]
        body = svc.thunderbird(domain)
    elif fmt == "autodiscover":
        request = (f'<Autodiscover xmlns="{AUTODISCOVER_REQUEST_NS}"><Request><EMailAddress>'
                   f"{escape(address)}</EMailAddress></Request></Autodiscover>").encode()
        body = svc.autodiscover(request)
    else:
        body = svc.mobileconfig(address)
    click.echo(body.decode())
