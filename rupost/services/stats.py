"""Mail statistics from the node's postfix and dovecot logs, parsed incrementally.

Counters per hour (UTC) and per domain, kept in ``rupost_logs.stats_hourly``:

- received: a message accepted from a client (smtpd) or a local submission (pickup); not
  postfix's own bounce notices, not a requeued message;
- sent: a recipient relayed out to another mail server (smtp, status=sent);
- delivered: a message saved into a mailbox, as dovecot's LMTP logs it ("saved mail to");
- deferred: a delivery attempt that failed temporarily (status=deferred; each attempt counts);
- bounced: a recipient that failed permanently or expired (status=bounced/expired);
- rejected: a recipient or message refused by smtpd or cleanup (reject, milter-reject);
- filter_scanned, filter_rejected, filter_greylisted: rspamd's verdicts, from its own log
  (rupost/services/stats_rspamd.py).

The domain an event is counted on is the *hosted* domain involved: the recipient's domain
when it is one of ours, else the sender's when it is one of ours, else the recipient's (so
mail between two outside parties, e.g. a bounce notice, still shows up under some domain).
A message received for recipients in two of our domains counts as received once for each.

Where the parser stopped is stored with the counts, in the same transaction: the log file's
inode, the byte offset after the last complete line, and a SHA-256 of its first line. A parser
killed half-way therefore loses nothing and counts nothing twice; a rotated file (renamed:
same inode under another name) is read to its end before the new file is read from its start;
a truncated or replaced file (same path, other first line) is read from its start. Runs on one
node are serialised by a Postgres advisory lock.
"""
from __future__ import annotations

import copy
import datetime as dt
import functools
import hashlib
import os
import re
import zlib
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, func, select, text
from sqlalchemy.dialects.postgresql import insert

from ..db.stats_models import COUNTERS, StatsHourly, StatsLogState
from ..errors import ValidationError
from .stats_rspamd import RspamdParser

if TYPE_CHECKING:
    from sqlalchemy import ColumnElement
    from sqlalchemy.orm import Session

    from . import Services

LOCK_CLASS = 0x52505354  # "RPST": advisory-lock namespace of the statistics parser
DEFAULT_RETENTION_DAYS = 90
RETENTION_SETTING = "stats_retention_days"
MAX_HOURS = 24 * 400
MEMORY_HOURS = 24 * 7  # a queued message is remembered this long (postfix's maximal_queue_lifetime 5d)
CHUNK = 1 << 20

_MONTHS = {m: i for i, m in enumerate(("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct",
                                       "Nov", "Dec"), 1)}
_SYSLOG_TS = re.compile(r"^([A-Z][a-z]{2}) {1,2}(\d{1,2}) (\d\d):(\d\d):(\d\d) ")
# RFC 3339, or rspamd's "2026-12-07 15:49:55" (local time, no zone)
_ISO_TS = re.compile(r"^(\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:?\d\d)?) ")
_POSTFIX = re.compile(r"^\S+ (?P<prog>[\w./-]+)\[\d+\]: (?P<msg>.*)$")
_QID = re.compile(r"^(?P<qid>[0-9A-Za-z]{5,32}): (?P<rest>.*)$")
_TO = re.compile(r"\bto=<([^>]*)>")
_FROM = re.compile(r"\bfrom=<([^>]*)>")
_RELAY = re.compile(r"\brelay=([^,\s]+)")
_STATUS = re.compile(r"\bstatus=(sent|deferred|bounced|expired)\b")
# "lmtp(user@dom)<pid><session>: Info: [sieve: ]msgid=<id>: saved mail to INBOX" (Dovecot 2.3;
# with a Sieve script: "stored mail into mailbox 'INBOX'")
_DOVECOT_SAVED = re.compile(r"^lmtp\((?P<user>[^)]*)\)(?P<session>(?:<[^>]*>)*): (?:Info: )?(?:sieve: )?"
                            r"(?:msgid=(?P<msgid><[^>]*>|\S*): )?(?:saved mail to|stored mail into mailbox) ")


def domain_of(address: str) -> str:
    address = (address or "").strip().lower()
    return address.rsplit("@", 1)[1].strip("[]") if "@" in address else ""


@functools.lru_cache(maxsize=4096)
def _syslog_time(stamp: str, year: int, now_ts: int) -> dt.datetime | None:
    """A syslog stamp ("Nov 29 08:54:26", local time) as UTC; lines of one second share it."""
    month, day, clock = stamp.split()
    try:
        hh, mm, ss = (int(x) for x in clock.split(":"))
        when = dt.datetime(year, _MONTHS[month], int(day), hh, mm, ss).astimezone()
    except (KeyError, ValueError):
        return None
    if when.timestamp() - now_ts > 2 * 86400:  # December's lines read in January
        when = when.replace(year=year - 1)
    return when.astimezone(dt.UTC)


