"""The daemons' caches of accounts, and keeping them honest on every node.

dovecot caches authentication and userdb answers (``auth_cache_ttl``, 5 minutes in the
builtin template) and SOGo caches logins, users and ACLs in the node's memcached. After a
password change, a disable or a removal, the old answer must not keep working from a
cache: not on this node, not on any other node of the cluster.

The node where the change is made flushes its own caches at once (``accounts_changed``,
``sogo_changed``), then sends a NOTIFY on ``CHANNEL`` (rupost database) that every node's
agent (``rupost run``) listens to; each agent flushes its node's caches when one arrives,
and when it (re)connects to listen if one was sent meanwhile (counted, below). A node
without a running agent falls back to the caches' own lifetimes.

postfix's hottest lookups (hosted domain, port 25's recipient access, alias expansion) are
answered from the same memcached before PostgreSQL (the builtin template's
``lookup_cache``). Every change to the rows they read is announced by the data database
itself (``LOOKUPS_CHANNEL``, a trigger per table, data migration 0008), whoever made it;
the process that committed it empties the local memcached at once (``lookups_changed``,
after a data session whose transaction the trigger marked: data migration 0015; a quota or
password change empties nothing), and each node's agent runs a ``LookupCacheGuard``
that empties its node's memcached when an announcement arrives, and once more
``SECOND_FLUSH`` seconds later: a postfix process that read the old row just before the
commit may store that answer just after the first flush.

Announcements sent while a listener was away are lost, but each one is also counted in the
database, in the writer's transaction (``announcement_serials``, main migration
0007_main_cache_serial and data migration 0010_data_lookup_serial). A listener that comes back
compares the count with the one it last flushed for and flushes only if it moved. After a
database restart nothing changed, so nothing is emptied: postfix keeps answering from
memcached, and dovecot from its auth cache, while their own connections to PostgreSQL recover
(issue 32: emptying them at the reconnect cost 62 s of 451 to known recipients and failed
IMAP logins). Back from an outage, the guard first makes postfix's and dovecot's own lookups answer again
(``lookup_probe.revive_lookups``), then flushes if something changed.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from typing import TYPE_CHECKING

from sqlalchemy import text

if TYPE_CHECKING:
    from collections.abc import Callable

    import psycopg

    from . import Runtime, Services

CHANNEL = "rupost_caches"
LOOKUPS_CHANNEL = "rupost_lookups"  # in the data database (data migration 0008_data_lookup_changes)
SECOND_FLUSH = 2.0
# how long a guard back from an outage waits for the daemons' lookups to answer before it
# goes on (empties memcached if something changed: a stale answer may refuse a new mailbox
# for good with a 550, which is worse than a 451 the sender retries)
RESYNC_PATIENCE = 30.0

log = logging.getLogger("rupost.cache")


def flush_sogo_cache(app: Services | Runtime) -> bool:
    """Empty SOGo's memcached (TCP): its cached logins, users and ACLs. SOGo caches
    successful logins; after a password change or a disable the old password would keep
    working until the entry expires. Sessions live in the database, so flushing logs nobody
    out. Best effort: a stopped memcached has nothing cached."""
    return _flush(("127.0.0.1", app.config.port("memcached")))


def flush_lookup_cache(app: Services | Runtime) -> bool:
    """Empty postfix's cached lookups (component lookup_cache, a Unix socket only postfix and
    root reach). Only for changes to the rows those lookups read: every answer has to come from
    PostgreSQL again afterwards."""
    from adapters.lookup_cache import socket_path

    return _flush(str(socket_path(app.layout)))


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
    from adapters.dovecot import flush_auth_cache

    try:
        flush_auth_cache(app.layout.run_dir("dovecot"))
    except OSError as exc:
        log.debug("dovecot's auth cache not flushed: %s", exc)
        return False
    return True


def flush_here(app: Services, dovecot: bool = True) -> None:
    """The account caches of this node: dovecot's auth cache and SOGo's memcached (postfix's
    lookup cache follows the lookup rows, not the accounts: ``lookups_changed``)."""
    if dovecot:
        flush_dovecot_auth_cache(app)
    flush_sogo_cache(app)


def accounts_changed(app: Services) -> None:
    """A password, an enabled flag, a quota or the existence of an account changed: flush
    dovecot's and SOGo's caches here and ask every other node to do the same."""
    flush_here(app, dovecot=True)
    _notify(app, dovecot=True)


def sogo_changed(app: Services) -> None:
    """Something SOGo caches in memcached changed (an ACL, a resource's settings): flush it
    on every node."""
    flush_sogo_cache(app)
    _notify(app, dovecot=False)


def lookups_changed(app: Services | Runtime) -> None:
    """Rows postfix's cached lookups read were committed here: empty this node's memcached
    now (the other nodes' agents hear it from the database's own announcement)."""
    flush_lookup_cache(app)


def announced(conn: psycopg.Connection, channel: str) -> int | None:
    """How many announcements on `channel` were committed so far (``announcement_serials``);
    None where the database does not count them (not migrated yet: a listener then flushes at
    every reconnect, as before)."""
    import psycopg

    try:
        row = conn.execute("SELECT serial FROM announcement_serials WHERE channel = %s", (channel,)).fetchone()
    except psycopg.errors.UndefinedTable:
        return None
    return None if row is None else int(row[0])


def _notify(app: Services, dovecot: bool) -> None:
    payload = json.dumps({"node": app.config.node_name, "dovecot": dovecot})
    try:
        with app.dbs.engine("main").connect() as conn:
            # counted in the same transaction: an agent that was not listening sees it on return
            conn.execute(text("UPDATE announcement_serials SET serial = serial + 1 WHERE channel = :c"),
                         {"c": CHANNEL})
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
    docstring). Back after losing the database, it first makes the daemons' lookups answer
    (``lookup_probe.revive_lookups``), then empties memcached only if a change was committed
    since its last flush (the announcements it may have missed, counted by the database), then
    calls `recovered` (the agent retries the mail deferred meanwhile)."""

    # retry: seconds between attempts to listen again; each costs one refused connection while
    # the database is away, and the sooner it is heard again the sooner the lookups revive
    def __init__(self, app: Services, second_flush: float = SECOND_FLUSH, retry: float = 0.5,
                 report: Callable[[str, str], None] | None = None,
                 recovered: Callable[[], object] | None = None, patience: float = RESYNC_PATIENCE) -> None:
        self.app = app
        self.second_flush, self.retry, self.patience = second_flush, retry, patience
        # report(state, message): the agent's monitor log; else this module's logger
        self.report = report or (lambda state, message: log.warning("lookup cache %s: %s", state, message))
        self.recovered = recovered
        self._stop = threading.Event()
        self.flushes = 0
        self.listening = False
        self._lost = False  # reported as lost, not yet as back
        self.flushed_serial: int | None = None  # the announcements counted at the last complete flush
        self.started = False  # connected at least once

    def start(self) -> LookupCacheGuard:
        threading.Thread(target=self._run, name="lookup-cache-guard", daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _flush(self) -> None:
        flush_lookup_cache(self.app)
        self.flushes += 1

    def _flush_counted(self, conn: psycopg.Connection) -> None:
        """Count first, then flush: every change the count includes was committed before the
        flush, so it is out of the cache."""
        serial = announced(conn, LOOKUPS_CHANNEL)
        self._flush()
        self.flushed_serial = serial

    def _resync(self, conn: psycopg.Connection) -> None:
        serial = announced(conn, LOOKUPS_CHANNEL)
        if self.started and serial is not None and serial == self.flushed_serial:
            return  # nothing committed while away: the cache is as true as when we left
        self._flush()
        self.flushed_serial = serial

    def _come_back(self) -> None:
        """Back after losing the database: the daemons' lookups answer before anything is
        emptied (memcached is what postfix lives on until they do), then the agent retries
        the mail deferred meanwhile."""
        from .lookup_probe import revive_lookups

        problems = revive_lookups(self.app, self.patience)
        if problems:
            self.report("error", f"listening again, but lookups still fail after {self.patience:.0f} s: "
                                 f"{'; '.join(problems)}")
        else:
            self.report("ok", "listening to the database's announcements again; lookups answer")

    def _run(self) -> None:
        import psycopg

        while not self._stop.is_set():
            try:
                with self.app.dbs.listener("data", LOOKUPS_CHANNEL) as conn:
                    back = self._lost
                    if back:
                        self._come_back()
                    self._resync(conn)
                    self.started, self.listening, self._lost = True, True, False
                    if back and self.recovered is not None:
                        self.recovered()
                    self._listen(conn)
            except psycopg.Error as exc:
                if self.listening:
                    self._lost = True
                    self.report("error", f"lost the database's announcements ({str(exc).strip()}); "
                                         "postfix answers from the cache meanwhile")
                self.listening = False
                self._stop.wait(self.retry)
        self.listening = False

    def _listen(self, conn: psycopg.Connection) -> None:
        again_at = None
        while not self._stop.is_set():
            wait = 1.0 if again_at is None else max(0.0, again_at - time.monotonic())
            if any(True for _ in conn.notifies(timeout=wait, stop_after=1)):
                self._flush()
                again_at = time.monotonic() + self.second_flush
            elif again_at is not None and time.monotonic() >= again_at:
                self._flush_counted(conn)
                again_at = None
