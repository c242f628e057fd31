"""rupost admins: administrators of the control panel (thin: parse, call the service layer, print)."""
from __future__ import annotations

import click

from . import emit, json_option, main, pass_ctx, read_password

ROLE = click.Choice(["superadmin", "domain_admin", "readonly"])


@main.group()
def admins():
    """Manage administrators (control panel logins and roles)."""


@admins.command("add")
@click.argument("login")
@click.option("--role", type=ROLE, default="superadmin", show_default=True)
@click.option("--domain", "domains", multiple=True, metavar="NAME", help="A domain a domain_admin manages (repeat).")
@click.option("--ldap", is_flag=True, help="An LDAP administrator: the password is checked by the directory.")
@click.option("--language", type=click.Choice(["ru", "en"]), default="ru", show_default=True)
@click.option("--password-stdin", is_flag=True, help="Read the password from the first line of stdin.")
@pass_ctx
def admins_add(c, login, role, domains, ldap, language, password_stdin):
    password = None if ldap else read_password(password_stdin)
    a = c.app.admins.add(login, password, role, list(domains), language, "ldap" if ldap else "local")
    click.echo(f"administrator {a['login']} added ({a['role']}"
               + (f": {', '.join(a['domains'])}" if a["domains"] else "") + ")")


@admins.command("list")
@json_option
@pass_ctx
def admins_list(c, as_json):
    emit(c.app.admins.list(), as_json, ["login", "source", "role", "domains", "totp", "enabled", "last_login_at"])


@admins.command("remove")
@click.argument("login")
@pass_ctx
def admins_remove(c, login):
    c.app.admins.remove(login)
    click.echo(f"administrator {login} removed")


@admins.command("passwd")
@click.argument("login")
@click.option("--password-stdin", is_flag=True, help="Read the password from the first line of stdin.")
@pass_ctx
def admins_passwd(c, login, password_stdin):
    c.app.admins.set_password(login, read_password(password_stdin))
    click.echo(f"password of {login} changed")


@admins.command("set-role")
@click.argument("login")
@click.argument("role", type=ROLE)
@click.option("--domain", "domains", multiple=True, metavar="NAME", help="A domain a domain_admin manages (repeat).")
@pass_ctx
def admins_set_role(c, login, role, domains):
    a = c.app.admins.set_role(login, role, list(domains))
    click.echo(f"{a['login']} is now {a['role']}" + (f": {', '.join(a['domains'])}" if a["domains"] else ""))


@admins.command("disable")
@click.argument("login")
@pass_ctx
def admins_disable(c, login):
    """Refuse an administrator's logins and end its sessions (the account stays)."""
    c.app.admins.set_enabled(login, False)
    click.echo(f"administrator {login} disabled")


@admins.command("enable")
@click.argument("login")
@pass_ctx
def admins_enable(c, login):
    c.app.admins.set_enabled(login, True)
    click.echo(f"administrator {login} enabled")


@admins.command("totp-reset")
@click.argument("login")
@pass_ctx
def admins_totp_reset(c, login):
    """Turn off the second factor of an administrator who lost the phone (journaled as
    admin.totp_reset)."""
    c.app.admins.reset_totp(login)
    click.echo(f"second factor of {login} turned off")


@admins.command("unlock")
@click.argument("key")
@click.option("--address", "is_address", is_flag=True, help="KEY is a client address, not a login.")
@pass_ctx
def admins_unlock(c, key, is_address):
    """Lift a login lockout before it expires."""
    c.app.admins.unlock("address" if is_address else "user", key)
    click.echo(f"{'address' if is_address else 'login'} {key} unlocked")
