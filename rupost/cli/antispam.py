"""rupost antispam: the allow and deny lists of senders (thin: parse, call the service
layer, print). docs/antispam.md#allow-and-deny-lists."""
from __future__ import annotations

import click

from . import emit, json_option, main, pass_ctx

DOMAIN_HELP = "Recipient domain the entry applies to; without it, every domain."


@main.group()
def antispam():
    """Allow and deny lists of senders (rspamd, port 25)."""


def _entry_command(kind: str, help_text: str) -> None:
    """`rupost antispam allow|deny SENDER`: the two commands differ only in the list."""

    @click.argument("sender")
    @click.option("--domain", default=None, help=DOMAIN_HELP)
    @click.option("--comment", default="", help="Why, for the next administrator.")
    @pass_ctx
    def command(c, sender, domain, comment):
        entry = c.app.antispam_lists.set(kind, sender, domain, comment)
        scope = "every domain" if entry["domain"] == "*" else entry["domain"]
        click.echo(f"{entry['sender']}: {kind} for mail to {scope}")

    command.__doc__ = help_text
    antispam.command(kind)(command)


_entry_command("allow", "Never reject or mark SENDER (an address or a domain) for its score.")
_entry_command("deny", "Reject mail from SENDER (an address or a domain) at SMTP time.")


@antispam.command("remove")
@click.argument("sender")
@click.option("--domain", default=None, help=DOMAIN_HELP)
@pass_ctx
def antispam_remove(c, sender, domain):
    """Take SENDER off the lists of DOMAIN (or of every domain)."""
    c.app.antispam_lists.remove(sender, domain)
    click.echo(f"{sender}: removed")


@antispam.command("list")
@click.option("--domain", default=None, help="Only this recipient domain's entries (* the global ones).")
@click.option("--kind", type=click.Choice(["allow", "deny"]), default=None)
@json_option
@pass_ctx
def antispam_list(c, domain, kind, as_json):
    emit(c.app.antispam_lists.list(domain, kind), as_json, ["domain", "sender", "kind", "comment", "created_by"])
