"""The rupost command line: parse, call the service layer, print. Nothing else."""
from __future__ import annotations

import json
import sys

import click

from .. import __version__
from ..errors import RuPostError
from ..paths import ROOT_ENV


class Ctx:
    def __init__(self, root):
        self.root = root
        self._app = None

    @property
    def app(self):
        if self._app is None:
            from ..services import RuPost

            self._app = RuPost.open(self.root)
        return self._app

    def close(self):
        if self._app is not None:
            self._app.close()


pass_ctx = click.make_pass_decorator(Ctx)


class RuPostGroup(click.Group):
    """Turns domain errors into a one-line message and exit code 1 at the edge."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except RuPostError as exc:
            click.echo(f"rupost: error: {exc}", err=True)
            sys.exit(1)


def emit(data, as_json: bool, columns: list[str] | None = None) -> None:
    if as_json:
        click.echo(json.dumps(data, indent=2, default=str))
        return
    if isinstance(data, list) and columns:
        rows = [[_cell(item.get(c)) for c in columns] for item in data]
        widths = [max([len(c)] + [len(r[i]) for r in rows]) for i, c in enumerate(columns)]
        click.echo("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
        for r in rows:
            click.echo("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())
        return
    click.echo(data)


def _cell(value) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ",".join(map(str, value))
    return "" if value is None else str(value)


def echo_deploy_hint(hint: str) -> None:
    """A data change that needs a deploy to take effect (rupost.services.features) says so on stderr."""
    if hint:
        click.echo(hint, err=True)


def read_password(stdin: bool, prompt: str = "Password") -> str:
    if stdin:
        return sys.stdin.readline().rstrip("\n")
    return click.prompt(prompt, hide_input=True, confirmation_prompt=True)


json_option = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")


@click.group(cls=RuPostGroup, help="RuPost CLI")
@click.option("--root", envvar=ROOT_ENV, default="/", show_default=True,
              help="Root of this node's files (tests use a temporary root).")
@click.version_option(__version__, prog_name="rupost")
@click.pass_context
def main(ctx, root):
    ctx.obj = Ctx(root)
    ctx.call_on_close(ctx.obj.close)


@main.command()
def about():
    """Print a short summary about the application."""
    click.echo(f"RuPost {__version__}: corporate mail system manager "
               "(postfix, dovecot, sogo, nginx, haproxy, memcached; state in PostgreSQL)")


@main.command()
@json_option
@pass_ctx
def status(c, as_json):
    """Show this node's state, its components and the last deploys."""
    app = c.app
    data = {"node": app.config.node_name, "components": app.components.states(), "nodes": app.nodes.list(),
            "deploys": app.deploys.history(5), "drift": app.deploys.drift()}
    data["certificate_warnings"] = app.certificates.expiry_warnings()
    if as_json:
        emit(data, True)
        return
    click.echo(f"node {data['node']}")
    emit([{"component": k, **v} for k, v in data["components"].items()], False, ["component", "running", "pid"])
    click.echo("")
    emit(data["nodes"], False, ["name", "address", "state", "applied_generation", "last_heartbeat"])
    click.echo("")
    emit(data["deploys"], False, ["generation", "template", "result", "started_by", "finished_at"])
    click.echo("")
    if data["drift"]:
        click.echo("DRIFT: installed files changed by hand (a deploy needs --force to overwrite them):")
        for d in data["drift"]:
            click.echo(f"  {d['state']:9} {d['component']}/{d['path']}")
    else:
        click.echo("no drift: installed files match the live generation")
    for w in data["certificate_warnings"]:
        click.echo(f"CERTIFICATE {w['level'].upper()}: {w['message']}")


@main.command()
@click.option("--interval", default=10.0, show_default=True, help="Seconds between health checks.")
@click.option("--hold-down", default=30.0, show_default=True,
              help="Seconds a node stays out of service before the agent restarts its components.")
@click.option("--core-processes/--no-core-processes", default=True, show_default=True,
              help="Also run and supervise the control panel, the autoconfiguration server and the "
                   "push dispatcher.")
@pass_ctx
def run(c, interval, hold_down, core_processes):
    """Start the application: the node agent (heartbeats, supervision of the components) with
    the control panel, the autoconfiguration server and the push dispatcher."""
    from rupost.node.agent import NodeAgent

    NodeAgent(c.app, interval=interval, hold_down=hold_down).run_forever(core_processes)



# command groups register themselves on `main` when imported
from . import (  # noqa: E402,F401
    admins,
    aliases,
    antispam,
    api_tokens,
    audit,
    autoconfig,
    backup,
    calendars,
    certificates,
    check,
    components,
    db,
    deploy,
    distribution_lists,
    domains,
    impersonation,
    ldap_domains,
    ldap_filters,
    mailboxes,
    mailqueues,
    metrics,
    migrate,
    nodes,
    panel,
    push,
    resources,
    scheduler,
    security,
    settings,
    shared_mailboxes,
    sizing,
    srs,
    stats,
    templates,
)
