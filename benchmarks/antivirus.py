"""The cost of the optional antivirus (docs/antispam.md#antivirus): port 25 with rspamd and
clamd against the same node with rspamd alone, ABBA pairs a deploy apart, the same
smtp-source load as antispam_cost; then the SMTP transaction time per message (MAIL FROM to
the answer after DATA, which includes the milter's scan) in each state, as percentiles.

clamd loads a one-signature database (EICAR, written here) standing in for the official
databases, which this machine cannot fetch (no network): clamd's per-message work (reading
the stream, its mail parser, decoding) is all there, the matching against millions of
official signatures is not, so the figure is a lower bound of the cost with real databases.
"""
from __future__ import annotations

import os
import smtplib
import statistics
import time
from pathlib import Path

from . import smtp
from .common import bulk_mailboxes, summary_ms

EICAR = r"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"


def signature_dir(root: Path) -> Path:
    directory = root / "clamav-bench-db"
    directory.mkdir(exist_ok=True)
    os.chmod(directory, 0o755)
    database = directory / "rupost-bench-eicar.ndb"
    database.write_text(f"Rupost.Bench.EICAR:0:*:{EICAR.encode().hex()}\n")
    os.chmod(database, 0o644)
    return directory


def transaction_times(port: int, recipient: str, messages: int, size: int) -> list[float]:
    """Seconds per SMTP transaction on one session (loopback, one message after another)."""
    body = ("x" * 76 + "\r\n") * max(1, size // 78)
    data = f"From: {smtp.SENDER}\r\nTo: {recipient}\r\nSubject: latency\r\n\r\n{body}"
    times = []
    with smtplib.SMTP("127.0.0.1", port, timeout=60) as client:
        client.ehlo("client.example.org")
        for _ in range(messages):
            t0 = time.perf_counter()
            client.sendmail(smtp.SENDER, [recipient], data)
            times.append(time.perf_counter() - t0)
    return times


def require_refused(port: int, recipient: str) -> None:
    """The state measured is the real one: with antivirus on, EICAR is refused."""
    data = f"From: {smtp.SENDER}\r\nTo: {recipient}\r\nSubject: eicar\r\n\r\n{EICAR}\r\n"
    with smtplib.SMTP("127.0.0.1", port, timeout=60) as client:
        try:
            client.sendmail(smtp.SENDER, [recipient], data)
        except smtplib.SMTPDataError as exc:
            if b"Virus found" in exc.smtp_error:
                return
            raise
    raise RuntimeError("antivirus is on but EICAR was accepted")


def antivirus_cost(ctx) -> dict:
    from support.dns_zone import Zone

    cfg, inst = ctx.cfg, ctx.inst
    domain = "bench.test"
    zone = Zone()
    bulk_mailboxes(inst, max(100, cfg["smtp_sessions"]), domain)
    users = ctx.users(domain)
    dirs = [inst.layout.mail_storage / domain / u.split("@")[0] / "Maildir" for u in users]
    args = dict(messages=cfg["smtp_messages"], size=cfg["smtp_size"])
    runs: dict[bool, list[dict]] = {True: [], False: []}
    latency: dict[bool, list[float]] = {True: [], False: []}
    signatures = signature_dir(inst.root)

    def deploy_with(enabled: bool) -> None:
        result = inst.app.deploys.deploy(inst.app.deploys.plan({
            **inst.parameters, "antispam": True, "antispam_greylisting": False,
            "antispam_dns_servers": [f"127.0.0.1:{zone.port}"], "antivirus": "clamav" if enabled else "off",
            "antivirus_database_dir": str(signatures)}))
        if result.result not in ("applied", "unchanged"):
            raise RuntimeError(f"antivirus={enabled} was not deployed: {result.result}")
        smtp.send_and_count(inst.ports["smtp"], users, dirs, messages=cfg["smtp_warmup"], size=cfg["smtp_size"])
        if enabled:
            require_refused(inst.ports["smtp"], users[0])

    try:
        for i in range(cfg["smtp_rounds"]):
            for enabled in ((True, False) if i % 2 == 0 else (False, True)):
                deploy_with(enabled)
                runs[enabled].append(smtp.send_and_count(inst.ports["smtp"], users, dirs, **args))
                latency[enabled] += transaction_times(inst.ports["smtp"], users[0], 100, cfg["smtp_size"])
    finally:
        inst.app.deploys.deploy(inst.app.deploys.plan(dict(inst.parameters)))
        zone.close()
    ctx.details["antivirus"] = {"on": runs[True], "off": runs[False]}
    rounds = [round(on["msgs_s"] / off["msgs_s"], 3) for on, off in zip(runs[True], runs[False], strict=True)]
    on_ms, off_ms = summary_ms(latency[True]), summary_ms(latency[False])
    return {"smtp_antivirus_on_msgs_s": round(statistics.median(r["msgs_s"] for r in runs[True]), 1),
            "smtp_antivirus_off_msgs_s": round(statistics.median(r["msgs_s"] for r in runs[False]), 1),
            "smtp_ratio_antivirus": round(statistics.median(rounds), 3), "smtp_ratio_antivirus_rounds": rounds,
            "smtp_antivirus_on_txn_p50_ms": on_ms["p50_ms"], "smtp_antivirus_on_txn_p99_ms": on_ms["p99_ms"],
            "smtp_antivirus_off_txn_p50_ms": off_ms["p50_ms"], "smtp_antivirus_off_txn_p99_ms": off_ms["p99_ms"]}
