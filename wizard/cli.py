"""rupost-wizard command line (guide §2.11.1).

The flags are the guide's; `-h` is the database host, so help is `--help` only.
"""
from __future__ import annotations

import os
import sys

import click

from rupost import config as node_config
from rupost.errors import RuPostError
from rupost.paths import Layout

PASSWORD_ENV = "RUPOST_INSTALLER_DB_PASSWORD"
ADMIN_PASSWORD_ENV = "RUPOST_INSTALLER_ADMIN_PASSWORD"


def database_members(values: tuple[str, ...]) -> list[node_config.DatabaseMember]:
    try:
        members = [node_config.parse_member(v) for v in values]
    except RuPostError as exc:
        raise click.BadParameter(str(exc), param_hint="--db-member") from None
    if len({(m.host, m.port) for m in members}) != len(members):
        raise click.BadParameter("a member is given twice", param_hint="--db-member")
    return members


def _parse_ports(values: tuple[str, ...]) -> dict[str, int]:
    ports = {}
    for item in values:
        name, _, number = item.partition("=")
        if name not in node_config.DEFAULT_PORTS or not number.isdigit() or not 0 < int(number) < 65536:
            raise click.BadParameter(f"{item!r}: expected NAME=PORT with NAME one of "
                                     f"{', '.join(node_config.DEFAULT_PORTS)}", param_hint="--port")
        ports[name] = int(number)
    return ports


@click.command(context_settings={"help_option_names": ["--help"]})
@click.option("--silent", is_flag=True, help="Configure without the dialog screens, from these flags.")
@click.option("--db-host", "-h", default="127.0.0.1", show_default=True, help="PostgreSQL host.")
@click.option("--db-port", "-p", default=5432, type=click.IntRange(1, 65535), show_default=True,
              help="PostgreSQL port.")
@click.option("--db-name", "-n", default="rupost", show_default=True, help="Main (configuration) database.")
@click.option("--data-db-name", "-d", default="rupost_data", show_default=True, help="User data database.")
@click.option("--logs-db-name", "-l", default="rupost_logs", show_default=True, help="Logs database.")
@click.option("--db-member", "db_members", multiple=True, metavar="HOST[:PORT[:API_PORT]]",
              help="A member of a highly available database (Patroni; docs/database-ha.md), once per member "
                   "(default ports 5432 and 8008): this node then reaches whichever member is the primary, and "
                   "--db-host/--db-port are not used.")
@click.option("--db-user", "-u", default="rupost", show_default=True, help="Database user (role).")
@click.option("--db-password", default=None,
              help=f"Database password. Visible to every local user in the process list: prefer {PASSWORD_ENV}, "
                   "--db-password-file or --db-password-stdin.")
@click.option("--db-password-file", type=click.Path(dir_okay=False), default=None, metavar="FILE",
              help="Read the database password from the first line of FILE.")
@click.option("--db-password-stdin", is_flag=True, help="Read the database password from the first line of stdin.")
@click.option("--root", envvar="RUPOST_ROOT", default="/", show_default=True,
              help="Root under which every RuPost path lives (tests use a temporary one).")
@click.option("--node-name", default=None, help="This node's name (default: the host name).")
@click.option("--fqdn", default=None,
              help="This node's own fully qualified name, naming this node among the others (default: from the "
                   "resolver).")
@click.option("--mail-host", default=None, metavar="NAME",
              help="The mail system's host name, one for the whole cluster: SMTP banner and EHLO, MX target, "
                   "autoconfig, certificates (default: the one stored, else the node's FQDN).")
@click.option("--allow-unqualified-host", is_flag=True,
              help="Accept a mail host name that is not fully qualified or is a loopback name (a test machine); "
                   "mail clients are then told the node's address.")
@click.option("--client-host", default=None, metavar="NAME|IPv4",
              help="What mail clients are told to connect to, when it is not the mail host name "
                   "(template parameter client_mail_host).")
@click.option("--address", default=None, help="Address other nodes reach this node at.")
@click.option("--listen-address", default=None, help="Address the public ports listen on ('*' for all).")
@click.option("--port", "ports", multiple=True, metavar="NAME=PORT", help="Override a listening port.")
@click.option("--service-backend", type=click.Choice(["auto", "direct", "systemd"]), default=None)
@click.option("--mail-storage", default=None, help="Mailbox storage directory (shared storage in a cluster).")
@click.option("--queue-directory", default=None, help="This node's postfix queue (on shared storage in a cluster).")
@click.option("--admin-login", default=None, metavar="LOGIN",
              help=f"Create this control panel superadmin if it does not exist (password: {ADMIN_PASSWORD_ENV}).")
@click.option("--lang", type=click.Choice(["ru", "en"]), default=None,
              help="Language of the dialog screens (default: English when LC_ALL/LANG starts with 'en', else Russian).")
