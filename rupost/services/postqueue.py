"""Mail queue inspection and actions: the postfix queue of this node and of the cluster's nodes.

Everything goes through postfix's own tools, pointed at the node's postfix instance with
``-c CONFIG_DIR`` (the live generation's ``postfix`` directory, as the daemon itself runs):
``postqueue -j`` lists, ``postcat -q`` shows, ``postsuper -h/-H/-d/-r`` hold, release, delete
and requeue, ``postqueue -f``/``-i`` flush.

Other nodes of a cluster: their queue directory is on shared storage (``nodes.queue_directory``),
so this core *reads* another node's queue through a scratch configuration directory whose
``queue_directory`` points at it (``postqueue`` then talks to that queue's showq service, or
reads the files directly when it cannot: "accessing queue directly"). A node whose queue
directory is not mounted here is reported as not reachable. Actions (hold, release, delete,
requeue, flush) change a queue that another host's queue manager is working on, so they are
done only by the node that owns the queue: run the command on that node.
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

from ..errors import NotFoundError, ServiceError, ValidationError

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


def format_age(seconds: int) -> str:
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"


class PostqueueService:
    def __init__(self, app):
        self.app = app

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

    # ------------------------------------------------------------ reading
    def list(self, node: str | None = None, cluster: bool = False, match: list[str] | None = None) -> dict:
        """{"messages": [...], "nodes": [{"node", "reachable", "count", "error"}]}.

        Default: this node. ``node``: that registered node. ``cluster``: every registered node."""
        flt = QueueFilter.parse(match) if match else None
        me = self.app.config.node_name
        if cluster:
            targets = [n["name"] for n in self.app.nodes.list()] or [me]
            if me not in targets:
                targets.insert(0, me)
        else:
            targets = [node or me]
        messages, nodes = [], []
        for name in targets:
            try:
                found = self._node_queue(name)
                nodes.append({"node": name, "reachable": True, "count": len(found), "error": ""})
            except NotFoundError:
                if not cluster:
                    raise
                nodes.append({"node": name, "reachable": False, "count": None, "error": "not registered"})
                continue
            except ServiceError as exc:
                if not cluster:
                    raise
                nodes.append({"node": name, "reachable": False, "count": None, "error": str(exc)})
                continue
            if flt is not None:
                found = [m for m in found if flt.matches(m)]
            messages.extend(found)
        return {"messages": messages, "nodes": nodes}

    def _node_queue(self, name: str) -> list[dict]:
        if name == self.app.config.node_name:
            return self._read_queue(self.local_config_dir(), name)
        info = self.app.nodes.show(name)  # NotFoundError names the registered nodes
        queue_dir = Path(info["queue_directory"] or "")
        if not info["queue_directory"] or not (queue_dir / "deferred").is_dir():
            raise ServiceError(f"node {name}: its queue directory {info['queue_directory'] or '(none recorded)'} "
                               "is not reachable from this node (not on shared storage here): "
                               f"run `rupost mailqueues list` on {name}")
        work = self._scratch_conf(queue_dir)
        try:
            return self._read_queue(work, name)
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def find(self, qid: str, node: str | None = None) -> dict:
        check_ids([qid])
        name = node or self.app.config.node_name
        for msg in self._node_queue(name):
            if msg["id"] == qid:
                return msg
        raise NotFoundError(f"no message {qid} in the mail queue of node {name} "
                            "(delivered, deleted, or a wrong id: see `rupost mailqueues list`)")

    def show(self, qid: str, node: str | None = None, headers_only: bool = False) -> dict:
        """The queue entry and its envelope and content as postcat prints them."""
        msg = self.find(qid, node)
        name = node or self.app.config.node_name
        if name == self.app.config.node_name:
            conf, work = self.local_config_dir(), None
        else:
            work = conf = self._scratch_conf(Path(self.app.nodes.show(name)["queue_directory"]))
        try:
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

    # ------------------------------------------------------------ actions (this node only)
    def _own_node(self, node: str | None, action: str) -> None:
        me = self.app.config.node_name
        if node and node != me:
            self.app.nodes.show(node)  # a clear error for an unknown node
            raise ValidationError(f"{action} changes a queue that node {node}'s queue manager works on: "
                                  f"run `rupost mailqueues {action}` on {node} (this is {me})")

    def select(self, ids: list[str] | None, match: list[str] | None) -> tuple[list[dict], str]:
        """The messages an action applies to: explicit ids (each must be queued) or a filter."""
        if bool(ids) == bool(match):
            raise ValidationError("name the messages: one or more queue ids, or --all-matching FILTER "
                                  "(not both)")
        queued = self._node_queue(self.app.config.node_name)
        if ids:
            check_ids(ids)
            by_id = {m["id"]: m for m in queued}
            missing = [q for q in ids if q not in by_id]
            if missing:
                raise NotFoundError(f"not in the mail queue of node {self.app.config.node_name}: "
                                    f"{', '.join(missing)} (delivered, deleted, or a wrong id)")
            return [by_id[q] for q in dict.fromkeys(ids)], ",".join(dict.fromkeys(ids))
        flt = QueueFilter.parse(match)
        return [m for m in queued if flt.matches(m)], flt.describe()

    def act(self, action: str, ids: list[str] | None = None, match: list[str] | None = None,
            node: str | None = None) -> dict:
        if action not in ACTIONS:
            raise ValidationError(f"unknown queue action {action!r} (actions: {', '.join(ACTIONS)}, flush)")
        self._own_node(node, action)
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
        result = {"node": self.app.config.node_name, "action": action, "selection": what,
                  "matched": len(chosen) + len(skipped), "done": done, "count": len(done),
                  "skipped": skipped, "not_found": gone}
        self.app.audit.record(f"mailqueue.{action}", what, node=result["node"], count=len(done), ids=done[:1000])
        return result

    def flush(self, ids: list[str] | None = None, node: str | None = None) -> dict:
        """Attempt delivery of every deferred message now (postqueue -f), or of the named ones (-i)."""
        self._own_node(node, "flush")
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
        self.app.audit.record("mailqueue.flush", ",".join(ids or []) or "all", node=self.app.config.node_name)
        return {"node": self.app.config.node_name, "action": "flush", "ids": list(ids or []) or "all"}

    def summary(self) -> dict:
        """Counts per queue of this node (checks, metrics)."""
        counts = {q: 0 for q in ("active", "incoming", "deferred", "hold", "maildrop")}
        for m in self._node_queue(self.app.config.node_name):
            counts[m["queue"]] = counts.get(m["queue"], 0) + 1
        counts["total"] = sum(v for k, v in counts.items())
        return counts
