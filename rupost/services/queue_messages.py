"""What a queue message is for the faces, how a queue is filtered, and the checks every
queue request passes (here and, for a relayed request, again on the node that runs it)."""
from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypedDict

from ..cluster.queue_relay import RELAY_LIST_LIMIT, RELAYED
from ..errors import ValidationError
from ..user_regex import UserPattern

if TYPE_CHECKING:
    from collections.abc import Iterable

QUEUE_ID = re.compile(r"^[0-9A-Za-z]{5,32}$")
QUEUES = ("maildrop", "incoming", "active", "deferred", "hold", "corrupt")
ACTIONS = {"hold": "-h", "release": "-H", "delete": "-d", "requeue": "-r"}
FILTER_KEYS = ("id", "queue", "sender", "recipient", "reason", "age")
MAX_SHOW = 2 * 1024 * 1024  # `show` prints at most this many characters of a message
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw]?)$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
TOOL_TIMEOUT = 120
MAX_IDS = 10000
MAX_TERMS = 50
MAX_TERM = 1000


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
    regex: UserPattern | None = None
    seconds: float | None = None

    def matches(self, msg: QueueMessage) -> bool:
        if self.key == "age":
            limit = self.seconds or 0.0
            return msg["age"] > limit if self.op == ">" else msg["age"] < limit
        values = {"id": [msg["id"]], "queue": [msg["queue"]], "sender": [msg["sender"]],
                  "recipient": msg["recipients"], "reason": [msg["reason"]]}[self.key]
        if self.op == "~" and self.regex is not None:
            return any(self.regex.search(v or "") for v in values)  # PatternTimeout if it backtracks
        if self.key in ("queue", "id"):
            return any((v or "").lower() == self.value.lower() for v in values)
        return any(self.value.lower() in (v or "").lower() for v in values)


@dataclass
class QueueFilter:
    """Terms that must all match: KEY=TEXT (substring, case-insensitive; exact for id and
    queue), KEY~REGEX (Python regular expression, run with a time limit), age>DURATION, age<DURATION, or `all`."""

    terms: list[Term] = field(default_factory=list)
    everything: bool = False

    @classmethod
    def parse(cls, expressions: list[str] | tuple[str, ...]) -> QueueFilter:
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
                # run with a time limit: the pattern is the user's (rupost/user_regex.py)
                term.regex = UserPattern(value, f"filter {key}~", ignore_case=True)
            elif key == "queue" and value.lower() not in QUEUES:
                raise ValidationError(f"invalid filter {expr!r}: unknown queue (queues: {', '.join(QUEUES)})")
            flt.terms.append(term)
        return flt

    def matches(self, msg: QueueMessage) -> bool:
        return all(t.matches(msg) for t in self.terms)

    def describe(self) -> str:
        parts = ([] if not self.everything else ["all"]) + [f"{t.key}{t.op}{t.value}" for t in self.terms]
        return " ".join(parts)


def check_ids(ids: Iterable[str]) -> list[str]:
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
    allowed = {"list": {"match", "limit"}, "show": {"ids", "headers_only"},
               "flush": {"ids"}}.get(action, {"ids", "match"})
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


class QueueMessage(TypedDict):
    """One message of a queue as the faces show it."""
    node: str
    id: str
    queue: str
    held: bool
    sender: str
    recipients: list[str]
    size: int
    arrival: str | None  # ISO 8601, UTC
    age: int  # seconds
    reason: str  # the delay reasons of its recipients
    forced_expire: bool


def queue_message(raw: dict, node: str, now: float) -> QueueMessage:
    """A message from one line of ``postqueue -j``."""
    recipients = raw.get("recipients") or []
    reasons = []
    for r in recipients:
        reason = r.get("delay_reason") or ""
        if reason and reason not in reasons:
            reasons.append(reason)
    arrival = int(raw.get("arrival_time") or 0)
    queue = raw.get("queue_name", "")
    return QueueMessage(**{
        "node": node,
        "id": raw.get("queue_id", ""),
        "queue": queue,
        "held": queue == "hold",
        "sender": raw.get("sender", ""),
        "recipients": [r.get("address", "") for r in recipients],
        "size": int(raw.get("message_size") or 0),
        "arrival": dt.datetime.fromtimestamp(arrival, dt.UTC).isoformat() if arrival else None,
        "age": max(0, int(now - arrival)) if arrival else 0,
        "reason": "; ".join(reasons),
        "forced_expire": bool(raw.get("forced_expire")),
    })


def per_queue(messages: list[QueueMessage]) -> dict[str, int]:
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
