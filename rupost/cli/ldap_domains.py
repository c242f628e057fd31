"""rupost ldap-domains: CLI commands (thin: parse, call the service layer, print)."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from ..errors import ValidationError
from . import emit, json_option, main, pass_ctx


def _read_ca(path: str | None) -> str:
    if not path:
        return ""
    try:
        return Path(path).read_text()
    except OSError as exc:
        raise ValidationError(f"cannot read the CA file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ValidationError(f"{path} is not a PEM text file") from None


def _read_secret(stdin: bool, prompt: str) -> str:
    if stdin:
        return sys.stdin.readline().rstrip("\n")
    return click.prompt(prompt, hide_input=True)


@main.group("ldap-domains")
def ldap_domains():
    """Manage LDAP domains (Active Directory, FreeIPA, ALD Pro)."""


@ldap_domains.command("add")
@click.argument("name")
@click.option("--type", "kind", required=True, type=click.Choice(["ad", "freeipa", "aldpro"]),
              help="Directory type: its attribute profile.")
@click.option("--uri", "uris", multiple=True, required=True,
              help="Server URI, e.g. ldaps://dc1.corp.example; repeat for failover (tried in order).")
@click.option("--base-dn", required=True, help="Where the users are, e.g. ou=Users,dc=corp,dc=example.")
@click.option("--bind-dn", required=True, help="The RuPost service account's DN.")
@click.option("--bind-password-stdin", is_flag=True, help="Read the service account password from stdin.")
@click.option("--security", default="ldaps", show_default=True, type=click.Choice(["ldaps", "starttls", "plain"]))
@click.option("--ca-file", default=None, help="PEM file of the CA that issued the servers' certificates "
              "(default: the system's trusted CAs).")
@click.option("--allow-plain", is_flag=True, help="Allow --security plain (passwords in clear text on the network).")
@click.option("--mail-domain", "mail_domains", multiple=True,
              help="Mail domain whose users this directory holds (repeatable); must exist already.")
@click.option("--user-filter", default="", help="Extra LDAP filter users must match, e.g. (memberOf=cn=mail,...).")
@click.option("--group-filter", default="", help="LDAP filter of the groups RuPost reads.")
@click.option("--timeout", default=10, show_default=True, help="Connect and search timeout, seconds.")
@click.option("--no-check", is_flag=True, help="Do not test the connection before adding.")
@json_option
@pass_ctx
def add(c, name, kind, uris, base_dn, bind_dn, bind_password_stdin, security, ca_file, allow_plain, mail_domains,
        user_filter, group_filter, timeout, no_check, as_json):
    password = _read_secret(bind_password_stdin, "Service account password")
    out = c.app.directories.add(name, kind, list(uris), base_dn, bind_dn, password, security=security,
                                ca_pem=_read_ca(ca_file), mail_domains=list(mail_domains), user_filter=user_filter,
                                group_filter=group_filter, timeout=timeout, allow_plain=allow_plain,
                                check=not no_check)
    if as_json:
        emit(out, True)
        return
    click.echo(f"LDAP domain {out['name']} ({out['kind']}) added")
    if out["mail_domains"]:
        click.echo("next: `rupost deploy` (authentication by bind for "
                   f"{', '.join(out['mail_domains'])}), then `rupost ldap-domains sync {out['name']}`")


@ldap_domains.command("set")
@click.argument("name")
@click.option("--uri", "uris", multiple=True)
@click.option("--base-dn", default=None)
@click.option("--bind-dn", default=None)
@click.option("--bind-password-stdin", is_flag=True, help="Read a new service account password from stdin.")
@click.option("--security", default=None, type=click.Choice(["ldaps", "starttls", "plain"]))
@click.option("--ca-file", default=None)
@click.option("--allow-plain", is_flag=True)
@click.option("--mail-domain", "mail_domains", multiple=True, help="Replaces the bound mail domains.")
@click.option("--user-filter", default=None)
@click.option("--group-filter", default=None)
@click.option("--timeout", default=None, type=int)
@click.option("--enable/--disable", "enabled", default=None)
@pass_ctx
def set_(c, name, uris, base_dn, bind_dn, bind_password_stdin, security, ca_file, allow_plain, mail_domains,
         user_filter, group_filter, timeout, enabled):
    """Change an LDAP domain's settings (then `rupost deploy`)."""
    out = c.app.directories.update(
        name, uris=list(uris) or None, base_dn=base_dn, bind_dn=bind_dn,
        bind_password=sys.stdin.readline().rstrip("\n") if bind_password_stdin else None, security=security,
        ca_pem=_read_ca(ca_file) if ca_file else None, allow_plain=allow_plain or None,
        mail_domains=list(mail_domains) if mail_domains else None, user_filter=user_filter,
        group_filter=group_filter, timeout=timeout, enabled=enabled)
    click.echo(f"LDAP domain {out['name']} updated; run `rupost deploy` to apply it to authentication")


