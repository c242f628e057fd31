"""rupost check: every self-diagnosis check once, as a table; non-zero exit on a problem."""
from __future__ import annotations

import sys

import click

from . import emit, json_option, main, pass_ctx

EXIT = {"ok": 0, "critical": 1, "warning": 2}


@main.command("check")
@click.option("--only", multiple=True, metavar="CHECK",
              help="Run only this check (component, probe, disk, database, certificate, queue, ...); repeatable.")
@click.option("--no-record", is_flag=True, help="Do not write state changes to the monitor log.")
@json_option
@pass_ctx
def check(c, only, no_record, as_json):
    """Check components, probes, disks, databases, certificates and the mail queue.

    Exit code 0 when everything is ok, 1 on a critical problem, 2 on warnings only.
    State changes are written to the monitor log (monitor.log and rupost_logs)."""
    app = c.app
    results = app.checks.run(record=not no_record, only=list(only) or None)
    worst = app.checks.worst(results)
    if as_json:
        emit({"node": app.config.node_name, "status": worst, "results": [r.as_dict() for r in results]}, True)
    else:
        rows = [{"check": r.check, "target": r.target, "status": r.status.upper(), "detail": r.detail}
                for r in results]
        emit(rows, False, ["check", "target", "status", "detail"])
        problems = [r for r in results if r.status != "ok"]
        click.echo("")
        if problems:
            click.echo(f"{app.config.node_name}: {len(problems)} problem(s): "
                       + "; ".join(f"{r.target} {r.status}" for r in problems))
        else:
            click.echo(f"{app.config.node_name}: all {len(results)} checks ok")
    sys.exit(EXIT[worst])