def parse_time(line: str, now: dt.datetime) -> tuple[dt.datetime | None, str]:
    """(UTC time, rest of the line) of a syslog-style ("Nov 29 08:54:26 ...", local time, no
    year) or RFC 3339 line."""
    m = _SYSLOG_TS.match(line)
    if m:
        local_now = now.astimezone()
        # now to the hour: the cache key must not change at every line
        when = _syslog_time(" ".join(m.group(1, 2)) + f" {m.group(3)}:{m.group(4)}:{m.group(5)}",
                            local_now.year, int(now.timestamp()) // 3600 * 3600)
        return (when, line[m.end():]) if when is not None else (None, line)
    m = _ISO_TS.match(line)
    if m:
        try:
            when = dt.datetime.fromisoformat(m.group(1).replace("Z", "+00:00"))
        except ValueError:
            return None, line
        if when.tzinfo is None:
            when = when.astimezone()
        return when.astimezone(dt.UTC), line[m.end():]
    return None, line


def hour_of(when: dt.datetime) -> str:
    return when.replace(minute=0, second=0, microsecond=0).isoformat()


class HourOf:
    """The UTC hour (ISO text) of a log line, computed once per minute of log time."""

    def __init__(self, now: dt.datetime) -> None:
        self.now = now
        self.cache: dict[str, str | None] = {}

    def split(self, line: str) -> tuple[str | None, str]:
        m = _SYSLOG_TS.match(line)
        if m is None:  # RFC 3339 stamps carry their own zone: nothing to cache
            when, rest = parse_time(line, self.now)
            return (hour_of(when) if when is not None else None), rest
        key = line[:m.end() - 4]  # "Nov 29 08:54"
        if key not in self.cache:
            when, _ = parse_time(line, self.now)
            self.cache[key] = hour_of(when) if when is not None else None
        return self.cache[key], line[m.end():]


class Counts:
    def __init__(self, hosted: set[str]) -> None:
        self.hosted = hosted
        self.data: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: dict.fromkeys(COUNTERS, 0))

    def domain(self, sender: str | None, recipient: str) -> str:
        rd, sd = domain_of(recipient), domain_of(sender or "")
        if rd in self.hosted:
            return rd
        if sd in self.hosted:
            return sd
        return rd or sd

    def add(self, hour: str, domain: str, counter: str, n: int = 1) -> None:
        self.data[(hour, domain[:253])][counter] += n

    def total(self) -> int:
        return sum(sum(v.values()) for v in self.data.values())


