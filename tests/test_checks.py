"""`rupost check` against the real node: components, probes, disks, databases, certificates,
the mail host name, queue; state changes in monitor.log and rupost_logs.monitor_events."""
from __future__ import annotations

import json
import time
import uuid

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from adapters import probes
from rupost.cli import main as rupost
from rupost.db.models import MonitorEvent
from rupost.services import checks as checks_module
from rupost.services.checks import CheckResult, register_check
from test_mailqueues import cli as queue_cli, queue_outbound


def check(node, *args):
    return CliRunner().invoke(rupost, ["--root", str(node.root), "check", *args], catch_exceptions=False)


def monitor_lines(node) -> list[str]:
    path = node.layout.monitor_log
    return path.read_text().splitlines() if path.exists() else []


def events(node, component: str, since_id: int) -> list[MonitorEvent]:
    with node.app.dbs.session("logs") as s:
        return list(s.scalars(select(MonitorEvent).where(MonitorEvent.component == component,
                                                         MonitorEvent.id > since_id).order_by(MonitorEvent.id)))


def last_event_id(node) -> int:
    with node.app.dbs.session("logs") as s:
        return s.scalar(select(MonitorEvent.id).order_by(MonitorEvent.id.desc()).limit(1)) or 0


def wait_until(predicate, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)
    return True


def test_stopped_dovecot_fails_the_check_by_name_and_its_return_clears_the_state(node):
    app = node.app
    first = check(node, "--only", "component", "--only", "probe", "--json")
    assert {r["target"]: r["status"] for r in json.loads(first.output)["results"]}["dovecot"] == "ok"
    lines_before, event_before = len(monitor_lines(node)), last_event_id(node)
    spec = app.components.process_spec("dovecot")
    app.backend.stop("dovecot", spec)
    try:
        # a single node keeps accepting mail (postfix queues it): HAProxy has nowhere else to
        # send clients, so its health checks do not take the listeners down
        time.sleep(5)  # longer than HAProxy's fall 2 x inter 2 s
        assert probes.probe_smtp("127.0.0.1", node.ports["smtp"], timeout=5).ok
        result = check(node)
        assert result.exit_code == 1, result.output
        row = next(line for line in result.output.splitlines() if line.startswith("component") and "dovecot" in line)
        assert "CRITICAL" in row and "dovecot is not running" in row
        assert "dovecot critical" in result.output.splitlines()[-1]  # the summary names it
        new = monitor_lines(node)[lines_before:]
        assert any(" node1 dovecot critical: dovecot is not running" in line for line in new), new
        assert [e.state for e in events(node, "dovecot", event_before)] == ["critical"]
        # a second run records no new change
        lines_mid = len(monitor_lines(node))
        assert check(node, "--only", "component").exit_code == 1
        assert not [ln for ln in monitor_lines(node)[lines_mid:] if " dovecot " in ln]
    finally:
        app.backend.start("dovecot", spec)
    assert wait_until(lambda: all(p.ok for p in app.component_runtime.run_probes(patience=0))), \
        "the node does not answer its probes after dovecot's restart"
    result = check(node, "--only", "component", "--only", "probe")
    row = next(line for line in result.output.splitlines() if line.startswith("component") and "dovecot" in line)
    assert "OK" in row
    assert "dovecot" not in result.output.splitlines()[-1]
    recovered = [ln for ln in monitor_lines(node)[lines_before:] if " node1 dovecot ok: recovered" in ln]
    assert len(recovered) == 1
    assert [e.state for e in events(node, "dovecot", event_before)] == ["critical", "ok"]
    assert app.checks.last_states()["component:dovecot"]["status"] == "ok"


def test_json_report_covers_every_check_and_the_exit_code_follows_the_worst(node):
    result = check(node, "--json")
    data = json.loads(result.output)
    kinds = {r["check"] for r in data["results"]}
    assert {"component", "probe", "disk", "database", "certificate", "queue"} <= kinds
    assert {r["target"] for r in data["results"] if r["check"] == "database"} == {"rupost", "rupost_data",
                                                                                   "rupost_logs"}
    assert result.exit_code == {"ok": 0, "critical": 1, "warning": 2}[data["status"]]
    assert check(node, "--only", "nosuch").exit_code == 1


