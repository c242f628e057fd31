"""Logs in the node's log directory: rotation by renaming, then `rupost components reopen-logs`
(logrotate's postrotate in debian/rupost.logrotate) makes each daemon write into a new file."""
from __future__ import annotations

import http.client
import time
import uuid

from click.testing import CliRunner

from mailclients import message, smtp, wait_for_subject
from rupost.node.agent import NodeAgent
from rupost.cli import main as rupost

REOPENED = ("postfix", "dovecot", "nginx-access", "nginx-error")


def wait_until(predicate, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def test_rotated_logs_are_reopened_and_new_lines_land_in_new_files(node, mailbox):
    logs = node.layout.logs
    files = {name: logs / f"{name}.log" for name in REOPENED}
    for name, path in files.items():
        assert path.exists(), f"{path} missing before the rotation"
    rotated = {name: path.with_name(f"{path.name}.rotated-{uuid.uuid4().hex[:6]}") for name, path in files.items()}
    for name, path in files.items():
        path.rename(rotated[name])

    result = CliRunner().invoke(rupost, ["--root", str(node.root), "components", "reopen-logs"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "postfix: reopened" in result.output and "dovecot: reopened" in result.output
    assert "nginx: reopened" in result.output and "haproxy: stdout only (copytruncate)" in result.output
    # nginx and dovecot create the files when they reopen them (postlogd at its next line)
    assert wait_until(lambda: all(files[n].exists() for n in ("dovecot", "nginx-access", "nginx-error"))), \
        f"not recreated: {[n for n, p in files.items() if not p.exists()]}"

    address, password = mailbox("rotated")
    subject = f"after rotation {uuid.uuid4().hex}"
    with smtp(node.ports["smtp"]) as client:
        assert client.send_message(message("someone@example.org", address, subject)) == {}
    wait_for_subject(node.ports["imaps"], address, password, subject)
    token = uuid.uuid4().hex
    conn = http.client.HTTPConnection("127.0.0.1", node.ports["http"], timeout=10)
    conn.request("GET", f"/rotation-{token}", headers={"Host": "mail.rupost.test"})
    conn.getresponse().read()

    assert wait_until(lambda: files["postfix"].exists() and f"to=<{address}>" in files["postfix"].read_text()), \
        "postfix.log: no new delivery line"
    assert wait_until(lambda: address in files["dovecot"].read_text()), "dovecot.log: no new line"
    assert wait_until(lambda: f"/rotation-{token}" in files["nginx-access"].read_text()), \
        "nginx-access.log: no new request line"
    for name in ("postfix", "dovecot"):
        assert address not in rotated[name].read_text(), f"{name} still writes into the rotated file"
    assert token not in rotated["nginx-access"].read_text()


def test_monitor_log_is_written_by_the_agent_and_follows_a_rename(node):
    agent = NodeAgent(node.app, interval=60)
    first, second = uuid.uuid4().hex, uuid.uuid4().hex
    agent.log("agent", "test", first)
    monitor = node.layout.monitor_log
    assert f"node1 agent test: {first}" in monitor.read_text()
    rotated = monitor.with_name("monitor.log.1")
    monitor.rename(rotated)
    agent.log("agent", "test", second)
    assert second in monitor.read_text() and second not in rotated.read_text()


def test_debian_logrotate_rotates_every_log_of_a_node_and_the_daemons_follow(node, mailbox, tmp_path):
    """debian/rupost.logrotate itself, run by logrotate -f against the node's log directory."""
    import re
    import shutil
    import subprocess
    from pathlib import Path

    if not shutil.which("logrotate"):
        subprocess.run(["apt-get", "install", "-y", "-q", "logrotate"], check=True, capture_output=True)
    text = (Path(__file__).resolve().parent.parent / "debian/rupost.logrotate").read_text()
    named = set(re.findall(r"^/var/log/rupost/(\S+)$", text, re.M))
    written = {p.name for p in node.layout.logs.glob("*.log")}
    assert written <= named, f"log files no logrotate entry names: {sorted(written - named)}"
    import sys

    # the venv's own command when the suite runs as .venv/bin/python -m pytest (not on PATH)
    # this checkout's own command first: a `rupost` on PATH may be another installed version
    own = Path(sys.executable).with_name("rupost")
    cli = str(own) if own.exists() else shutil.which("rupost") or str(own)
    assert Path(cli).exists(), "no rupost command to run logrotate's postrotate with"
    conf = (text.replace("/usr/bin/rupost components", f"{cli} --root {node.root} components")
            .replace("[ -x /usr/bin/rupost ]", f"[ -x {cli} ]")
            .replace("/etc/rupost/config.json", str(node.layout.config_file))
            .replace("/var/log/rupost/", f"{node.layout.logs}/"))
    (tmp_path / "rupost.logrotate").write_text(conf)
    nonempty = {p.name for p in node.layout.logs.glob("*.log") if p.stat().st_size}   # notifempty skips the rest
    assert {"postfix.log", "dovecot.log"} <= nonempty
    run = subprocess.run(["logrotate", "-f", "-v", "-s", str(tmp_path / "state"), str(tmp_path / "rupost.logrotate")],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    for name in nonempty:
        assert (node.layout.logs / f"{name}.1").exists(), f"{name} not rotated:\n{run.stderr}"
    address, password = mailbox("logrotated")
    subject = f"after logrotate {uuid.uuid4().hex}"
    with smtp(node.ports["smtp"]) as client:
        assert client.send_message(message("someone@example.org", address, subject)) == {}
    wait_for_subject(node.ports["imaps"], address, password, subject)
    postfix, dovecot = node.layout.log_file("postfix"), node.layout.log_file("dovecot")
    assert wait_until(lambda: postfix.exists() and f"to=<{address}>" in postfix.read_text())
    assert wait_until(lambda: address in dovecot.read_text())
    assert address not in (node.layout.logs / "postfix.log.1").read_text()
