"""Push notifications: a mail delivered through the node's SMTP makes dovecot's
push_notification plugin (Lua driver) spool an event, and the dispatcher POSTs it to a
local HTTP receiver; failed posts are logged and retried."""
from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from mailclients import message, smtp
from support.instance import free_ports


class Receiver:
    def __init__(self):
        self.requests = []
        self.flaky_seen = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                length = int(self.headers.get("Content-Length", 0))
                body = self.rfile.read(length)
                if self.path == "/flaky":
                    outer.flaky_seen += 1
                    if outer.flaky_seen == 1:
                        self.send_response(500)
                        self.end_headers()
                        return
                outer.requests.append({"path": self.path, "headers": dict(self.headers),
                                       "json": json.loads(body)})
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def wait_for(self, predicate, timeout: float = 40):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [r for r in self.requests if predicate(r)]
            if found:
                return found
            time.sleep(0.2)
        raise AssertionError(f"no matching POST after {timeout}s; received: {self.requests}")

    def stop(self):
        self.server.shutdown()


def cli(node, *args, stdin=None):
    return subprocess.run([sys.executable, "-m", "rupost.cli", "--root", str(node.root), "push", *args],
                          input=stdin, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def receiver():
    r = Receiver()
    yield r
    r.stop()


@pytest.fixture(scope="module")
def dispatcher(node):
    proc = subprocess.Popen([sys.executable, "-m", "rupost.cli", "--root", str(node.root), "push", "dispatch",
                             "--interval", "0.2"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    yield proc
    proc.terminate()
    proc.wait(15)
    for e in node.app.push.endpoints():
        if e["name"].startswith("t-"):
            node.app.push.remove(e["name"])


def deploy_if_asked(node, added: subprocess.CompletedProcess) -> None:
    """The first endpoint asks for a deploy (dovecot loads the push plugins only then)."""
    if "rupost deploy" in added.stderr:
        assert not node.app.push.live_on_this_node()
        assert node.app.deploys.deploy(node.app.deploys.plan(node.parameters)).result == "applied"
    assert node.app.push.live_on_this_node() and node.app.push.deploy_hint() == ""


def lmtp_plugins(node) -> str:
    conf = (node.app.layout.current / "dovecot" / "dovecot.conf").read_text()
    block = conf.split("protocol lmtp {", 1)[1].split("}", 1)[0]
    return next(line for line in block.splitlines() if "mail_plugins" in line)


def test_the_push_plugins_are_loaded_only_while_an_endpoint_exists(node, receiver):
    for e in node.app.push.endpoints():
        node.app.push.remove(e["name"])
    node.app.deploys.deploy(node.app.deploys.plan(node.parameters))
    assert "push_notification" not in lmtp_plugins(node) and not node.app.push.live_on_this_node()
    added = cli(node, "add", "t-plugin", receiver.url("/plugin"))
    assert added.returncode == 0 and "dovecot's push plugin is not in this node's live" in added.stderr
    deploy_if_asked(node, added)
    assert "push_notification_lua" in lmtp_plugins(node)
    removed = cli(node, "remove", "t-plugin")
    assert removed.returncode == 0 and "`rupost deploy` removes it" in removed.stderr
    node.app.deploys.deploy(node.app.deploys.plan(node.parameters))
    assert "push_notification" not in lmtp_plugins(node) and node.app.push.deploy_hint() == ""


def send(node, to, subject):
    client = smtp(node.ports["smtp"])
    client.send_message(message("sender@example.org", to, subject))
    client.quit()


def test_delivered_mail_produces_a_post(node, domain, mailbox, receiver, dispatcher):
    address, _ = mailbox("push")
    tag = domain.split(".")[0]
    r = cli(node, "add", f"t-ok-{tag}", receiver.url(f"/ok/{tag}"), "--domain", domain, "--secret-stdin",
            stdin="s3cret-token\n")
    assert r.returncode == 0, r.stderr
    deploy_if_asked(node, r)
    send(node, address, "push me please")
    got = receiver.wait_for(lambda q: q["path"] == f"/ok/{tag}" and q["json"].get("event") == "MessageNew")
    event = got[0]["json"]
    assert event["user"] == address and event["mailbox"] == "INBOX"
    assert event["subject"] == "push me please" and isinstance(event["uid"], int) and event["uid"] >= 1
    assert "sender@example.org" in event["from"]
    assert got[0]["headers"]["Authorization"] == "Bearer s3cret-token"
    assert got[0]["headers"]["Content-Type"] == "application/json"
    # one POST per message, not more; quotes, backslashes and Cyrillic survive as JSON
    tricky = 'Отчёт "Q3" \\ done'
    send(node, address, tricky)
    receiver.wait_for(lambda q: q["path"] == f"/ok/{tag}" and q["json"].get("subject") == tricky)
    assert len([q for q in receiver.requests if q["path"] == f"/ok/{tag}"]) == 2

    ok = cli(node, "test", f"t-ok-{tag}")
    assert ok.returncode == 0 and "HTTP 204" in ok.stdout
    receiver.wait_for(lambda q: q["path"] == f"/ok/{tag}" and q["json"].get("event") == "Test", timeout=5)


def test_failed_posts_are_retried_and_logged(node, domain, mailbox, receiver, dispatcher):
    address, _ = mailbox("retry")
    tag = domain.split(".")[0]
    dead_port = free_ports(1)[0]  # nothing listens there
    flaky = cli(node, "add", f"t-flaky-{tag}", receiver.url("/flaky"), "--domain", domain)
    assert flaky.returncode == 0
    deploy_if_asked(node, flaky)
    assert cli(node, "add", f"t-dead-{tag}", f"http://127.0.0.1:{dead_port}/x", "--domain", domain).returncode == 0
    send(node, address, "retry me")

    # the flaky endpoint answered 500 first: the event came through on a later attempt
    got = receiver.wait_for(lambda q: q["path"] == "/flaky" and q["json"].get("subject") == "retry me")
    assert got and receiver.flaky_seen >= 2
    failures = node.app.push.failures(endpoint=f"t-flaky-{tag}")
    assert [(f["attempt"], f["status"], f["final"]) for f in failures] == [(1, 500, False)]
    assert failures[0]["user"] == address

    # the dead endpoint: each attempt is logged, and retried
    deadline = time.monotonic() + 30
    while len(node.app.push.failures(endpoint=f"t-dead-{tag}")) < 2 and time.monotonic() < deadline:
        time.sleep(0.3)
    dead = node.app.push.failures(endpoint=f"t-dead-{tag}")
    assert sorted(f["attempt"] for f in dead)[:2] == [1, 2], dead
    assert all(f["status"] is None and f["error"] for f in dead)
    listing = json.loads(cli(node, "list", "--json").stdout)
    row = [e for e in listing if e["name"] == f"t-dead-{tag}"][0]
    assert row["failures_24h"] >= 2 and row["last_failure"]

    bad = cli(node, "test", f"t-dead-{tag}")
    assert bad.returncode == 1 and f"t-dead-{tag}" in bad.stderr and "refused" in bad.stderr.lower()


def test_bad_input_is_refused(node, receiver):
    r = cli(node, "add", "t-bad", "ftp://example.org/")
    assert r.returncode == 1 and "not an http" in r.stderr
    r = cli(node, "add", "Bad Name", receiver.url("/"))
    assert r.returncode == 1 and "invalid endpoint name" in r.stderr
    assert cli(node, "add", "t-dup", receiver.url("/dup")).returncode == 0
    r = cli(node, "add", "t-dup", receiver.url("/dup"))
    assert r.returncode == 1 and "already exists" in r.stderr
    assert cli(node, "remove", "t-dup").returncode == 0
    r = cli(node, "remove", "t-nothing")
    assert r.returncode == 1 and "no push endpoint named" in r.stderr
