"""Panel fixtures: the Flask app over the session's node, administrators of each role,
test clients that log in over https (the session cookie is Secure) from their own address."""
from __future__ import annotations

import itertools
import os
import signal
import socket
import subprocess
import sys
import time
import uuid

import pytest

from rupost.panel import create_app
from support.instance import free_ports
from support.mit_kdc import MitKdc

from .api_support import ApiClient, make_token

_addresses = itertools.count(1)
PASSWORD = "panel-Secret-123"


@pytest.fixture(scope="session")
def panel_app(node):
    app = create_app(node.app, testing=True)
    return app


class PanelClient:
    """A browser-like test client: its own client address, CSRF token taken from the pages."""

    def __init__(self, app):
        n = next(_addresses)
        self.address = f"10.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}"
        self.http = app.test_client()
        self.http.environ_base["REMOTE_ADDR"] = self.address

    def get(self, path, **kw):
        return self.http.get(path, base_url="https://localhost", **kw)

    def token(self) -> str:
        if not self._has_token():
            self.get("/login", follow_redirects=True)  # a page with a form sets the session's token
        with self.http.session_transaction(base_url="https://localhost") as sess:
            return sess["csrf"]

    def _has_token(self) -> bool:
        with self.http.session_transaction(base_url="https://localhost") as sess:
            return bool(sess.get("csrf"))

    def post(self, path, data=None, csrf=True, **kw):
        data = dict(data or {})
        if csrf:
            data.setdefault("csrf_token", self.token())
        return self.http.post(path, data=data, base_url="https://localhost", **kw)

    def login(self, login, password=PASSWORD, totp=None, expect=302):
        data = {"login": login, "password": password}
        if totp:
            data["totp"] = totp
        response = self.post("/login", data)
        assert response.status_code == expect, response.get_data(as_text=True)[:2000]
        return response


@pytest.fixture
def client(panel_app):
    return PanelClient(panel_app)


@pytest.fixture
def make_client(panel_app):
    return lambda: PanelClient(panel_app)


@pytest.fixture
def admin_factory(node):
    """admin_factory(role, domains=()) -> login of a new administrator (password PASSWORD)."""
    created = []

    def make(role="superadmin", domains=()):
        login = f"{role[:5]}-{uuid.uuid4().hex[:8]}"
        node.app.admins.add(login, PASSWORD, role, list(domains))
        created.append(login)
        return login

    yield make
    for login in created:
        try:
            node.app.admins.remove(login)
        except Exception:
            pass


@pytest.fixture
def superadmin(admin_factory, make_client):
    c = make_client()
    c.login(admin_factory("superadmin"))
    return c


@pytest.fixture
def readonly(admin_factory, make_client):
    c = make_client()
    c.login(admin_factory("readonly"))
    return c


@pytest.fixture(scope="session")
def served(node):
    """`rupost panel serve` (gunicorn, TLS, 2 workers) on a free port against the test node."""
    port = free_ports(1)[0]
    log = open(node.root / "panel-serve.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "rupost.cli", "--root", str(node.root), "panel", "serve",
                             "--bind", f"127.0.0.1:{port}", "--workers", "2", "--access-log", "-"],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        for _ in range(300):
            if proc.poll() is not None:
                break
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                time.sleep(0.1)
        assert proc.poll() is None, (node.root / "panel-serve.log").read_text()
        yield port
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def audit_rows(node, action, target=None):
    """The audit records of one action (and target), oldest first."""
    from sqlalchemy import select

    from rupost.db.models import AuditRecord

    with node.app.dbs.session("logs") as s:
        query = select(AuditRecord).where(AuditRecord.action == action)
        if target is not None:
            query = query.where(AuditRecord.target == target)
        return list(s.scalars(query.order_by(AuditRecord.id)))


@pytest.fixture(scope="session")
def kdc(workdir):
    """A private MIT KDC on loopback for the keytab uploads of the API and the panel."""
    server = MitKdc(workdir / f"kdc-{uuid.uuid4().hex[:6]}", "RUPOST-PANEL.TEST").start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def keytab(kdc, node) -> bytes:
    """The mail service account's keytab: imap/ and smtp/ of the host clients are told (the
    host kerberos_set checks the principals against)."""
    host = node.app.settings.client_mail_host() or node.app.settings.mail_host()
    return kdc.service_keytab(kdc.root / "mail.keytab", [f"imap/{host}", f"smtp/{host}"])


@pytest.fixture
def ad_domain(node, domain):
    """An Active Directory LDAP domain bound to ``domain`` (never bound to: no server is asked)."""
    name = f"ad{uuid.uuid4().hex[:8]}"
    node.app.directories.add(name, "ad", ["ldaps://127.0.0.1:9"], "DC=corp,DC=test", "CN=rupost,DC=corp,DC=test",
                             "bind-Passw0rd", mail_domains=[domain], check=False)
    yield name
    node.app.directories.kerberos_off(name)  # the shared node's dovecot reads one keytab
    node.app.directories.remove(name, force=True)


@pytest.fixture
def api(panel_app):
    """A client of the REST API for a token's secret."""
    return lambda secret: ApiClient(panel_app, secret)


@pytest.fixture
def superapi(api, node):
    """A client of the REST API with a fresh superadmin token."""
    return api(make_token(node)[1])


@pytest.fixture
def settings_kept(node):
    """The session's node is shared: the mail host, the template's values and a pending SRS
    rotation a test stores are put back as they were."""
    from sqlalchemy import delete

    from rupost.db.models import Setting
    from rupost.services.settings import MAIL_HOST, TEMPLATE_PARAMETERS
    from rupost.services.srs import SRS_PENDING

    with node.app.dbs.session("main") as s:
        before = {k: (row.value if (row := s.get(Setting, k)) is not None else None)
                  for k in (MAIL_HOST, TEMPLATE_PARAMETERS, SRS_PENDING)}
    yield
    with node.app.dbs.session("main") as s:
        for key, value in before.items():
            s.execute(delete(Setting).where(Setting.key == key))
            if value is not None:
                s.add(Setting(key=key, value=value))


def text(response) -> str:
    return response.get_data(as_text=True)
