"""Mail storage use per mailbox against its quota (the dashboard's quota tile).

Where the use is recorded: the standard template's quota backend is dovecot's ``maildir``
quota (``quota = maildir:User quota``), which keeps each mailbox's use in its
``maildirsize`` file; the database holds only the limit (``mailboxes.quota_bytes``).
Reading 100,000 files on every page view is out of the question, so ``measure`` asks
dovecot, in one process, for every mailbox that has a mail home (``doveadm -f tab quota get
-F USERS``; a mailbox without one holds nothing and is recorded as 0 without asking, since
asking would make dovecot create its Maildir), streams the answer into ``mailbox_usage`` in
batches, and stops at a deadline (the rows written so far stay, the run is marked
incomplete). dovecot no longer knows a disabled mailbox (or one of a disabled domain): the
messages in its Maildir are counted from their files instead (``maildir_use``). ``summary``
is then SQL only: totals, the share of limited mailboxes above 90 %, and the largest
mailboxes by an indexed ORDER BY ... LIMIT, for all domains or a domain administrator's.

One measurement at a time in the whole cluster (a PostgreSQL advisory lock); the
dashboard starts one in the background when the last is older than
``quota_usage.max_age_minutes`` (default 360), a superadministrator can start one at once.
"""
from __future__ import annotations

import datetime as dt
import os
import re
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import and_, func, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import IntegrityError

from ..db.models import Domain, Mailbox, Setting, utcnow
from ..db.usage_models import MailboxUsage
from ..errors import ConflictError, NotFoundError, ServiceError

if TYPE_CHECKING:
    from . import Services

LAST_RUN_KEY = "quota_usage.last_run"
MAX_AGE_KEY = "quota_usage.max_age_minutes"
DEFAULT_MAX_AGE_MINUTES = 360
DEFAULT_DEADLINE = 1800  # seconds; 100,000 mailboxes take minutes, not hours
BATCH = 1000
LOCK_KEY = 0x52505155  # "RPQU": one measurement at a time, cluster-wide
_background = threading.Lock()  # one background start per process
_MAILDIR_SIZE = re.compile(r",S=(\d+)")


def maildir_use(maildir: Path) -> tuple[int, int]:
    """Bytes and messages in a Maildir as dovecot's maildir quota counts them, read from the
    files: every message in cur/ and new/ of the INBOX and of each folder (".Name"), its size
    from the ",S=" of its name (what dovecot records), else from the file."""
    used = count = 0
    folders = [maildir]
    try:
        folders += [Path(e.path) for e in os.scandir(maildir)
                    if e.name.startswith(".") and e.is_dir(follow_symlinks=False)]
    except FileNotFoundError:
        return 0, 0
    for folder in folders:
        for sub in ("cur", "new"):
            try:
                entries = list(os.scandir(folder / sub))
            except FileNotFoundError:
                continue
            for e in entries:
                if not e.is_file(follow_symlinks=False):
                    continue
                size = _MAILDIR_SIZE.search(e.name)
                try:
                    used += int(size.group(1)) if size else e.stat(follow_symlinks=False).st_size
                except FileNotFoundError:
                    continue  # expunged meanwhile
                count += 1
    return used, count


class QuotaAnswer:
    """Each user's [bytes, messages] from ``doveadm -f tab quota get``, line by line. A
    user's lines come together, so once more than ``batch`` users are read all but the
    last are complete: ``feed`` hands them out to be written."""

    def __init__(self, batch: int = BATCH) -> None:
        self.batch = batch
        self.pending: dict[str, list[int]] = {}

    def feed(self, line: str) -> dict[str, list[int]] | None:
        parts = line.rstrip("\n").split("\t")
        if len(parts) < 4 or parts[0].lower() == "username":
            return None
        user, kind, value = parts[0].strip().lower(), parts[2].strip().upper(), parts[3].strip()
        if not value.isdigit():
            return None
        entry = self.pending.setdefault(user, [0, 0])
        if kind == "STORAGE":
            entry[0] = int(value) * 1024  # doveadm reports kilobytes
        elif kind == "MESSAGE":
            entry[1] = int(value)
        if len(self.pending) <= self.batch:
            return None
        last = next(reversed(self.pending))
        keep = self.pending.pop(last)
        complete, self.pending = self.pending, {last: keep}
        return complete

    def rest(self) -> dict[str, list[int]]:
        return self.pending


