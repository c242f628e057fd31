"""rupost shared-mailboxes: mailboxes a team opens in its own IMAP sessions (thin: parse, call, print)."""
from __future__ import annotations

import click

from . import emit, json_option, main, pass_ctx

RIGHTS_HELP = "Comma-separated: read, write, insert, delete."


def _print(out: dict) -> None:
    members = ", ".join(f"{'group ' if m.get('group') else ''}{m['address']} ({','.join(m['rights'])})"
                        for m in out["members"]) or "none"
    click.echo(f"shared mailbox {out['address']}: members {members}")


@main.group("shared-mailboxes")
def shared_mailboxes():
    """Manage shared mailboxes (no login of their own; members open them under Shared/)."""


@shared_mailboxes.command("add")
@click.argument("address")
@click.option("--name", "display_name", default="", help="Display name.")
@click.option("--quota", default="0", show_default=True, help="Quota, e.g. 2G or 500M; 0 is unlimited.")
@click.option("--description", default="")
@pass_ctx
def add(c, address, display_name, quota, description):
    _print(c.app.shared_mailboxes.add(address, display_name=display_name, quota=quota, description=description))


@shared_mailboxes.command("list")
@click.option("--domain", default=None)
@json_option
@pass_ctx
def list_(c, domain, as_json):
    rows = c.app.shared_mailboxes.list(domain)
    if not as_json:
        rows = [{**r, "members": [m["address"] for m in r["members"]]} for r in rows]
    emit(rows, as_json, ["address", "display_name", "quota_bytes", "members"])


@shared_mailboxes.command("show")
@click.argument("address")
@pass_ctx
def show(c, address):
    emit(c.app.shared_mailboxes.show(address), True)


@shared_mailboxes.command("members")
@click.argument("address")
@click.argument("member", required=False)
@click.option("--rights", default=None, help=RIGHTS_HELP + " Grants (or changes) MEMBER's rights.")
@click.option("--remove", "remove_member", is_flag=True, help="Take MEMBER out of the shared mailbox.")
@pass_ctx
def members(c, address, member, rights, remove_member):
    """Show the members of ADDRESS, or grant, change or remove MEMBER's rights (MEMBER: a
    mailbox, or a distribution list whose current members hold the rights)."""
    service = c.app.shared_mailboxes
    if member is None:
        if rights or remove_member:
            raise click.UsageError("--rights and --remove need a MEMBER")
        _print(service.show(address))
    elif remove_member:
        if rights:
            raise click.UsageError("--rights and --remove exclude each other")
        _print(service.remove_member(address, member))
    else:
        _print(service.set_member(address, member, rights or "read"))


@shared_mailboxes.command("sync")
@click.argument("address", required=False)
@pass_ctx
def sync(c, address):
    """Rewrite the shared mailbox's ACL file (every one's without ADDRESS) from the database."""
    for one in [address] if address else [r["address"] for r in c.app.shared_mailboxes.list()]:
        click.echo(f"ACL of {one} written: {c.app.shared_mailboxes.sync_acl(one)}")


@shared_mailboxes.command("remove")
@click.argument("address")
@pass_ctx
def remove(c, address):
    c.app.shared_mailboxes.remove(address)
    click.echo(f"shared mailbox {address} removed (its stored mail stays on disk)")