@ldap_domains.command("list")
@json_option
@pass_ctx
def list_(c, as_json):
    emit(c.app.directories.list(), as_json, ["name", "kind", "uris", "security", "base_dn", "mail_domains",
                                             "enabled", "last_sync_at"])


@ldap_domains.command("show")
@click.argument("name")
@pass_ctx
def show(c, name):
    emit(c.app.directories.show(name), True)


@ldap_domains.command("test")
@click.argument("name")
@click.option("--sample", default=5, show_default=True, help="How many users to show.")
@json_option
@pass_ctx
def test(c, name, sample, as_json):
    """Check reachability, the bind, the base DN and list a sample of users."""
    report = c.app.directories.test(name, sample)
    if as_json:
        emit(report, True)
    else:
        for s in report["servers"]:
            click.echo(f"server {s['uri']}: " + ("reachable" if s["reachable"] else f"NOT reachable: {s['problem']}"))
        click.echo("bind: " + ("ok" + (f" ({report.get('server_used')})" if report.get("server_used") else "")
                               if report["bind"] else "FAILED"))
        if report["bind"]:
            click.echo("base DN: " + ("ok" if report["base_dn"] else "FAILED"))
        for u in report["users"]:
            click.echo(f"  user {u['login']} <{u['mail']}>" + (" (disabled)" if u["disabled"] else "")
                       + (f" +{len(u['extra'])} address(es)" if u["extra"] else ""))
        if report.get("warning"):
            click.echo(f"warning: {report['warning']}")
    if not report["ok"]:
        click.echo(f"rupost: error: {report['error']}", err=True)
        sys.exit(1)


@ldap_domains.command("sync")
@click.argument("name", required=False)
@click.option("--force", is_flag=True, help="Apply even when more accounts would be disabled than allowed.")
@click.option("--dry-run", is_flag=True, help="Report what would change, change nothing.")
@json_option
@pass_ctx
def sync(c, name, force, dry_run, as_json):
    """Materialise directory users into mailboxes and aliases (all LDAP domains without NAME)."""
    if name:
        results = [c.app.directories.sync(name, force=force, dry_run=dry_run)]
    else:
        results = c.app.directories.sync_all(force=force)
    if as_json:
        emit(results, True)
    else:
        for r in results:
            if not r.get("ok"):
                click.echo(f"{r['name']}: FAILED: {r['error']}")
                continue
            click.echo(f"{r['name']}: {r['seen']} user(s) seen, {r['created']} created, {r['renamed']} renamed, "
                       f"{r['disabled']} disabled, {r['enabled']} re-enabled, {r['deleted']} gone, "
                       f"{r['aliases_added']}/{r['aliases_removed']} alias(es) added/removed, "
                       f"{r['conflicts']} conflict(s)" + (" (dry run)" if dry_run else ""))
            for p in r["problems"][:20]:
                click.echo(f"  {p}")
    if any(not r.get("ok") for r in results):
        sys.exit(1)


