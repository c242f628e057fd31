"""rupost security: the authentication block list shared by all nodes."""
from __future__ import annotations

import click

from . import emit, json_option, main, pass_ctx


@main.group()
def security():
    """Abuse protection: blocked client addresses and accounts."""


@security.group("blocks")
def security_blocks():
    """The block list (failed logins on IMAP, submission, Sieve, webmail, panel)."""


@security_blocks.command("list")
@click.option("--all", "include_expired", is_flag=True, help="Include expired blocks not yet cleaned up.")
@json_option
@pass_ctx
def blocks_list(c, include_expired, as_json):
    """List blocked client addresses and accounts."""
    emit(c.app.blocklist.list(include_expired), as_json, ["kind", "value", "expires_at", "reason"])


@security_blocks.command("remove")
@click.argument("value")
@pass_ctx
def blocks_remove(c, value):
    """Unblock a client address or an account (and forget its recorded failures)."""
    r = c.app.blocklist.unblock(value)
    click.echo(f"{r['kind']} {r['value']} unblocked" + ("" if r["was_active"] else " (its block had expired)"))


@security_blocks.command("expire")
@pass_ctx
def blocks_expire(c):
    """Delete expired blocks and old failure records now (the policy server does it periodically)."""
    r = c.app.blocklist.expire()
    click.echo(f"removed {r['blocks']} expired block(s) and {r['failures']} old failure record(s)")
