"""rupost cert / rupost dhparam: CLI commands (thin: parse, call the service layer, print)."""
from __future__ import annotations

import click

from . import emit, json_option, main, pass_ctx


def _certs(c):

    return c.app.certificates


def _dhparams(c):

    return c.app.dhparams


def _after_activation(cert_type: str) -> str:
    if cert_type == "mail":
        return "run `rupost deploy` to give it to nginx, postfix and dovecot"
    return ("the control panel uses it after a restart of the rupost service on every node "
            "(systemctl restart rupost)")


@main.group()
def cert():
    """Manage TLS certificates (mail: nginx, postfix, dovecot; control_panel: the panel)."""


@cert.command("add")
@click.argument("name")
@click.option("--login", default=None, help="Administrator on whose behalf the certificate is added.")
@click.option("--cert-type", type=click.Choice(["mail", "control_panel"]), required=True)
@click.option("--cert-path", required=True, help="PEM file: the server certificate first, then its chain.")
@click.option("--key-path", required=True, help="PEM file with the unencrypted private key.")
@click.option("--inactive", is_flag=True, help="Store it without making it the active certificate of its type.")
@json_option
@pass_ctx
def cert_add(c, name, login, cert_type, cert_path, key_path, inactive, as_json):
    """Validate and store a certificate (and make it the active one of its type)."""
    r = _certs(c).add(name, cert_type, cert_path, key_path, login=login, activate=not inactive)
    if as_json:
        emit(r, True)
        return
    click.echo(f"certificate {name} ({cert_type}) added: {r['subject']}, names {', '.join(r['names'])}, "
               f"{r['key_type']}, valid until {r['not_after']}")
    for w in r["warnings"]:
        click.echo(f"note: {w}")
    if r["active"]:
        click.echo(f"{name} is now the active {cert_type} certificate; {_after_activation(cert_type)}")
    else:
        click.echo(f"not active: `rupost cert activate {name}` makes it the {cert_type} certificate")


@cert.command("list")
@json_option
@pass_ctx
def cert_list(c, as_json):
    """List certificates with their expiry."""
    emit(_certs(c).list(), as_json, ["name", "type", "active", "builtin", "not_after", "days_left", "added_by"])


@cert.command("show")
@click.argument("name")
@json_option
@pass_ctx
def cert_show(c, name, as_json):
    """Show one certificate: names, key, validity, chain."""
    d = _certs(c).show(name)
    if as_json:
        emit(d, True)
        return
    for key in ("name", "type", "active", "builtin", "subject", "issuer", "names", "key_type", "not_before",
                "not_after", "days_left", "serial", "sha256", "added_by", "used_by"):
        value = d[key]
        value = ", ".join(value) if isinstance(value, list) else value
        click.echo(f"{key + ':':12} {value}")
    click.echo("chain:")
    for i, subject in enumerate(d["chain"], start=1):
        click.echo(f"  {i}. {subject}")
    if d["missing_names"]:
        fix = (f"`rupost cert regenerate-builtin {name}` issues it for them" if d["builtin"]
               else "a certificate that covers them replaces it")
        click.echo(f"does not cover: {', '.join(d['missing_names'])} ({fix})")


@cert.command("activate")
@click.argument("name")
@pass_ctx
def cert_activate(c, name):
    """Make a stored certificate the active one of its type."""
    r = _certs(c).activate(name)
    click.echo(f"{name} is now the active {r['type']} certificate; {_after_activation(r['type'])}")


@cert.command("remove")
@click.argument("name")
@pass_ctx
def cert_remove(c, name):
    """Remove a certificate that is neither active nor builtin."""
    _certs(c).remove(name)
    click.echo(f"certificate {name} removed")


@cert.command("regenerate-builtin")
@click.argument("name", type=click.Choice(["rupost-builtin", "rupost-control-panel-builtin"]))
@pass_ctx
def cert_regenerate_builtin(c, name):
    """Generate a new self-signed key and certificate for a builtin certificate."""
    r = _certs(c).regenerate_builtin(name)
    click.echo(f"{name} regenerated for {', '.join(r['names'])}, valid until {r['not_after']}")
    if r["active"]:
        click.echo(_after_activation(r["type"]))


@cert.command("warnings")
@json_option
@pass_ctx
def cert_warnings(c, as_json):
    """Certificates expiring within 30 days (7 days: critical) or expired; exit code 2 if any."""
    items = _certs(c).expiry_warnings()
    if as_json:
        emit(items, True)
    else:
        for w in items:
            click.echo(f"{w['level'].upper()}: {w['message']}")
        if not items:
            click.echo("no certificate expires within 30 days")
    if items:
        raise SystemExit(2)


@main.group()
def dhparam():
    """Manage the Diffie-Hellman parameters used by nginx, postfix and dovecot."""


@dhparam.command("import")
@click.argument("path")
@click.option("--name", default=None, help="Name to store it under (default: the file name).")
@pass_ctx
def dhparam_import(c, path, name):
    """Validate (>= 2048 bits, safe prime), store and activate DH parameters."""
    r = _dhparams(c).import_file(path, name)
    click.echo(f"DH parameters {r['name']} ({r['bits']} bits, safe prime) imported and active; "
               "run `rupost deploy` to apply them")


@dhparam.command("list")
@json_option
@pass_ctx
def dhparam_list(c, as_json):
    emit(_dhparams(c).list(), as_json, ["name", "bits", "active", "builtin", "created_at"])


@dhparam.command("activate")
@click.argument("name")
@pass_ctx
def dhparam_activate(c, name):
    r = _dhparams(c).activate(name)
    click.echo(f"DH parameters {name} ({r['bits']} bits) active; run `rupost deploy` to apply them")


@dhparam.command("remove")
@click.argument("name")
@pass_ctx
def dhparam_remove(c, name):
    _dhparams(c).remove(name)
    click.echo(f"DH parameters {name} removed")
