"""Two nodes in network namespaces, one shared PostgreSQL, shared mail storage."""
from __future__ import annotations

import http.client
import imaplib
import os
import signal
import smtplib
import time
import uuid

import pytest

from adapters.haproxy import stick_entries
from mailclients import insecure_tls, message
from rupost.testing.cluster import wait_until


def health(node) -> int:
    conn = http.client.HTTPConnection(node.address, 20025, timeout=3)
    try:
        conn.request("GET", "/health")
        return conn.getresponse().status
    except OSError:
        return 0
    finally:
        conn.close()


def send(node_address: str, source: str, rcpt: str, subject: str) -> None:
    with smtplib.SMTP(node_address, 25, timeout=15, source_address=(source, 0)) as client:
        client.ehlo("client.example.org")
        assert client.send_message(message("someone@example.org", rcpt, subject)) == {}


def imap_subjects(node_address: str, source: str, user: str, password: str) -> list[str]:
    class Bound(imaplib.IMAP4_SSL):
        def _create_socket(self, timeout):
            import socket

            sock = socket.create_connection((self.host, self.port), timeout, source_address=(source, 0))
            return self.ssl_context.wrap_socket(sock, server_hostname=self.host)

    imap = Bound(node_address, 993, ssl_context=insecure_tls(), timeout=15)
    try:
        imap.login(user, password)
        imap.select("INBOX")
        _, data = imap.search(None, "ALL")
        subjects = []
        for msg_id in data[0].split():
            _, fetched = imap.fetch(msg_id, "(BODY[HEADER.FIELDS (SUBJECT)])")
            subjects.append(fetched[0][1].decode().split(":", 1)[1].strip())
        return subjects
    finally:
        imap.logout()


@pytest.fixture(scope="module")
def users(cluster):
    app = cluster.nodes[0].app
    domain = f"c{uuid.uuid4().hex[:6]}.test"
    app.domains.add(domain)
    made = {}
    for local in ("ann", "bob"):
        app.mailboxes.add(f"{local}@{domain}", f"{local}-password-1")
        made[local] = (f"{local}@{domain}", f"{local}-password-1")
    return made


def test_either_node_serves_mail_and_the_stick_table_is_shared(cluster, users):
    a, b = cluster.node("nodea"), cluster.node("nodeb")
    ann, ann_pw = users["ann"]
    client = cluster.client_address(1)
    subject = f"via A {uuid.uuid4().hex}"
    send(a.address, client, ann, subject)
    ids = {n["name"]: n["id"] for n in a.app.nodes.list()}
    # the client is stuck to node A, on A's table and (through peers) on B's
    assert wait_until(lambda: stick_entries(a.layout).get(client) == ids["nodea"], 10)
    assert wait_until(lambda: stick_entries(b.layout).get(client) == ids["nodea"], 10)
    # another client reads the same mailbox through node B (shared storage)
    reader = cluster.client_address(2)
    assert wait_until(lambda: subject in imap_subjects(b.address, reader, ann, ann_pw), 20)
    assert stick_entries(b.layout).get(reader) == ids["nodeb"]
    # the first client, arriving at B within the expiry, is sent to the node it is bound to (A)
    subject2 = f"via B, stuck to A {uuid.uuid4().hex}"
    before = a.layout.log_file("postfix").read_text().count(f": connect from unknown[{client}]")
    send(b.address, client, ann, subject2)
    assert a.layout.log_file("postfix").read_text().count(f": connect from unknown[{client}]") == before + 1
    # the client address survives the HAProxy -> HAProxy -> postfix hops
    assert f"connect from unknown[{client}]" in a.layout.log_file("postfix").read_text()


def test_a_killed_component_takes_its_node_out_and_stuck_clients_reach_the_other(cluster, users):
    a, b = cluster.node("nodea"), cluster.node("nodeb")
    bob, bob_pw = users["bob"]
    client = cluster.client_address(3)
    send(a.address, client, bob, f"before {uuid.uuid4().hex}")
    ids = {n["name"]: n["id"] for n in a.app.nodes.list()}
    assert wait_until(lambda: stick_entries(b.layout).get(client) == ids["nodea"], 10)
    for node in (a, b):
        node.start_agent(interval=1, hold_down=300)
    try:
        assert wait_until(lambda: a.app.nodes.show("nodea")["state"] == "in_service", 15)
        killed_at = time.monotonic()
        os.kill(a.app.backend.pid("dovecot"), signal.SIGKILL)
        assert wait_until(lambda: a.app.nodes.show("nodea")["state"] == "out_of_service", 10), \
            "node A was not marked out of service within 10 s"
        out_after = time.monotonic() - killed_at
        states = a.app.components.states()
        assert not any(states[n]["running"] for n in ("dovecot", "postfix", "sogo", "nginx"))
        assert states["haproxy"]["running"]
        assert wait_until(lambda: health(a) == 503, 10)
        # the client stuck to A connects to A's public port and is served by B
        subject = f"after failover {uuid.uuid4().hex}"
        send(a.address, client, bob, subject)
        assert wait_until(lambda: subject in imap_subjects(a.address, client, bob, bob_pw), 20)
        assert f"connect from unknown[{client}]" in b.layout.log_file("postfix").read_text()
        print(f"\nnode A out of service {out_after:.1f} s after dovecot was killed")
    finally:
        for node in (a, b):
            node.stop_agent()
        a.rupost("components", "start")
        assert wait_until(lambda: health(a) == 200, 20)
