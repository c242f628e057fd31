"""rupost metrics: the node's main figures in the Prometheus text format (off unless served)."""
from __future__ import annotations

import signal
import threading

import click

from . import main, pass_ctx


@main.group("metrics")
def metrics():
    """Prometheus metrics (optional; nothing listens unless you serve them)."""


@metrics.command("show")
@pass_ctx
def metrics_show(c):
    """Print the metrics once."""
    from rupost.node.metrics import render

    click.echo(render(c.app), nl=False)


@metrics.command("serve")
@click.option("--bind", required=True, metavar="HOST:PORT", help="Where to listen, e.g. 127.0.0.1:9425.")
@pass_ctx
def metrics_serve(c, bind):
    """Serve /metrics over HTTP until stopped (or use `rupost scheduler --metrics-bind`)."""
    from rupost.node.metrics import start_server

    server = start_server(c.app, bind)
    click.echo(f"metrics on http://{bind}/metrics")
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    try:
        done.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
