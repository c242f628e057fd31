"""Issue 25: every limit sized from the max_*_sessions parameters, checked across components
when a template is validated; a client over the limit gets an answer; capacity in `rupost check`."""
from __future__ import annotations

import imaplib
import json
import smtplib
import socket
import ssl
import time
import uuid

import pytest
from click.testing import CliRunner

from rupost.cli import main as rupost
from rupost.errors import TemplateError
from rupost.templating.limits import check_chain, derive_limits


def cli(node, *args):
    return CliRunner().invoke(rupost, ["--root", str(node.root), *args], catch_exceptions=False)


def custom(name: str, components: str, parameters: str = "") -> str:
    return (f"apiVersion: rupost/v1\nkind: ConfigurationTemplate\nextends: standard\n"
            f"metadata: {{name: {name}, version: 1.0.0}}\n{parameters}components:\n{components}")


# ------------------------------------------------------------- the chain, when a template is validated
def test_the_builtin_template_derives_a_consistent_chain_for_any_load(node):
    for load in ({}, {"max_imap_sessions": 20, "max_smtp_sessions": 5, "max_web_sessions": 3},
                 {"max_imap_sessions": 4000, "max_smtp_sessions": 300, "max_web_sessions": 1500}):
        plan = node.app.deploys.plan(parameters={"reject_unknown_sender_domain": False, **load})
        haproxy = next(f for f in plan.files["haproxy"] if f.path == "haproxy.cfg").content
        imap = derive_limits(load).imap_sessions
        assert f"use_backend be_refuse_imaps if {{ be_conn(be_imaps) ge {imap} }}" in haproxy
        assert f"use_backend be_refuse_imaps if {{ be_conn(be_local_imaps) ge {imap} }}" in haproxy
        assert f"maxconn {derive_limits(load).haproxy_maxconn}" in haproxy
        dovecot = next(f for f in plan.files["dovecot"] if f.path == "dovecot.conf").content
        assert f"process_limit = {derive_limits(load).dovecot_imap_sessions}" in dovecot
    # sessions packed ten to an imap process: a tenth of the processes, and service_count 0
    # (with 1, client_limit packs nothing)
    plan = node.app.deploys.plan(parameters={"reject_unknown_sender_domain": False, "imap_sessions_per_process": 10})
    dovecot = next(f for f in plan.files["dovecot"] if f.path == "dovecot.conf").content
    imap_service = dovecot.split("service imap {", 1)[1].split("}", 1)[0]
    assert [line.strip() for line in imap_service.strip().splitlines()][:3] == [
        "process_limit = 300", "client_limit = 10", "service_count = 0"]
    assert "process_min_avail = 0" in imap_service  # no hibernation: no imap process waits ready
    # without hibernation, the imap-master socket keeps dovecot's default owner (root)
    assert 'unix_listener imap-master {\n    user = ""' in dovecot
    assert "imap_hibernate_timeout = 0 s" in dovecot


def test_a_load_beyond_the_backends_open_file_limit_is_refused_naming_both_values(node):
    import resource

    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    sessions = min(200000, hard)  # two descriptors a session in HAProxy alone
    needed = derive_limits({"max_imap_sessions": sessions}).open_files
    with pytest.raises(TemplateError) as err:
        node.app.deploys.plan(parameters={"max_imap_sessions": sessions})
    assert (f"limits.open_files = {needed} (from parameters max_imap_sessions, max_smtp_sessions, "
            f"max_web_sessions) is above the open-file limit of the direct service backend = {hard}") in str(err.value)


