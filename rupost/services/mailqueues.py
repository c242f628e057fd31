"""Mail queue inspection and actions: the postfix queue of this node and of the cluster's nodes.

Everything goes through postfix's own tools, pointed at the node's postfix instance with
``-c CONFIG_DIR`` (the live generation's ``postfix`` directory, as the daemon itself runs):
``postqueue -j`` lists, ``postcat -q`` shows, ``postsuper -h/-H/-d/-r`` hold, release, delete
and requeue, ``postqueue -f``/``-i`` flush.

Other nodes of a cluster: their queue directory is on shared storage (``nodes.queue_directory``),
so this core *reads* another node's queue through a scratch configuration directory whose
``queue_directory`` points at it (``postqueue`` then talks to that queue's showq service, or
reads the files directly when it cannot: "accessing queue directly"). A node whose queue
directory is not mounted here is read through that node's core instead (below).

Actions (hold, release, delete, requeue, flush) change a queue that the owning host's queue
manager works on, so only the owning node executes them. Asked from another node, the action
is *relayed*: a ``queue_requests`` row (rupost database) and a NOTIFY on ``rupost_queue``; the
owning node's agent (``rupost run``) claims the row, checks the action against a whitelist and
its arguments again (queue ids, filters), runs it through this same service on its own queue,
audits it there (the administrator who asked, the requesting node, the panel client's address)
and writes the result into the row, which the requester waits for with a timeout. A request
not picked up in time is marked expired and is never run later. Listing and showing another
node's queue are relayed the same way when its queue directory is not on shared storage here.
"""
from __future__ import annotations

import datetime as dt
import json
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConflictError, NotFoundError, RuPostError, ServiceError, ValidationError

QUEUE_ID = re.compile(r"^[0-9A-Za-z]{5,32}$")
QUEUES = ("maildrop", "incoming", "active", "deferred", "hold", "corrupt")
ACTIONS = {"hold": "-h", "release": "-H", "delete": "-d", "requeue": "-r"}
# what postsuper prints per message: "postsuper: 0A852260D43: placed on hold"
_POSTSUPER_DONE = re.compile(r"^postsuper: ([0-9A-Za-z]+): (placed on hold|released from hold|removed|requeued)$")
FILTER_KEYS = ("id", "queue", "sender", "recipient", "reason", "age")
MAX_SHOW = 2 * 1024 * 1024  # `show` prints at most this many characters of a message
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw]?)$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
TOOL_TIMEOUT = 120
# relayed requests (another node's queue, through its agent)
CHANNEL = "rupost_queue"
RELAYED = ("list", "show", "hold", "release", "delete", "requeue", "flush")
RELAY_TIMEOUT = 30.0  # seconds a requester waits for the owning node by default
MAX_RELAY_TIMEOUT = 600.0
MAX_IDS = 10000
RELAY_LIST_LIMIT = 10000  # messages a relayed list brings back per node (the rest is counted)
MAX_TERMS = 50
MAX_TERM = 1000
PURGE_AFTER_HOURS = 24  # finished request rows are kept this long (for inspection), then deleted
PURGE_EVERY = 600.0
_ERRORS = {cls.__name__: cls for cls in (ValidationError, NotFoundError, ConflictError, ServiceError)}


def parse_duration(text: str) -> float:
    """'90', '90s', '15m', '2h', '3d', '1w' -> seconds."""
    m = _DURATION.match(text.strip().lower())
    if not m:
        raise ValidationError(f"invalid duration {text!r}: use a number with s, m, h, d or w (e.g. 30m, 2h, 3d)")
    return float(m.group(1)) * _UNITS[m.group(2)]


@dataclass
class Term:
    key: str
    op: str  # "=" substring, "~" regular expression, ">" / "<" age comparison
    value: str
    regex: re.Pattern | None = None
    seconds: float | None = None

    def matches(self, msg: dict) -> bool:
        if self.key == "age":
            return msg["age"] > self.seconds if self.op == ">" else msg["age"] < self.seconds
        values = {"id": [msg["id"]], "queue": [msg["queue"]], "sender": [msg["sender"]],
                  "recipient": msg["recipients"], "reason": [msg["reason"]]}[self.key]
        if self.op == "~":
            return any(self.regex.search(v or "") for v in values)
        if self.key in ("queue", "id"):
            return any((v or "").lower() == self.value.lower() for v in values)
        return any(self.value.lower() in (v or "").lower() for v in values)


