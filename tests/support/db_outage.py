"""A PostgreSQL outage during a steady mail flow (issue 32), for tests/test_db_recovery.py and
benchmarks/db_outage.py.

One node with its own PostgreSQL (stopping it must not disturb the session's shared server)
and its real agent (`rupost run`, a process of its own). A sender thread sends one message
at a time to known recipients through the public SMTP port, a login thread logs in over
IMAPS; each answer is recorded with the phase it fell in (before, during, after the outage).
Delivery is read from the mailboxes' Maildirs (file times give when each message arrived).
"""
from __future__ import annotations

import imaplib
import json
import os
import smtplib
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from mailclients import IMAPSFrom, message, smtp

from .cluster import wait_until
from .held_session import HeldSession
from .processes import stop_group

SENDER = "sender@example.org"


@dataclass
class Answer:
    phase: str
    who: str
    ok: bool
    detail: str
    at: float = field(default_factory=time.time)  # when the answer came
    subject: str = ""
    started: float | None = None  # when it was asked (logins)


class Flow:
    """A bounded loop in a thread: `step(i)` every `pace` seconds until stopped (at most
    `limit` steps), each answer recorded under the phase current when it was asked."""

    def __init__(self, pace: float, limit: int = 2000) -> None:
        self.pace, self.limit = pace, limit
        self.phase = "before"
        self.answers: list[Answer] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Flow:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.ident is not None:  # started (stopping twice is harmless)
            self._thread.join(60)

    def _run(self) -> None:
        for i in range(self.limit):
            if self._stop.is_set():
                return
            self.answers.append(self.step(i))
            self._stop.wait(self.pace)

    def step(self, i: int) -> Answer:
        raise NotImplementedError

    def refused(self, phase: str | None = None) -> list[Answer]:
        return [a for a in self.answers if not a.ok and (phase is None or a.phase == phase)]

    def count(self, phase: str) -> int:
        return sum(1 for a in self.answers if a.phase == phase)


class MailFlow(Flow):
    """One message per SMTP session to each recipient in turn, on port 25."""

    def __init__(self, port: int, recipients: list[str], pace: float = 0.2) -> None:
        super().__init__(pace)
        self.port, self.recipients = port, recipients

    def step(self, i: int) -> Answer:
        rcpt, subject, phase = self.recipients[i % len(self.recipients)], f"flow-{i:05d}", self.phase
        try:
            with smtp(self.port) as client:
                client.mail(SENDER)
                code, text = client.rcpt(rcpt)
                if code != 250:
                    return Answer(phase, rcpt, False, f"RCPT {code} {text.decode(errors='replace')}", subject=subject)
                code, text = client.data(message(SENDER, rcpt, subject).as_bytes())
                return Answer(phase, rcpt, code == 250, f"DATA {code} {text.decode(errors='replace')}",
                              subject=subject)
        except (OSError, smtplib.SMTPException) as exc:
            return Answer(phase, rcpt, False, f"{type(exc).__name__}: {exc}", subject=subject)

    def accepted(self) -> dict[str, Answer]:
        return {a.subject: a for a in self.answers if a.ok}


class LoginFlow(Flow):
    """An IMAPS login (and logout) for each user in turn."""

    def __init__(self, port: int, users: dict[str, str], pace: float = 0.3) -> None:
        super().__init__(pace)
        self.port, self.users = port, list(users.items())

    def step(self, i: int) -> Answer:
        user, password = self.users[i % len(self.users)]
        return login(self.port, user, password, self.phase)


def login(port: int, user: str, password: str, phase: str = "") -> Answer:
    started = time.time()
    try:
        imap = IMAPSFrom("127.0.0.1", port)
    except OSError as exc:
        return Answer(phase, user, False, f"connect: {exc}", started=started)
    try:
        imap.login(user, password)
        return Answer(phase, user, True, "logged in", started=started)
    except (imaplib.IMAP4.error, OSError) as exc:
        return Answer(phase, user, False, str(exc), started=started)
    finally:
        try:
            imap.shutdown()
        except OSError:
            pass


def delivered(mail_storage: Path, addresses: list[str]) -> dict[str, float]:
    """subject -> the time its file reached a Maildir, over the addresses' Maildirs."""
    found: dict[str, float] = {}
    for address in addresses:
        local, domain = address.split("@")
        for sub in ("new", "cur"):
            folder = mail_storage / domain / local / "Maildir" / sub
            try:
                entries = list(os.scandir(folder))
            except FileNotFoundError:
                continue
            for entry in entries:
                try:
                    with open(entry.path, "rb") as fh:
                        head = fh.read(4096).decode(errors="replace")
                    at = entry.stat().st_mtime
                except FileNotFoundError:  # moved from new to cur meanwhile
                    continue
                for line in head.splitlines():
                    if line.startswith("Subject: "):
                        found[line[9:].strip()] = at
                        break
    return found