def test_registered_checks_run_and_a_broken_check_does_not_hide_the_others(node):
    name, broken = f"custom{uuid.uuid4().hex[:6]}", f"broken{uuid.uuid4().hex[:6]}"
    register_check(name, lambda app: [CheckResult(name, "thing", "warning", "half broken")])

    def explode(app):
        raise RuntimeError("boom")

    register_check(broken, explode)
    try:
        result = check(node, "--only", name, "--only", broken, "--only", "database")
        assert result.exit_code == 1, result.output
        assert "half broken" in result.output and "the check failed: RuntimeError: boom" in result.output
        assert "answers" in result.output  # the database check still ran
        assert any(f"node1 {name}:thing warning: half broken" in ln for ln in monitor_lines(node))
    finally:
        checks_module.CHECKS.pop(name, None)
        checks_module.CHECKS.pop(broken, None)


def test_disk_thresholds_come_from_settings(node):
    app = node.app
    app.settings.set("monitor_disk_warning_percent", 0)
    try:
        result = check(node, "--only", "disk")
        assert result.exit_code == 2 and "WARNING" in result.output, result.output
        assert "mail storage" in result.output and "warning at 0%" in result.output
    finally:
        app.settings.set("monitor_disk_warning_percent", None)
    result = check(node, "--only", "disk")
    assert "warning at 90%" in result.output


def test_a_growing_queue_is_reported(node, mailbox):
    app = node.app
    app.settings.set("monitor_queue_growth_samples", 3)
    app.settings.set("monitor_queue_growth_min", 2)
    senders = []
    try:
        statuses = []
        for i in range(3):
            sender, _ = queue_outbound(node, mailbox, 1, f"grow{i}")
            senders.append(sender)
            data = json.loads(check(node, "--only", "queue", "--json").output)
            statuses.append(data["results"][0])
        assert statuses[-1]["status"] == "warning" and "growing: +2" in statuses[-1]["detail"], statuses
        assert any(" node1 queue:node1 warning:" in ln and "growing" in ln for ln in monitor_lines(node))
    finally:
        app.settings.set("monitor_queue_growth_samples", None)
        app.settings.set("monitor_queue_growth_min", None)
        for sender in senders:
            queue_cli(node, "delete", "--all-matching", f"sender={sender}")
        check(node, "--only", "queue")  # back to ok for the next tests


# ---------------------------------------------------------------- scheduler and metrics
def test_scheduler_runs_registered_jobs_and_logs_a_failing_job_once(node):
    from rupost.node import scheduler as sched_module
    from rupost.node.scheduler import Scheduler, register_job

    calls = {"counter": 0, "flaky": 0}

    def counter(app):
        calls["counter"] += 1

    def flaky(app):
        calls["flaky"] += 1
        if calls["flaky"] <= 2:
            raise RuntimeError("not yet")

    names = {"counter": f"counter-{uuid.uuid4().hex[:6]}", "flaky": f"flaky-{uuid.uuid4().hex[:6]}"}
    register_job(names["counter"], 1, counter)
    register_job(names["flaky"], 1, flaky)
    try:
        lines_before = len(monitor_lines(node))
        Scheduler(node.app, only=list(names.values())).run_forever(duration=3.5)
        assert calls["counter"] >= 3 and calls["flaky"] >= 3, calls
        new = monitor_lines(node)[lines_before:]
        failed = [ln for ln in new if f"scheduler:{names['flaky']} failed: job {names['flaky']} failed: "
                  "RuntimeError: not yet" in ln]
        assert len(failed) == 1, new  # logged when it started failing, not at every run
        assert len([ln for ln in new if f"scheduler:{names['flaky']} ok: job {names['flaky']} works again" in ln]) == 1
        assert not [ln for ln in new if names["counter"] in ln and "scheduler:scheduler" not in ln]
    finally:
        sched_module.JOBS.pop(names["counter"], None)
        sched_module.JOBS.pop(names["flaky"], None)