def _run_result(now: dt.datetime, started: float, measured: int, total: int, *, complete: bool, timed_out: bool,
                errors: list[str]) -> dict:
    return {"measured_at": now.isoformat(), "seconds": round(time.monotonic() - started, 1), "measured": measured,
            "mailboxes": total, "complete": complete, "timed_out": timed_out, "errors": errors}


class QuotaUsageService:
    def __init__(self, app: Services) -> None:
        self.app = app

    # ------------------------------------------------------------ measuring
    def dovecot_conf(self) -> Path:
        conf = self.app.layout.component_config("dovecot") / "dovecot.conf"
        if not conf.exists():
            raise NotFoundError(f"{conf} does not exist: deploy this node first (rupost deploy)")
        return conf

    def measure(self, deadline: float = DEFAULT_DEADLINE, progress: Callable[[int, str], None] | None = None,
                wait: float = 0) -> dict:
        """Ask dovecot for every mailbox's use and store it; returns what the run did.
        With ``wait``, a measurement already running is waited for (up to ``wait`` seconds)
        and this one runs after it; without, it is a ConflictError."""
        conf = self.dovecot_conf()
        with self.app.dbs.engine("main").connect() as lock_conn:
            until = time.monotonic() + wait
            while not lock_conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": LOCK_KEY}).scalar():
                lock_conn.commit()
                if time.monotonic() >= until:
                    raise ConflictError("a quota measurement is already running (on this or another node)")
                time.sleep(0.5)
            lock_conn.commit()  # the advisory lock is the session's: no transaction stays open meanwhile
            try:
                result = self._measure(conf, deadline, progress or (lambda _p, _m: None))
            finally:
                lock_conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": LOCK_KEY})
                lock_conn.commit()
        self._store_last_run(result)
        return result

    def on_disk(self) -> set[str]:
        """Addresses whose mail home exists: the template's mail_home is MAIL_STORAGE/DOMAIN/LOCAL
        (dovecot creates it at the first delivery or login)."""
        out: set[str] = set()
        try:
            domains = [d for d in os.scandir(self.app.layout.mail_storage) if d.is_dir(follow_symlinks=False)]
        except FileNotFoundError:
            return out
        for d in domains:
            try:
                out.update(f"{u.name}@{d.name}".lower() for u in os.scandir(d.path) if u.is_dir(follow_symlinks=False))
            except OSError:
                continue
        return out

    def maildir(self, address: str) -> Path:
        local, _, domain = address.rpartition("@")
        return self.app.layout.mail_storage / domain / local / "Maildir"

    def _measure(self, conf: Path, deadline: float, progress: Callable[[int, str], None]) -> dict:
        started, now = time.monotonic(), utcnow()
        on_disk = self.on_disk()
        known, served = self._mailboxes()
        total = len(known)
        measured = self._measure_without_dovecot(on_disk, known, served, now)
        users = sorted(on_disk.intersection(served))
        if not users:
            return _run_result(now, started, measured, total, complete=True, timed_out=False, errors=[])
        progress(5, f"{measured} of {total} mailboxes hold no mail yet; asking dovecot for {len(users)}")
        before = measured

        def report(asked: int) -> None:
            progress(min(95, 5 + 90 * asked // len(users)), f"{before + asked} of {total} mailboxes measured")

        asked, returncode, error_lines = self._ask_dovecot(conf, users, deadline, now, known, report)
        timed_out = returncode < 0 and time.monotonic() - started >= deadline - 1
        measured += asked
        if returncode != 0 and not asked and not timed_out:
            raise ServiceError(f"doveadm quota get failed (exit {returncode}): "
                               + ("; ".join(error_lines[:3]) or "no message") + " (is dovecot running? "
                               "`rupost components status`)")
        return _run_result(now, started, measured, total, complete=returncode == 0 and not timed_out,
                           timed_out=timed_out, errors=error_lines[:5])

    def _mailboxes(self) -> tuple[dict[str, tuple[int, int, int]], set[str]]:
        """Every mailbox (address -> id, domain id, quota), and those dovecot serves (the
        mailbox and its domain enabled)."""
        with self.app.dbs.session("data") as s:
            rows = s.execute(select(Mailbox.address, Mailbox.id, Mailbox.domain_id, Mailbox.quota_bytes,
                                    Mailbox.enabled & Domain.enabled).join(Domain, Domain.id == Mailbox.domain_id))
            known, served = {}, set()
            for address, mailbox_id, domain_id, quota, enabled in rows:
                known[address] = (mailbox_id, domain_id, quota)
                if enabled:
                    served.add(address)
        return known, served

    def _measure_without_dovecot(self, on_disk: set[str], known: dict[str, tuple], served: set[str],
                                 now: dt.datetime) -> int:
        """Mailboxes without a mail home hold nothing: recorded as 0 without asking dovecot
        (asking would make it create their Maildir). Returns how many were recorded."""
        empty = [a for a in known if a not in on_disk]
        for i in range(0, len(empty), BATCH):
            self._write({a: [0, 0] for a in empty[i:i + BATCH]}, now, known)
        # dovecot no longer knows a disabled mailbox (or one of a disabled domain) and would
        # answer "User no longer exists": its mail still takes space, counted from its files
        unserved = sorted(on_disk.intersection(known).difference(served))
        for i in range(0, len(unserved), BATCH):
            use = {a: maildir_use(self.maildir(a)) for a in unserved[i:i + BATCH]}
            # doveadm reports whole kilobytes, rounded up: every row in the same unit
            self._write({a: [-(-used // 1024) * 1024, count] for a, (used, count) in use.items()}, now, known)
        return len(empty) + len(unserved)

    def _ask_dovecot(self, conf: Path, users: list[str], deadline: float, now: dt.datetime,
                     known: dict[str, tuple], report: Callable[[int], None]) -> tuple[int, int, list[str]]:
        """One ``doveadm quota get -F FILE`` run for ``users``, its answer written while it
        streams in, killed at the deadline: (mailboxes written, exit code, its error lines)."""
        listing = tempfile.NamedTemporaryFile(mode="w", prefix="rupost-quota-", suffix=".users")
        listing.write("".join(u + "\n" for u in users))
        listing.flush()
        errors = tempfile.TemporaryFile(mode="w+")
        try:
            proc = subprocess.Popen(["doveadm", "-c", str(conf), "-f", "tab", "quota", "get", "-F", listing.name],
                                    stdout=subprocess.PIPE, stderr=errors, text=True, errors="replace")
        except FileNotFoundError:
            listing.close()
            raise ServiceError("doveadm is not installed (Debian package dovecot-core)") from None
        assert proc.stdout is not None  # stdout=PIPE
        killer = threading.Timer(deadline, proc.kill)
        killer.start()
        answer = QuotaAnswer()
        asked = 0
        try:
            for line in proc.stdout:
                batch = answer.feed(line)
                if batch is not None:
                    asked += self._write(batch, now, known)
                    report(asked)
            asked += self._write(answer.rest(), now, known)
        finally:
            proc.stdout.close()
            returncode = proc.wait()
            killer.cancel()
            listing.close()
            errors.seek(0)
            error_lines = [ln.strip() for ln in errors.read(100_000).splitlines() if ln.strip()]
            errors.close()
        return asked, returncode, error_lines

    def _write(self, batch: dict[str, list[int]], now: dt.datetime, known: dict[str, tuple]) -> int:
        """Upsert one batch; ``known``: address -> (mailbox id, domain id, quota) read at the start
        (a mailbox removed since then fails its foreign key: the batch is written without it)."""
        rows = [{"mailbox_id": known[a][0], "domain_id": known[a][1], "quota_bytes": known[a][2],
                 "used_bytes": used, "messages": count, "measured_at": now}
                for a, (used, count) in batch.items() if a in known]
        for attempt in (1, 2):
            if not rows:
                return 0
            try:
                with self.app.dbs.session("data") as s:
                    stmt = insert(MailboxUsage)
                    s.execute(stmt.on_conflict_do_update(
                        index_elements=[MailboxUsage.mailbox_id],
                        set_={k: getattr(stmt.excluded, k) for k in ("domain_id", "quota_bytes", "used_bytes",
                                                                     "messages", "measured_at")}), rows)
                return len(rows)
            except IntegrityError:
                if attempt == 2:
                    raise
                with self.app.dbs.session("data") as s:
                    alive = set(s.scalars(select(Mailbox.id).where(Mailbox.id.in_([r["mailbox_id"] for r in rows]))))
                rows = [r for r in rows if r["mailbox_id"] in alive]
        return 0

    def _store_last_run(self, result: dict) -> None:
        # a measurement, not a change of the configuration: no audit record
        with self.app.dbs.session("main") as s:
            row = s.get(Setting, LAST_RUN_KEY)
            if row is None:
                s.add(Setting(key=LAST_RUN_KEY, value=result))
            else:
                row.value = result

    def last_run(self) -> dict | None:
        with self.app.dbs.session("main") as s:
            row = s.get(Setting, LAST_RUN_KEY)
            return dict(row.value) if row is not None and row.value else None  # type: ignore[call-overload]

    def max_age_minutes(self) -> int:
        try:
            return max(5, int(self.app.settings.get(MAX_AGE_KEY, DEFAULT_MAX_AGE_MINUTES)))
        except (TypeError, ValueError):
            return DEFAULT_MAX_AGE_MINUTES

    def stale(self, last: dict | None) -> bool:
        if not last or not last.get("measured_at"):
            return True
        try:
            at = dt.datetime.fromisoformat(last["measured_at"])
        except ValueError:
            return True
        return utcnow() - at > dt.timedelta(minutes=self.max_age_minutes())

    def refresh_in_background(self) -> bool:
        """Start a measurement in a daemon thread unless one runs in this process; True if started.
        Another process or node measuring already is noticed by the advisory lock."""
        if not _background.acquire(blocking=False):
            return False

        def run() -> None:
            try:
                self.measure()
            except Exception as exc:  # noqa: BLE001 - a background measurement must never kill the process
                try:
                    if not isinstance(exc, ConflictError):
                        self._store_last_run({"measured_at": utcnow().isoformat(), "error": str(exc),
                                              "complete": False, "measured": 0})
                except Exception:  # noqa: BLE001
                    pass
            finally:
                _background.release()

        threading.Thread(target=run, name="quota-usage", daemon=True).start()
        return True

    # ------------------------------------------------------------ reading (SQL only)
    def summary(self, domains: list[str] | None = None, top: int = 10) -> dict:
        """Totals over the mailboxes (of ``domains``, or all) and the ``top`` largest by use.
        Four short statements: the domains' ids; count and quota sum of the mailboxes; the
        measured use (``mailbox_usage`` alone: its domain and quota are copied into it when
        measured); the largest by the (domain_id, used_bytes) or (used_bytes) index."""
        with self.app.dbs.session("data") as s:
            ids = None
            if domains is not None:
                ids = list(s.scalars(select(Domain.id).where(Domain.name.in_(list(domains)))))
            q = select(func.count(), func.coalesce(func.sum(Mailbox.quota_bytes), 0),
                       func.count().filter(Mailbox.quota_bytes == 0)).select_from(Mailbox)
            u = select(func.count(), func.coalesce(func.sum(MailboxUsage.used_bytes), 0),
                       func.count().filter(and_(MailboxUsage.quota_bytes > 0,
                                                MailboxUsage.used_bytes * 10 >= MailboxUsage.quota_bytes * 9)),
                       func.min(MailboxUsage.measured_at)).select_from(MailboxUsage)
            t = (select(MailboxUsage.mailbox_id, MailboxUsage.used_bytes, MailboxUsage.messages)
                 .order_by(MailboxUsage.used_bytes.desc(), MailboxUsage.mailbox_id).limit(max(1, min(top, 100))))
            if ids is not None:
                q, u, t = (q.where(Mailbox.domain_id.in_(ids)), u.where(MailboxUsage.domain_id.in_(ids)),
                           t.where(MailboxUsage.domain_id.in_(ids)))
            count, quota_total, unlimited = s.execute(q).one()
            measured, used_total, near_full, oldest = s.execute(u).one()
            biggest = s.execute(t).all()
            current = {i: (a, qb) for i, a, qb in s.execute(select(Mailbox.id, Mailbox.address, Mailbox.quota_bytes)
                                                             .where(Mailbox.id.in_([b[0] for b in biggest])))}
            largest = [{"address": current[i][0], "quota_bytes": current[i][1], "used_bytes": used, "messages": n,
                        "percent": round(100.0 * used / current[i][1], 1) if current[i][1] else None}
                       for i, used, n in biggest if i in current]
        return {"mailboxes": count, "quota_total_bytes": int(quota_total), "unlimited": unlimited,
                "measured": measured, "used_total_bytes": int(used_total), "near_full": near_full,
                "oldest_measurement": oldest.isoformat() if oldest else None, "largest": largest,
                "last_run": self.last_run()}
