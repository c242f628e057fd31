"""rupost push: CLI commands (thin: parse, call the service layer, print)."""
from __future__ import annotations

import signal
import sys

import click

from . import echo_deploy_hint, emit, json_option, main, pass_ctx


@main.group()
def push():
    """Push notifications: HTTP endpoints that receive new-mail events."""


@push.command("add")
@click.argument("name")
@click.argument("url")
@click.option("--domain", "domains", multiple=True, help="Only events of this mail domain (repeatable).")
@click.option("--secret-stdin", is_flag=True, help="Read a secret from stdin, sent as 'Authorization: Bearer ...'.")
@pass_ctx
def push_add(c, name, url, domains, secret_stdin):
    """Add an endpoint: every new message is POSTed to URL as JSON."""
    secret = sys.stdin.readline().rstrip("\n") if secret_stdin else ""
    e = c.app.push.add(name, url, list(domains), secret)
    click.echo(f"push endpoint {e['name']} added: {e['url']}"
               + (f" (domains: {', '.join(e['domains'])})" if e["domains"] else " (all domains)"))
    echo_deploy_hint(c.app.push.deploy_hint())


@push.command("list")
@json_option
@pass_ctx
def push_list(c, as_json):
    """Endpoints, with their delivery failures of the last 24 hours."""
    emit(c.app.push.list(), as_json, ["name", "url", "domains", "enabled", "secret", "failures_24h", "last_failure"])


@push.command("remove")
@click.argument("name")
@pass_ctx
def push_remove(c, name):
    c.app.push.remove(name)
    click.echo(f"push endpoint {name} removed")
    echo_deploy_hint(c.app.push.deploy_hint())


@push.command("test")
@click.argument("name")
@pass_ctx
def push_test(c, name):
    """POST a test event to the endpoint now and report the answer."""
    r = c.app.push.test(name)
    click.echo(f"push endpoint {name} answered HTTP {r['status']}")


@push.command("failures")
@click.option("--endpoint", default=None)
@click.option("--limit", default=50, show_default=True)
@json_option
@pass_ctx
def push_failures(c, endpoint, limit, as_json):
    """Recent failed deliveries (each retry, and the final give-up)."""
    emit(c.app.push.failures(limit, endpoint), as_json,
         ["at", "endpoint", "user", "mailbox", "uid", "attempt", "status", "final", "error"])


@push.command("dispatch")
@click.option("--once", is_flag=True, help="Post what is due once and exit.")
@click.option("--interval", default=1.0, show_default=True, help="Seconds between spool scans.")
@pass_ctx
def push_dispatch(c, once, interval):
    """Post the events dovecot spooled to the endpoints (run by the node agent, rupost run)."""
    if once:
        stats = c.app.push.dispatch_once()
        click.echo(f"{stats['events']} events: {stats['posted']} posted, {stats['failed']} failed, "
                   f"{stats['dropped']} dropped")
        return
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    click.echo(f"dispatching push events from {c.app.push.spool}", err=True)
    try:
        c.app.push.run(interval, stop=lambda: bool(stopping))
    except KeyboardInterrupt:
        pass
