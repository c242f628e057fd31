"""An IMAP session opened before an event (a database outage, a switchover, a failover) and
used after it: a session needs the database only at login, so it must outlive the event."""
from __future__ import annotations

import imaplib
import re
from pathlib import Path

from mailclients import IMAPSFrom


class HeldSession:
    """INBOX selected and its message count remembered; then left idle until `after()`."""

    def __init__(self, host: str, port: int, user: str, password: str, source: str, logs: Path) -> None:
        self.logs = logs
        self.imap = IMAPSFrom(host, port, source)
        self.imap.login(user, password)
        self.count = self.select()

    def select(self) -> int:
        typ, data = self.imap.select("INBOX")
        assert typ == "OK", data
        return int(data[0])

    def after(self) -> int:
        """NOOP and SELECT again on the same connection: the count now."""
        try:
            typ, data = self.imap.noop()
        except imaplib.IMAP4.abort:  # what ended it: the agent's and dovecot's own words
            print("\n--- monitor.log\n" + (self.logs / "monitor.log").read_text(errors="replace")[-4000:])
            print("--- dovecot.log\n" + "\n".join(
                line for line in (self.logs / "dovecot.log").read_text(errors="replace").splitlines()
                if re.search(r"master|SIGHUP|reload|shutting|Killed|killed|fatal|Fatal", line))[-4000:])
            raise
        assert typ == "OK", data
        count = self.select()
        self.imap.logout()
        return count
