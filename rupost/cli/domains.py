"""rupost domains: CLI commands (thin: parse, call the service layer, print)."""
from __future__ import annotations

import click

from . import emit, json_option, main, pass_ctx


@main.group()
def domains():
    """Manage mail domains."""


@domains.command("add")
@click.argument("name")
@click.option("--description", default="")
@pass_ctx
def domains_add(c, name, description):
    d = c.app.domains.add(name, description)
    click.echo(f"domain {d['name']} added")
    note = c.app.certificates.domain_note(d["name"])
    if note:
        click.echo(f"note: {note}", err=True)


@domains.command("list")
@json_option
@pass_ctx
def domains_list(c, as_json):
    emit(c.app.domains.list(), as_json, ["name", "enabled", "mailboxes", "aliases", "description"])


@domains.command("remove")
@click.argument("name")
@pass_ctx
def domains_remove(c, name):
    c.app.domains.remove(name)
    click.echo(f"domain {name} removed")


@domains.command("disable")
@click.argument("name")
@pass_ctx
def domains_disable(c, name):
    c.app.domains.set_enabled(name, False)
    click.echo(f"domain {name} disabled: its mailboxes and aliases stop receiving and cannot log in")


@domains.command("enable")
@click.argument("name")
@pass_ctx
def domains_enable(c, name):
    c.app.domains.set_enabled(name, True)
    click.echo(f"domain {name} enabled")


# ---------------------------------------------------------------- DKIM and DNS records
@domains.group("dkim")
def domains_dkim():
    """DKIM keys of a domain (generated and kept by RuPost, signing by OpenDKIM)."""


def _print_dkim(d: dict) -> None:
    click.echo(f"domain {d['domain']}: selector {d['selector']}, RSA {d['bits']} bits, created {d['created_at']}")
    click.echo("publish this TXT record:")
    click.echo(f"{d['record']}. IN TXT \"{d['txt']}\"")
    for old in d["previous"]:
        click.echo(f"previous key (keep its record until mail signed with it has been delivered): {old['record']}")


@domains_dkim.command("generate")
@click.argument("domain")
@click.option("--selector", default=None, help="DKIM selector (default: rpYYYYMM).")
@click.option("--bits", default=2048, show_default=True, type=int, help="RSA key size: 1024, 2048, 3072 or 4096.")
@json_option
@pass_ctx
def domains_dkim_generate(c, domain, selector, bits, as_json):
    """Generate the domain's DKIM key; mail from it is signed at once."""
    d = c.app.dkim.generate(domain, selector, bits)
    emit(d, True) if as_json else _print_dkim(d)


@domains_dkim.command("show")
@click.argument("domain")
@json_option
@pass_ctx
def domains_dkim_show(c, domain, as_json):
    """Show the domain's active DKIM key and the TXT record to publish."""
    d = c.app.dkim.show(domain)
    emit(d, True) if as_json else _print_dkim(d)


@domains_dkim.command("rotate")
@click.argument("domain")
@click.option("--selector", default=None, help="Selector of the new key (default: rpYYYYMM[-N]).")
@click.option("--bits", default=None, type=int, help="RSA key size of the new key (default: as the current one).")
@json_option
@pass_ctx
def domains_dkim_rotate(c, domain, selector, bits, as_json):
    """Replace the domain's DKIM key with a new one under a new selector."""
    d = c.app.dkim.rotate(domain, selector, bits)
    emit(d, True) if as_json else _print_dkim(d)


@domains_dkim.command("sync")
@pass_ctx
def domains_dkim_sync(c):
    """Write OpenDKIM's key files on this node from the database and make it re-read them."""
    r = c.app.dkim.apply()
    click.echo(f"DKIM keys written to {r['written']}" + ("; OpenDKIM re-read them" if r["reloaded"] else
                                                         "; OpenDKIM is not running on this node"))


@domains.command("dns")
@click.argument("domain")
@json_option
@pass_ctx
def domains_dns(c, domain, as_json):
    """Print the DNS records to publish for DOMAIN (zone-file syntax)."""
    if as_json:
        from dataclasses import asdict

        data = c.app.dns_records.records(domain)
        emit({**data, "records": [asdict(r) for r in data["records"]]}, True)
        return
    click.echo(c.app.dns_records.zone_text(domain), nl=False)


@domains.command("check")
@click.argument("domain")
@click.option("--nameserver", default=None, help="Ask this name server (IP, IP:PORT) instead of the system resolver.")
@click.option("--timeout", default=5.0, show_default=True, help="Seconds to wait for each answer.")
@json_option
@pass_ctx
def domains_check(c, domain, nameserver, timeout, as_json):
    """Check DOMAIN's DNS records against what RuPost needs; exit code 1 if any is missing or wrong."""
    result = c.app.dns_records.check(domain, nameserver, timeout)
    if as_json:
        emit(result, True)
    else:
        rows = [{"status": r["status"].upper(), "type": r["type"], "name": r["name"],
                 "found": "; ".join(r["found"]) or "-", "detail": r["detail"]} for r in result["records"]]
        emit(rows, False, ["status", "type", "name", "found", "detail"])
        click.echo(f"{result['domain']} ({result['nameserver']}): {result['summary']}")
    if not result["ok"]:
        raise SystemExit(1)