class PostfixParser:
    """Per-recipient outcomes of postfix's log; ``memory`` (persisted) knows, per queue id
    still in the queue, its sender, when it was received and the domains it was counted on."""

    def __init__(self, counts: Counts, memory: dict) -> None:
        self.counts = counts
        self.msgs: dict = memory.setdefault("msgs", {})

    @staticmethod
    def wanted(line: str) -> bool:
        """A cheap test first: most lines (connect, TLS, disconnect) say nothing we count."""
        return "=<" in line or "client=" in line or "removed" in line or "reject: " in line

    def line(self, hour: str, rest: str) -> None:
        m = _POSTFIX.match(rest)
        if not m:
            return
        service = m.group("prog").rsplit("/", 1)[-1]
        msg = m.group("msg")
        if msg.startswith("NOQUEUE: reject: ") or msg.startswith("NOQUEUE: milter-reject: "):
            self._reject(hour, msg)
            return
        q = _QID.match(msg)
        if not q:
            return
        qid, body = q.group("qid"), q.group("rest")
        if body.startswith("reject: ") or body.startswith("milter-reject: "):
            self._reject(hour, body)
            self.msgs.pop(qid, None)  # the message was refused: it never enters the queue
            return
        if service == "smtpd" and body.startswith("client="):
            self.msgs[qid] = {"h": hour, "new": True, "s": None, "d": []}
        elif service == "pickup" and body.startswith("uid="):
            # a requeued message (postsuper -r) comes back through pickup with orig_id=
            fresh = "orig_id=" not in body
            from_ = _FROM.search(body)
            self.msgs[qid] = {"h": hour, "new": fresh, "s": from_.group(1) if from_ else None, "d": []}
        elif service == "qmgr" and body == "removed":
            self.msgs.pop(qid, None)
        elif service == "qmgr" and body.startswith("from="):
            from_ = _FROM.search(body)
            entry = self.msgs.setdefault(qid, {"h": hour, "new": False, "s": None, "d": []})
            entry["s"] = from_.group(1) if from_ else ""
        elif body.startswith("to=<"):
            # delivery agents (smtp, lmtp, error, retry, ...) and qmgr itself (a destination it
            # already knows to be down: "delivery temporarily suspended"; expired messages)
            st = _STATUS.search(body)
            if not st:
                return
            status = st.group(1)
            if status == "sent":
                relay = (_RELAY.search(body) or ["", ""])[1]
                into_mailbox = service in ("lmtp", "local", "virtual") or relay.endswith("/lmtp]")
                # a delivery into a mailbox is counted from dovecot's own log line
                counter = "sent" if service in ("smtp", "relay") and not into_mailbox else None
            else:
                counter = "deferred" if status == "deferred" else "bounced"
            self._outcome(qid, hour, body, counter)

    def _reject(self, hour: str, text: str) -> None:
        to, from_ = _TO.search(text), _FROM.search(text)
        self.counts.add(hour, self.counts.domain(from_.group(1) if from_ else "", to.group(1) if to else ""),
                        "rejected")

    def _outcome(self, qid: str, hour: str, body: str, counter: str | None) -> None:
        to_ = _TO.search(body)
        to = to_.group(1) if to_ else ""
        entry = self.msgs.get(qid)
        sender = entry["s"] if entry else None
        if sender is None:
            from_ = _FROM.search(body)
            sender = from_.group(1) if from_ else ""
        domain = self.counts.domain(sender, to)
        if entry is not None and entry.get("new") and domain not in entry["d"]:
            entry["d"].append(domain)
            self.counts.add(entry["h"], domain, "received")
        if counter:
            self.counts.add(hour, domain, counter)

    def prune(self, now: dt.datetime) -> None:
        oldest = hour_of(now - dt.timedelta(hours=MEMORY_HOURS))
        for qid in [q for q, e in self.msgs.items() if e["h"] < oldest]:
            del self.msgs[qid]


class DovecotParser:
    """Deliveries into mailboxes (LMTP "saved mail to"), one per session, recipient and message:
    a Sieve script filing one message into two folders logs two lines."""

    RECENT = 2000

    def __init__(self, counts: Counts, memory: dict) -> None:
        self.counts = counts
        self.recent: list[str] = memory.setdefault("recent", [])
        self._seen = set(self.recent)

    @staticmethod
    def wanted(line: str) -> bool:
        return "mail to" in line or "into mailbox" in line

    def line(self, hour: str, rest: str) -> None:
        m = _DOVECOT_SAVED.match(rest)
        if not m:
            return
        key = hashlib.sha1(f"{m.group('user')}|{m.group('session')}|{m.group('msgid')}".encode()).hexdigest()[:16]
        if key in self._seen:
            return
        self._seen.add(key)
        self.recent.append(key)
        if len(self.recent) > self.RECENT:
            for old in self.recent[:len(self.recent) - self.RECENT]:
                self._seen.discard(old)
            del self.recent[:len(self.recent) - self.RECENT]
        self.counts.add(hour, self.counts.domain("", m.group("user")), "delivered")

    def prune(self, now: dt.datetime) -> None:
        pass


Parser = PostfixParser | DovecotParser | RspamdParser
PARSERS: dict[str, type[Parser]] = {"postfix": PostfixParser, "dovecot": DovecotParser, "rspamd": RspamdParser}


def first_line_hash(path: Path) -> str:
    """SHA-256 of the file's first complete line ("" while it has none)."""
    with open(path, "rb") as fh:
        head = fh.readline(65536)
    return hashlib.sha256(head).hexdigest() if head.endswith(b"\n") else ""


