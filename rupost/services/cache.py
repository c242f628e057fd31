"""The daemons' caches of accounts, and keeping them honest on every node.

dovecot caches authentication and userdb answers (``auth_cache_ttl``, 5 minutes in the
builtin template) and SOGo caches logins, users and ACLs in the node's memcached. After a
password change, a disable or a removal, the old answer must not keep working from a
cache: not on this node, not on any other node of the cluster.

The node where the change is made flushes its own caches at once (``accounts_changed``,
``sogo_changed``), then sends a NOTIFY on ``CHANNEL`` (rupost database) that every node's
agent (``rupost run``) listens to; each agent flushes its node's caches when one arrives,
and flushes everything whenever it (re)connects to listen, since it may have missed some
meanwhile. A node without a running agent falls back to the caches' own lifetimes.

postfix's hottest lookups (hosted domain, port 25's recipient access, alias expansion) are
answered from the same memcached before PostgreSQL (the builtin template's
``lookup_cache``). Every change to the rows they read is announced by the data database
itself (``LOOKUPS_CHANNEL``, a trigger per table, data migration 0008), whoever made it;
the process that committed it empties the local memcached at once (``lookups_changed``,
after every data session that wrote), and each node's agent runs a ``LookupCacheGuard``
that empties its node's memcached when an announcement arrives, and once more
``SECOND_FLUSH`` seconds later: a postfix process that read the old row just before the
commit may store that answer just after the first flush.
"""
from __future__ import annotations

import json
import logging
import subprocess
import threading
import time
from typing import TYPE_CHECKING

from sqlalchemy import text

if TYPE_CHECKING:
    from collections.abc import Callable

    from . import Runtime, Services

CHANNEL = "rupost_caches"
LOOKUPS_CHANNEL = "rupost_lookups"  # in the data database (data migration 0008_data_lookup_changes)
SECOND_FLUSH = 2.0

log = logging.getLogger("rupost.cache")


def flush_memcached(app: Services | Runtime) -> bool:
    """Empty the node's memcached instances: SOGo's cached logins, users and ACLs (TCP), and
    postfix's cached lookups (component lookup_cache, a Unix socket). SOGo caches successful
    logins; after a password change or a disable the old password would keep working until
    the entry expires. Sessions live in the database, so flushing logs nobody out. Best effort: a stopped memcached has
    nothing cached."""
    from adapters.lookup_cache import socket_path

    sogo = _flush(("127.0.0.1", app.config.port("memcached")))
    lookups = _flush(str(socket_path(app.layout)))  # postfix's own (component lookup_cache)
    return sogo or lookups


def _flush(server: tuple[str, int] | str) -> bool:
    from pymemcache.client.base import Client

    try:
        client = Client(server, connect_timeout=1, timeout=2)
        try:
            return bool(client.flush_all(noreply=False))
        finally:
            client.close()
    except Exception:  # connection errors and pymemcache's own protocol errors alike
        return False


def flush_dovecot_auth_cache(app: Services) -> bool:
    """Drop every answer dovecot has cached. All of them, not the changed user's: dovecot
    2.3's `auth cache flush USER` leaves the userdb entries (a USER request for a mailbox
    disabled meanwhile was still answered from the cache), and refilling the cache costs one
    SQL query per active account. Best effort: a node that is not deployed or whose dovecot
    is stopped has nothing cached."""
    conf = app.layout.current / "dovecot" / "dovecot.conf"
    if not conf.exists():
        return False
    try:
        done = subprocess.run(["doveadm", "-c", str(conf), "auth", "cache", "flush"],
                              capture_output=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def flush_here(app: Services, dovecot: bool = True) -> None:
    if dovecot:
        flush_dovecot_auth_cache(app)
    flush_memcached(app)


def accounts_changed(app: Services) -> None:
    """A password, an enabled flag, a quota or the existence of an account changed: flush
    dovecot's and SOGo's caches here and ask every other node to do the same."""
    flush_here(app, dovecot=True)
    _notify(app, dovecot=True)


def sogo_changed(app: Services) -> None:
    """Something SOGo caches in memcached changed (an ACL, a resource's settings): flush it
    on every node."""
    flush_memcached(app)
    _notify(app, dovecot=False)


def lookups_changed(app: Services | Runtime) -> None:
    """Rows postfix's cached lookups read were committed here: empty this node's memcached
    now (the other nodes' agents hear it from the database's own announcement)."""
    flush_memcached(app)


def _notify(app: Services, dovecot: bool) -> None:
    payload = json.dumps({"node": app.config.node_name, "dovecot": dovecot})
    try:
        with app.dbs.engine("main").connect() as conn:
            conn.execute(text("SELECT pg_notify(:c, :p)"), {"c": CHANNEL, "p": payload})
            conn.commit()
    except Exception as exc:  # noqa: BLE001 - the change is made; the other nodes' caches expire on their own
        log.warning("could not ask the other nodes to flush their caches: %s", exc)


def apply_notification(app: Services, payload: str) -> None:
    """An agent's side of ``CHANNEL``: flush this node's caches as another node asked (a
    node's own notifications were applied when it sent them)."""
    try:
        request = json.loads(payload)
        if not isinstance(request, dict):
            raise ValueError(payload)
    except ValueError:
        request = {}  # unreadable: flushing everything is always safe
    if request.get("node") != app.config.node_name:
        flush_here(app, dovecot=bool(request.get("dovecot", True)))


class LookupCacheGuard:
    """The agent's side of ``LOOKUPS_CHANNEL``: a thread that LISTENs on the data database and
    empties this node's memcached when rows postfix's cached lookups read change anywhere,
    then once more ``second_flush`` seconds after the last change (the race in the module
    docstring). It also empties it whenever it (re)connects: announcements sent while it was
    not listening are lost."""

    def __init__(self, app: Services, second_flush: float = SECOND_FLUSH, retry: float = 2.0,
                 report: Callable[[str, str], None] | None = None) -> None:
        self.app = app
        self.second_flush, self.retry = second_flush, retry
        # report(state, message): the agent's monitor log; else this module's logger
        self.report = report or (lambda state, message: log.warning("lookup cache %s: %s", state, message))
        self._stop = threading.Event()
        self.flushes = 0
        self.listening = False
        self._lost = False  # reported as lost, not yet as back

    def start(self) -> LookupCacheGuard:
        threading.Thread(target=self._run, name="lookup-cache-guard", daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _flush(self) -> None:
        flush_memcached(self.app)
        self.flushes += 1

    def _run(self) -> None:
        import psycopg

        while not self._stop.is_set():
            try:
                with self.app.dbs.listener("data", LOOKUPS_CHANNEL) as conn:
                    self._flush()
                    if self._lost:
                        self.report("ok", "listening to the database's announcements again")
                    self.listening, self._lost = True, False
                    again_at = None
                    while not self._stop.is_set():
                        wait = 1.0 if again_at is None else max(0.0, again_at - time.monotonic())
                        if any(True for _ in conn.notifies(timeout=wait, stop_after=1)):
                            self._flush()
                            again_at = time.monotonic() + self.second_flush
                        elif again_at is not None and time.monotonic() >= again_at:
                            self._flush()
                            again_at = None
            except psycopg.Error as exc:
                if self.listening:
                    self._lost = True
                    self.report("error", f"lost the database's announcements ({str(exc).strip()}); cached "
                                         "lookups changed elsewhere now live until their ttl")
                self.listening = False
                self._stop.wait(self.retry)
        self.listening = False