@dataclass
class QueueFilter:
    """Terms that must all match: KEY=TEXT (substring, case-insensitive; exact for id and
    queue), KEY~REGEX (Python regular expression), age>DURATION, age<DURATION, or `all`."""

    terms: list[Term] = field(default_factory=list)
    everything: bool = False

    @classmethod
    def parse(cls, expressions: list[str] | tuple[str, ...]) -> "QueueFilter":
        flt = cls()
        if not expressions:
            raise ValidationError("empty filter: give KEY=TEXT, KEY~REGEX, age>DURATION or all")
        for expr in expressions:
            expr = (expr or "").strip()
            if expr.lower() == "all":
                flt.everything = True
                continue
            m = re.match(r"^([A-Za-z]+)\s*([=~<>])\s*(.*)$", expr, re.S)
            if not m:
                raise ValidationError(f"invalid filter {expr!r}: expected KEY=TEXT, KEY~REGEX, age>DURATION, "
                                      f"age<DURATION or all (keys: {', '.join(FILTER_KEYS)})")
            key, op, value = m.group(1).lower(), m.group(2), m.group(3).strip()
            if key not in FILTER_KEYS:
                raise ValidationError(f"invalid filter {expr!r}: unknown key {key!r} "
                                      f"(keys: {', '.join(FILTER_KEYS)})")
            if not value:
                raise ValidationError(f"invalid filter {expr!r}: the value is empty")
            term = Term(key, op, value)
            if key == "age":
                if op not in "<>":
                    raise ValidationError(f"invalid filter {expr!r}: age takes > or < (e.g. age>2h)")
                term.seconds = parse_duration(value)
            elif op in "<>":
                raise ValidationError(f"invalid filter {expr!r}: only age compares with > or <; "
                                      f"use {key}=TEXT or {key}~REGEX")
            elif op == "~":
                try:
                    term.regex = re.compile(value, re.I)
                except re.error as exc:
                    raise ValidationError(f"invalid filter {expr!r}: bad regular expression: {exc}") from None
            elif key == "queue" and value.lower() not in QUEUES:
                raise ValidationError(f"invalid filter {expr!r}: unknown queue (queues: {', '.join(QUEUES)})")
            flt.terms.append(term)
        return flt

    def matches(self, msg: dict) -> bool:
        return all(t.matches(msg) for t in self.terms)

    def describe(self) -> str:
        parts = ([] if not self.everything else ["all"]) + [f"{t.key}{t.op}{t.value}" for t in self.terms]
        return " ".join(parts)


def check_ids(ids) -> list[str]:
    out = []
    for qid in ids:
        if not QUEUE_ID.match(qid or ""):
            raise ValidationError(f"invalid queue id {qid!r}: a postfix queue id is 5-32 letters and digits "
                                  "(see `rupost mailqueues list`)")
        out.append(qid)
    return out


def check_arguments(action: str, arguments: dict | None) -> dict:
    """The whitelist of a relayed request, checked by the requester and again by the node that
    runs it: the action, queue ids in postfix's syntax, filters as `QueueFilter` parses them."""
    if action not in RELAYED:
        raise ValidationError(f"unknown queue action {action!r} (actions: {', '.join(RELAYED)})")
    arguments = arguments if isinstance(arguments, dict) else {}
    allowed = {"list": {"match", "limit"}, "show": {"ids", "headers_only"}, "flush": {"ids"}}.get(action, {"ids", "match"})
    unknown = sorted(set(arguments) - allowed)
    if unknown:
        raise ValidationError(f"queue action {action}: unexpected arguments {', '.join(unknown)}")
    out: dict = {}
    ids = arguments.get("ids") or []
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise ValidationError(f"queue action {action}: ids must be a list of queue ids")
    if len(ids) > MAX_IDS:
        raise ValidationError(f"too many queue ids ({len(ids)}; at most {MAX_IDS} at once): use --all-matching")
    if ids:
        out["ids"] = check_ids(ids)
    match = arguments.get("match") or []
    if not isinstance(match, list) or not all(isinstance(t, str) for t in match):
        raise ValidationError(f"queue action {action}: the filter must be a list of terms")
    if len(match) > MAX_TERMS or any(len(t) > MAX_TERM for t in match):
        raise ValidationError(f"filter too long: at most {MAX_TERMS} terms of {MAX_TERM} characters")
    if match:
        QueueFilter.parse(match)
        out["match"] = list(match)
    if "limit" in arguments:
        limit = arguments["limit"]
        if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= RELAY_LIST_LIMIT:
            raise ValidationError(f"queue action list: limit must be a number from 1 to {RELAY_LIST_LIMIT}")
        out["limit"] = limit
    if action == "show":
        if len(ids) != 1:
            raise ValidationError("show takes exactly one queue id")
        out["headers_only"] = bool(arguments.get("headers_only"))
    if action in ACTIONS and bool(ids) == bool(match):
        raise ValidationError("name the messages: one or more queue ids, or --all-matching FILTER (not both)")
    return out


