"""The production server: `rupost panel serve` (gunicorn) over TLS with the control_panel certificate."""
from __future__ import annotations

import http.client
import re
import socket
import ssl

from cryptography import x509
from sqlalchemy import select

from rupost.db.models import Certificate

from .conftest import PASSWORD


def _context():
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the builtin certificate is self-signed; we compare it to the database
    return ctx


def test_serves_https_with_the_control_panel_certificate(node, served):
    with socket.create_connection(("127.0.0.1", served), timeout=10) as raw:
        with _context().wrap_socket(raw, server_hostname="localhost") as tls:
            der = tls.getpeercert(binary_form=True)
            assert tls.version() in ("TLSv1.2", "TLSv1.3")
    with node.app.dbs.session("main") as s:
        pem = s.scalar(select(Certificate.cert_pem).where(Certificate.name == "rupost-control-panel-builtin"))
    stored = x509.load_pem_x509_certificate(pem.encode())
    assert x509.load_der_x509_certificate(der) == stored
    for version, cipher in ((ssl.TLSVersion.TLSv1_2, "ECDHE"), (ssl.TLSVersion.TLSv1_3, "TLS_")):
        ctx = _context()
        ctx.minimum_version = ctx.maximum_version = version
        with socket.create_connection(("127.0.0.1", served), timeout=10) as raw:
            with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
                assert tls.cipher()[0].startswith(cipher) or cipher in tls.cipher()[0], tls.cipher()
    key = node.root / "run" / "rupost" / "panel" / "panel.key"
    assert oct(key.stat().st_mode & 0o777) == "0o600"


def test_plain_http_is_not_served(served):
    conn = http.client.HTTPConnection("127.0.0.1", served, timeout=10)
    try:
        conn.request("GET", "/login")
        status = conn.getresponse().status
    except (http.client.HTTPException, OSError):
        return  # the TLS listener drops a plain-text request
    assert status >= 400


def test_login_over_https_through_gunicorn(node, served, admin_factory):
    login = admin_factory("readonly")

    def request(method, path, body=None, cookie=None):
        conn = http.client.HTTPSConnection("127.0.0.1", served, timeout=20, context=_context())
        headers = {"Content-Type": "application/x-www-form-urlencoded"} if body else {}
        if cookie:
            headers["Cookie"] = cookie
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        return response, response.read().decode()

    response, page = request("GET", "/login")
    assert response.status == 200 and "RuPost" in page
    cookie = response.getheader("Set-Cookie").split(";")[0]
    assert "Secure" in response.getheader("Set-Cookie")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    from urllib.parse import urlencode

    response, _ = request("POST", "/login", urlencode({"csrf_token": token, "login": login, "password": PASSWORD}),
                          cookie)
    assert response.status == 302
    cookie = response.getheader("Set-Cookie").split(";")[0]
    for _ in range(2):  # both workers accept the session (one signing key for the installation)
        response, page = request("GET", "/", cookie=cookie)
        assert response.status == 200 and login in page


def test_panel_process_for_the_agent_starts_restarts_and_stops(node):
    import os
    import signal
    import time

    from rupost.panel.server import PanelProcess
    from support.instance import free_ports

    port = free_ports(1)[0]
    panel = PanelProcess(node.root, bind=f"127.0.0.1:{port}", backoff=0)

    def answers() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as raw:
                with _context().wrap_socket(raw, server_hostname="localhost"):
                    return True
        except OSError:
            return False

    def wait(predicate, seconds=60):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not predicate():
            time.sleep(0.2)
        return predicate()

    try:
        assert panel.ensure_running()
        assert wait(answers)
        first = panel.proc.pid
        os.killpg(first, signal.SIGKILL)  # the panel died: the agent's next check starts it again
        panel.proc.wait()
        assert panel.ensure_running() and panel.proc.pid != first
        assert wait(answers)
    finally:
        panel.stop()
    assert panel.proc.poll() is not None
    assert wait(lambda: not answers(), 20)
