"""Prometheus text exposition of the main figures of a node (optional, off by default).

Served by `rupost metrics serve --bind HOST:PORT` or `rupost scheduler --metrics-bind HOST:PORT`
at ``/metrics``. A scrape is cheap: it reads the component states, the mail queue counts, the
last recorded check states (the scheduler runs the checks, a scrape does not run probes), the
certificate expiry and the statistics of the last hour and the last 24 hours.
"""
from __future__ import annotations

import datetime as dt
import http.server
import re
import threading
import time

from sqlalchemy.exc import SQLAlchemyError

from rupost.errors import RuPostError, ValidationError

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
STATUS_VALUE = {"ok": 0, "warning": 1, "critical": 2}


def _label(value) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class _Writer:
    def __init__(self):
        self.lines: list[str] = []
        self.declared: set[str] = set()

    def metric(self, metric: str, kind: str, help_: str, value, **labels) -> None:
        if metric not in self.declared:
            self.lines += [f"# HELP {metric} {help_}", f"# TYPE {metric} {kind}"]
            self.declared.add(metric)
        lab = ",".join(f'{k}="{_label(v)}"' for k, v in labels.items())
        self.lines.append(f"{metric}{{{lab}}} {value}" if lab else f"{metric} {value}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def render(app) -> str:
    w = _Writer()
    node = app.config.node_name
    start = time.monotonic()
    errors = 0
    try:
        for name, state in app.components.states().items():
            w.metric("rupost_component_up", "gauge", "1 if the component's process runs.",
                     1 if state["running"] else 0, node=node, component=name)
    except RuPostError:
        errors += 1
    try:
        for queue, count in app.mailqueues.summary().items():
            if queue != "total":
                w.metric("rupost_mail_queue_messages", "gauge", "Messages in the postfix queue.", count,
                         node=node, queue=queue)
    except RuPostError:
        errors += 1
    for key, state in sorted(app.checks.last_states().items()):
        check, _, target = key.partition(":")
        w.metric("rupost_check_status", "gauge",
                 "Last recorded state of a check (0 ok, 1 warning, 2 critical).",
                 STATUS_VALUE.get(state.get("status"), 2), node=node, check=check, target=target)
    try:

        for cert in app.certificates.list():
            w.metric("rupost_certificate_days_left", "gauge", "Days until the certificate expires.",
                     cert["days_left"], name=cert["name"], type=cert["type"],
                     active="true" if cert["active"] else "false")
    except RuPostError:
        errors += 1
    try:
        for window, hours in (("1h", 1), ("24h", 24)):
            totals = app.stats.series(hours=hours)["totals"]
            for counter, value in totals.items():
                w.metric("rupost_messages", "gauge",
                         "Messages in the statistics over the window (this hour / the last 24 hours).",
                         value, window=window, type=counter)
        for pos in app.stats.positions():
            if pos["node"] == node and pos["updated_at"]:
                ts = dt.datetime.fromisoformat(pos["updated_at"]).timestamp()
                w.metric("rupost_stats_parsed_timestamp_seconds", "gauge",
                         "When the statistics parser last read this log.", f"{ts:.0f}", node=node,
                         log=pos["source"])
    except RuPostError:
        errors += 1
    try:
        peaks = app.session_peaks.series(hours=1, node=node)["peaks"]
        for listener, peak in peaks.items():
            w.metric("rupost_sessions_peak", "gauge",
                     "Most sessions a public listener held at once this hour (sampled by the node agent).",
                     peak, node=node, listener=listener)
    except (RuPostError, SQLAlchemyError):  # e.g. rupost_logs not upgraded yet
        errors += 1
    w.metric("rupost_metrics_errors", "gauge", "Parts of this scrape that could not be read.", errors, node=node)
    w.metric("rupost_metrics_scrape_seconds", "gauge", "Time this scrape took.",
             f"{time.monotonic() - start:.3f}", node=node)
    return w.text()


def parse_bind(bind: str) -> tuple[str, int]:
    m = re.match(r"^\[?([^\]]*?)\]?:(\d{1,5})$", bind or "")
    if not m or not 0 < int(m.group(2)) < 65536:
        raise ValidationError(f"invalid --bind {bind!r}: expected HOST:PORT, e.g. 127.0.0.1:9425")
    return m.group(1) or "127.0.0.1", int(m.group(2))


def start_server(app, bind: str) -> http.server.ThreadingHTTPServer:
    """Serve /metrics in a background thread; returns the server (call .shutdown() to stop)."""
    host, port = parse_bind(bind)
    lock = threading.Lock()  # one scrape at a time: the core's sessions are not shared across threads

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            if self.path.split("?")[0] != "/metrics":
                self.send_error(404, "only /metrics is served here")
                return
            with lock:
                body = render(app).encode()
            self.send_response(200)
            self.send_header("Content-Type", CONTENT_TYPE)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    try:
        server = http.server.ThreadingHTTPServer((host, port), Handler)
    except OSError as exc:
        raise ValidationError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server
