"""Mail queues in a cluster: ownership of a node's queue and evacuation of a failed node's.

Each node's postfix queue lives on shared storage. Ownership is a Postgres advisory
lock per node: the node itself holds it *shared* while its postfix runs (its agent
for as long as the mail unit is up; a deploy or a manual start while it starts
postfix), and an evacuator takes it *exclusive*. So an evacuator never works on a
queue whose postfix runs, two evacuators never work on the same queue, and a failed
node that comes back waits until the evacuation is over.

Evacuation uses postfix's own machinery: a secondary postfix instance is started on
the healthy node over the failed node's queue directory, with every recipient routed
to this node's evacuation listener; its queue manager delivers each message and
removes it from the queue only after this node answered 250. An evacuator killed
half-way leaves the undelivered messages where they were for the next run.
"""
from __future__ import annotations

import contextlib
import http.client
import os
import pwd
import shutil
import subprocess
import tempfile
import time
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, text

from adapters import postfix
from rupost.cluster.evacuation_proxy import HEADER, EvacuationProxy, HandOverJournal

from ..db import endpoints
from ..db.models import EvacuatedMessage, Evacuation, Setting, utcnow
from ..errors import ConflictError, RuPostError

if TYPE_CHECKING:
    from collections.abc import Iterator

    from sqlalchemy import Connection

    from ..services import Services

EVACUATION_SECRET = "evacuation_secret"
LOCK_CLASS = 0x52505155  # "RPQU": advisory-lock namespace of queue ownership
QUEUE_SUBDIRS = ("maildrop", "incoming", "active", "deferred", "hold")


def lock_key(node_name: str) -> int:
    return zlib.crc32(node_name.encode()) - 2 ** 31


def _end_session(conn: Connection) -> None:
    """Release a lock-holding connection's advisory locks by ending its database session: a
    pooled connection merely closed goes back to the pool with a rollback, and session-level
    advisory locks survive a rollback (the queue would stay owned by an idle pooled session)."""
    conn.invalidate()
    conn.close()


def count_queue(queue_dir: Path) -> int:
    total = 0
    for sub in QUEUE_SUBDIRS:
        for _, _, files in os.walk(queue_dir / sub):
            total += len(files)
    return total