def wait_delivered(mail_storage: Path, addresses: list[str], subjects: set[str], timeout: float) -> dict[str, float]:
    deadline = time.monotonic() + timeout
    while True:
        found = delivered(mail_storage, addresses)
        if subjects <= set(found) or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


class Agent:
    """The node's agent, `rupost run`, as a process of its own (its log beside the daemons')."""

    def __init__(self, root: Path, logs: Path) -> None:
        self.root, self.logs = root, logs
        self.proc: subprocess.Popen | None = None

    def start(self) -> Agent:
        log = open(self.logs / "agent.log", "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "rupost.cli", "--root", str(self.root), "run",
                                      "--interval", "1", "--hold-down", "5", "--no-core-processes"],
                                     stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        return self

    def stop(self) -> None:
        stop_group(self.proc)
        self.proc = None


def memcached_flushes(inst) -> int:
    """flush_all commands postfix's lookup cache (component lookup_cache, a Unix socket) has
    served since it started."""
    from pymemcache.client.base import Client

    from adapters.lookup_cache import socket_path

    client = Client(str(socket_path(inst.layout)), connect_timeout=2, timeout=2)
    try:
        return int(client.stats()[b"cmd_flush"])
    finally:
        client.close()


def listeners(pg) -> int:
    """The agent's LISTEN connections (main and data databases) the server holds now."""
    return int(pg.psql("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'rupost-listen'").strip())


def queue_locks(pg) -> int:
    """Shared locks on a node's mail queue (rupost/cluster/evacuation.py) the server holds now:
    the agent's while the node's mail unit runs."""
    from rupost.cluster.evacuation import LOCK_CLASS

    return int(pg.psql("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
                       f"AND mode = 'ShareLock' AND classid = {LOCK_CLASS}::bigint::oid").strip())


def rupost_check(root: Path, *only: str) -> tuple[int, dict]:
    """`rupost check --only ... --json` as an administrator runs it: exit code and results."""
    argv = [sys.executable, "-m", "rupost.cli", "--root", str(root), "check", "--no-record", "--json"]
    for name in only:
        argv += ["--only", name]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    try:
        report = json.loads(done.stdout)
    except ValueError:
        report = {"output": done.stdout + done.stderr}
    return done.returncode, report


def statuses(report: dict) -> dict[str, str]:
    return {f"{r['check']}:{r['target']}": r["status"] for r in report.get("results", [])}


@dataclass
class Outage:
    """What one run of the scenario saw (times are wall-clock, time.time())."""
    mail: MailFlow
    logins: LoginFlow
    warm: dict[str, str]
    cold: dict[str, str]
    check_during: tuple[int, dict]
    back: float
    cold_logins: LoginFlow  # logins of the accounts dovecot had not cached, from the stop on
    queue_locked: tuple[int, int]  # the agent's queue locks before the stop and after the return
    arrived: dict[str, float]
    monitor: str
    cache_flushes: int  # memcached flush_all commands from the database's stop to the end
    # an IMAP session opened before the stop and left idle: INBOX's count before, and after
    # the return (NOOP and SELECT on the same connection; None: the session was ended)
    held_counts: tuple[int, int | None] = (0, None)

    @property
    def accepted(self) -> dict[str, Answer]:
        return self.mail.accepted()

    @property
    def lost(self) -> list[str]:
        return sorted(set(self.accepted) - set(self.arrived))

    @property
    def deferred(self) -> list[str]:
        """Mail accepted during the outage for accounts dovecot had not cached."""
        return [a.subject for a in self.mail.answers if a.ok and a.phase == "during" and a.who in self.cold]

    @property
    def delivered_after_s(self) -> float | None:
        """Seconds from the database's return to the last delivery of that mail."""
        times = [self.arrived[s] for s in self.deferred if s in self.arrived]
        return max(times) - self.back if times and len(times) == len(self.deferred) else None

    @property
    def cold_login_s(self) -> float | None:
        """Seconds from the database's return to the first successful login of an uncached
        account (one asked during the outage may be answered after it)."""
        times = [a.at for a in self.cold_logins.answers if a.ok and a.at >= self.back]
        return min(times) - self.back if times else None

    @property
    def cold_refused_until_s(self) -> float:
        """Seconds from the database's return to the last refusal of a login of an uncached
        account, answered after the return (0: none)."""
        times = [a.at for a in self.cold_logins.refused() if a.at >= self.back]
        return max(times) - self.back if times else 0.0

    def refusal_window_s(self) -> float:
        """From the first refused message to a known recipient to the last (0: none)."""
        refused = [a.at for a in self.mail.refused()]
        return max(refused) - min(refused) if refused else 0.0