@pytest.mark.parametrize("components, expected", [
    # a hand-set dovecot limit below what HAProxy admits
    ('  dovecot: {settings: {"service imap": {process_limit: 100}}}\n',
     ["components.dovecot.settings.service imap.process_limit = 100 is below "
      "components.haproxy.listeners[2].max_sessions = 2000"]),
    # HAProxy's global maxconn below its frontends
    ("  haproxy: {maxconn: 3000}\n",
     ["components.haproxy.maxconn = 3000 is below the 5060 connections its public frontends admit"]),
    # nginx too small for the sessions it proxies
    ("  nginx: {worker_connections: 1024}\n",
     ["components.nginx.worker_connections = 1024 is below 2 x the imaps, submissions and https listeners' "
      "max_sessions = 6400"]),
    # the stats service of issue 25
    ('  dovecot: {settings: {"service stats": {client_limit: 1000}}}\n',
     ["components.dovecot.settings.service stats.client_limit = 1000 is below 2 x "
      "components.haproxy.listeners[2].max_sessions = 4000"]),
    ("  postfix: {main: {default_process_limit: 100}}\n",
     ["components.postfix.main.default_process_limit = 100 is below "
      "components.haproxy.listeners[0].max_sessions = 200"]),
])
def test_an_inconsistent_chain_is_refused_naming_both_values(node, components, expected):
    with pytest.raises(TemplateError) as err:
        node.app.templates.validate(custom(f"t{uuid.uuid4().hex[:8]}", components))
    for text in expected:
        assert text in str(err.value)


def test_a_listener_admitting_less_than_the_parameter_is_refused():
    wanted = derive_limits({})
    models = {"haproxy": {"maxconn": 100000, "listeners": [{"name": "imaps", "max_sessions": 500}]}}
    problem, *others = check_chain({}, models)
    assert problem.startswith("components.haproxy.listeners[0].max_sessions = 500 is below the "
                              f"{wanted.imap_sessions} sessions the parameters ask for (parameters.max_imap_sessions)")
    # dovecot's own defaults count too: 100 login processes for 500 sessions
    assert others == ["components.dovecot.settings.default_process_limit (dovecot's default) = 100 is "
                      "below components.haproxy.listeners[0].max_sessions = 500: logins beyond it would wait for "
                      "a login process"]
    [problem] = check_chain({}, {"haproxy": {"listeners": [{"name": "imaps"}]}})
    assert "listeners[0].max_sessions: missing" in problem


# ------------------------------------------------------------- the answer over the limit, and the check
def imaps_session(node, address: str, password: str) -> imaplib.IMAP4_SSL:
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    conn = imaplib.IMAP4_SSL("127.0.0.1", node.ports["imaps"], ssl_context=context, timeout=30)
    conn.login(address, password)
    conn.select("INBOX")
    return conn


def refused_answer(node, port: str, tls: bool, send: bytes = b"") -> bytes:
    """What a client over the limit reads: the refusal server's answer (through TLS where the
    port speaks it), then the close."""
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", node.ports[port]), timeout=30) as raw:
        conn = context.wrap_socket(raw) if tls else raw
        if send:
            conn.sendall(send)
        data = b""
        for _ in range(10):  # bounded: the answer and the close come in a few reads
            chunk = conn.recv(4096)
            if not chunk:
                break
            data += chunk
        return data


def haproxy_frontend(node, listener: str) -> dict:
    from adapters import haproxy

    return haproxy.proxy_stats(node.layout)[(f"fe_{listener}", "FRONTEND")]


def settle(node, listener: str, sessions: int) -> None:
    """Wait (bounded) until HAProxy counts this many sessions on a listener."""
    for _ in range(100):
        if int(haproxy_frontend(node, listener)["scur"]) == sessions:
            return
        time.sleep(0.1)
    raise AssertionError(f"HAProxy does not settle at {sessions} {listener} sessions")


def imap_processes(node, name: str = "imap") -> list[int]:
    """The dovecot master's processes of this name (by default imap, not imap-login)."""
    from pathlib import Path

    master = node.app.backend.pid("dovecot")
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                comm = (entry / "comm").read_text().strip()
            except OSError:
                continue
            if int(fields[1]) == master and comm == name:
                found.append(int(entry.name))
    return found


def set_and_deploy(node, *assignments: str) -> None:
    assert cli(node, "template", "set", *assignments).exit_code == 0
    result = cli(node, "deploy")
    assert result.exit_code == 0, result.output


