"""rupost backup / rupost restore: CLI commands (thin: parse, call the service layer, print)."""
from __future__ import annotations

import click

from . import emit, json_option, main, pass_ctx


@main.command("backup")
@click.option("--dir", "directory", type=click.Path(file_okay=False), default=None,
              help="Write the backup into this new (or empty) directory.")
@click.option("--archive", type=click.Path(dir_okay=False), default=None,
              help="Write the backup into this archive (.tar, .tar.gz or .tgz).")
@click.option("--with-mail", is_flag=True, help="Include the mail storage (mail.tar).")
@json_option
@pass_ctx
def backup(c, directory, archive, with_mail, as_json):
    """Back up the three databases, the node configuration and optionally the mail storage."""

    manifest = c.app.backups.create(directory, archive, with_mail)
    if as_json:
        emit(manifest, True)
        return
    click.echo(f"backup written to {manifest['path']}")
    for name, meta in sorted(manifest["files"].items()):
        click.echo(f"  {name:16} {meta['size']:>12} bytes  sha256 {meta['sha256']}")
    counts = ", ".join(f"{k} {v}" for k, v in manifest["counts"].items())
    click.echo(f"contents: {counts}")
    click.echo("config.json holds the database password: keep the backup where only administrators can read it")


@main.command("restore")
@click.argument("path", type=click.Path(exists=True))
@click.option("--force", is_flag=True, help="Replace the contents of databases that are not empty.")
@click.option("--no-mail", is_flag=True, help="Do not restore the mail storage even if the backup has it.")
@click.option("--no-deploy", is_flag=True, help="Restore the data only; run `rupost deploy` later.")
@json_option
@click.pass_context
def restore(ctx, path, force, no_mail, no_deploy, as_json):
    """Bring this node back to the state of a backup (directory or archive): verify, restore, deploy."""
    from ..paths import Layout
    from ..services.backup import BackupService

    layout = Layout.at(ctx.obj.root)
    report = BackupService.restore(layout, path, force=force, with_mail=not no_mail, deploy=not no_deploy,
                                   progress=None if as_json else click.echo)
    if as_json:
        emit(report, True)
        return
    for step in report["steps"]:
        click.echo(f"  {step}")
    expected = report.get("expected_counts", {})
    for key, value in report.get("counts", {}).items():
        mark = "" if expected.get(key) == value else f"  (the backup had {expected.get(key)})"
        click.echo(f"  {key}: {value}{mark}")
    click.echo(f"node restored from the backup of {report['node']} taken {report['created_at']}")
