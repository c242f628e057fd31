"""SMTP throughput with smtp-source: full RuPost path, bare postfix + dovecot, smtp-sink.

One smtp-source process per recipient mailbox, one session each (so `sessions`
concurrent SMTP sessions), one message per connection (smtp-source's default, like
most MTAs), `size` bytes of body. The clock starts when the first client starts and
stops when the last message is in its mailbox (Maildir files counted) or at the sink
(one file per message): msgs/s is end to end, queueing and delivery included.
"""
from __future__ import annotations

import subprocess
import time
from pathlib import Path

from .common import maildir_count

SENDER = "load@example.org"


def send_and_count(port: int, recipients: list[str], maildirs: list[Path] | None, messages: int, size: int,
                   counter=None, timeout: float = 600) -> dict:
    """Send `messages` split over `recipients` (one session each) to 127.0.0.1:port; wait until
    all are delivered; returns the figures. `counter()` replaces Maildir counting (the sink)."""
    per = [messages // len(recipients) + (1 if i < messages % len(recipients) else 0) for i in range(len(recipients))]
    count = counter or (lambda: sum(maildir_count(m) for m in maildirs))
    before = count()
    t0 = time.perf_counter()
    procs = [subprocess.Popen(["smtp-source", "-s", "1", "-m", str(n), "-l", str(size), "-f", SENDER, "-t", rcpt,
                               "-M", "client.example.org", f"127.0.0.1:{port}"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for rcpt, n in zip(recipients, per) if n]
    errors = []
    for proc in procs:
        try:
            _, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
            errors.append("smtp-source timed out")
        if proc.returncode != 0 or err.strip():
            errors.append(err.strip()[:300] or f"smtp-source exited {proc.returncode}")
    sent_s = time.perf_counter() - t0
    deadline = time.perf_counter() + timeout
    delivered = count() - before
    while not errors and delivered < messages and time.perf_counter() < deadline:  # refused: no use waiting
        time.sleep(0.05)
        delivered = count() - before
    elapsed = time.perf_counter() - t0
    if delivered != messages or errors:
        raise RuntimeError(f"port {port}: {delivered} of {messages} messages delivered; "
                           f"client errors: {'; '.join(errors[:3]) or 'none'}")
    return {"messages": messages, "delivered": delivered, "accepted_s": round(sent_s, 3),
            "elapsed_s": round(elapsed, 3), "msgs_s": round(delivered / elapsed, 1)}
