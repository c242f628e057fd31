"""Local channels a local user cannot use (issue 26): postfix's lookup cache and the policy
server's postfix socket are out of reach of `nobody`, and the policy server's report endpoints
refuse a request without the node's secret header, while the daemons go on using all three.
The unprivileged side runs as `nobody` (setpriv, no supplementary groups) with the system
Python and its standard library only."""
from __future__ import annotations

import http.client
import json
import subprocess
import uuid

import pytest
from pymemcache.client.base import Client

from adapters.lookup_cache import socket_path
from adapters.policy import API_HEADER, api_header_file, read_api_secret
from mailclients import smtp

PYTHON = "/usr/bin/python3"


def as_nobody(code: str) -> str:
    """Run `code` as nobody:nogroup; its last line of output."""
    result = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--",
                             PYTHON, "-c", code], capture_output=True, text=True, timeout=60, cwd="/")
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


UNIX_CONNECT = """
import socket, sys
s = socket.socket(socket.AF_UNIX)
try:
    s.connect(sys.argv[1] if len(sys.argv) > 1 else {path!r})
except PermissionError:
    print("denied"); sys.exit(0)
s.sendall({payload!r})
print("connected", s.recv(200))
"""


def test_nobody_cannot_write_postfix_lookup_cache_while_postfix_uses_it(node, mailbox):
    address, _ = mailbox("cachevictim")
    key = f"rupost:aliases:{address}"
    forged = f"set {key} 0 60 18\r\nattacker@evil.test\r\n".encode()
    assert as_nobody(UNIX_CONNECT.format(path=str(socket_path(node.layout)), payload=forged)) == "denied"
    # postfix reaches it: a message's lookups leave their answers there (root reads them)
    with smtp(node.ports["smtp"]) as client:
        client.mail("someone@example.org")
        assert client.rcpt(address)[0] == 250
    cache = Client(str(socket_path(node.layout)), connect_timeout=2, timeout=2)
    try:
        assert cache.get(key) != b"attacker@evil.test"
        assert cache.stats()[b"cmd_set"] > 0
    finally:
        cache.close()
    # the socket's directory is the gate: memcache's, group postfix, 0750; no TCP listener
    info = socket_path(node.layout).parent.stat()
    assert oct(info.st_mode & 0o777) == "0o750"
    conf = (node.layout.current / "lookup_cache" / "memcached.conf").read_text()
    assert "-s " in conf and "-l " not in conf and "-p " not in conf


def test_nobody_cannot_reach_the_policy_servers_postfix_socket(node):
    path = node.layout.run_dir("policy") / "postfix-policy.sock"
    request = b"request=smtpd_access_policy\nprotocol_state=DATA\nsasl_username=x@y\n\n"
    assert as_nobody(UNIX_CONNECT.format(path=str(path), payload=request)) == "denied"
    info = path.stat()
    assert oct(info.st_mode & 0o777) == "0o660"


HTTP_POST = """
import http.client, json
conn = http.client.HTTPConnection("127.0.0.1", {port}, timeout=10)
conn.request("POST", {path!r}, {body!r}, {{"Content-Type": {ctype!r}}})
print(conn.getresponse().status)
"""


def _uses_of(node, target: str) -> int:
    from sqlalchemy import func, select

    from rupost.db.resource_models import ImpersonationUse

    with node.app.dbs.session("logs") as s:
        return s.scalar(select(func.count()).select_from(ImpersonationUse).where(ImpersonationUse.target == target))


@pytest.mark.parametrize("path,body,ctype,served", [
    ("/dovecot?command=report", json.dumps({"login": "{account}", "remote": "198.51.100.77", "protocol": "imap",
                                            "success": False}), "application/json", 200),
    ("/impersonation", "account=imp&target={account}&ip=198.51.100.77&mechanism=PLAIN&protocol=imap",
     "application/x-www-form-urlencoded", 204),
])
def test_nobody_cannot_call_the_policy_servers_report_endpoints(node, path, body, ctype, served):
    account = f"forged-{uuid.uuid4().hex[:8]}@example.test"
    body = body.replace("{account}", account)
    port = node.ports["auth_policy"]
    for _ in range(3):
        assert as_nobody(HTTP_POST.format(port=port, path=path, body=body, ctype=ctype)) == "403"
    assert as_nobody(f"""
try:
    open({str(api_header_file(node.layout))!r}).read(); print("read")
except PermissionError:
    print("denied")
""") == "denied"
    assert account not in {b["value"] for b in node.app.blocklist.list()}
    assert _uses_of(node, account) == 0
    # the same request with the node's secret is served: the header is the only difference
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("POST", path, body, {"Content-Type": ctype, API_HEADER: read_api_secret(node.layout)})
        assert conn.getresponse().status == served
    finally:
        conn.close()
    assert _uses_of(node, account) == (1 if path == "/impersonation" else 0)