def main(silent, db_host, db_port, db_name, data_db_name, logs_db_name, db_members, db_user, db_password,
         db_password_file,
         db_password_stdin, root, node_name, fqdn, mail_host, allow_unqualified_host, client_host, address,
         listen_address, ports, service_backend, mail_storage, queue_directory, admin_login, lang):
    """Configure this RuPost node: databases, schema, builtin templates,
    certificates and DH parameters, node registration."""
    from rupost.services import setup

    password = database_password(db_password, db_password_file, db_password_stdin)
    if silent and not password:
        raise click.UsageError(f"the database password is required: {PASSWORD_ENV}, --db-password-file, "
                               "--db-password-stdin or --db-password")
    members = database_members(db_members)
    if members:  # what messages name as the database until the primary is known
        db_host, db_port = members[0].host, members[0].port
    layout = Layout.at(root)
    try:
        previous = node_config.load(layout)
    except RuPostError:
        previous = node_config.NodeConfig()
    cfg = node_config.NodeConfig(
        database=node_config.DatabaseSettings(host=db_host, port=db_port, user=db_user, password=password,
                                              main=db_name, data=data_db_name, logs=logs_db_name,
                                              members=members),
        node_name=node_name or previous.node_name,
        fqdn=fqdn or previous.fqdn,
        address=address or previous.address,
        listen_address=listen_address or previous.listen_address,
        ports={**previous.ports, **_parse_ports(ports)},
        service_backend=service_backend or previous.service_backend,
        generations_kept=previous.generations_kept,
        mail_storage=mail_storage if mail_storage is not None else previous.mail_storage,
        queue_directory=queue_directory if queue_directory is not None else previous.queue_directory,
    )
    choice = setup.MailHostChoice(mail_host, allow_unqualified_host, client_host)
    try:
        choice = choice.checked()   # a name refused before anything is created
    except RuPostError as exc:
        click.echo(f"rupost-wizard: error: {exc}", err=True)
        sys.exit(1)
    if not silent:
        from wizard.dialogs import run_dialogs, start_values

        sys.exit(run_dialogs(root, lang, start_values(cfg, previous, click.get_current_context()), choice))
    try:
        report = setup.install(layout, cfg, choice)
    except RuPostError as exc:
        click.echo(f"rupost-wizard: error: {exc}", err=True)
        sys.exit(1)
    for step in report.steps:
        click.echo(step_line(step))
    if admin_login:
        try:
            click.echo(f"  ok  {_default_administrator(layout, admin_login)}")
        except RuPostError as exc:
            click.echo(f"rupost-wizard: error: {exc}", err=True)
            sys.exit(1)
    click.echo("RuPost node configured. Next: rupost deploy")


def database_password(flag: str | None, path: str | None, from_stdin: bool) -> str | None:
    """The database password from one place: a file, stdin, the flag (warned about: any local
    user reads a command line in /proc), else the environment."""
    given = [name for name, used in (("--db-password", flag is not None), ("--db-password-file", path is not None),
                                     ("--db-password-stdin", from_stdin)) if used]
    if len(given) > 1:
        raise click.UsageError(f"give the database password once: {' and '.join(given)} were both given")
    if flag is not None:
        click.echo("rupost-wizard: warning: --db-password is visible to every local user in the process list; "
                   f"use {PASSWORD_ENV}, --db-password-file or --db-password-stdin", err=True)
        return flag
    if path is not None:
        try:
            with open(path, encoding="utf-8") as f:
                return _first_line(f.readline(), f"--db-password-file {path}")
        except OSError as exc:
            raise click.UsageError(f"--db-password-file {path}: {exc.strerror}") from None
    if from_stdin:
        return _first_line(sys.stdin.readline(), "--db-password-stdin")
    return os.environ.get(PASSWORD_ENV)


def _first_line(line: str, source: str) -> str:
    password = line.rstrip("\r\n")
    if not password:
        raise click.UsageError(f"{source}: the first line is empty (expected the database password)")
    return password


def step_line(step: str) -> str:
    """One step of the report as the console shows it; a warning stands out from the done steps."""
    return f"  !!  {step}" if step.startswith("WARNING:") else f"  ok  {step}"


def _default_administrator(layout, login: str) -> str:
    """The first control panel administrator (guide §2.11.1: "definition of the default administrator")."""
    from rupost.services import RuPost

    app = RuPost.open(layout.root, actor="rupost-wizard")
    try:
        if login in [a["login"] for a in app.admins.list()]:
            return f"control panel administrator {login} kept"
        password = os.environ.get(ADMIN_PASSWORD_ENV)
        if not password:
            raise RuPostError(f"--admin-login {login}: set its password in {ADMIN_PASSWORD_ENV}")
        app.admins.add(login, password, "superadmin")
        return f"control panel administrator {login} created (superadmin)"
    finally:
        app.close()


if __name__ == "__main__":
    main()