class EvacuationService:
    def __init__(self, app: Services) -> None:
        self.app = app

    # ------------------------------------------------------------ ownership
    @contextlib.contextmanager
    def ownership(self, node_name: str | None = None, wait: float = 0.0) -> Iterator[Connection]:
        """Hold this node's queue (shared lock) for the duration of the block."""
        name = node_name or self.app.config.node_name
        conn = self.app.dbs.engine("main").connect()
        try:
            deadline = time.monotonic() + wait
            while not conn.execute(text("SELECT pg_try_advisory_lock_shared(:a, :b)"),
                                   {"a": LOCK_CLASS, "b": lock_key(name)}).scalar():
                if time.monotonic() >= deadline:
                    conn.rollback()
                    raise ConflictError(f"the mail queue of node {name} is being evacuated by another node; "
                                        "its mail components start when the evacuation is over")
                time.sleep(0.5)
            conn.commit()
            yield conn
        finally:
            _end_session(conn)

    def hold(self) -> tuple[contextlib.AbstractContextManager[Connection], Connection]:
        """Take this node's queue for a long-lived owner (the node agent); returns the
        connection holding the lock, or raises ConflictError while an evacuation runs."""
        cm = self.ownership()
        conn = cm.__enter__()
        return cm, conn

    @staticmethod
    def still_held(conn: Connection) -> bool:
        """The lock hold() took is a property of its database session: a PostgreSQL restart or
        a failover ends the session and the lock with it, silently (the client learns only at
        its next query). True while this session still holds a granted advisory lock (the
        session exists for this one lock); False when the session or the lock is gone."""
        from sqlalchemy.exc import SQLAlchemyError

        try:
            held = conn.execute(text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                                     "AND pid = pg_backend_pid() AND classid = (:a)::bigint::oid AND granted"),
                                {"a": LOCK_CLASS}).scalar()
            conn.commit()
        except SQLAlchemyError:
            return False
        return bool(held)

    # ------------------------------------------------------------ evacuation
    def candidates(self) -> list[dict]:
        """Other nodes that look failed and have mail in their queue."""
        out = []
        for node in self.app.nodes.list():
            if node["name"] == self.app.config.node_name or not node["queue_directory"]:
                continue
            queued = count_queue(Path(node["queue_directory"]))
            if queued == 0:
                continue
            failed = (node["state"] == "out_of_service" or not self.app.nodes.alive(node)
                      or not self._healthy(node["address"]))
            if failed:
                out.append({**node, "queued": queued})
        return out

    def _healthy(self, address: str) -> bool:
        conn = http.client.HTTPConnection(address, self.app.config.port("health"), timeout=3)
        try:
            conn.request("GET", "/health")
            return conn.getresponse().status == 200
        except OSError:
            return False
        finally:
            conn.close()

    def evacuate(self, only: str | None = None, timeout: float = 600.0) -> list[dict]:
        reports = []
        for node in self.candidates():
            if only and node["name"] != only:
                continue
            reports.append(self._evacuate_node(node, timeout))
        return reports

    def _evacuate_node(self, node: dict, timeout: float) -> dict:
        name, queue_dir = node["name"], Path(node["queue_directory"])
        conn = self.app.dbs.engine("main").connect()
        try:
            got = conn.execute(text("SELECT pg_try_advisory_lock(:a, :b)"),
                               {"a": LOCK_CLASS, "b": lock_key(name)}).scalar()
            conn.commit()
            if not got:
                return {"node": name, "result": "skipped",
                        "message": "its queue is owned by its node or another evacuator"}
            found = count_queue(queue_dir)
            record = self._journal(name, found)
            try:
                remaining = self._run_instance(name, queue_dir, timeout)
                result = "done" if remaining == 0 else "incomplete"
                message = f"{found - remaining} of {found} delivered through {self.app.config.node_name}"
                earlier = self.last_hand_over
                if earlier["already_delivered"] or earlier["cut_off"]:
                    message += (f"; of these, {earlier['already_delivered']} had been delivered by an earlier run "
                                f"and {earlier['cut_off']} had their hand-over cut off "
                                f"({earlier['found_in_mailbox']} recipients already had them)")
            except RuPostError as exc:
                remaining, result, message = count_queue(queue_dir), "failed", str(exc)
            self._finish(record, found - remaining, remaining, result, message)
            self.app.audit.record("mailqueue.evacuate", name, found=found, remaining=remaining, result=result)
            return {"node": name, "found": found, "delivered": found - remaining, "remaining": remaining,
                    "result": result, "message": message, "earlier_runs": dict(getattr(self, "last_hand_over", {}))}
        finally:
            _end_session(conn)

    def _journal(self, failed: str, found: int) -> int:
        with self.app.dbs.session("logs") as s:
            # we hold the node's lock: a run still marked running was interrupted (killed)
            from sqlalchemy import update

            s.execute(update(Evacuation).where(Evacuation.failed_node == failed, Evacuation.result == "running")
                      .values(result="interrupted", finished_at=utcnow(),
                              message="the evacuator stopped before finishing; the next run took over"))
            row = Evacuation(failed_node=failed, by_node=self.app.config.node_name, found=found, delivered=0,
                             remaining=found, result="running", message="")
            s.add(row)
            s.flush()
            return row.id

    def _finish(self, record_id: int, delivered: int, remaining: int, result: str, message: str) -> None:
        with self.app.dbs.session("logs") as s:
            row: Evacuation = s.get(Evacuation, record_id)  # type: ignore[assignment]
            row.delivered, row.remaining, row.result, row.message = delivered, remaining, result, message
            row.finished_at = utcnow()

    def evacuation_secret(self) -> bytes:
        """The cluster's key for evacuation ids, created by the first evacuation ever."""
        from sqlalchemy.dialects.postgresql import insert

        with self.app.dbs.session("main") as s:
            s.execute(insert(Setting).values(key=EVACUATION_SECRET, value=os.urandom(32).hex())
                      .on_conflict_do_nothing(index_elements=["key"]))
        with self.app.dbs.session("main") as s:
            return bytes.fromhex(s.get(Setting, EVACUATION_SECRET).value)  # type: ignore[union-attr, arg-type]

    def _run_instance(self, failed_node: str, queue_dir: Path, timeout: float) -> int:
        """A secondary postfix over the failed node's queue, relaying everything here
        through the evacuation relay (see rupost/cluster/evacuation_proxy.py)."""
        listener = ("127.0.0.1", self.app.config.port("postfix_evacuation"))
        self._settle_own_queue()
        journal = PostgresHandOverJournal(self.app, failed_node)
        try:
            with EvacuationProxy(listener, failed_node, self.evacuation_secret(), journal) as relay:
                return self._run_postfix(queue_dir, relay.port, timeout)
        finally:
            self.last_hand_over = journal.counts

    def _settle_own_queue(self, limit: float = 120.0) -> None:
        """Wait (bounded) until the mail this node's postfix was delivering when the run
        began is out of its incoming and active queues. A killed evacuator may have
        handed messages over just before it died; if their second copy reached the
        mailbox while the first was still being delivered, the two deliveries would run
        side by side and the Sieve duplicate check, which records an id when a delivery
        completes, could not see the other one."""
        own = Path(self.app.layout.postfix_queue)

        def in_flight() -> set[str]:
            names = set()
            for sub in ("incoming", "active"):
                for _, _, files in os.walk(own / sub):
                    names.update(files)
            return names

        waiting = in_flight()
        deadline = time.monotonic() + limit
        while waiting and time.monotonic() < deadline:
            time.sleep(0.5)
            waiting &= in_flight()

    def _run_postfix(self, queue_dir: Path, relay_port: int, timeout: float) -> int:
        """Empties the failed node's queue with a postfix instance of its own, which hands every
        message to the relay on `relay_port`; returns the messages still queued after `timeout`."""
        work = self._write_evacuator(queue_dir, relay_port)
        conf, logs = work / "conf", self.app.layout.logs
        master = None
        try:
            self._check_evacuator(conf, queue_dir)
            master = self._start_master(conf)
            self._confirm_started(master, logs)
            return self._drain_queue(conf, queue_dir, timeout)
        finally:
            self._stop_master(master)
            shutil.rmtree(work, ignore_errors=True)

    def _write_evacuator(self, queue_dir: Path, relay_port: int) -> Path:
        """A work directory with the instance's configuration (conf/) and data directory (data/)."""
        work = Path(tempfile.mkdtemp(prefix="evac-", dir=self.app.layout.state))
        os.chmod(work, 0o755)  # postfix's processes run as postfix and must reach data/
        conf, data = work / "conf", work / "data"
        conf.mkdir()
        data.mkdir()
        pf = pwd.getpwnam("postfix")
        os.chown(data, pf.pw_uid, pf.pw_gid)
        for name, content in postfix.render_evacuator(queue_dir, data, self.app.layout.logs, relay_port).items():
            (conf / name).write_text(content)
        return work

    @staticmethod
    def _check_evacuator(conf: Path, queue_dir: Path) -> None:
        # postfix's own guard: a master still alive on the failed node locks its queue
        if subprocess.run(["/usr/lib/postfix/sbin/master", "-c", str(conf), "-t"],
                          capture_output=True).returncode != 0:
            raise RuPostError("the failed node's postfix master still holds its queue "
                              f"({queue_dir}/pid/master.pid): not evacuating")
        proc = subprocess.run(["postfix", "-c", str(conf), "check"], capture_output=True, text=True, timeout=60)
        if proc.returncode != 0:
            raise RuPostError(f"evacuator instance: check failed: {(proc.stderr or proc.stdout).strip()}")

    @staticmethod
    def _start_master(conf: Path) -> subprocess.Popen:
        # postfix's master in the foreground, bound to this process: if the evacuator
        # dies, so does the instance, and the queue is never worked on by an orphan
        # while a later evacuator (which then gets the lock) works on it too
        return subprocess.Popen(["/usr/lib/postfix/sbin/master", "-c", str(conf), "-d"],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                preexec_fn=_die_with_parent)

    @staticmethod
    def _confirm_started(master: subprocess.Popen, logs: Path) -> None:
        time.sleep(1)
        if master.poll() is not None:
            raise RuPostError(f"evacuator instance: postfix master exited with {master.returncode} "
                              f"(see {logs}/postfix-evacuator.log)")

    @staticmethod
    def _drain_queue(conf: Path, queue_dir: Path, timeout: float) -> int:
        """Waits (up to `timeout`) for the queue to empty, flushing it again whenever it has not
        shrunk for 30 s; returns the messages left."""
        # deferred mail waits for its retry time: make it eligible now
        subprocess.run(["postqueue", "-c", str(conf), "-f"], capture_output=True, timeout=60)
        deadline = time.monotonic() + timeout
        last, stalled_since = count_queue(queue_dir), time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(1)
            now = count_queue(queue_dir)
            if now == 0:
                break
            if now != last:
                last, stalled_since = now, time.monotonic()
            elif time.monotonic() - stalled_since > 30:
                subprocess.run(["postqueue", "-c", str(conf), "-f"], capture_output=True, timeout=60)
                stalled_since = time.monotonic()
        return count_queue(queue_dir)

    @staticmethod
    def _stop_master(master: subprocess.Popen | None) -> None:
        if master is not None and master.poll() is None:
            master.terminate()  # master stops its children and exits
            try:
                master.wait(30)
            except subprocess.TimeoutExpired:
                master.kill()


