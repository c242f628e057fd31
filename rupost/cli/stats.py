"""rupost stats: messages received, sent, delivered, deferred, bounced and rejected per hour and domain."""
from __future__ import annotations

import click

from ..db.stats_models import COUNTERS
from . import emit, json_option, main, pass_ctx


@main.group("stats", invoke_without_command=True)
@click.option("--hours", default=24, show_default=True, type=click.IntRange(1, 24 * 400),
              help="How many hours back, this hour included.")
@click.option("--domain", default=None, help="Only this domain.")
@click.option("--node", default=None, help="Only this node (default: the whole cluster).")
@click.option("--no-ingest", is_flag=True, help="Do not read the logs first (show what is stored).")
@json_option
@click.pass_context
def stats(ctx, hours, domain, node, no_ingest, as_json):
    """Mail statistics from the postfix and dovecot logs (read incrementally first)."""
    if ctx.invoked_subcommand is not None:
        return
    app = ctx.obj.app
    if not no_ingest:
        app.stats.ingest()
    data = app.stats.series(hours=hours, domain=domain, node=node)
    per_domain = None if domain else app.stats.by_domain(hours=hours, node=node)
    if as_json:
        emit({**data, "by_domain": per_domain}, True)
        return
    scope = f"domain {domain}" if domain else "all domains"
    click.echo(f"{scope}, {node or 'all nodes'}, {data['from']} .. {data['to']} (UTC)")
    rows = [{"hour": h[:16].replace("T", " "), **{c: data["series"][c][i] for c in COUNTERS}}
            for i, h in enumerate(data["hours"]) if any(data["series"][c][i] for c in COUNTERS)]
    rows.append({"hour": "total", **data["totals"]})
    emit(rows, False, ["hour", *COUNTERS])
    if per_domain:
        click.echo("")
        emit(per_domain, False, ["domain", *COUNTERS])


@stats.command("ingest")
@json_option
@pass_ctx
def stats_ingest(c, as_json):
    """Read what the logs gained since the last run (what the scheduler runs)."""
    report = c.app.stats.ingest()
    if as_json:
        emit(report, True)
        return
    for source, f in report["files"].items():
        extra = (" (rotated file finished first)" if f["rotated"]
                 else " (truncated: read again)" if f["restarted"] else "")
        click.echo(f"{source}: {f['lines']} new line(s), {f['read_bytes']} bytes from {f['path']}{extra}")
    click.echo(f"{report['events']} event(s) counted; {report['expired_rows']} row(s) past the retention removed")


@stats.command("retention")
@click.argument("days", required=False, type=click.IntRange(1, 3650))
@pass_ctx
def stats_retention(c, days):
    """Show or set how many days of statistics are kept (default 90)."""
    if days is not None:
        c.app.stats.set_retention(days)
    click.echo(f"statistics are kept for {c.app.stats.retention_days()} days")


@stats.command("positions")
@json_option
@pass_ctx
def stats_positions(c, as_json):
    """Where the log parser of each node stopped in each log."""
    emit(c.app.stats.positions(), as_json, ["node", "source", "path", "inode", "offset", "lines", "updated_at"])


@stats.command("sessions")
@click.option("--hours", default=24, show_default=True, type=click.IntRange(1, 24 * 400),
              help="How many hours back, this hour included.")
@click.option("--node", default=None, help="Only this node (default: the nodes' peaks added up).")
@click.option("--record", is_flag=True, help="Sample this node's HAProxy first (what the node agent does "
                                            "every interval).")
@json_option
@pass_ctx
def stats_sessions(c, hours, node, record, as_json):
    """Peak concurrent sessions per hour of each public listener (IMAPS, SMTP, submissions,
    HTTPS, HTTP, ManageSieve), as the node agent samples them from HAProxy."""
    from ..services.session_peaks import LISTENERS

    if record:
        c.app.session_peaks.record()
    data = c.app.session_peaks.series(hours=hours, node=node)
    if as_json:
        emit(data, True)
        return
    click.echo(f"peak concurrent sessions, {node or 'all nodes (added up)'}, {data['from']} .. {data['to']} (UTC)")
    rows = [{"hour": h[:16].replace("T", " "), **{name: data["series"][name][i] for name in LISTENERS}}
            for i, h in enumerate(data["hours"]) if any(data["series"][name][i] for name in LISTENERS)]
    rows.append({"hour": "peak", **data["peaks"]})
    emit(rows, False, ["hour", *LISTENERS])