def _message(raw: dict, node: str, now: float) -> dict:
    recipients = raw.get("recipients") or []
    reasons = []
    for r in recipients:
        reason = r.get("delay_reason") or ""
        if reason and reason not in reasons:
            reasons.append(reason)
    arrival = int(raw.get("arrival_time") or 0)
    queue = raw.get("queue_name", "")
    return {
        "node": node,
        "id": raw.get("queue_id", ""),
        "queue": queue,
        "held": queue == "hold",
        "sender": raw.get("sender", ""),
        "recipients": [r.get("address", "") for r in recipients],
        "size": int(raw.get("message_size") or 0),
        "arrival": dt.datetime.fromtimestamp(arrival, dt.timezone.utc).isoformat() if arrival else None,
        "age": max(0, int(now - arrival)) if arrival else 0,
        "reason": "; ".join(reasons),
        "forced_expire": bool(raw.get("forced_expire")),
    }


def _per_queue(messages: list[dict]) -> dict[str, int]:
    counts = dict.fromkeys(QUEUES, 0)
    for m in messages:
        counts[m["queue"]] = counts.get(m["queue"], 0) + 1
    return counts


def format_age(seconds: int) -> str:
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"


class _RelayedAudit:
    """The audit journal of a relayed request on the node that runs it: the administrator who
    asked (the record's actor), the face they used (its source), the requesting node and the
    panel client's address in the details."""

    def __init__(self, audit, source: str, details: dict):
        self.audit, self.source, self.details = audit, source, details

    def record(self, action: str, target: str = "", source: str | None = None, **details) -> None:
        self.audit.record(action, target, source=self.source, **{**details, **self.details})