class StatsService:
    def __init__(self, app: Services) -> None:
        self.app = app

    # ------------------------------------------------------------ ingestion
    def log_files(self) -> dict[str, Path]:
        return {"postfix": self.app.layout.log_file("postfix"), "dovecot": self.app.layout.log_file("dovecot"),
                "rspamd": self.app.layout.output_file("rspamd")}

    def retention_days(self) -> int:
        value = self.app.settings.get(RETENTION_SETTING)
        return DEFAULT_RETENTION_DAYS if value is None else int(value)

    def set_retention(self, days: int) -> None:
        if not isinstance(days, int) or isinstance(days, bool) or not 1 <= days <= 3650:
            raise ValidationError(f"invalid retention {days!r}: a number of days from 1 to 3650")
        self.app.settings.set(RETENTION_SETTING, days)

    def _hosted(self) -> set[str]:
        from ..db.models import Domain

        with self.app.dbs.session("data") as s:
            return {n.lower() for n in s.scalars(select(Domain.name))}

    def ingest(self) -> dict:
        """Read what the logs gained since the last run and add it to the counters."""
        node = self.app.config.node_name
        now = dt.datetime.now(dt.UTC)
        counts = Counts(self._hosted())
        report: dict[str, Any] = {"node": node, "files": {}, "events": 0}
        with self.app.dbs.session("logs") as s:
            s.execute(text("SELECT pg_advisory_xact_lock(:a, :b)"),
                      {"a": LOCK_CLASS, "b": zlib.crc32(node.encode()) - 2 ** 31})
            for source, path in self.log_files().items():
                state = s.scalar(select(StatsLogState).where(StatsLogState.node == node,
                                                             StatsLogState.source == source))
                if state is None:
                    state = StatsLogState(node=node, source=source, path=str(path), inode=0, offset=0,
                                          first_line_hash="", memory={}, lines=0)
                    s.add(state)
                # a deep copy: the row's value must differ from what was loaded for the UPDATE to happen
                memory = copy.deepcopy(state.memory or {})
                parser = PARSERS[source](counts, memory)
                report["files"][source] = self._ingest_file(path, state, parser, now)
                parser.prune(now)
                state.memory = memory
                state.path = str(path)
            report["events"] = counts.total()
            self._store(s, node, counts)
            days = self.retention_days()
            report["expired_rows"] = s.execute(delete(StatsHourly).where(
                StatsHourly.hour < now - dt.timedelta(days=days))).rowcount  # type: ignore[attr-defined]
        return report

    def _ingest_file(self, path: Path, state: StatsLogState, parser: Parser,
                     now: dt.datetime) -> dict:
        info: dict[str, Any] = {"path": str(path), "read_bytes": 0, "lines": 0, "rotated": False, "restarted": False}
        try:
            st = os.stat(path)
        except FileNotFoundError:
            st = None
        if state.inode and (st is None or st.st_ino != state.inode):
            # rotated: the file we were reading now has another name; finish it first
            old = self._renamed(path, state.inode)
            if old is not None and first_line_hash(old) == state.first_line_hash:
                n, size = self._read(old, state.offset, parser, now)
                info["lines"] += n
                info["read_bytes"] += size - state.offset
            info["rotated"] = True
            state.inode, state.offset, state.first_line_hash = 0, 0, ""
        if st is None:
            return info
        head = first_line_hash(path)
        if state.inode == st.st_ino and (head != state.first_line_hash or st.st_size < state.offset):
            info["restarted"] = True  # truncated in place (copytruncate) or rewritten
            state.offset = 0
        elif state.inode != st.st_ino:
            state.offset = 0
        n, end = self._read(path, state.offset, parser, now)
        info["lines"] += n
        info["read_bytes"] += end - state.offset
        state.inode, state.offset = st.st_ino, end
        state.first_line_hash = first_line_hash(path) if end else ""
        state.lines = (state.lines or 0) + info["lines"]
        return info

    @staticmethod
    def _renamed(path: Path, inode: int) -> Path | None:
        try:
            candidates = [p for p in path.parent.iterdir() if p.name.startswith(path.name) and p != path]
        except OSError:
            return None
        for p in sorted(candidates):
            try:
                if os.stat(p).st_ino == inode and p.is_file():
                    return p
            except OSError:
                continue
        return None

    @staticmethod
    def _read(path: Path, offset: int, parser: Parser, now: dt.datetime) -> tuple[int, int]:
        """Parse complete lines from offset; returns (lines, offset after the last complete line)."""
        lines = 0
        hours = HourOf(now)
        with open(path, "rb") as fh:
            fh.seek(offset)
            pos, carry = offset, b""
            while True:
                chunk = fh.read(CHUNK)
                if not chunk:
                    break
                data = carry + chunk
                cut = data.rfind(b"\n")
                if cut < 0:
                    carry = data
                    continue
                complete, carry = data[:cut + 1], data[cut + 1:]
                for raw in complete.split(b"\n")[:-1]:
                    lines += 1
                    line = raw.decode("utf-8", "replace")
                    if not parser.wanted(line):
                        continue
                    hour, rest = hours.split(line)
                    if hour is not None:
                        parser.line(hour, rest)
                pos += len(complete)
        return lines, pos

    @staticmethod
    def _store(session: Session, node: str, counts: Counts) -> None:
        rows = [{"hour": dt.datetime.fromisoformat(hour), "node": node, "domain": domain, **values}
                for (hour, domain), values in counts.data.items() if any(values.values())]
        if not rows:
            return
        stmt = insert(StatsHourly).values(rows)
        stmt = stmt.on_conflict_do_update(
            constraint="uq_stats_hourly_hour_node_domain",
            set_={c: getattr(StatsHourly, c) + getattr(stmt.excluded, c) for c in COUNTERS})
        session.execute(stmt)

    # ------------------------------------------------------------ queries
    @staticmethod
    def _window(hours: int, end: dt.datetime | None = None) -> tuple[dt.datetime, dt.datetime]:
        if not isinstance(hours, int) or isinstance(hours, bool) or not 1 <= hours <= MAX_HOURS:
            raise ValidationError(f"invalid number of hours {hours!r}: from 1 to {MAX_HOURS}")
        end = (end or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
        last = end.replace(minute=0, second=0, microsecond=0)
        return last - dt.timedelta(hours=hours - 1), last

    @staticmethod
    def _domain_filter(domain: str | None, domains: list[str] | None) -> list[ColumnElement[bool]]:
        from ..validation import domain_name

        conds = []
        if domain:
            conds.append(StatsHourly.domain == domain_name(domain))
        if domains is not None:  # a scope (e.g. a domain administrator's domains)
            conds.append(StatsHourly.domain.in_([d.lower() for d in domains]))
        return conds

    def series(self, hours: int = 24, domain: str | None = None, node: str | None = None,
               domains: list[str] | None = None, end: dt.datetime | None = None) -> dict:
        """The data behind the dashboard charts: one value per hour (oldest first, zero-filled)
        for each counter, and the totals. ``domain``: one domain; ``domains``: only these
        (a domain administrator's scope); ``node``: one node (default: the whole cluster)."""
        start, last = self._window(hours, end)
        conds = [StatsHourly.hour >= start, StatsHourly.hour <= last, *self._domain_filter(domain, domains)]
        if node:
            conds.append(StatsHourly.node == node)
        cols = [func.coalesce(func.sum(getattr(StatsHourly, c)), 0).label(c) for c in COUNTERS]
        with self.app.dbs.session("logs") as s:
            rows = s.execute(select(StatsHourly.hour, *cols).where(*conds).group_by(StatsHourly.hour)).all()
        by_hour = {r.hour.astimezone(dt.UTC): r for r in rows}
        labels = [start + dt.timedelta(hours=i) for i in range(hours)]
        series = {c: [int(getattr(by_hour[h], c)) if h in by_hour else 0 for h in labels] for c in COUNTERS}
        return {"hours": [h.isoformat() for h in labels], "series": series,
                "totals": {c: sum(v) for c, v in series.items()}, "domain": domain, "node": node,
                "from": start.isoformat(), "to": (last + dt.timedelta(hours=1)).isoformat()}

    def by_domain(self, hours: int = 24, domains: list[str] | None = None, node: str | None = None,
                  end: dt.datetime | None = None) -> list[dict]:
        """Totals per domain over the window, busiest first."""
        start, last = self._window(hours, end)
        conds = [StatsHourly.hour >= start, StatsHourly.hour <= last, *self._domain_filter(None, domains)]
        if node:
            conds.append(StatsHourly.node == node)
        cols = [func.sum(getattr(StatsHourly, c)).label(c) for c in COUNTERS]
        with self.app.dbs.session("logs") as s:
            rows = s.execute(select(StatsHourly.domain, *cols).where(*conds).group_by(StatsHourly.domain)).all()
        out: list[dict[str, Any]] = [{"domain": r.domain or "-", **{c: int(getattr(r, c) or 0) for c in COUNTERS}}
                                     for r in rows]
        out.sort(key=lambda d: (-sum(d[c] for c in COUNTERS), d["domain"]))
        return out

    def positions(self) -> list[dict]:
        with self.app.dbs.session("logs") as s:
            return [{"node": r.node, "source": r.source, "path": r.path, "inode": r.inode, "offset": r.offset,
                     "lines": r.lines, "queued_messages_remembered": len((r.memory or {}).get("msgs", {})),
                     "updated_at": r.updated_at.isoformat() if r.updated_at else None}
                    for r in s.scalars(select(StatsLogState).order_by(StatsLogState.node, StatsLogState.source))]