@ldap_domains.command("accounts")
@click.argument("name", required=False)
@click.option("--state", default=None, type=click.Choice(["active", "disabled", "deleted", "conflict"]))
@click.option("--limit", default=1000, show_default=True)
@json_option
@pass_ctx
def accounts(c, name, state, limit, as_json):
    """Directory accounts materialised into mailboxes."""
    emit(c.app.directories.accounts(name, state, limit), as_json,
         ["directory", "login", "mail", "state", "aliases", "written_aliases", "reason"])


@ldap_domains.command("remove")
@click.argument("name")
@click.option("--force", is_flag=True, help="Also when it has mailboxes: they are disabled, mail stays on disk.")
@pass_ctx
def remove(c, name, force):
    out = c.app.directories.remove(name, force)
    click.echo(f"LDAP domain {out['name']} removed ({out['disabled_mailboxes']} mailbox(es) disabled); "
               "run `rupost deploy`")


@ldap_domains.command("max-drop-share")
@click.argument("share", type=float, required=False)
@pass_ctx
def max_drop_share(c, share):
    """Show or set the largest share (0..1) of accounts or list members one run may drop."""
    if share is not None:
        c.app.directories.set_max_drop_share(share)
    click.echo(f"{c.app.directories.max_drop_share():g}")


@ldap_domains.command("writeback-set")
@click.argument("name")
@click.option("--pattern", default="{login}", show_default=True,
              help="Local part of the generated address: {login}, {given}, {surname}.")
@click.option("--mail-domain", default="", help="Domain of the generated addresses (default: the first bound one).")
@click.option("--bind-dn", default="", help="The write-back account (write rights on mail and proxyAddresses only).")
@click.option("--bind-password-stdin", is_flag=True, help="Read the write-back account's password from stdin.")
@click.option("--disable", is_flag=True, help="Turn write-back off.")
@click.option("--no-check", is_flag=True, help="Do not test the write-back account's bind.")
@pass_ctx
def writeback_set(c, name, pattern, mail_domain, bind_dn, bind_password_stdin, disable, no_check):
    """Let RuPost write mail and proxyAddresses for the accounts it provisions (guide §7.5)."""
    if disable:
        c.app.directories.writeback_set(name, enabled=False)
        click.echo(f"write-back of LDAP domain {name} disabled")
        return
    password = _read_secret(bind_password_stdin, "Write-back account password")
    out = c.app.directories.writeback_set(name, pattern=pattern, mail_domain=mail_domain, bind_dn=bind_dn,
                                          bind_password=password, check=not no_check)
    click.echo(f"write-back of LDAP domain {name}: {out['pattern']}@{out['mail_domain']} as {out['bind_dn']}")


@ldap_domains.command("writeback")
@click.argument("name")
@click.option("--dry-run", is_flag=True, help="Show the addresses that would be written; write nothing.")
@json_option
@pass_ctx
def writeback(c, name, dry_run, as_json):
    """Write generated addresses to the directory's accounts that have none, and the RuPost
    aliases of those with a mailbox (removing the ones RuPost wrote whose alias is gone), then sync."""
    report = c.app.directories.writeback(name, dry_run=dry_run)
    if as_json:
        emit(report, True)
        return
    for item in report["planned"]:
        if "skipped" in item:
            click.echo(f"skip  {item['dn']}: {item['mail']}: {item['skipped']}")
        elif "changes" in item:
            changes = "; ".join([f"+ {a}" for a in item["add"]] + [f"- {r}" for r in item["remove"]])
            click.echo(f"{'would write' if dry_run else 'write'} {item['dn']}: {changes}")
    if not dry_run:
        click.echo(f"{report['written']} account(s) written")


@ldap_domains.command("kerberos")
@click.argument("name")
@click.option("--keytab", "keytab_file", default=None,
              help="Keytab of the mail service account (imap/ and smtp/ principals of the mail host), "
              "as the AD administrator exported it (ktpass, samba-tool domain exportkeytab, msktutil).")
