"""Issue 25: peak concurrent sessions per hour of each public listener, sampled from HAProxy by
the node agent, kept in rupost_logs and shown by `rupost stats sessions`, the metrics and the
dashboard (the panel's test is in tests/panel/test_views.py)."""
from __future__ import annotations

import datetime as dt
import json
import socket
import ssl
import time

from click.testing import CliRunner

from rupost.cli import main as rupost
from rupost.node.agent import NodeAgent


def cli(node, *args):
    return CliRunner().invoke(rupost, ["--root", str(node.root), *args], catch_exceptions=False)


def imaps_greeted(node) -> ssl.SSLSocket:
    """A TLS connection to port 993 that dovecot has greeted: a session HAProxy counts."""
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    conn = context.wrap_socket(socket.create_connection(("127.0.0.1", node.ports["imaps"]), timeout=30))
    assert conn.recv(4096).startswith(b"* OK")
    return conn


def held_imaps(node) -> int:
    from adapters import haproxy

    return int(haproxy.proxy_stats(node.layout)[("fe_imaps", "FRONTEND")]["scur"])


def wait_held(node, sessions: int) -> None:
    for _ in range(100):  # bounded: HAProxy counts a closed session out within moments
        if held_imaps(node) == sessions:
            return
        time.sleep(0.1)
    raise AssertionError(f"HAProxy does not settle at {sessions} imaps sessions")


def test_a_burst_between_two_samples_is_the_hours_peak_and_the_greatest_is_kept(node):
    """Sessions opened and closed between two samples still count (HAProxy's maximum since
    the previous sample); a later, smaller peak does not lower the hour's."""
    peaks = node.app.session_peaks
    hour = (dt.datetime.now(dt.UTC) - dt.timedelta(days=2)).replace(minute=17, second=0, microsecond=0)
    wait_held(node, 0)
    peaks.record(now=hour)  # the maxima so far are reset
    burst = [imaps_greeted(node) for _ in range(4)]
    for conn in burst:
        conn.close()
    wait_held(node, 0)
    sampled = peaks.record(now=hour)
    # HAProxy reserves a frontend slot before each accept (docs/templates.md#capacity), so its
    # maximum may count the slot of the last accept beside the four sessions
    burst_peak = sampled["imaps"]
    assert burst_peak in (4, 5) and set(sampled) >= {"imaps", "smtp", "submissions", "https", "http", "sieve"}
    held = [imaps_greeted(node) for _ in range(2)]
    try:
        wait_held(node, 2)
        assert peaks.record(now=hour)["imaps"] in (2, 3)  # the slot reserved at the last accept, again
        assert peaks.record(now=hour)["imaps"] == 2  # still held: the current sessions count
    finally:
        for conn in held:
            conn.close()
    end = hour.replace(minute=59)
    series = peaks.series(hours=2, node=node.app.config.node_name, end=end)
    assert series["series"]["imaps"] == [0, burst_peak] and series["peaks"]["imaps"] == burst_peak
    assert series["hours"][-1] == hour.replace(minute=0).isoformat()

    # the same through the CLI, as JSON and as a table
    r = cli(node, "stats", "sessions", "--hours", "72", "--node", node.app.config.node_name, "--json")
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
    index = data["hours"].index(hour.replace(minute=0).isoformat())
    assert data["series"]["imaps"][index] == burst_peak and data["peaks"]["imaps"] >= burst_peak
    text = cli(node, "stats", "sessions", "--hours", "72").output
    assert text.splitlines()[0].startswith("peak concurrent sessions, all nodes (added up), ")
    assert hour.strftime("%Y-%m-%d %H:00") in text


def test_the_node_agent_records_this_hours_peaks_and_the_metrics_show_them(node):
    from rupost.node.metrics import render

    wait_held(node, 0)
    NodeAgent(node.app).record_session_peaks()
    conn = imaps_greeted(node)
    try:
        wait_held(node, 1)
        sampled = NodeAgent(node.app).record_session_peaks()
    finally:
        conn.close()
    assert sampled["imaps"] >= 1
    name = node.app.config.node_name
    stored = node.app.session_peaks.series(hours=1, node=name)["peaks"]
    assert stored["imaps"] >= sampled["imaps"]
    metrics = render(node.app)
    assert f'rupost_sessions_peak{{node="{name}",listener="imaps"}} {stored["imaps"]}' in metrics
    assert f'rupost_metrics_errors{{node="{name}"}} 0' in metrics
