"""Mail load for the systemd node scenarios: one SMTP session after another to 127.0.0.1:25, each
sending one message (subject "load-NAME-N"), and an IMAPS login between them, until /tmp/load-NAME.stop
appears (bounded: at most --max messages and --max-seconds). Prints the figures as JSON: messages
accepted, connections refused, other failures (e.g. a 4xx), IMAP logins ok/refused.

`mailload.py --check NAME ACCEPTED TIMEOUT [duplicates-ok]` then checks that every accepted message is in the mail
store, once (0 lost, 0 duplicated)."""
from __future__ import annotations

import argparse
import imaplib
import json
import smtplib
import ssl
import sys
import time
from email.message import EmailMessage
from pathlib import Path


def check(name: str, expect: int, timeout: float, duplicates_ok: bool = False) -> int:
    """Every accepted message of load NAME is in the mail store, once: wait up to TIMEOUT s.
    duplicates_ok: a crash (SIGKILL of a daemon in the middle of an LMTP delivery) may deliver a
    message whose confirmation was lost a second time: SMTP and LMTP promise "at least once"."""
    import email
    import os

    prefix = f"load-{name}-"
    deadline = time.monotonic() + timeout
    while True:
        counts: dict[str, int] = {}
        for folder, _dirs, files in os.walk("/var/vmail"):
            if os.path.basename(folder) not in ("new", "cur"):
                continue
            for file in files:
                with open(os.path.join(folder, file), "rb") as fh:
                    subject = email.message_from_binary_file(fh).get("Subject", "")
                if subject.startswith(prefix):
                    counts[subject] = counts.get(subject, 0) + 1
        twice = sorted(s for s, n in counts.items() if n > 1)
        if len(counts) >= expect or time.monotonic() > deadline:
            print(json.dumps({"delivered": len(counts), "expected": expect, "lost": expect - len(counts),
                              "duplicates": twice[:10]}))
            return 0 if len(counts) == expect and (duplicates_ok or not twice) else 1
        time.sleep(0.5)


def main() -> int:
    if sys.argv[1:2] == ["--check"]:
        return check(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), sys.argv[5:6] == ["duplicates-ok"])
    ap = argparse.ArgumentParser()
    ap.add_argument("--name", required=True)
    ap.add_argument("--to", required=True)
    ap.add_argument("--imap-password", required=True)
    ap.add_argument("--max", type=int, default=3000)
    ap.add_argument("--max-seconds", type=float, default=600)
    args = ap.parse_args()
    stop = Path(f"/tmp/load-{args.name}.stop")
    started = Path(f"/tmp/load-{args.name}.started")
    figures = {"accepted": 0, "refused": 0, "failed": 0, "imap_ok": 0, "imap_refused": 0, "imap_failed": 0}
    errors: list[str] = []
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    deadline = time.monotonic() + args.max_seconds
    n = 0
    while not stop.exists() and n < args.max and time.monotonic() < deadline:
        n += 1
        msg = EmailMessage()
        msg["From"] = "load@sdtest.rupost.test"
        msg["To"] = args.to
        msg["Subject"] = f"load-{args.name}-{n:05d}"
        msg.set_content(f"message {n} of the {args.name} load")
        try:
            with smtplib.SMTP("127.0.0.1", 25, timeout=30) as smtp:
                # null sender: no DNS here for reject_unknown_sender_domain
                smtp.send_message(msg, from_addr="<>", to_addrs=[args.to])
            figures["accepted"] += 1
            started.write_text("1")
        except ConnectionRefusedError:
            figures["refused"] += 1
            errors.append(f"{n}: smtp connection refused")
        except (smtplib.SMTPException, OSError) as exc:
            figures["failed"] += 1
            errors.append(f"{n}: smtp {exc!r}")
        try:
            with imaplib.IMAP4_SSL("127.0.0.1", 993, ssl_context=ctx, timeout=30) as imap:
                imap.login(args.to, args.imap_password)
            figures["imap_ok"] += 1
        except ConnectionRefusedError:
            figures["imap_refused"] += 1
            errors.append(f"{n}: imap connection refused")
        except (imaplib.IMAP4.error, OSError) as exc:
            figures["imap_failed"] += 1
            errors.append(f"{n}: imap {exc!r}")
        time.sleep(0.02)
    print(json.dumps({**figures, "errors": errors[:20]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