@click.option("--kdc", "kdcs", multiple=True,
              help="KDC to check the keytab against (repeatable; default: the domain's LDAP servers).")
@click.option("--off", is_flag=True, help="Turn Kerberos single sign-on off (the keytab is forgotten).")
@json_option
@pass_ctx
def kerberos(c, name, keytab_file, kdcs, off, as_json):
    """Kerberos single sign-on (GSSAPI) for IMAP and submission of an AD domain's users."""
    if off:
        out = c.app.directories.kerberos_off(name)
        if as_json:
            emit(out, True)
        else:
            click.echo(f"Kerberos of LDAP domain {out['name']} off; run `rupost deploy` to apply it")
        return
    if not keytab_file:
        raise ValidationError("give the keytab (--keytab FILE) or --off")
    try:
        data = Path(keytab_file).read_bytes()
    except OSError as exc:
        raise ValidationError(f"cannot read the keytab {keytab_file}: {exc.strerror or exc}") from None
    out = c.app.directories.kerberos_set(name, data, kdcs=list(kdcs))
    if as_json:
        emit(out, True)
        return
    kvnos = ", ".join(f"{p} (kvno {n})" for p, n in out["kvnos"].items())
    click.echo(f"Kerberos of LDAP domain {out['name']}: realm {out['realm']}, checked against "
               f"{', '.join(out['kdcs'])}: {kvnos}")
    click.echo("next: `rupost deploy` (IMAP and submission then offer GSSAPI); delete the keytab file you gave, "
               "RuPost keeps its own copy")


@ldap_domains.command("schema")
@click.option("--format", "fmt", default="openldap", type=click.Choice(["openldap", "389ds"]), show_default=True)
def schema(fmt):
    """Print the ruPostMailAccount schema extension (FreeIPA, ALD Pro)."""
    from rupost.ldap.schema import ds389_ldif, openldap_schema

    click.echo(openldap_schema() if fmt == "openldap" else ds389_ldif(), nl=False)


@ldap_domains.command("gal")
@click.option("--search", default="")
@click.option("--limit", default=100, show_default=True)
@json_option
@pass_ctx
def gal(c, search, limit, as_json):
    """The global address list (materialised from every directory)."""
    emit(c.app.directories.gal(search, limit), as_json, ["display_name", "mail", "title", "department", "mobile",
                                                          "work_phone"])


@ldap_domains.group("admins")
def admins():
    """Directory groups or users that are RuPost administrators."""


@admins.command("add")
@click.argument("name")
@click.option("--group", "group_dn", default=None, help="Group DN whose members get the role.")
@click.option("--user", "user_login", default=None, help="One user's login.")
@click.option("--role", required=True, type=click.Choice(["superadmin", "domain_admin", "readonly"]))
@click.option("--domain", "domains", multiple=True, help="Mail domain (for domain_admin / readonly).")
@pass_ctx
def admins_add(c, name, group_dn, user_login, role, domains):
    if bool(group_dn) == bool(user_login):
        raise ValidationError("give exactly one of --group DN or --user LOGIN")
    kind, value = ("group", group_dn) if group_dn else ("user", user_login)
    out = c.app.directories.admin_map_add(name, kind, value, role, list(domains))
    click.echo(f"{out['kind']} {out['value']} of {name} -> {out['role']}")


@admins.command("list")
@json_option
@pass_ctx
def admins_list(c, as_json):
    emit(c.app.directories.admin_map_list(), as_json, ["directory", "kind", "value", "role", "domains"])


@admins.command("remove")
@click.argument("name")
@click.option("--group", "group_dn", default=None)
@click.option("--user", "user_login", default=None)
@pass_ctx
def admins_remove(c, name, group_dn, user_login):
    if bool(group_dn) == bool(user_login):
        raise ValidationError("give exactly one of --group DN or --user LOGIN")
    kind, value = ("group", group_dn) if group_dn else ("user", user_login)
    c.app.directories.admin_map_remove(name, kind, value)
    click.echo(f"{kind} {value} of {name} is no longer an administrator")
