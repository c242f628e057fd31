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


@mailboxes.command("import")
@click.argument("csv_file", metavar="CSV", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--check", "check_only", is_flag=True, help="Check every row and report; create nothing.")
@click.option("--workers", type=click.IntRange(1, 64), default=None,
              help="Processes hashing passwords (default: one per CPU).")
@json_option
@pass_ctx
def mailboxes_import(c, csv_file, check_only, workers, as_json):
    """Create the mailboxes of a CSV file, all or nothing.

    The first line names the columns: address,password (required), quota, name
    (optional, any order). A bad row is reported with its line number and nothing
    is created. Use - to read the file from stdin.
    """
    import sys

    source = sys.stdin if csv_file == "-" else csv_file
    result = c.app.mailboxes.import_csv(source, check_only=check_only, workers=workers)
    if as_json:
        emit(result, True)
    elif check_only:
        click.echo(f"{result['checked']} mailbox(es) checked, all valid; nothing created (--check)")
    else:
        click.echo(f"{result['imported']} mailbox(es) imported into {', '.join(result['domains'])}")


def _sender_right_group(kind: str, what: str) -> click.Group:
    @mailboxes.group(kind)
    def group():
        pass

    group.help = f"Who may send {what} a mailbox (users, or distribution lists and LDAP groups)."

    @group.command("grant")
    @click.argument("mailbox")
    @click.argument("grantee")
    @pass_ctx
    def grant(c, mailbox, grantee):
        out = c.app.sender_rights.grant(mailbox, grantee, kind)
        click.echo(f"{out['grantee']}{' (group)' if out['group'] else ''} may now send {what} {out['mailbox']}")

    @group.command("revoke")
    @click.argument("mailbox")
    @click.argument("grantee")
    @pass_ctx
    def revoke(c, mailbox, grantee):
        c.app.sender_rights.revoke(mailbox, grantee, kind)
        click.echo(f"{grantee} may no longer send {what} {mailbox}")

    @group.command("list")
    @click.argument("mailbox", required=False)
    @json_option
    @pass_ctx
    def list_(c, mailbox, as_json):
        emit(c.app.sender_rights.list(mailbox, kind), as_json, ["mailbox", "grantee", "group"])

    return group


send_as = _sender_right_group("send-as", "as")
send_on_behalf = _sender_right_group("send-on-behalf", "on behalf of")
