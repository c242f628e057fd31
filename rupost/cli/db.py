"""rupost db: CLI commands (thin: parse, call the service layer, print)."""
from __future__ import annotations

from dataclasses import asdict

import click

from . import emit, json_option, main, pass_ctx


@main.group()
def db():
    """Manage the database."""


@db.command("upgrade")
@pass_ctx
def db_upgrade(c):
    """Migrate the three databases, then the daemons' roles and their grants (run as root on
    the database server's machine, missing roles are created as the local postgres user)."""
    from ..db import migrate
    from ..services.setup import local_superuser

    migrate.upgrade(c.app.dbs)
    click.echo("databases are at the latest schema")
    for line in c.app.db_roles.upgrade(local_superuser(c.app.config.database)):
        click.echo(line)


@db.command("status")
@json_option
@pass_ctx
def db_status(c, as_json):
    """The schema revisions and, with a highly available database, its members: role, state,
    lag, and which member each of this node's ways to the database reaches."""
    from ..db import migrate

    revisions = migrate.status(c.app.dbs)
    ha = c.app.database_ha.status()
    if as_json:
        emit({"databases": revisions, **ha.as_dict()}, True)
        return
    emit(revisions, False, ["database", "current", "head", "up_to_date"])
    if ha.ha:
        click.echo("")
        emit([asdict(m) for m in ha.members], False, ["name", "host", "port", "role", "state", "lag_bytes",
                                                      "timeline"])
    click.echo("")
    for way, member in ha.reaches.items():
        click.echo(f"{way}: {member}")


@db.command("roles")
@json_option
@pass_ctx
def db_roles(c, as_json):
    """The daemons' database roles: group role, login in use, whether it is ready (never a password)."""
    emit(c.app.db_roles.status(), as_json, ["consumer", "group_role", "login", "ready", "reads"])


@db.command("grants")
@click.option("--print", "print_sql", is_flag=True, required=True,
              help="Print the SQL a superuser of the database server runs (it holds the roles' passwords).")
@pass_ctx
def db_grants(c, print_sql):
    """The SQL creating the daemons' roles, for the administrator of an external database server;
    then `rupost db upgrade` applies the grants and `rupost deploy` the logins."""
    click.echo(c.app.db_roles.grants_script(), nl=False)


@db.command("rotate-passwords")
@click.option("--consumer", help="Only this daemon's role (postfix, dovecot, sogo, policy).")
@click.option("--retire-previous", "retire", flag_value=True, default=None,
              help="Retire the previous passwords now (default: only when this is the only node).")
@click.option("--keep-previous", "retire", flag_value=False,
              help="Keep the previous passwords valid (other nodes have not deployed yet).")
@click.option("--only-retire", is_flag=True,
              help="Do not rotate: retire the previous passwords of the last rotation (after every node deployed).")
@json_option
@pass_ctx
def db_rotate_passwords(c, consumer, retire, only_retire, as_json):
    """New passwords for the daemons' database roles, deployed on this node without refusing a
    connection (each role has two logins: the new one is set on the idle one)."""
    if only_retire:
        retired = c.app.db_roles.retire_previous(consumer)
        emit({"retired": retired}, True) if as_json else click.echo(
            f"retired: {', '.join(retired)}" if retired else "nothing to retire")
        return
    d = c.app.db_roles.rotate_and_deploy(consumer, retire)
    if as_json:
        emit(d, True)
        return
    for r in d["rotated"]:
        click.echo(f"{r['consumer']}: now logs in as {r['login']} (previous: {r['previous']})")
    click.echo(f"deploy: {d['deploy']} (generation {d['generation']})")
    if d["retired"]:
        click.echo(f"retired: {', '.join(d['retired'])}")
    elif d["other_nodes"]:
        click.echo(f"the previous logins stay valid until every node deployed ({', '.join(d['other_nodes'])}: "
                   "`rupost deploy` there), then `rupost db rotate-passwords --only-retire`")
