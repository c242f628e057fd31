"""Mail load for the systemd node scenarios: one SMTP session after another to 127.0.0.1:25, each
sending one message (subject "load-NAME-N"), and an IMAPS login between them, until /tmp/load-NAME.stop
appears (bounded: at most --max messages and --max-seconds). Prints the figures as JSON: messages
accepted, connections refused, other failures (e.g. a 4xx), IMAP logins ok/refused.

The scenario then checks that every accepted message is in the mail store (0 lost)."""
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


def main() -> int:
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
