"""rupost scheduler: the periodic jobs of the management core (rupost-scheduler.service)."""
from __future__ import annotations

import sys

import click

from . import emit, json_option, main, pass_ctx


def _intervals(values) -> dict[str, float]:
    out = {}
    for value in values:
        name, sep, seconds = value.partition("=")
        try:
            out[name.strip()] = float(seconds)
        except ValueError:
            sep = ""
        if not sep or not name.strip():
            raise click.BadParameter(f"{value!r}: expected JOB=SECONDS (e.g. stats=30)", param_hint="--interval")
    return out


@main.command("scheduler")
@click.option("--only", multiple=True, metavar="JOB", help="Run only this job (repeatable).")
@click.option("--interval", "intervals", multiple=True, metavar="JOB=SECONDS", help="Another interval for a job.")
@click.option("--once", is_flag=True, help="Run each job once and exit (exit code 1 if one failed).")
@click.option("--list", "list_jobs", is_flag=True, help="List the jobs and their intervals.")
@click.option("--metrics-bind", default=None, metavar="HOST:PORT",
              help="Also serve Prometheus metrics on HOST:PORT (off by default).")
@json_option
@pass_ctx
def scheduler(c, only, intervals, once, list_jobs, metrics_bind, as_json):
    """Run the periodic jobs (statistics, checks, and those other parts register) on their intervals."""
    from rupost.node.scheduler import Scheduler

    sched = Scheduler(c.app, only=list(only) or None, intervals=_intervals(intervals))
    if list_jobs:
        emit(sched.describe(), as_json, ["job", "interval", "description"])
        return
    if once:
        results = sched.run_once()
        if as_json:
            emit(sched.describe(), True)
        else:
            for job in sched.describe():
                click.echo(f"{job['job']}: " + ("ok" if results[job["job"]] else f"FAILED: {job['last_error']}"))
        sys.exit(0 if all(results.values()) else 1)
    server = None
    if metrics_bind:
        from rupost.node.metrics import start_server

        server = start_server(c.app, metrics_bind)
        click.echo(f"metrics on http://{metrics_bind}/metrics")
    try:
        sched.run_forever()
    finally:
        if server is not None:
            server.shutdown()
