"""A steady flow of mail through the cluster nodes' port 25, every message numbered, every
SMTP answer recorded: what a failover costs the senders (4xx retried, 5xx refused) and,
counted in the mailboxes afterwards, what it cost the mail (lost, duplicated)."""
from __future__ import annotations

import smtplib
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path


@dataclass
class Attempt:
    at: float  # time.monotonic()
    number: int
    rcpt: str
    outcome: str  # accepted, 4xx, 5xx, connection
    detail: str = ""


@dataclass
class MailFlow:
    """Messages round-robin over `nodes` (addresses) and `recipients`, one every `pause`
    seconds from `source`; a 4xx or a connection failure is retried (as a sending MTA would)
    until accepted or refused with 5xx, at most `max_tries` times."""
    nodes: list[str]
    source: str
    recipients: list[str]
    pause: float = 0.2
    max_tries: int = 120
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    attempts: list[Attempt] = field(default_factory=list)
    accepted: dict[int, str] = field(default_factory=dict)  # number -> recipient
    refused: dict[int, str] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def subject(self, number: int) -> str:
        return f"flow {self.tag} #{number}"

    def start(self) -> MailFlow:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 180) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout)

    def _run(self) -> None:
        number = 0
        while not self._stop.is_set():
            number += 1
            self._deliver(number, self.recipients[number % len(self.recipients)])
            self._stop.wait(self.pause)

    def _deliver(self, number: int, rcpt: str) -> None:
        for attempt in range(self.max_tries):
            node = self.nodes[(number + attempt) % len(self.nodes)]
            outcome, detail = self._send_once(node, number, rcpt)
            self.attempts.append(Attempt(time.monotonic(), number, rcpt, outcome, detail))
            if outcome == "accepted":
                self.accepted[number] = rcpt
                return
            if outcome == "5xx":
                self.refused[number] = rcpt
                return
            time.sleep(0.5)
        self.refused[number] = rcpt

    def _send_once(self, node: str, number: int, rcpt: str) -> tuple[str, str]:
        msg = EmailMessage()
        msg["From"], msg["To"], msg["Subject"] = "flow@example.org", rcpt, self.subject(number)
        msg["Message-ID"] = f"<{self.tag}.{number}@flow.example.org>"
        msg.set_content(f"message {number} of flow {self.tag}\n")
        try:
            with smtplib.SMTP(node, 25, timeout=30, source_address=(self.source, 0)) as client:
                client.ehlo("client.example.org")
                client.send_message(msg)
            return "accepted", ""
        except smtplib.SMTPRecipientsRefused as exc:
            code, text = next(iter(exc.recipients.values()))
            return ("4xx" if 400 <= code < 500 else "5xx"), f"{code} {text!r}"
        except smtplib.SMTPResponseException as exc:
            return ("4xx" if 400 <= exc.smtp_code < 500 else "5xx"), f"{exc.smtp_code} {exc.smtp_error!r}"
        except (OSError, smtplib.SMTPException) as exc:
            return "connection", repr(exc)

    # ------------------------------------------------------------ what arrived
    def delivered(self, storage: Path) -> Counter:
        """Message number -> copies found in the recipients' maildirs."""
        counts: Counter = Counter()
        marker = f"Subject: flow {self.tag} #"
        for rcpt in set(self.recipients):
            local, domain = rcpt.split("@")
            for sub in ("new", "cur"):
                for path in (storage / domain / local / "Maildir" / sub).glob("*"):
                    for line in path.read_text(errors="replace").splitlines():
                        if line.startswith(marker):
                            counts[int(line[len(marker):])] += 1
                            break
        return counts

    def window(self, outcome: str, after: float = 0.0) -> float:
        """Seconds from the first to the last attempt with this outcome (after `after`)."""
        times = [a.at for a in self.attempts if a.outcome == outcome and a.at >= after]
        return (max(times) - min(times)) if times else 0.0

    def count(self, outcome: str, after: float = 0.0) -> int:
        return sum(1 for a in self.attempts if a.outcome == outcome and a.at >= after)
