"""rspamd's verdicts for the hourly statistics (rupost/services/stats.py): one line per message
in rspamd's log ("rspamd_task_write_log: ... (default: F (no action): [1.90/15.00] [SYMBOLS])
... rcpts: <a@example.org>,<b@example.org>, ..."), counted per hour and per domain of each
recipient (the hosted one, as postfix's lines are):

- filter_scanned: a message rspamd scanned (port 25; submission too when antivirus is on);
- filter_rejected: its verdict was reject (spam score, a deny list, a virus, DMARC p=reject);
- filter_greylisted: its verdict was a soft reject by the greylisting module (GREYLIST).

A retried message is scanned again and counted again, as postfix counts each attempt.
"""
from __future__ import annotations

import datetime as dt
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .stats import Counts

_TASK = re.compile(r"rspamd_task_write_log: .*?\(default: [TF] \((?P<action>[a-z ]+)\): \[")
_FROM = re.compile(r", from: <([^>]*)>")
_RCPTS = re.compile(r" rcpts: (\S+?),? ")


class RspamdParser:
    """Stateless: each message is one line."""

    def __init__(self, counts: Counts, memory: dict) -> None:
        self.counts = counts

    @staticmethod
    def wanted(line: str) -> bool:
        return "rspamd_task_write_log" in line

    def line(self, hour: str, rest: str) -> None:
        m = _TASK.search(rest)
        if not m:
            return
        from_ = _FROM.search(rest)
        sender = from_.group(1) if from_ else ""
        rcpts = _RCPTS.search(rest + " ")
        recipients = [r.strip("<>") for r in rcpts.group(1).split(",")] if rcpts else [""]
        action = m.group("action")
        counters = ["filter_scanned"]
        if action == "reject":
            counters.append("filter_rejected")
        elif action == "soft reject" and "GREYLIST(" in rest:
            counters.append("filter_greylisted")
        for domain in dict.fromkeys(self.counts.domain(sender, r) for r in recipients):
            for counter in counters:
                self.counts.add(hour, domain, counter)

    def prune(self, now: dt.datetime) -> None:
        pass