def test_scheduler_cli_runs_the_builtin_jobs_once(node):
    before = {p["source"]: p["updated_at"] for p in node.app.stats.positions()}
    runner = CliRunner()
    listed = runner.invoke(rupost, ["--root", str(node.root), "scheduler", "--list"])
    assert "stats" in listed.output and "checks" in listed.output
    result = runner.invoke(rupost, ["--root", str(node.root), "scheduler", "--once", "--only", "stats"])
    assert result.exit_code == 0 and "stats: ok" in result.output, result.output
    after = {p["source"]: p["updated_at"] for p in node.app.stats.positions()}
    assert after["postfix"] and after["postfix"] != before.get("postfix")
    bad = runner.invoke(rupost, ["--root", str(node.root), "scheduler", "--only", "nosuchjob"])
    assert bad.exit_code == 1 and "unknown job(s): nosuchjob" in bad.output
    bad = runner.invoke(rupost, ["--root", str(node.root), "scheduler", "--interval", "stats=0.1", "--once"])
    assert bad.exit_code == 1 and "below" in bad.output


def test_prometheus_endpoint_serves_the_main_figures(node):
    import http.client

    from rupost.node.metrics import start_server
    from support.instance import free_ports

    check(node, "--only", "component")
    port = free_ports(1)[0]
    server = start_server(node.app, f"127.0.0.1:{port}")
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("GET", "/metrics")
        resp = conn.getresponse()
        body = resp.read().decode()
        assert resp.status == 200 and resp.getheader("Content-Type").startswith("text/plain; version=0.0.4")
        assert 'rupost_component_up{node="node1",component="dovecot"} 1' in body
        assert 'rupost_mail_queue_messages{node="node1",queue="deferred"}' in body
        assert 'rupost_check_status{node="node1",check="component",target="dovecot"} 0' in body
        assert 'rupost_messages{window="24h",type="received"}' in body
        assert "rupost_metrics_errors{node=\"node1\"} 0" in body
        for line in body.splitlines():  # the text format: comments or NAME{LABELS} VALUE
            assert line.startswith("# ") or float(line.rsplit(" ", 1)[1]) is not None
        conn.request("GET", "/other")
        assert conn.getresponse().status == 404
    finally:
        server.shutdown()
        server.server_close()
    bad = CliRunner().invoke(rupost, ["--root", str(node.root), "metrics", "serve", "--bind", "nowhere"])
    assert bad.exit_code == 1 and "expected HOST:PORT" in bad.output


def test_an_unreachable_directory_is_reported_by_name(node):
    from support.instance import free_ports

    name = f"dir{uuid.uuid4().hex[:6]}"
    port = free_ports(1)[0]  # nothing listens there
    node.app.directories.add(name, "ad", [f"ldaps://127.0.0.1:{port}"], "dc=corp,dc=example",
                             "cn=svc,dc=corp,dc=example", "secret", check=False, timeout=2)
    try:
        result = check(node, "--only", "directory")
        assert result.exit_code == 1, result.output
        row = next(line for line in result.output.splitlines() if name in line)
        assert "CRITICAL" in row and f"127.0.0.1:{port}" in row
        assert any(f"node1 directory:{name} critical:" in ln for ln in monitor_lines(node))
    finally:
        node.app.directories.remove(name, force=True)
    assert name not in check(node, "--only", "directory").output


def test_scheduler_measures_quota_use_when_stale(node, mailbox):
    from rupost.services.quota_usage import QuotaUsageService

    address, _ = mailbox("measured")
    runner = CliRunner()
    result = runner.invoke(rupost, ["--root", str(node.root), "scheduler", "--once", "--only", "quota-usage"])
    assert result.exit_code == 0 and "quota-usage: ok" in result.output, result.output
    service = QuotaUsageService(node.app)
    last = service.last_run()
    assert last and not service.stale(last) and not last.get("error")
    again = runner.invoke(rupost, ["--root", str(node.root), "scheduler", "--once", "--only", "quota-usage"])
    assert again.exit_code == 0 and service.last_run()["measured_at"] == last["measured_at"]


