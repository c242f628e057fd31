"""rupost panel: the control panel (https, port 5000)."""
from __future__ import annotations

import click

from . import main, pass_ctx


@main.group()
def panel():
    """The control panel."""


@panel.command("serve")
@click.option("--bind", default=None, metavar="HOST:PORT",
              help="Where to listen (default: the node's listen address, port 5000).")
@click.option("--workers", default=2, show_default=True, type=click.IntRange(1, 64))
@click.option("--threads", default=4, show_default=True, type=click.IntRange(1, 64),
              help="Threads per worker (each worker keeps up to 6 database connections per database).")
@click.option("--access-log", default=None, metavar="FILE",
              help="Access log file (default: stderr, i.e. the journal of rupost.service).")
@pass_ctx
def panel_serve(c, bind, workers, threads, access_log):
    """Serve the panel over HTTPS with the active control_panel certificate (gunicorn)."""
    from ..panel.server import serve

    serve(c.root, bind, workers, threads, access_log)


@panel.command("rotate-session-key")
@pass_ctx
def panel_rotate_session_key(c):
    """A new key for the panel's session cookies: every administrator's session ends on every
    node at its next request (journaled as panel.rotate_session_key)."""
    d = c.app.admins.rotate_session_key()
    click.echo(f"panel session key rotated: the sessions of {d['administrators']} administrators ended")
