"""The rupost command line: parse, call the service layer, print. Nothing else."""
from __future__ import annotations

import json
import sys

import click

from . import __version__
from .errors import RuPostError
from .paths import ROOT_ENV


class Ctx:
    def __init__(self, root):
        self.root = root
        self._app = None

    @property
    def app(self):
        if self._app is None:
            from .services import RuPost

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
        click.echo("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths)).rstrip())
        for r in rows:
            click.echo("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip())
        return
    click.echo(data)


def _cell(value) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ",".join(map(str, value))
    return "" if value is None else str(value)


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


# ------------------------------------------------------------------ domains
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


# ------------------------------------------------------------------ mailboxes
@main.group()
def mailboxes():
    """Manage mailboxes."""


@mailboxes.command("add")
@click.argument("address")
@click.option("--password-stdin", is_flag=True, help="Read the password from the first line of stdin.")
@click.option("--quota", default="0", show_default=True, help="Quota, e.g. 2G or 500M; 0 is unlimited.")
@click.option("--name", "display_name", default="", help="Display name.")
@pass_ctx
def mailboxes_add(c, address, password_stdin, quota, display_name):
    m = c.app.mailboxes.add(address, read_password(password_stdin), quota, display_name)
    click.echo(f"mailbox {m['address']} added")


@mailboxes.command("list")
@click.option("--domain", default=None)
@click.option("--search", default=None, help="Substring of the address.")
@click.option("--limit", default=1000, show_default=True)
@click.option("--offset", default=0)
@json_option
@pass_ctx
def mailboxes_list(c, domain, search, limit, offset, as_json):
    emit(c.app.mailboxes.list(domain, search, limit, offset), as_json,
         ["address", "display_name", "quota_bytes", "enabled"])


@mailboxes.command("show")
@click.argument("address")
@json_option
@pass_ctx
def mailboxes_show(c, address, as_json):
    emit(c.app.mailboxes.show(address), True)


@mailboxes.command("passwd")
@click.argument("address")
@click.option("--password-stdin", is_flag=True)
@pass_ctx
def mailboxes_passwd(c, address, password_stdin):
    c.app.mailboxes.set_password(address, read_password(password_stdin, "New password"))
    click.echo(f"password of {address} changed")


@mailboxes.command("quota")
@click.argument("address")
@click.argument("quota")
@pass_ctx
def mailboxes_quota(c, address, quota):
    c.app.mailboxes.set_quota(address, quota)
    click.echo(f"quota of {address} set to {quota}")


@mailboxes.command("disable")
@click.argument("address")
@pass_ctx
def mailboxes_disable(c, address):
    c.app.mailboxes.set_enabled(address, False)
    click.echo(f"mailbox {address} disabled")


@mailboxes.command("enable")
@click.argument("address")
@pass_ctx
def mailboxes_enable(c, address):
    c.app.mailboxes.set_enabled(address, True)
    click.echo(f"mailbox {address} enabled")


@mailboxes.command("remove")
@click.argument("address")
@pass_ctx
def mailboxes_remove(c, address):
    c.app.mailboxes.remove(address)
    click.echo(f"mailbox {address} removed (its stored mail is kept on disk)")


# ------------------------------------------------------------------ aliases
@main.group()
def aliases():
    """Manage aliases."""


@aliases.command("add")
@click.argument("address")
@click.argument("destinations", nargs=-1, required=True)
@pass_ctx
def aliases_add(c, address, destinations):
    a = c.app.aliases.add(address, list(destinations))
    click.echo(f"alias {a['address']} -> {', '.join(a['destinations'])} added")


@aliases.command("list")
@click.option("--domain", default=None)
@json_option
@pass_ctx
def aliases_list(c, domain, as_json):
    emit(c.app.aliases.list(domain), as_json, ["address", "destinations", "enabled"])


@aliases.command("remove")
@click.argument("address")
@pass_ctx
def aliases_remove(c, address):
    c.app.aliases.remove(address)
    click.echo(f"alias {address} removed")


# ------------------------------------------------------------------ templates
@main.group()
def template():
    """Manage configuration templates."""


@template.command("list")
@json_option
@pass_ctx
def template_list(c, as_json):
    emit(c.app.templates.list(), as_json, ["name", "version", "kind", "active", "description"])


def _split_ref(ref: str) -> tuple[str, str | None]:
    name, _, version = ref.partition("@")
    return name, version or None


@template.command("show")
@click.argument("ref", metavar="NAME[@VERSION]")
@pass_ctx
def template_show(c, ref):
    click.echo(c.app.templates.show(*_split_ref(ref))["body"], nl=False)


@template.command("activate")
@click.argument("ref", metavar="NAME[@VERSION]")
@pass_ctx
def template_activate(c, ref):
    c.app.templates.activate(*_split_ref(ref))
    click.echo(f"template {ref} is active; run rupost deploy to apply it")


def _read_template_file(path: str) -> tuple[str, str]:
    from .templates.document import MAX_TEMPLATE_BYTES

    with click.open_file(path, "rb") as fh:
        data = fh.read(MAX_TEMPLATE_BYTES + 1)
    try:
        return data.decode("utf-8"), path
    except UnicodeDecodeError as exc:
        raise click.ClickException(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None


@template.command("validate")
@click.argument("path", metavar="FILE")
@pass_ctx
def template_validate(c, path):
    """Check a template file completely (render included) without storing it."""
    doc = c.app.templates.validate(*_read_template_file(path))
    click.echo(f"{doc.name}@{doc.version} is valid" + (f" (extends {doc.extends})" if doc.extends else ""))


@template.command("import")
@click.argument("path", metavar="FILE")
@pass_ctx
def template_import(c, path):
    """Validate and store a custom template (versions are immutable)."""
    t = c.app.templates.import_text(*_read_template_file(path))
    click.echo(f"template {t['name']}@{t['version']} imported; activate it with "
               f"rupost template activate {t['name']}@{t['version']}")


@template.command("export")
@click.argument("ref", metavar="NAME[@VERSION]")
@click.option("-o", "--output", type=click.Path(dir_okay=False, writable=True), help="Write to a file.")
@pass_ctx
def template_export(c, ref, output):
    """Print a template as it was imported."""
    text = c.app.templates.export(*_split_ref(ref))
    if output:
        with open(output, "w") as fh:
            fh.write(text)
    else:
        click.echo(text, nl=False)


@template.command("diff")
@click.argument("a", metavar="A[@VERSION]")
@click.argument("b", metavar="B[@VERSION]")
@pass_ctx
def template_diff(c, a, b):
    """Unified diff between two templates (full documents, extends applied)."""
    click.echo(c.app.templates.diff(a, b) or "no differences", nl=False)


@template.command("remove")
@click.argument("ref", metavar="NAME[@VERSION]")
@pass_ctx
def template_remove(c, ref):
    """Remove a custom template version (never the active one or a builtin)."""
    c.app.templates.remove(*_split_ref(ref))
    click.echo(f"template {ref} removed")


@template.command("parameters")
@json_option
@pass_ctx
def template_parameters(c, as_json):
    """Parameters of the active template and their values."""
    emit(c.app.templates.parameters(), as_json, ["name", "type", "value", "default", "description"])


@template.command("set")
@click.argument("assignments", nargs=-1, required=True, metavar="NAME=VALUE...")
@click.option("--unset", multiple=True, metavar="NAME", help="Return a parameter to its default.")
@pass_ctx
def template_set(c, assignments, unset):
    """Set parameters of the active template (VALUE is YAML: 10, true, [a, b]); then rupost deploy."""
    import yaml

    updates = {}
    for item in assignments:
        name, sep, value = item.partition("=")
        if not sep:
            raise click.BadParameter(f"{item!r}: expected NAME=VALUE")
        updates[name] = yaml.safe_load(value) if value else ""
    c.app.templates.set_parameters(updates, list(unset))
    click.echo("parameters stored; run rupost deploy --plan to see the effect")


# ------------------------------------------------------------------ deploy
@main.command()
@click.option("--plan", "plan_only", is_flag=True, help="Render, validate and show the diff; change nothing.")
@click.option("--force", is_flag=True, help="Overwrite files that were changed by hand (drift).")
@click.option("--rollback", "rollback", is_flag=False, flag_value="previous", default=None, metavar="[GENERATION]",
              help="Return to a kept generation (default: the previous applied one).")
@json_option
@pass_ctx
def deploy(c, plan_only, force, rollback, as_json):
    """Deploy the active configuration template onto this node."""
    if rollback is not None:
        if rollback != "previous" and not rollback.isdigit():
            raise click.BadParameter(f"{rollback!r} is not a generation number", param_hint="--rollback")
        result = c.app.deploys.rollback(None if rollback == "previous" else int(rollback), force)
        _print_result(result, as_json)
        return
    plan = c.app.deploys.plan()
    if plan_only:
        drift = c.app.deploys.drift()
        if as_json:
            emit({"template": f"{plan.template}@{plan.version}", "changed": plan.changed, "diffs": plan.diffs,
                  "drift": drift}, True)
            return
        for d in drift:
            click.echo(f"drift: {d['component']}/{d['path']} ({d['state']}): deploy needs --force")
        if not plan.has_changes:
            click.echo("no changes")
        else:
            for component in plan.changed:
                click.echo(plan.diffs[component], nl=False)
            click.echo(f"components that would change: {', '.join(plan.changed)}")
        return
    _print_result(c.app.deploys.deploy(plan, force), as_json)


def _print_result(result, as_json: bool) -> None:
    if as_json:
        emit({"generation": result.generation, "result": result.result, "steps": result.steps,
              "reloaded": result.reloaded, "started": result.started}, True)
        return
    for step in result.steps:
        click.echo(f"  {'ok ' if step['ok'] else 'FAIL'} {step['step']}" + (f": {step['detail']}"
                                                                           if step["detail"] else ""))
    if result.result == "unchanged":
        click.echo(f"no changes: generation {result.generation} is live")
    else:
        click.echo(f"generation {result.generation} is live "
                   f"(started: {', '.join(result.started) or '-'}; reloaded: {', '.join(result.reloaded) or '-'})")


# ------------------------------------------------------------------ status
@main.command()
@json_option
@pass_ctx
def status(c, as_json):
    """Show this node's state, its components and the last deploys."""
    app = c.app
    data = {"node": app.config.node_name, "components": app.components.states(), "nodes": app.nodes.list(),
            "deploys": app.deploys.history(5), "drift": app.deploys.drift()}
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


# ------------------------------------------------------------------ components
@main.group()
def components():
    """Manage mail components (they run as one unit)."""


@components.command("status")
@json_option
@pass_ctx
def components_status(c, as_json):
    states = c.app.components.states()
    emit([{"component": k, **v} for k, v in states.items()] if not as_json else states, as_json,
         ["component", "running", "pid"])


@components.command("start")
@click.argument("names", nargs=-1)
@pass_ctx
def components_start(c, names):
    started = c.app.components.start(list(names) or None)
    click.echo(f"started: {', '.join(started) or 'nothing (all running)'}")


@components.command("stop")
@click.argument("names", nargs=-1)
@pass_ctx
def components_stop(c, names):
    stopped = c.app.components.stop(list(names) or None)
    click.echo(f"stopped: {', '.join(stopped) or 'nothing was running'} (the mail components stop together)")


@components.command("restart")
@click.argument("names", nargs=-1)
@pass_ctx
def components_restart(c, names):
    started = c.app.components.restart(list(names) or None)
    click.echo(f"restarted: {', '.join(started)}")


@components.command("exec", hidden=True)
@click.argument("name")
@pass_ctx
def components_exec(c, name):
    """Replace this process with the component's daemon in the foreground
    (ExecStart of rupost-component@.service: one code path for both backends)."""
    import os

    spec = c.app.components.process_spec(name)
    if spec.prepare:
        spec.prepare()
    os.execvpe(spec.argv[0], spec.argv, {**os.environ, **spec.env})


@components.command("reload-daemon", hidden=True)
@click.argument("name")
@click.option("--pid", type=int, required=True, help="The unit's $MAINPID.")
@pass_ctx
def components_reload_daemon(c, name, pid):
    """Reload the component the way its daemon wants it (ExecReload of
    rupost-component@.service); exits 1 for components that must restart."""
    import os
    import signal
    import subprocess

    spec = c.app.components.process_spec(name)
    if spec.reload == "command":
        sys.exit(subprocess.run(spec.reload_argv).returncode)
    if spec.reload in ("hup", "usr2"):
        os.kill(pid, signal.SIGHUP if spec.reload == "hup" else signal.SIGUSR2)
        return
    click.echo(f"{name} cannot reload in place; restart it", err=True)
    sys.exit(1)


# ------------------------------------------------------------------ db
@main.group()
def db():
    """Manage the database."""


@db.command("upgrade")
@pass_ctx
def db_upgrade(c):
    from .db import migrate

    migrate.upgrade(c.app.dbs)
    click.echo("databases are at the latest schema")


@db.command("status")
@json_option
@pass_ctx
def db_status(c, as_json):
    from .db import migrate

    emit(migrate.status(c.app.dbs), as_json, ["database", "current", "head", "up_to_date"])


# ------------------------------------------------------------------ run
@main.command()
@click.option("--interval", default=10.0, show_default=True, help="Seconds between health checks.")
@pass_ctx
def run(c, interval):
    """Start the application: the node agent (heartbeats, supervision of the components)."""
    from .agent import NodeAgent

    NodeAgent(c.app, interval=interval).run_forever()


if __name__ == "__main__":
    main()