def test_session_over_the_limit_gets_bye_the_check_fails_and_a_raised_limit_lets_it_in(node, mailbox):
    users = [mailbox(f"cap{i}") for i in range(21)]
    monitor = node.layout.monitor_log
    # five sessions to an imap process: the packing works through the real dovecot
    set_and_deploy(node, "max_imap_sessions=20", "max_smtp_sessions=2", "max_web_sessions=3",
                   "imap_sessions_per_process=5")
    held: list = []
    try:
        lines_before = len(monitor.read_text().splitlines()) if monitor.exists() else 0
        for listener in ("imaps", "smtp", "https"):
            settle(node, listener, 0)  # the deploy's own probes have closed
        for index, user in enumerate(users[:20]):
            try:
                held.append(imaps_session(node, *user))
            except imaplib.IMAP4.error as exc:
                frontend = haproxy_frontend(node, "imaps")
                raise AssertionError(f"session {index + 1} of 20 refused ({exc}); HAProxy counts {frontend['scur']} "
                                     f"sessions, {frontend['stot']} since it started, at most {frontend['smax']}") \
                    from None
        assert len(imap_processes(node)) < 20
        answer = refused_answer(node, "imaps", tls=True)
        assert answer.startswith(b"* BYE [UNAVAILABLE] "), answer
        with pytest.raises(imaplib.IMAP4.error, match=r"BYE \[UNAVAILABLE\]"):
            imaps_session(node, *users[20])
        # SMTP on port 25 and HTTPS: the same, in their protocols
        held += [smtplib.SMTP("127.0.0.1", node.ports["smtp"], timeout=30) for _ in range(2)]
        assert refused_answer(node, "smtp", tls=False).startswith(b"421 4.7.0 "), "SMTP session 3"
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        for _ in range(3):
            web = context.wrap_socket(socket.create_connection(("127.0.0.1", node.ports["https"]), timeout=30))
            held.append(web)
        answer = refused_answer(node, "https", tls=True, send=b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 503 Service Unavailable\r\n"), answer

        settle(node, "imaps", 20)  # HAProxy counts a refused client until its close is through
        result = cli(node, "check", "--only", "capacity", "--json")
        assert result.exit_code == 1
        by_target = {r["target"]: r for r in json.loads(result.output)["results"]}
        assert by_target["imaps"]["status"] == "critical"
        assert by_target["imaps"]["detail"].startswith("limit reached: 20 of 20 sessions (100 %)")
        assert "parameter max_imap_sessions" in by_target["imaps"]["detail"]
        assert "2 clients refused since the last check" in by_target["imaps"]["detail"]
        assert by_target["smtp"]["status"] == by_target["https"]["status"] == "critical"
        new_lines = monitor.read_text().splitlines()[lines_before:]
        assert any(" capacity:imaps critical: limit reached: 20 of 20 sessions" in line for line in new_lines)

        set_and_deploy(node, "max_imap_sessions=30")
        held.append(imaps_session(node, *users[20]))
        assert held[-1].noop()[0] == "OK"
    finally:
        for conn in held:
            try:
                conn.close() if isinstance(conn, socket.socket) else conn.quit() if isinstance(
                    conn, smtplib.SMTP) else conn.logout()
            except (imaplib.IMAP4.error, smtplib.SMTPException, OSError):
                pass
        cli(node, "template", "set", "--unset", "max_imap_sessions", "--unset", "max_smtp_sessions",
            "--unset", "max_web_sessions", "--unset", "imap_sessions_per_process",
            "reject_unknown_sender_domain=false")
        cli(node, "deploy")


def hibernated(node) -> int:
    """Sessions imap-hibernate holds: each came with the inotify instance watching its mailbox."""
    import os

    count = 0
    for pid in imap_processes(node, "imap-hibernate"):
        fds = f"/proc/{pid}/fd"
        for fd in os.listdir(fds):
            try:
                count += os.readlink(f"{fds}/{fd}") == "anon_inode:inotify"
            except OSError:
                continue
    return count


def test_an_idling_session_hibernates_wakes_on_new_mail_and_goes_on(node, mailbox):
    """imap_hibernate_after: an IDLE session leaves its imap process for imap-hibernate, which
    holds it for a few KiB; new mail brings it back into an imap process, which tells the
    client at once, and the session goes on."""
    address, password = mailbox("sleeper")
    set_and_deploy(node, "imap_hibernate_after=1", "reject_unknown_sender_domain=false")
    conn = None
    try:
        dovecot = (node.layout.current / "dovecot" / "dovecot.conf").read_text()
        assert "imap_hibernate_timeout = 1 s" in dovecot
        assert "process_min_avail = 40" in dovecot  # one session a process: 40 ready for waking sessions
        conn = imaps_session(node, address, password)
        conn.send(b"h1 IDLE\r\n")
        assert conn.readline().startswith(b"+ ")
        for _ in range(100):  # bounded: the session hibernates after a second
            if hibernated(node):
                break
            time.sleep(0.1)
        else:
            raise AssertionError(f"the idling session did not move to imap-hibernate: "
                                 f"{imap_processes(node, 'imap-hibernate')}")
        with smtplib.SMTP("127.0.0.1", node.ports["smtp"], timeout=30) as smtp:
            smtp.sendmail("someone@example.org", [address], f"From: someone@example.org\r\nTo: {address}\r\n"
                          "Subject: wake up\r\n\r\nnew mail for a hibernated session\r\n")
        line = conn.readline()  # the socket's 30 s timeout bounds the wait
        while line.startswith(b"* ") and not line.endswith(b" EXISTS\r\n"):
            line = conn.readline()
        assert line == b"* 1 EXISTS\r\n", line
        assert not hibernated(node)  # woken: back in an imap process
        conn.send(b"DONE\r\n")
        while not line.startswith(b"h1 "):
            line = conn.readline()
        assert line.startswith(b"h1 OK"), line
        typ, data = conn.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        assert typ == "OK" and b"Subject: wake up" in data[0][1]
    finally:
        if conn is not None:
            try:
                conn.logout()
            except (imaplib.IMAP4.error, OSError):
                pass
        cli(node, "template", "set", "--unset", "imap_hibernate_after")
        cli(node, "deploy")


# ------------------------------------------------------------- rupost sizing
def test_sizing_prints_the_derived_values_and_applies_them_audited(node):
    from sqlalchemy import select

    from rupost.db.models import AuditRecord

    r = cli(node, "sizing", "--mailboxes", "10000", "--sessions-per-user", "2", "--ldap-domains", "1", "--json")
    assert r.exit_code == 0, r.output
    estimate = json.loads(r.output)
    # SOGo: a worker a hundred web sessions; memcached: 512 + 10 x 10000 KiB, rounded up to MB
    assert estimate["parameters"] == {"max_imap_sessions": 20000, "max_smtp_sessions": 200,
                                      "max_web_sessions": 1000, "sogo_workers": 10, "memcached_memory_mb": 99}
    limits = derive_limits(estimate["parameters"])
    assert estimate["limits"] == limits.as_dict() and limits.sogo_workers == 10
    assert estimate["memory"]["sessions_mib"] == round(limits.dovecot_imap_sessions * 900 / 1024)
    assert estimate["memory"]["sogo_mib"] == 10 * 100 and estimate["memory"]["memcached_mib"] == 99
    assert estimate["memory"]["total_mib"] == sum(v for k, v in estimate["memory"].items()
                                                  if k not in ("total_mib", "sessions_mib_hibernating"))
    # hibernation off: what idling sessions moved to imap-hibernate would take instead (60 KiB
    # each, a tenth counted as active at 900)
    assert estimate["imap_hibernate_after"] == 0
    assert estimate["memory"]["sessions_mib_hibernating"] == round(limits.dovecot_imap_sessions * 144 / 1024)
    # bounded both ways: SOGo's usual 3 for a small node, the parameter's 64 for a huge one
    small = json.loads(cli(node, "sizing", "--mailboxes", "50", "--ldap-domains", "0", "--json").output)
    assert small["parameters"]["sogo_workers"] == 3 and small["parameters"]["memcached_memory_mb"] == 16
    huge = json.loads(cli(node, "sizing", "--mailboxes", "100000", "--ldap-domains", "3", "--json").output)
    assert huge["parameters"]["sogo_workers"] == 64
    assert huge["parameters"]["memcached_memory_mb"] == -(-(3 * 512 + 10 * 100000) // 1024)
    assert not estimate["applied"] and node.app.settings.get("template_parameters").get("max_imap_sessions") is None

    r = cli(node, "sizing", "--mailboxes", "0")
    assert r.exit_code == 1 and "--mailboxes: 0 is not a number of mailboxes" in r.output

    try:
        r = cli(node, "sizing", "--mailboxes", "300", "--apply")
        assert r.exit_code == 0 and "parameters stored" in r.output
        stored = node.app.settings.get("template_parameters")
        assert (stored["max_imap_sessions"], stored["max_smtp_sessions"], stored["max_web_sessions"],
                stored["sogo_workers"]) == (300, 20, 50, 3)
        with node.app.dbs.session("logs") as s:
            entry = s.scalars(select(AuditRecord).where(AuditRecord.action == "template.parameters")
                              .order_by(AuditRecord.id.desc()).limit(1)).one()
        assert entry.details["changed"]["max_imap_sessions"] == 300
        output = cli(node, "sizing", "--mailboxes", "300").output
        assert "max_imap_sessions = 300  [300]" in output
        assert "with imap_hibernate_after=30 (idling sessions moved to imap-hibernate), the IMAP sessions" in output
        assert f"sysctl fs.inotify.max_user_instances >= {derive_limits(stored).inotify_instances} and " in output
        assert f"fs.inotify.max_user_watches >= {derive_limits(stored).inotify_watches}" in output
        # the sizing is what a deploy renders: SOGo's WOWorkersCount and memcached's -m
        plan = node.app.deploys.plan()
        sogo = next(f for f in plan.files["sogo"] if f.path == "sogo.conf").content
        assert "WOWorkersCount = 3;" in sogo
        memcached = next(f for f in plan.files["memcached"] if f.path == "memcached.conf").content
        assert f"\n-m {stored['memcached_memory_mb']}\n" in memcached
    finally:
        cli(node, "template", "set", "--unset", "max_imap_sessions", "--unset", "max_smtp_sessions",
            "--unset", "max_web_sessions", "--unset", "memcached_memory_mb", "--unset", "sogo_workers",
            "reject_unknown_sender_domain=false")


def test_client_limit_counts_only_where_a_process_serves_several_clients():
    """dovecot's imap service_count 1 (its default) gives each process one client in its life:
    client_limit 10 does not hold ten times the sessions (measured in docs/benchmarks.md)."""
    base = {"haproxy": {"maxconn": 100000, "listeners": [{"name": "imaps", "max_sessions": 2000}]},
            "dovecot": {"settings": {"default_client_limit": 10000, "service imap-login": {"process_limit": 3000}}}}
    packed_once = {"service imap": {"process_limit": 400, "client_limit": 10}}
    base["dovecot"]["settings"].update(packed_once)
    assert ["components.dovecot.settings.service imap.process_limit = 400 is below "
            "components.haproxy.listeners[0].max_sessions = 2000: dovecot would drop IMAP sessions HAProxy admits, "
            "silently"] == check_chain({}, base)
    base["dovecot"]["settings"]["service imap"]["service_count"] = 0
    assert check_chain({}, base) == []


# ------------------------------------------------------------- a daemon's own limit, from its log
def test_a_daemon_limit_reached_in_its_log_fails_the_check_with_a_monitor_line(node):
    """An `extra` snippet is native text the chain check cannot read: here it sets dovecot's
    imap-login process limit to 1 behind HAProxy's 2000, and the second IMAP client is dropped.
    Dovecot says so in its log, and that line is a failed check."""
    name = f"lim{uuid.uuid4().hex[:8]}"
    node.app.templates.import_text(custom(name, "  dovecot:\n    extra: |\n      service imap-login {\n"
                                                "        process_limit = 1\n      }\n"))
    monitor = node.layout.monitor_log
    cli(node, "check", "--only", "limit")  # the logs so far are read: only new lines count
    clients: list[socket.socket] = []
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    try:
        node.app.templates.activate(name, "1.0.0")
        result = cli(node, "deploy")
        assert result.exit_code == 0, result.output
        lines_before = len(monitor.read_text().splitlines()) if monitor.exists() else 0
        dovecot_log = node.layout.logs / "dovecot.log"
        for _ in range(3):  # three clients waiting before LOGIN hold more than one login process
            clients.append(context.wrap_socket(socket.create_connection(("127.0.0.1", node.ports["imaps"]),
                                                                        timeout=30)))
        for _ in range(100):  # bounded: the master logs the limit once a client waits for a process
            if "(1) reached" in dovecot_log.read_text(errors="replace"):
                break
            time.sleep(0.1)
        result = cli(node, "check", "--only", "limit", "--json")
        assert result.exit_code == 1
        [dovecot] = [r for r in json.loads(result.output)["results"] if r["target"] == "dovecot.log"]
        assert dovecot["status"] == "critical"
        # with one process a client, dovecot names both settings
        assert "service(imap-login): client_limit/service_count (1) reached" in dovecot["detail"]
        assert "new line(s): dovecot drops connections" in dovecot["detail"]
        new_lines = monitor.read_text().splitlines()[lines_before:]
        assert any(" limit:dovecot.log critical: " in line for line in new_lines)
    finally:
        for conn in clients:
            conn.close()
        node.app.templates.activate("standard")
        cli(node, "deploy")
        node.app.templates.remove(name, "1.0.0")


def test_the_capacity_check_compares_the_kernel_and_open_file_limits_with_the_load(node):
    """inotify instances and watches (from /proc/sys) and the backend's open-file limit against
    what the active load needs: a warning naming the setting and value when short."""
    import resource

    def rows(parameters=None):
        if parameters:
            node.app.settings.set("template_parameters", {**before, **parameters})
        result = cli(node, "check", "--only", "capacity", "--no-record", "--json")
        return {r["target"]: r for r in json.loads(result.output)["results"]}

    before = node.app.settings.get("template_parameters")
    try:
        for load in ({}, {"max_imap_sessions": 60000}):
            limits = derive_limits(load)
            found = rows(load)
            for target, sysctl, field, what in (
                    ("inotify", "fs.inotify.max_user_instances", "inotify_instances", "the imap processes"),
                    ("inotify-watches", "fs.inotify.max_user_watches", "inotify_watches", "the IDLE sessions")):
                granted = int(open("/proc/sys/" + sysctl.replace(".", "/")).read())
                needed = getattr(limits, field)
                row = found[target]
                assert row["detail"].startswith(f"{sysctl} = {granted}, {what} at full load need {needed} "
                                                f"(limits.{field})")
                assert row["status"] == ("ok" if granted >= needed else "warning")
                if granted < needed:
                    assert f"raise it (sysctl {sysctl}={needed}" in row["detail"]
            hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
            row = found["open-files"]
            assert row["detail"].startswith(f"open-file limit of the direct service backend = {hard}, the busiest "
                                            f"daemon at full load needs {limits.open_files}")
            assert row["status"] == ("ok" if hard >= limits.open_files else "warning")
        # 60,000 sessions need more instances than 128 and more descriptors than the test's
        # hard limit: both rows say so (the kernel's default watches may suffice)
        assert found["inotify"]["status"] == "warning" or int(open(
            "/proc/sys/fs/inotify/max_user_instances").read()) >= limits.inotify_instances
    finally:
        node.app.settings.set("template_parameters", before)


def test_template_set_refuses_a_load_the_active_templates_hand_set_limit_cannot_carry(node):
    """A custom template with HAProxy's maxconn written by hand: enough for the default load,
    refused (naming both values, nothing stored) when max_imap_sessions grows past it."""
    name = f"mc{uuid.uuid4().hex[:8]}"
    node.app.templates.import_text(custom(name, "  haproxy: {maxconn: 6000}\n"))
    before = node.app.settings.get("template_parameters")
    try:
        node.app.templates.activate(name, "1.0.0")
        r = cli(node, "template", "set", "max_imap_sessions=3000")
        frontends = derive_limits({"max_imap_sessions": 3000}).haproxy_maxconn - 100
        assert r.exit_code == 1
        assert (f"components.haproxy.maxconn = 6000 is below the {frontends} connections its public frontends "
                "admit") in r.output
        assert node.app.settings.get("template_parameters") == before
        assert cli(node, "template", "set", "max_imap_sessions=2500").exit_code == 0
    finally:
        node.app.settings.set("template_parameters", before)
        node.app.templates.activate("standard")
        node.app.templates.remove(name, "1.0.0")
