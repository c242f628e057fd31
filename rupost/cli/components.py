"""rupost components: CLI commands (thin: parse, call the service layer, print)."""
from __future__ import annotations

import sys

import click

from . import emit, json_option, main, pass_ctx


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


@components.command("reopen-logs", hidden=True)
@pass_ctx
def components_reopen_logs(c):
    """Make the running daemons reopen their log files in /var/log/rupost (logrotate's postrotate)."""
    for name, result in c.app.components.reopen_logs().items():
        click.echo(f"{name}: {result}")


@components.command("reload-daemon", hidden=True)
@click.argument("name")
@click.option("--pid", type=int, required=True, help="The unit's $MAINPID.")
@pass_ctx
def components_reload_daemon(c, name, pid):
    """Reload the component the way its daemon wants it (ExecReload of
    rupost-component@.service); exits 1 for components that must restart."""
    import subprocess

    from rupost.deploy.backend import signal_reload

    spec = c.app.components.process_spec(name)
    if spec.reload == "command":
        sys.exit(subprocess.run(spec.reload_argv).returncode)
    if spec.reload in ("hup", "usr2"):
        signal_reload(name, pid, spec.reload)  # ServiceError: exit 1 with its message
        return
    click.echo(f"{name} cannot reload in place; restart it", err=True)
    sys.exit(1)