class PostgresHandOverJournal(HandOverJournal):
    """The evacuation relay's journal in rupost_logs.evacuated_messages (shared by all
    nodes, so a run on another node resumes where a killed one stopped)."""

    def __init__(self, app: Services, failed_node: str) -> None:
        self.app, self.failed_node = app, failed_node
        # what this run found of earlier runs' hand-overs (for the evacuation report)
        self.counts = {"already_delivered": 0, "cut_off": 0, "found_in_mailbox": 0}
        # Earlier runs' entries, read once: while this run holds the failed node's queue
        # nobody else writes entries for it, so one query replaces one per message.
        with self.app.dbs.session("logs") as s:
            self.earlier = dict(s.execute(select(EvacuatedMessage.evacuation_id, EvacuatedMessage.state)
                                          .where(EvacuatedMessage.failed_node == failed_node)).all())

    def state(self, evacuation_id: str) -> str | None:
        state = self.earlier.get(evacuation_id)
        if state == "delivered":
            self.counts["already_delivered"] += 1
        elif state == "prepared":
            self.counts["cut_off"] += 1
        return state

    # On a single server, journal writes commit without waiting for the WAL flush: an entry
    # lost in a PostgreSQL crash only means a later run checks the mailboxes, or sends again
    # (a duplicate, never a loss); it saves an fsync per write on the hot path. With a highly
    # available database that would also skip the synchronous standby: a failover would then
    # lose every entry written in the last moments before it ('delivered' ones included, so
    # the next run sends those messages again). There the cluster's setting (on) applies.
    def _write(self, statement: str, params: dict[str, Any]) -> None:
        with self.app.dbs.engine("logs").begin() as conn:
            if not endpoints.is_ha(self.app.config.database):
                conn.execute(text("SET LOCAL synchronous_commit = off"))
            conn.execute(text(statement), params)

    def prepare(self, evacuation_id: str, queue_id: str) -> None:
        self._write("INSERT INTO evacuated_messages (evacuation_id, failed_node, queue_id, state, by_node, reply) "
                    "VALUES (:id, :node, :qid, 'prepared', :by, '') ON CONFLICT (evacuation_id) "
                    "DO UPDATE SET state = 'prepared', by_node = EXCLUDED.by_node, updated_at = now()",
                    {"id": evacuation_id, "node": self.failed_node, "qid": queue_id,
                     "by": self.app.config.node_name})

    def delivered(self, evacuation_id: str, reply: str) -> None:
        self._write("UPDATE evacuated_messages SET state = 'delivered', reply = :reply, updated_at = now() "
                    "WHERE evacuation_id = :id", {"id": evacuation_id, "reply": reply[:500]})

    def forget(self, evacuation_id: str) -> None:
        self._write("DELETE FROM evacuated_messages WHERE evacuation_id = :id AND state = 'prepared'",
                    {"id": evacuation_id})

    def in_mailbox(self, recipient: str, evacuation_id: str) -> bool:
        """Whether the recipient's mailbox (any folder) holds the message, searched by
        its evacuation header with the local dovecot instance."""
        conf = self.app.layout.current / "dovecot" / "dovecot.conf"
        try:
            proc = subprocess.run(["doveadm", "-c", str(conf), "search", "-u", recipient, "mailbox", "*",
                                   "HEADER", HEADER, evacuation_id], capture_output=True, text=True, timeout=120)
        except (OSError, subprocess.TimeoutExpired):
            return False
        found = proc.returncode == 0 and bool(proc.stdout.strip())
        self.counts["found_in_mailbox"] += found
        return found


def _die_with_parent() -> None:
    import ctypes
    import signal

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