def test_quota_use_of_a_disabled_mailbox_is_counted_from_its_files(node, domain, mailbox):
    """dovecot no longer serves a disabled mailbox (its userdb says "User no longer exists"),
    but its mail still takes space: the measurement counts its Maildir's files (the figure
    dovecot gave while it was enabled), is complete and reports no error."""
    from mailclients import message, smtp, wait_for_subject
    from rupost.services.quota_usage import QuotaUsageService

    kept, kept_pw = mailbox(f"kept{uuid.uuid4().hex[:4]}", quota="10M")
    gone, gone_pw = mailbox(f"gone{uuid.uuid4().hex[:4]}", quota="10M")
    for to, password in ((kept, kept_pw), (gone, gone_pw)):
        subject = f"quota-{uuid.uuid4().hex[:6]}"
        with smtp(node.ports["smtp"]) as client:
            assert client.send_message(message("someone@example.org", to, subject, "y" * 300_000 + "\n")) == {}
        wait_for_subject(node.ports["imaps"], to, password, subject)
    service = QuotaUsageService(node.app)
    service.measure(wait=300)
    before = {m["address"]: m for m in service.summary([domain])["largest"]}
    assert before[gone]["used_bytes"] > 300_000 and before[gone]["messages"] == 1
    node.app.mailboxes.set_enabled(gone, False)
    result = service.measure(wait=300)
    assert result["complete"] and not result["errors"], result
    after = {m["address"]: m for m in service.summary([domain])["largest"]}
    assert after[gone]["used_bytes"] == before[gone]["used_bytes"] and after[gone]["messages"] == 1
    assert after[kept]["used_bytes"] == before[kept]["used_bytes"]


# ------------------------------------------------------------------ the mail host name
def mail_host_check(node, tmp_path, hosts_lines: list[str]) -> tuple[int, dict]:
    """`rupost check --only mail-host` with this machine's resolver reading a hosts file of ours:
    bind-mounted over /etc/hosts in a private mount namespace, so the machine's own is untouched."""
    import subprocess
    import sys

    hosts = tmp_path / f"hosts-{uuid.uuid4().hex[:6]}"
    hosts.write_text("".join(f"{line}\n" for line in ["127.0.0.1 localhost", *hosts_lines]))
    command = (f"mount --bind {hosts} /etc/hosts && exec {sys.executable} -m rupost.cli --root {node.root} "
               "check --only mail-host --json --no-record")
    proc = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", command],
                          capture_output=True, text=True, timeout=120)
    assert proc.stdout, proc.stderr
    return proc.returncode, json.loads(proc.stdout)["results"][0]


def test_mail_host_that_does_not_resolve_to_this_node_is_a_warning_naming_it(node, tmp_path):
    from rupost import netinfo

    host = node.app.settings.mail_host()
    code, r = mail_host_check(node, tmp_path, [])
    assert (code, r["check"], r["target"], r["status"]) == (2, "mail-host", host, "warning")
    assert f"mail host name {host} does not resolve on this node" in r["detail"]
    code, r = mail_host_check(node, tmp_path, [f"127.0.1.1 {host}"])
    assert code == 2 and "resolves only to loopback (127.0.1.1)" in r["detail"], r
    code, r = mail_host_check(node, tmp_path, [f"203.0.113.9 {host}"])
    assert code == 2 and "resolves to 203.0.113.9, none of this node's addresses" in r["detail"], r
    mine = netinfo.primary_address()
    if mine is None:
        pytest.skip("this machine has no address but loopback: the resolving case needs one")
    code, r = mail_host_check(node, tmp_path, [f"{mine} {host}"])
    assert (code, r["status"]) == (0, "ok") and r["detail"] == f"mail host name {host} resolves to {mine} (this node)"
