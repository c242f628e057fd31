"""Fixtures: a real PostgreSQL and a real RuPost node (all daemons) under /tmp.

Session-scoped because starting the stack takes seconds; every test that
changes data creates its own domain, so tests do not depend on each other.
"""
from __future__ import annotations

import os
import shutil
import signal
import tempfile
import uuid
from pathlib import Path

import pytest

from rupost.config import DatabaseSettings
from support.instance import Instance, free_ports
from support.postgres import TempPostgres

DB_PASSWORD = "test-db-secret:/@%"  # characters that need quoting in every file format


def _interrupted(signum, frame):
    """A SIGTERM (a CI timeout, a `kill`) ends the run as Ctrl-C does: pytest then tears the
    fixtures down, and no daemon, namespace or bridge of the test root outlives the run."""
    raise KeyboardInterrupt(f"signal {signum}")


signal.signal(signal.SIGTERM, _interrupted)


@pytest.fixture(scope="session", autouse=True)
def unreachable_route():
    """Mail to mailclients.UNREACHABLE is refused by this machine's own routing table, at
    once and whatever its network: the queue tests rely on it being deferred."""
    import subprocess

    from mailclients import UNREACHABLE_NET

    added = subprocess.run(["ip", "route", "add", "unreachable", UNREACHABLE_NET], capture_output=True).returncode == 0
    yield
    if added:
        subprocess.run(["ip", "route", "del", "unreachable", UNREACHABLE_NET], capture_output=True)


@pytest.fixture(scope="session")
def workdir():
    # short path: dovecot's unix sockets must fit in 108 bytes
    base = Path(tempfile.mkdtemp(prefix="rpt", dir="/tmp"))
    os.chmod(base, 0o755)
    yield base
    if os.environ.get("RUPOST_KEEP_TEST_ROOT"):  # for a post-mortem: logs of every daemon stay
        print(f"\ntest root kept: {base}")
        return
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def samba(workdir):
    """A real Samba AD DC in its own network namespace (tests/support/samba_ad.py), shared by
    every module that uses it (LDAP in tests/test_samba_ad.py, Kerberos in
    tests/test_kerberos_sso.py): one start per session."""
    from support import samba_ad

    dc = samba_ad.SambaDC(workdir / "samba-dc").setup()
    yield dc
    dc.destroy()


@pytest.fixture(scope="session")
def pg(workdir):
    server = TempPostgres(workdir / "pg", free_ports(1)[0]).start()
    yield server
    server.destroy()


@pytest.fixture(scope="session")
def node(workdir, pg):
    """A deployed node: wizard (creating role and databases on the local server) + deploy."""
    inst = Instance(workdir / "node1", DatabaseSettings(host="127.0.0.1", port=pg.port, user="rupost",
                                                        password=DB_PASSWORD))
    inst.configure()
    inst.deploy()
    yield inst
    inst.stop()


@pytest.fixture
def domain(node):
    name = f"d{uuid.uuid4().hex[:10]}.test"
    node.app.domains.add(name)
    return name


@pytest.fixture
def mailbox(node, domain):
    """Factory: mailbox(local) -> (address, password)."""

    def make(local: str = "user", password: str | None = None, quota: str = "0"):
        password = password or f"pw-{uuid.uuid4().hex[:12]}"
        address = f"{local}@{domain}"
        node.app.mailboxes.add(address, password, quota)
        return address, password

    return make
