"""rupost srs: the SRS secrets of forwarded mail (thin: parse, call the service layer, print)."""
from __future__ import annotations

import datetime as dt

import click

from . import emit, json_option, main, pass_ctx


def _print_status(d: dict) -> None:
    click.echo(f"SRS domain: {d['domain']}")
    click.echo(f"secrets: {d['secrets']} (the first signs, all verify)")
    if d["pending_signs_from"]:
        when = dt.datetime.fromtimestamp(d["pending_signs_from"], dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        click.echo(f"rotation under way: every node verifies with the new secret now; it signs from {when}")


@main.group()
def srs():
    """Sender Rewriting Scheme for forwarded mail (component postsrsd)."""


@srs.command("status")
@json_option
@pass_ctx
def srs_status(c, as_json):
    """The SRS domain and how many secrets verify (never the secrets)."""
    d = c.app.srs.status()
    emit(d, True) if as_json else _print_status(d)


@srs.command("rotate")
@json_option
@pass_ctx
def srs_rotate(c, as_json):
    """A new signing secret: every node verifies with it within a minute, then signs with it;
    the previous secrets keep verifying the addresses already handed out."""
    d = c.app.srs.rotate()
    emit(d, True) if as_json else _print_status(d)
