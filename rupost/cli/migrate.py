"""rupost migrate: CLI commands (thin: parse, call the service layer, print)."""
from __future__ import annotations

import sys

import click

from . import emit, json_option, main, pass_ctx


@main.group()
def migrate():
    """Move mailboxes from Microsoft Exchange or another IMAP server (dovecot dsync)."""


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