class MailQueueService:
    def __init__(self, app):
        self.app = app
        self._purged_at: float | None = None

    # ------------------------------------------------------------ where the queue is
    def local_config_dir(self) -> Path:
        conf = self.app.layout.component_config("postfix")
        if not (conf / "main.cf").exists():
            raise NotFoundError("postfix is not deployed on this node yet: run rupost deploy")
        return conf

    def _run(self, argv: list[str], stdin: str | None = None) -> subprocess.CompletedProcess:
        try:
            return subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=TOOL_TIMEOUT,
                                  errors="replace")
        except FileNotFoundError:
            raise ServiceError(f"{argv[0]} is not installed (Debian package postfix)") from None
        except subprocess.TimeoutExpired:
            raise ServiceError(f"{' '.join(argv[:3])} did not answer within {TOOL_TIMEOUT} s") from None

    @staticmethod
    def _errors(proc: subprocess.CompletedProcess) -> str:
        lines = [ln for ln in (proc.stderr or "").splitlines() if ln.strip() and ": warning: " not in ln
                 and "Mail system is down" not in ln]
        return "; ".join(lines) or (proc.stdout or "").strip()[:500] or f"exit code {proc.returncode}"

    def _read_queue(self, conf: Path, node: str) -> list[dict]:
        proc = self._run(["postqueue", "-c", str(conf), "-j"])
        if proc.returncode != 0:
            raise ServiceError(f"postqueue -j on node {node}: {self._errors(proc)}")
        now = time.time()
        out = []
        for line in proc.stdout.splitlines():
            line = line.strip()
            if not line:
                continue
            try:
                out.append(_message(json.loads(line), node, now))
            except ValueError:
                raise ServiceError(f"postqueue -j on node {node}: unexpected output line: {line[:200]}") from None
        out.sort(key=lambda m: (m["arrival"] or "", m["id"]))
        return out

    def _scratch_conf(self, queue_dir: Path) -> Path:
        """A configuration directory that names another node's queue, for reading it."""
        work = Path(tempfile.mkdtemp(prefix="rupost-queue-"))
        (work / "main.cf").write_text(f"# RuPost: read-only view of another node's queue\n"
                                      f"compatibility_level = 3.6\nqueue_directory = {queue_dir}\n")
        return work

    def _me(self) -> str:
        return self.app.config.node_name

    def _shared_queue(self, name: str) -> Path | None:
        """Another node's queue directory when it is reachable here (shared storage), else None."""
        info = self.app.nodes.show(name)  # NotFoundError names the registered nodes
        queue_dir = Path(info["queue_directory"] or "")
        if info["queue_directory"] and (queue_dir / "deferred").is_dir():
            return queue_dir
        return None

    # ------------------------------------------------------------ reading
    def list(self, node: str | None = None, cluster: bool = False, match: list[str] | None = None,
             timeout: float = RELAY_TIMEOUT, limit: int | None = None) -> dict:
        """{"messages": [...], "nodes": [{"node", "reachable", "count", "matched", "queues",
        "truncated", "error", "via"}]}: per node, ``count`` messages in its queue, ``matched`` by
        the filter (``queues``: how many of those in each postfix queue), of which the list has
        the first ``limit`` (``truncated`` when it has fewer).

        Default: this node. ``node``: that registered node. ``cluster``: every registered node.
        Another node's queue is read through its queue directory on shared storage, or else
        asked from its core (``via``: "local", "shared storage" or "relay"); a relayed list
        travels through the database, so it brings back at most RELAY_LIST_LIMIT messages."""
        flt = QueueFilter.parse(match) if match else None
        me = self._me()
        if cluster:
            targets = [n["name"] for n in self.app.nodes.list()] or [me]
            if me not in targets:
                targets.insert(0, me)
        else:
            targets = [node or me]
        found: dict[str, list[dict]] = {}
        status: dict[str, dict] = {}
        relay: list[str] = []
        for name in targets:
            try:
                if name == me:
                    found[name], via = self._read_queue(self.local_config_dir(), name), "local"
                else:
                    shared = self._shared_queue(name)
                    if shared is None:
                        relay.append(name)
                        continue
                    found[name], via = self._read_shared(name, shared), "shared storage"
                status[name] = {"node": name, "reachable": True, "count": len(found[name]), "error": "",
                                "via": via}
            except NotFoundError as exc:
                if not cluster:
                    raise
                status[name] = {"node": name, "reachable": False, "count": None, "via": "",
                                "error": "not registered" if "not registered" in str(exc) else str(exc)}
            except ServiceError as exc:
                if not cluster:
                    raise
                status[name] = {"node": name, "reachable": False, "count": None, "error": str(exc), "via": ""}
        if relay:
            relayed = {"match": list(match or []), "limit": min(limit or RELAY_LIST_LIMIT, RELAY_LIST_LIMIT)}
            answers = self._relay_many({name: ("list", relayed) for name in relay}, timeout)
            for name, answer in answers.items():
                if isinstance(answer, RuPostError):
                    if not cluster:
                        raise answer
                    status[name] = {"node": name, "reachable": False, "count": None, "error": str(answer),
                                    "via": "relay"}
                    continue
                found[name] = answer["messages"]
                own = answer["nodes"][0]
                status[name] = {"node": name, "reachable": True, "count": own["count"], "error": "", "via": "relay",
                                "matched": own.get("matched", len(found[name])),
                                "truncated": own.get("truncated", False),
                                "queues": own.get("queues") or _per_queue(found[name])}
        messages = []
        for name in targets:
            if name not in found:
                continue
            if name not in relay:  # a relayed list comes filtered and capped by its node
                mine = [m for m in found[name] if flt is None or flt.matches(m)]
                status[name].update(matched=len(mine), truncated=limit is not None and len(mine) > limit,
                                    queues=_per_queue(mine))
                found[name] = mine[:limit] if limit is not None else mine
            messages.extend(found[name])
        return {"messages": messages, "nodes": [status[name] for name in targets]}

    def _read_shared(self, name: str, queue_dir: Path) -> list[dict]:
        work = self._scratch_conf(queue_dir)
        try:
            return self._read_queue(work, name)
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def _node_queue(self, name: str) -> list[dict]:
        """The queue of this node, or of another node through shared storage (no relay)."""
        if name == self._me():
            return self._read_queue(self.local_config_dir(), name)
        shared = self._shared_queue(name)
        if shared is None:
            raise ServiceError(f"node {name}: its queue directory {self.app.nodes.show(name)['queue_directory'] or '(none recorded)'} "
                               "is not reachable from this node (not on shared storage here): "
                               f"run `rupost mailqueues list` on {name}")
        return self._read_shared(name, shared)

    def find(self, qid: str, node: str | None = None) -> dict:
        check_ids([qid])
        name = node or self._me()
        for msg in self._node_queue(name):
            if msg["id"] == qid:
                return msg
        raise NotFoundError(f"no message {qid} in the mail queue of node {name} "
                            "(delivered, deleted, or a wrong id: see `rupost mailqueues list`)")

    def show(self, qid: str, node: str | None = None, headers_only: bool = False,
             timeout: float = RELAY_TIMEOUT) -> dict:
        """The queue entry and its envelope and content as postcat prints them."""
        check_ids([qid])
        name = node or self._me()
        if name == self._me():
            conf, work = self.local_config_dir(), None
        else:
            shared = self._shared_queue(name)
            if shared is None:
                return self._relay(name, "show", {"ids": [qid], "headers_only": headers_only}, timeout)
            work = conf = self._scratch_conf(shared)
        try:
            msg = self.find(qid, name)
            parts = ["-e", "-h"] if headers_only else []  # none of -b/-e/-h: the whole file
            proc = self._run(["postcat", "-c", str(conf), "-q", *parts, qid])
        finally:
            if work is not None:
                shutil.rmtree(work, ignore_errors=True)
        if proc.returncode != 0:
            if "No such file" in proc.stderr or "not found" in proc.stderr:
                raise NotFoundError(f"message {qid} left the queue of node {name} while it was being read")
            raise ServiceError(f"postcat -q {qid}: {self._errors(proc)}")
        text = proc.stdout
        truncated = len(text) > MAX_SHOW
        return {**msg, "content": text[:MAX_SHOW], "truncated": truncated}

    # ------------------------------------------------------------ actions (by the node that owns the queue)
    def select(self, ids: list[str] | None, match: list[str] | None) -> tuple[list[dict], str]:
        """The messages an action applies to: explicit ids (each must be queued) or a filter."""
        if bool(ids) == bool(match):
            raise ValidationError("name the messages: one or more queue ids, or --all-matching FILTER "
                                  "(not both)")
        queued = self._node_queue(self._me())
        if ids:
            check_ids(ids)
            by_id = {m["id"]: m for m in queued}
            missing = [q for q in ids if q not in by_id]
            if missing:
                raise NotFoundError(f"not in the mail queue of node {self._me()}: "
                                    f"{', '.join(missing)} (delivered, deleted, or a wrong id)")
            return [by_id[q] for q in dict.fromkeys(ids)], ",".join(dict.fromkeys(ids))
        flt = QueueFilter.parse(match)
        return [m for m in queued if flt.matches(m)], flt.describe()

    def act(self, action: str, ids: list[str] | None = None, match: list[str] | None = None,
            node: str | None = None, timeout: float = RELAY_TIMEOUT) -> dict:
        if action not in ACTIONS:
            raise ValidationError(f"unknown queue action {action!r} (actions: {', '.join(ACTIONS)}, flush)")
        if node and node != self._me():
            return self._relay(node, action, {"ids": list(ids or []), "match": list(match or [])}, timeout)
        chosen, what = self.select(ids, match)
        skipped = []
        if action == "release":
            skipped = [m["id"] for m in chosen if m["queue"] != "hold"]
            if ids and skipped:
                raise ValidationError(f"not on hold: {', '.join(skipped)} (release applies to held messages)")
            chosen = [m for m in chosen if m["queue"] == "hold"]
        elif action == "hold":
            skipped = [m["id"] for m in chosen if m["queue"] == "hold"]
            chosen = [m for m in chosen if m["queue"] != "hold"]
        done: list[str] = []
        if chosen:
            conf = self.local_config_dir()
            proc = self._run(["postsuper", "-c", str(conf), ACTIONS[action], "-"],
                             stdin="".join(m["id"] + "\n" for m in chosen))
            for line in (proc.stderr or "").splitlines():
                m = _POSTSUPER_DONE.match(line.strip())
                if m:
                    done.append(m.group(1))
            if proc.returncode != 0:
                raise ServiceError(f"postsuper {ACTIONS[action]}: {self._errors(proc)}")
        gone = [m["id"] for m in chosen if m["id"] not in done]
        result = {"node": self._me(), "action": action, "selection": what,
                  "matched": len(chosen) + len(skipped), "done": done, "count": len(done),
                  "skipped": skipped, "not_found": gone}
        self.app.audit.record(f"mailqueue.{action}", what, node=result["node"], count=len(done), ids=done[:1000])
        return result

    def flush(self, ids: list[str] | None = None, node: str | None = None, timeout: float = RELAY_TIMEOUT) -> dict:
        """Attempt delivery of every deferred message now (postqueue -f), or of the named ones (-i)."""
        if node and node != self._me():
            return self._relay(node, "flush", {"ids": list(ids or [])}, timeout)
        conf = self.local_config_dir()
        if ids:
            check_ids(ids)
            for qid in ids:
                self.find(qid)
                proc = self._run(["postqueue", "-c", str(conf), "-i", qid])
                if proc.returncode != 0:
                    raise ServiceError(f"postqueue -i {qid}: {self._errors(proc)}")
        else:
            proc = self._run(["postqueue", "-c", str(conf), "-f"])
            if proc.returncode != 0:
                raise ServiceError(f"postqueue -f: {self._errors(proc)} (is postfix running? "
                                   "`rupost components status`)")
        self.app.audit.record("mailqueue.flush", ",".join(ids or []) or "all", node=self._me())
        return {"node": self._me(), "action": "flush", "ids": list(ids or []) or "all"}

    def summary(self) -> dict:
        """Counts per queue of this node (checks, metrics)."""
        counts = {q: 0 for q in ("active", "incoming", "deferred", "hold", "maildrop")}
        for m in self._node_queue(self._me()):
            counts[m["queue"]] = counts.get(m["queue"], 0) + 1
        counts["total"] = sum(v for k, v in counts.items())
        return counts

    # ------------------------------------------------------------ relay: the requester's side
    def _relay(self, node: str, action: str, arguments: dict, timeout: float) -> dict:
        answer = self._relay_many({node: (action, arguments)}, timeout)[node]
        if isinstance(answer, RuPostError):
            raise answer
        return answer

    def _relay_many(self, requests: dict[str, tuple[str, dict]], timeout: float) -> dict:
        """Ask each node's core for one queue request at once and wait for all of them;
        node -> its result, or the RuPostError to report for it."""
        from sqlalchemy import func, text

        from ..db.queue_request_models import QueueRequest

        if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or not 1 <= timeout <= MAX_RELAY_TIMEOUT:
            raise ValidationError(f"invalid timeout {timeout!r}: from 1 to {int(MAX_RELAY_TIMEOUT)} seconds")
        answers: dict[str, object] = {}
        pending: dict[int, str] = {}
        checked = {}
        for node, (action, arguments) in requests.items():
            checked[node] = (action, check_arguments(action, arguments))  # bad input: refused here
        audit = self.app.audit
        address = getattr(audit, "address", None)  # the panel's audit carries the client address
        source = "panel" if address is not None else "cli"
        with self.app.dbs.session("main") as s:
            for node, (action, arguments) in checked.items():
                try:
                    info = self.app.nodes.show(node)  # NotFoundError names the registered nodes
                except NotFoundError as exc:
                    answers[node] = exc
                    continue
                if not self.app.nodes.agent_alive(info):
                    answers[node] = ServiceError(
                        f"node {node} did not answer: its node agent (`rupost run`) is not running "
                        f"(last report {info['last_heartbeat'] or 'never'}), so it cannot act on its queue; "
                        f"nothing was changed there. Start its agent, or run `rupost mailqueues {action}` on {node}")
                    continue
                row = QueueRequest(node_name=node, action=action, arguments=arguments, status="requested",
                                   requested_by=self.app.actor[:128], requested_from=self._me()[:128],
                                   source=source, address=(address or "")[:64], error="",
                                   expires_at=func.now() + dt.timedelta(seconds=timeout))
                s.add(row)
                s.flush()
                pending[row.id] = node
                s.execute(text("SELECT pg_notify(:c, :p)"), {"c": CHANNEL, "p": node})
        deadline = time.monotonic() + timeout
        pause = 0.05
        while pending:
            with self.app.dbs.session("main") as s:
                rows = s.execute(text("SELECT id, status, result, error FROM queue_requests WHERE id = ANY(:ids)"),
                                 {"ids": list(pending)}).all()
            for rid, status, result, error in rows:
                if status == "done":
                    answers[pending.pop(rid)] = result
                elif status == "failed":
                    node = pending.pop(rid)
                    kind = _ERRORS.get((result or {}).get("error_class"), ServiceError)
                    answers[node] = kind(error if f"node {node}" in error else f"node {node}: {error}")
            if not pending:
                break
            if time.monotonic() >= deadline:
                for rid, node in list(pending.items()):
                    answers[node] = self._expire(rid, node, timeout)
                    pending.pop(rid)
                break
            time.sleep(pause)
            pause = min(pause * 1.5, 0.5)
        return answers

    def _expire(self, rid: int, node: str, timeout: float) -> RuPostError:
        from sqlalchemy import text

        with self.app.dbs.session("main") as s:
            expired = s.execute(text("UPDATE queue_requests SET status = 'expired', finished_at = now(), "
                                     "error = 'no answer within the timeout' WHERE id = :id AND status = 'requested' "
                                     "RETURNING id"), {"id": rid}).first()
        if expired is not None:
            return ServiceError(f"node {node} did not answer within {timeout:g} s: its node agent did not pick up "
                                f"the request (is `rupost run` running on {node}, and can it reach the database?); "
                                "nothing was changed there")
        return ServiceError(f"node {node} did not answer within {timeout:g} s: it started the request and has not "
                            f"finished it yet; see `rupost mailqueues list --node {node}` and the audit journal "
                            "for the outcome")

    # ------------------------------------------------------------ relay: the owning node's side (its agent)
    def serve_requests(self) -> int:
        """Run the queue requests other nodes made for this node's queue; returns how many."""
        from sqlalchemy import text

        me = self._me()
        served = 0
        self._purge()
        while True:
            with self.app.dbs.session("main") as s:
                row = s.execute(text(
                    "UPDATE queue_requests SET status = 'running', started_at = now() WHERE id = ("
                    " SELECT id FROM queue_requests WHERE node_name = :me AND status = 'requested'"
                    " AND expires_at > now() ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED) "
                    "RETURNING id, action, arguments, requested_by, requested_from, source, address"),
                    {"me": me}).mappings().first()
            if row is None:
                return served
            served += 1
            result, error = None, ""
            try:
                result = self._execute(dict(row))
                status = "done"
            except RuPostError as exc:
                status, error, result = "failed", str(exc), {"error_class": type(exc).__name__}
            except Exception as exc:  # noqa: BLE001 - the requester must get an answer, not a timeout
                status, error = "failed", f"internal error on node {me}: {type(exc).__name__}: {exc}"
                result = {"error_class": "ServiceError"}
            with self.app.dbs.session("main") as s:
                s.execute(text("UPDATE queue_requests SET status = :st, result = CAST(:res AS jsonb), error = :err, "
                               "finished_at = now() WHERE id = :id"),
                          {"st": status, "res": json.dumps(result), "err": error[:10000], "id": row["id"]})

    def _execute(self, req: dict) -> dict:
        """One relayed request, checked again here, run on this node as the administrator who asked."""
        import copy

        from .audit import AuditService

        action = req["action"]
        arguments = check_arguments(action, req["arguments"])
        view = copy.copy(self.app)  # the same engines and layout; the requester as the actor
        for cached in ("audit", "mailqueues"):
            view.__dict__.pop(cached, None)
        view.actor = req["requested_by"] or "?"
        details = {"requested_from": req["requested_from"], "request": req["id"]}
        if req["address"]:
            details["address"] = req["address"]
        view.__dict__["audit"] = _RelayedAudit(AuditService(view), req["source"] or "cli", details)
        service = MailQueueService(view)
        if action == "list":
            return service.list(match=arguments.get("match"), limit=arguments.get("limit", RELAY_LIST_LIMIT))
        if action == "show":
            return service.show(arguments["ids"][0], headers_only=arguments["headers_only"])
        if action == "flush":
            return service.flush(arguments.get("ids"))
        return service.act(action, ids=arguments.get("ids"), match=arguments.get("match"))

    def _purge(self) -> None:
        from sqlalchemy import text

        now = time.monotonic()
        if self._purged_at is not None and now - self._purged_at < PURGE_EVERY:
            return
        self._purged_at = now
        with self.app.dbs.session("main") as s:
            s.execute(text("DELETE FROM queue_requests WHERE created_at < now() - make_interval(hours => :h)"),
                      {"h": PURGE_AFTER_HOURS})