def run_outage(pg, inst, domain: str, outage_s: float, with_agent: bool = True, settle: float = 120) -> Outage:
    """The scenario: three warm accounts (mail and logins all along) and two cold ones (known
    to postfix's cache, forgotten by dovecot's, as when its 5-minute auth cache ran out);
    PostgreSQL stopped for `outage_s` while mail flows to all of them and the warm ones log
    in; then started again. Waits (bounded by `settle`) for the mail accepted meanwhile."""
    app = inst.app
    app.domains.add(domain)
    warm = _accounts(app, domain, "warm", 3)
    cold = _accounts(app, domain, "cold", 2)
    everyone = {**warm, **cold}
    storage = app.layout.mail_storage
    flushes = memcached_flushes(inst)
    agent = Agent(inst.root, app.layout.logs).start() if with_agent else None
    mail = MailFlow(inst.ports["smtp"], list(warm))
    logins = LoginFlow(inst.ports["imaps"], warm)
    # started at the stop: a login before it would put the account in dovecot's cache
    cold_logins = LoginFlow(inst.ports["imaps"], cold, pace=0.2)
    locked_before = 0
    try:
        if agent is not None:
            _require(wait_until(lambda: listeners(pg) >= 2, 60), "the agent listens on both databases")
            # the lookup cache's listener empties it when it starts (it cannot know what it missed)
            _require(wait_until(lambda: memcached_flushes(inst) >= flushes + 1, 60),
                     "the agent's lookup listener empties the lookup cache once at start")
        # one message to everyone: postfix caches every answer it needs in memcached
        with smtp(inst.ports["smtp"]) as client:
            for address in everyone:
                client.send_message(message(SENDER, address, f"hello {address}"))
        _require(len(wait_delivered(storage, list(everyone), {f"hello {a}" for a in everyone}, 60)) == len(everyone),
                 "the first messages are delivered")
        from rupost.services.cache import flush_dovecot_auth_cache

        _require(flush_dovecot_auth_cache(app), "dovecot's auth cache is flushed")
        held_user = next(iter(warm))
        held = HeldSession("127.0.0.1", inst.ports["imaps"], held_user, warm[held_user], "127.0.0.1",
                           app.layout.logs)
        mail.start()
        logins.start()
        _require(wait_until(lambda: mail.count("before") >= 2 * len(warm) and logins.count("before") >= len(warm), 120),
                 "the flows run")

        if agent is not None:
            _require(wait_until(lambda: queue_locks(pg) >= 1, 30), "the agent holds the node's queue")
            locked_before = queue_locks(pg)
        mail.recipients = list(everyone)
        mail.phase = logins.phase = cold_logins.phase = "during"
        flushes_before_stop = memcached_flushes(inst)
        pg.stop("fast")
        cold_logins.start()
        stopped = time.monotonic()
        try:
            wait_until(lambda: mail.count("during") >= len(everyone), outage_s)
            check_during = rupost_check(inst.root, "database", "lookup")
            time.sleep(max(0.0, outage_s - (time.monotonic() - stopped)))
        finally:
            pg.start()
        back = time.time()
        mail.phase = logins.phase = cold_logins.phase = "after"
        # an account dovecot has not cached logs in only once its SQL client is back; then a
        # few seconds more of the stream, to see that the refusals stopped
        wait_until(lambda: any(a.ok for a in cold_logins.answers if a.phase == "after"), settle, 0.5)
        wait_until(lambda: len([a for a in cold_logins.answers if a.phase == "after" and a.ok]) >= 10, 30, 0.5)
        cold_logins.stop()
        during = {a.subject for a in mail.answers if a.phase == "during" and a.ok}
        wait_delivered(storage, list(everyone), during, settle)
        wait_until(lambda: mail.count("after") >= 2 * len(everyone) and logins.count("after") >= len(warm), 60)
        try:
            held_after: int | None = held.after()
        except imaplib.IMAP4.abort:
            held_after = None
        # the server's restart ended the session that held the agent's queue lock
        locked_after = queue_locks(pg) if agent is None else \
            (wait_until(lambda: queue_locks(pg) >= 1, 30) and queue_locks(pg))
    finally:
        mail.stop()
        logins.stop()
        cold_logins.stop()
        if agent is not None:
            agent.stop()
    arrived = wait_delivered(storage, list(everyone), set(mail.accepted()), 60)
    return Outage(mail, logins, warm, cold, check_during, back, cold_logins, (locked_before, int(locked_after)),
                  arrived,
                  app.layout.monitor_log.read_text() if app.layout.monitor_log.exists() else "",
                  memcached_flushes(inst) - flushes_before_stop, (held.count, held_after))


def _accounts(app, domain: str, prefix: str, count: int) -> dict[str, str]:
    made = {f"{prefix}{i}@{domain}": f"pw-{os.urandom(6).hex()}" for i in range(count)}
    for address, password in made.items():
        app.mailboxes.add(address, password)
    return made


def _require(condition: object, what: str) -> None:
    if not condition:
        raise AssertionError(f"scenario step failed: {what}")
