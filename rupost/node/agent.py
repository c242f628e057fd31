"""The node agent run by `rupost run`: heartbeats and supervision of the components.

The mail components run as one unit (guide §2.3): when one of them is down the
agent stops all of them, marks the node out of service, and after a hold-down
starts them again; the node returns to service only when every probe passes.
"""
from __future__ import annotations

import datetime as dt
import functools
import signal
import threading
import time
from typing import TYPE_CHECKING

import sqlalchemy as sa

from rupost.errors import RuPostError

if TYPE_CHECKING:
    from .core_processes import CoreProcess


class NodeAgent:
    _queue_problem: str | None  # the last problem serving queue requests (set at the first)

    def __init__(self, app, interval: float = 10.0, hold_down: float = 30.0):
        self.app = app
        self.core: list[CoreProcess] = []  # the panel, autoconfig and push processes (rupost/node/core_processes.py)
        self.interval = interval
        self.hold_down = hold_down
        self.state = "unknown"
        self.down_since: float | None = None
        self._stop = False
        self._queue_hold: tuple | None = None  # this node's queue, held while its mail unit runs
        self.cert_levels: dict[str, str] = {}  # certificate -> last expiry level logged
        self.certs_checked_at: float | None = None
        self._cache_serial: int | None = None  # cache flush requests counted at the last flush

    def log(self, component: str, state: str, message: str) -> None:
        from rupost.db.models import MonitorEvent

        line = f"{dt.datetime.now().isoformat(timespec='seconds')} {self.app.config.node_name} {component} " \
               f"{state}: {message}\n"
        self.app.layout.logs.mkdir(parents=True, exist_ok=True)
        with open(self.app.layout.monitor_log, "a") as fh:
            fh.write(line)
        try:
            with self.app.dbs.session("logs") as s:
                s.add(MonitorEvent(node=self.app.config.node_name, component=component, state=state,
                                   message=message))
        except RuPostError:
            pass  # the monitor log file still has it; the database may be the thing that is down

    def check_once(self) -> str:
        if not self.app.layout.current.exists():
            return self._set_state("not_deployed", "nothing deployed yet")
        deploying = self.app.deploys.in_progress()
        if deploying:
            # A deploy restarts components (systemctl restart, or stop + start): one seen down
            # in that window is not a crash, and stopping the mail unit would fail its probes.
            # The deploy probes and rolls back by itself; supervision resumes after it.
            return self.state
        mail_unit = self.app.adapters.mail_unit
        states = self.app.components.states()
        for name in [n for n, st in states.items() if not st["running"] and n not in mail_unit]:
            # the HA agent and the cache are not part of the unit: bring them back alone
            self.log(name, "down", "restarting it")
            self.app.components.start([name])
            states = self.app.components.states()
        down = [name for name in mail_unit if name in states and not states[name]["running"]]
        if not down and self._hold_queue():
            self.down_since = None
            self.apply_admin_state()
            return self._set_state("in_service", "all components running", states)
        if not down:  # running, but another node is evacuating our queue: must not run
            down = ["queue under evacuation"]
        if self.down_since is None:
            self.down_since = time.monotonic()
            stopped = self.app.component_runtime.stop_mail_unit()
            self._release_queue()
            self._set_state("out_of_service", f"down: {', '.join(down)}; stopped together: "
                                              f"{', '.join(stopped) or '-'}", self.app.components.states())
            return self.state
        if time.monotonic() - self.down_since >= self.hold_down:
            return self._try_return()
        return self.state

    def apply_admin_state(self) -> None:
        """Drained by an administrator: make the HA agent's health endpoint fail. Applied
        on every tick because a reload of HAProxy forgets runtime changes."""
        from adapters.haproxy import set_drained

        drained = self.app.nodes.admin_state() == "drained"
        try:
            set_drained(self.app.layout, drained)
        except OSError as exc:
            self.log("haproxy", "unreachable", f"admin socket: {exc}")
            return
        if drained != getattr(self, "_drained", False):
            self.log("node", "drained" if drained else "enabled", "health endpoint reports "
                     + ("down" if drained else "up"))
            self._drained = drained

    def _hold_queue(self) -> bool:
        from rupost.errors import ConflictError

        if self._queue_hold is not None:
            if self.app.evacuation.still_held(self._queue_hold[1]):
                return True
            # the database restarted or failed over: its session, and the lock with it, are gone
            self._drop_queue_hold()
            return self._retake_queue()
        try:
            self._queue_hold = self.app.evacuation.hold()
        except ConflictError as exc:
            self.log("queue", "evacuating", str(exc))
            return False
        return True

    def _drop_queue_hold(self) -> None:
        from sqlalchemy.exc import SQLAlchemyError

        hold, self._queue_hold = self._queue_hold, None
        if hold is None:
            return
        try:
            hold[0].__exit__(None, None, None)  # ends the session (evacuation._end_session)
        except SQLAlchemyError:
            pass  # a dead session: closing it has nothing left to release

    def _retake_queue(self) -> bool:
        """Take this node's queue again after its lock was lost with the database session.
        An evacuator takes the lock exclusive only while the database answers and only for a
        node that looks failed; one that got it in the gap makes this a ConflictError, and the
        mail unit stops as it would have had the lock been seen taken. While the database does
        not answer, nobody can take the lock: the unit keeps running (stopping it would refuse
        mail for an outage of the database alone) and the next tick tries again."""
        from rupost.errors import ConflictError

        try:
            self._queue_hold = self.app.evacuation.hold()
        except ConflictError as exc:
            self.log("queue", "evacuating", f"the queue lock was lost with the database session: {exc}")
            return False
        except (RuPostError, sa.exc.SQLAlchemyError) as exc:
            reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()
            self.log("queue", "unheld", "the queue lock was lost with the database session and cannot be "
                                        f"taken again yet: {reason[0] if reason else exc.__class__.__name__}")
            return True
        self.log("queue", "held", "the queue lock was lost with the database session; taken again")
        return True

    def _release_queue(self) -> None:
        if self._queue_hold is not None:
            cm, _ = self._queue_hold
            self._queue_hold = None
            cm.__exit__(None, None, None)

    def _try_return(self) -> str:
        runtime = self.app.component_runtime
        if not self._hold_queue():
            self.down_since = time.monotonic()
            return self.state
        try:
            self.app.components.start(None)
            failed = [p for p in runtime.run_probes(patience=20) if not p.ok]
        except RuPostError as exc:
            failed = [exc]
        if failed:
            runtime.stop_mail_unit()
            self._release_queue()
            self.down_since = time.monotonic()
            self.log("node", "out_of_service", f"restart attempt failed: {failed[0]}")
            return self.state
        self.down_since = None
        self._flush_deferred()
        return self._set_state("in_service", "components restarted and probed healthy",
                               self.app.components.states())

    def _flush_deferred(self) -> None:
        """Mail accepted while a component of the unit was dead (LMTP to a killed dovecot, in
        the seconds before the agent noticed) was deferred, and postfix would retry it only
        after its backoff (minutes): the node is healthy again, so it is tried now."""
        try:
            self.app.mailqueues.flush()
        except RuPostError as exc:
            self.log("queue", "error", f"flushing the mail deferred while the node was down: {exc}")

    def _set_state(self, state: str, message: str, components: dict | None = None) -> str:
        if state != self.state:
            self.log("node", state, message)
            self.state = state
        try:
            # the agent's own mark: a rollout asks only nodes whose agent is running
            self.app.nodes.report(state, {**(components or self.app.components.states()),
                                          "_agent": dt.datetime.now(dt.UTC).isoformat()})
        except RuPostError as exc:
            self.log("database", "unreachable", str(exc))
        return state

    def check_certificates(self, every: float = 3600.0) -> list[dict]:
        """Log certificates expiring within 30/7 days to the monitor log, once per level change."""

        if self.certs_checked_at is not None and time.monotonic() - self.certs_checked_at < every:
            return []
        self.certs_checked_at = time.monotonic()
        warnings = self.app.certificates.expiry_warnings()
        for w in warnings:
            if self.cert_levels.get(w["name"]) != w["level"]:
                self.log("certificate", f"expiry_{w['level']}", w["message"])
        self.cert_levels = {w["name"]: w["level"] for w in warnings}
        return warnings

    def _wait_for_notification(self, timeout: float) -> None:
        """Sleep until the next tick, or until a rollout or a queue request asks for this node
        (LISTEN/NOTIFY). Requests to flush this node's account caches (services/cache.py) are
        served at once, without ending the wait."""
        import psycopg

        from rupost.cluster.queue_relay import CHANNEL as QUEUE_CHANNEL
        from rupost.cluster.rollouts import CHANNEL
        from rupost.services import cache

        deadline = time.monotonic() + timeout
        try:
            if getattr(self, "_listen", None) is None:
                # rollouts, queue requests from other nodes, cache flushes
                self._listen = self.app.dbs.listener("main", CHANNEL, QUEUE_CHANNEL, cache.CHANNEL)
                # requests sent while nobody listened here are lost, but counted: flush only if
                # one came meanwhile. Not after a mere database restart: dovecot would then meet
                # its first logins with an empty cache and SQL connections still failing
                serial = cache.announced(self._listen, cache.CHANNEL)
                if serial is None or serial != self._cache_serial:
                    cache.flush_here(self.app)
                self._cache_serial = serial
            while not self._stop and (left := deadline - time.monotonic()) > 0:
                # drained before anything else runs on the connection (the generator holds it)
                for note in list(self._listen.notifies(timeout=left, stop_after=1)):
                    if note.channel != cache.CHANNEL:
                        return
                    serial = cache.announced(self._listen, cache.CHANNEL)  # counted before the flush
                    cache.apply_notification(self.app, note.payload)
                    self._cache_serial = serial
        except psycopg.Error:
            self._listen = None  # periodic polling still serves the requests
            while not self._stop and time.monotonic() < deadline:
                time.sleep(0.2)

    def database_back(self, rounds: int = 6, pause: float = 5.0) -> bool:
        """The database is back after an outage and the daemons' lookups answer again (the
        lookup cache guard calls this from its thread once it revived them): retry the mail
        deferred meanwhile now, not at postfix's next queue run (minutes). Again while mail is
        queued, `rounds` times `pause` seconds apart: a delivery in flight while dovecot was
        reloaded is deferred after the first flush (its old processes end it). True when the queue was
        flushed."""
        for round_ in range(rounds):
            try:
                self.app.mailqueues.flush()
            except RuPostError as exc:
                self.log("queue", "error", f"retrying the mail deferred during the database outage: {exc}")
                return False
            if round_ == 0:
                self.log("queue", "flushed", "the database is back: mail deferred during the outage retried now")
            time.sleep(pause)
            try:
                if not self.app.mailqueues.summary()["total"]:  # active too: one in flight may yet be deferred
                    break
            except RuPostError:
                break
        return True

    def serve_queue_requests(self) -> int:
        """Queue actions other nodes asked of this node's queue (services/mailqueues.py)."""
        try:
            served = self.app.queue_relay.serve()
        except Exception as exc:  # noqa: BLE001 - e.g. a database not upgraded yet: the agent keeps running
            problem = str(exc).splitlines()[0] if str(exc) else repr(exc)
            if problem != getattr(self, "_queue_problem", None):  # once, not at every tick
                self.log("queue", "error", f"serving queue requests: {problem}")
            self._queue_problem = problem
            return 0
        self._queue_problem = None
        return served

    def _reconcile_srs(self) -> None:
        try:
            if self.app.srs.reconcile():
                self.log("postsrsd", "restarted", "its SRS secrets changed in the database")
        except RuPostError as exc:  # the agent's other duties of this tick go on
            self.log("postsrsd", "error", f"reconciling the SRS secrets: {exc}")

    def record_session_peaks(self) -> dict[str, int]:
        """Each public listener's peak concurrent sessions since the last interval, kept per hour
        (rupost/services/session_peaks.py); HAProxy down or not deployed: nothing this time."""
        from sqlalchemy.exc import SQLAlchemyError

        try:
            return self.app.session_peaks.record()
        except (OSError, ValueError, SQLAlchemyError):  # e.g. rupost_logs not upgraded yet
            return {}

    def _supervise_core(self) -> None:
        for proc in self.core:
            was = proc.proc is not None
            if not proc.running and proc.ensure_running() and proc.running:
                self.log(proc.name, "restarted" if was else "started", f"pid {proc.proc.pid}")

    def run_forever(self, core_processes: bool = True) -> None:
        from .core_processes import core_processes as make_core

        signal.signal(signal.SIGTERM, lambda *_: setattr(self, "_stop", True))
        self.log("agent", "started", f"interval {self.interval}s")
        self.core = make_core(self.app.layout.root) if core_processes else []
        from rupost.services.cache import LookupCacheGuard

        guard = LookupCacheGuard(self.app, report=functools.partial(self.log, "lookup-cache"),
                                 # its own thread: the guard goes back to listening at once
                                 recovered=lambda: threading.Thread(target=self.database_back, name="database-back",
                                                                    daemon=True).start()).start()
        while not self._stop:
            self.serve_queue_requests()
            try:
                self._supervise_core()
                self.check_once()
                self.record_session_peaks()
                self._reconcile_srs()
                self.check_certificates()
                if self.app.rollouts.serve_requests():
                    self.log("node", "rollout", "applied a cluster-wide deploy step")
                caught_up = self.app.rollouts.reconcile()
                if caught_up is not None:
                    step = self.app.rollouts.step(caught_up, self.app.config.node_name)
                    self.log("node", "rollout", f"caught up with rollout {caught_up}: {step['status']} "
                                                f"{step['error']}".rstrip())
            except RuPostError as exc:
                self.log("agent", "error", str(exc))
            except sa.exc.SQLAlchemyError as exc:
                # a query outside the services' translation (a database dying or switching over
                # mid-tick): the agent reports it and supervises on; it must not end with it
                reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()
                self.log("agent", "error", f"database: {reason[0] if reason else exc.__class__.__name__}")
            self._wait_for_notification(self.interval)
        guard.stop()
        for proc in self.core:
            proc.stop()
        try:
            self.app.nodes.agent_stopped()
        except RuPostError:
            pass
        self.log("agent", "stopped", "SIGTERM")
