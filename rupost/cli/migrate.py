"""rupost migrate: CLI commands (thin: parse, call the service layer, print)."""
from __future__ import annotations

import sys

import click

from . import emit, json_option, main, pass_ctx


@main.group()
def migrate():
    """Move mailboxes (dovecot dsync), calendars and contacts (CalDAV/CardDAV into SOGo) to RuPost."""


@migrate.command("imap")
@click.option("--source", required=True, help="imaps://HOST[:PORT] (imap://HOST[:PORT]: STARTTLS).")
@click.option("--map", "map_file", required=True, type=click.File("r", encoding="utf-8"),
              help="CSV source_login,source_password,target_address (- for stdin).")
@click.option("--ca-file", type=click.Path(dir_okay=False), default=None,
              help="CA certificate(s) to verify the source server with (default: the system CAs).")
@click.option("--insecure", is_flag=True, help="Do not verify the source server's certificate.")
@click.option("--master-user", default=None,
              help="Log in to the source as this master user on behalf of each login (map: login,target).")
@click.option("--master-password-stdin", is_flag=True, help="Read the master user's password from stdin.")
@click.option("--resume", is_flag=True, help="Skip mailboxes an earlier run of this source completed.")
@click.option("--workers", default=2, show_default=True, help="Mailboxes copied in parallel.")
@json_option
@pass_ctx
def migrate_imap(c, source, map_file, ca_file, insecure, master_user, master_password_stdin, resume, workers,
                 as_json):
    """Copy mailboxes (folders, flags, dates) into existing RuPost mailboxes; incremental and
    one-way: run it again to pick up mail that arrived on the source meanwhile."""

    if master_password_stdin and map_file.name == "<stdin>":
        raise click.UsageError("--map - and --master-password-stdin both read stdin: give the map as a file")
    master_password = sys.stdin.readline().rstrip("\n") if master_password_stdin else None
    text = map_file.read()
    summary = c.app.migration.run(
        source, text, map_name=map_file.name, ca_file=ca_file, insecure=insecure, master_user=master_user,
        master_password=master_password, resume=resume, workers=workers,
        progress=None if as_json else (lambda line: click.echo(line)))
    if as_json:
        emit(summary, True)
    else:
        click.echo(f"{summary['mailboxes']} mailboxes: {summary['done']} done, {summary['skipped']} skipped, "
                   f"{summary['incomplete']} incomplete, {summary['failed']} failed; "
                   f"{summary['copied']} new messages in {summary['seconds']} s")
        problems = [r for r in summary["results"] if r["status"] in ("failed", "incomplete")]
        if problems:
            click.echo("NOT COPIED:")
            for r in problems:
                click.echo(f"  {r['login']} -> {r['target']}: {r['error']}")
    if summary["failed"] or summary["incomplete"]:
        sys.exit(2)


@migrate.command("status")
@click.option("--source", default=None, help="Only this source (imaps://HOST[:PORT]).")
@json_option
@pass_ctx
def migrate_status(c, source, as_json):
    """State of every migrated mailbox (last run)."""

    emit(c.app.migration.status(source), as_json,
         ["source", "source_login", "target", "status", "runs", "source_messages", "target_messages", "copied",
          "error"])


@migrate.command("groupware")
@click.option("--user", "target", default=None, help="One user: the RuPost address the files are for.")
@click.option("--ics", multiple=True, type=click.Path(dir_okay=False, exists=True),
              help="With --user: calendar file(s) exported from Outlook/Exchange.")
@click.option("--vcf", multiple=True, type=click.Path(dir_okay=False, exists=True),
              help="With --user: contacts file(s) exported from Outlook/Exchange.")
@click.option("--map", "map_file", type=click.File("r", encoding="utf-8"), default=None,
              help="CSV target_address,ics,vcf (files) or, with --source, source_login,source_password,"
                   "target_address.")
@click.option("--source", default=None, help="A CalDAV/CardDAV server: https://HOST[:PORT][/PATH] (discovery).")
@click.option("--sogo-admin", required=True, help="A SOGo super user (template parameter sogo_super_users).")
@click.option("--ca-file", type=click.Path(dir_okay=False, exists=True), default=None,
              help="CA certificate(s) to verify the source server with.")
@click.option("--insecure", is_flag=True, help="Do not verify the source server's certificate.")
@click.option("--resume", is_flag=True, help="Skip users an earlier run of this source completed.")
@click.option("--workers", default=4, show_default=True, help="Items stored in parallel.")
@json_option
@pass_ctx
def migrate_groupware(c, target, ics, vcf, map_file, source, sogo_admin, ca_file, insecure, resume, workers,
                      as_json):
    """Copy calendars and contacts into SOGo (each user's personal calendar and address book).
    Idempotent: items are matched by UID, a re-run adds only what is new. The SOGo super
    user's password is read from stdin (prompted on a terminal)."""
    from pathlib import Path

    from ..services.groupware_migration import file_row, parse_file_map, parse_server_map

    if map_file is not None and map_file.name == "<stdin>":
        raise click.UsageError("--map - and the SOGo password both read stdin: give the map as a file")
    if bool(target) == bool(map_file):
        raise click.UsageError("give either --user (with --ics/--vcf) or --map")
    if source and not map_file:
        raise click.UsageError("--source needs --map source_login,source_password,target_address")
    if map_file is None:
        rows = [file_row(1, target, [Path(p) for p in ics], [Path(p) for p in vcf])]
    elif source:
        rows = parse_server_map(map_file.read(), map_file.name)
    else:
        rows = parse_file_map(map_file.read(), Path(map_file.name).resolve().parent, map_file.name)
    password = (click.prompt(f"SOGo password of {sogo_admin}", hide_input=True) if sys.stdin.isatty()
                else sys.stdin.readline().rstrip("\n"))
    summary = c.app.groupware_migration.run(
        rows, sogo_admin=sogo_admin, sogo_password=password, source_url=source, ca_file=ca_file, insecure=insecure,
        resume=resume, workers=workers, progress=None if as_json else (lambda line: click.echo(line)))
    if as_json:
        emit(summary, True)
    else:
        click.echo(f"{summary['users']} users: {summary['done']} done, {summary['skipped']} skipped, "
                   f"{summary['incomplete']} incomplete, {summary['failed']} failed; {summary['added']} items added, "
                   f"{summary['refused']} refused in {summary['seconds']} s")
        problems = [r for r in summary["results"] if r["refused"] or r["error"]]
        if problems:
            click.echo("NOT MIGRATED:")
            for r in problems:
                if r["error"]:
                    click.echo(f"  {r['target']}: {r['error']}")
                for item in r["refused"]:
                    click.echo(f"  {r['target']}: {item['kind']} {item['uid'] or '-'} "
                               f"({item['summary'] or 'no title'}): {item['reason']}")
    if summary["failed"] or summary["incomplete"]:
        sys.exit(2)


@migrate.command("groupware-status")
@click.option("--user", "target", default=None, help="Only this RuPost address.")
@json_option
@pass_ctx
def migrate_groupware_status(c, target, as_json):
    """State of every user of the calendars-and-contacts migration (last run)."""

    rows = c.app.groupware_migration.status(target)
    if as_json:
        emit(rows, True)
        return
    for r in rows:
        r["added"] = sum(v.get("added", 0) for v in r["counts"].values())
        r["refused_items"] = len(r["refused"])
    emit(rows, False, ["source", "target", "status", "runs", "added", "refused_items", "error"])
