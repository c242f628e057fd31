"""SMTP to many mailboxes in many domains: every message to another recipient, so the lookup
cache (memcached before PostgreSQL, the builtin template's ``lookup_cache``) misses as in real
life, while mailboxes change during the round (each change empties the cache).

A mailbox change twice a second through the service layer on the full path, in turn: an
active mailbox's quota (dovecot's auth cache is emptied: the quota is part of its userdb
answer), then a mailbox outside the active set disabled or enabled again (a leaver or a
returner of an HR feed: a row postfix's lookups read, so the lookup cache is emptied too).

The full path holds `population` mailboxes spread over DOMAINS domains (u<j>@spread<d>.test);
a fixed random set of `mailboxes` of them is the active set (the people who get mail today),
and each round draws its recipients afresh from that set. The bare postfix + dovecot gets as
many mailboxes as the active set in its one domain (hash-file lookups, nothing to miss) and
the same draw. `sessions` SMTP sessions (Python's smtplib, one thread each) send their share of
the messages back to back on port 25, one recipient a message, `size` bytes of body; the
clock stops when every message is in its Maildir. Full and bare run in ABBA pairs and
`smtp_ratio_spread` is the median of the pair ratios, like `smtp_ratio` (benchmarks/smtp.py
uses smtp-source to 20 fixed mailboxes; both clients are the same on both sides of a pair).
"""
from __future__ import annotations

import itertools
import random
import smtplib
import statistics
import threading
import time
from pathlib import Path

from .common import bulk_mailboxes, maildir_count
from .cpu import CpuGroups, RoundCpu

DOMAINS = 20
WARMUP = 100  # messages to each side before the measured rounds
SENDER = "load@example.org"


def _per_domain(mailboxes: int, population: int) -> int:
    return -(-max(population, mailboxes) // DOMAINS)


def full_recipients(inst, mailboxes: int, population: int, seed: int = 29) -> list[tuple[str, Path]]:
    """The active set: `mailboxes` of `population` mailboxes (created with COPY if missing),
    with their Maildirs."""
    per_domain = _per_domain(mailboxes, population)
    for d in range(DOMAINS):
        bulk_mailboxes(inst, per_domain, f"spread{d}.test")
    store = inst.layout.mail_storage
    every = [(f"u{j}@spread{d}.test", store / f"spread{d}.test" / f"u{j}" / "Maildir")
             for j in range(per_domain) for d in range(DOMAINS)]
    return random.Random(seed).sample(every, mailboxes)


def _send(port: int, recipients: list[str], size: int, errors: list[str]) -> None:
    body = "x" * size
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=120) as smtp:
            for i, rcpt in enumerate(recipients):
                smtp.sendmail(SENDER, [rcpt], f"From: {SENDER}\r\nTo: {rcpt}\r\nSubject: spread {i}\r\n\r\n{body}\r\n")
    except (smtplib.SMTPException, OSError) as exc:
        errors.append(f"{exc.__class__.__name__}: {str(exc)[:200]}")


def bystanders(full: list[tuple[str, Path]], population: int, count: int = 50) -> list[str]:
    """`count` mailboxes of the population outside the active set `full`: never drawn, so
    disabling one refuses no message of a round."""
    active = {address for address, _ in full}
    every = (f"u{j}@spread{d}.test" for j in range(_per_domain(len(full), population)) for d in range(DOMAINS))
    return list(itertools.islice((a for a in every if a not in active), count))


def _changes(inst, addresses: list[str], leavers: list[str], stop: threading.Event, every: float,
             made: list[int]) -> None:
    """Every `every` seconds until stopped, in turn: the quota of one of `addresses`, or one
    of `leavers` disabled, or enabled again; the disabled ones are enabled again at the end."""
    rng = random.Random(7)
    disabled: set[str] = set()
    while not stop.wait(every):
        if made[0] % 2 == 0 or not leavers:
            inst.app.mailboxes.set_quota(rng.choice(addresses), rng.choice(("1G", "2G")))
        else:
            leaver = rng.choice(leavers)
            inst.app.mailboxes.set_enabled(leaver, leaver in disabled)
            disabled ^= {leaver}
        made[0] += 1
    for leaver in disabled:
        inst.app.mailboxes.set_enabled(leaver, True)


def round_(port: int, targets: list[tuple[str, Path]], sessions: int, size: int, inst=None,
           leavers: list[str] | None = None, change_every: float = 0.5, timeout: float = 600) -> dict:
    """One round: every target gets one message; msgs/s end to end (accepted and in its Maildir)."""
    dirs = [d for _, d in targets]
    before = sum(maildir_count(d) for d in dirs)
    shares = [[rcpt for rcpt, _ in targets[i::sessions]] for i in range(sessions)]
    errors: list[str] = []
    stop, made = threading.Event(), [0]
    changer = None
    if inst is not None:
        changer = threading.Thread(target=_changes, args=(inst, [r for r, _ in targets], leavers or [],
                                                          stop, change_every, made))
        changer.start()
    t0 = time.perf_counter()
    try:
        senders = [threading.Thread(target=_send, args=(port, share, size, errors)) for share in shares if share]
        for t in senders:
            t.start()
        for t in senders:
            t.join(timeout)
        deadline = time.perf_counter() + timeout
        delivered = sum(maildir_count(d) for d in dirs) - before
        while not errors and delivered < len(targets) and time.perf_counter() < deadline:
            time.sleep(0.1)
            delivered = sum(maildir_count(d) for d in dirs) - before
        elapsed = time.perf_counter() - t0
    finally:
        stop.set()
        if changer is not None:
            changer.join()
    if errors or delivered != len(targets):
        raise RuntimeError(f"port {port}: {delivered} of {len(targets)} messages delivered; client errors: "
                           f"{'; '.join(errors[:3]) or 'none'}")
    return {"messages": len(targets), "msgs_s": round(delivered / elapsed, 1), "elapsed_s": round(elapsed, 3),
            "mailbox_changes": made[0]}


def measure(inst, bare, full: list[tuple[str, Path]], bare_locals: list[str], messages: int, rounds: int,
            sessions: int, size: int, leavers: list[str], seed: int = 31, cpu_ms: RoundCpu | None = None) -> dict:
    """`rounds` full/bare pairs in ABBA order, each a fresh draw of `messages` distinct mailboxes;
    `cpu_ms` (if given) counts the CPU time of each round."""
    cpu_ms = cpu_ms or RoundCpu(None)
    rng = random.Random(seed)
    runs: dict[str, list[dict]] = {"full": [], "bare": []}
    # not measured: the first messages pay for process starts and database connections on both
    # sides (smtp_throughput's warm-up does the same); its recipients are left out of the draws
    warm = rng.sample(range(len(full)), min(WARMUP, len(full) // 10))
    round_(inst.ports["smtp"], [full[k] for k in warm], sessions, size)
    round_(bare.smtp_port, [(f"{bare_locals[k]}@{bare.domain}", bare.maildir(bare_locals[k])) for k in warm],
           sessions, size)
    pool = sorted(set(range(len(full))) - set(warm))
    for i in range(rounds):
        drawn = rng.sample(pool, messages)
        targets = {"full": (inst.ports["smtp"], [full[k] for k in drawn], inst),
                   "bare": (bare.smtp_port, [(f"{bare_locals[k]}@{bare.domain}", bare.maildir(bare_locals[k]))
                                            for k in drawn], None)}
        for name in (("full", "bare") if i % 2 == 0 else ("bare", "full")):
            port, chosen, changing = targets[name]
            cpu_ms.start()
            runs[name].append(round_(port, chosen, sessions, size, inst=changing, leavers=leavers))
            cpu_ms.stop(name, messages)
    ratios = [round(f["msgs_s"] / b["msgs_s"], 3) for f, b in zip(runs["full"], runs["bare"], strict=True)]
    return {"runs": runs, "ratios": ratios}


def section(ctx, bare, bare_locals: list[str], groups: CpuGroups | None) -> dict:
    cfg = ctx.cfg
    full = full_recipients(ctx.inst, cfg["spread_mailboxes"], cfg["spread_population"])
    cpu_ms = RoundCpu(groups)
    try:
        r = measure(ctx.inst, bare, full, bare_locals, cfg["spread_messages"], cfg["spread_rounds"],
                    cfg["smtp_sessions"], cfg["smtp_size"], bystanders(full, cfg["spread_population"]),
                    cpu_ms=cpu_ms)
    finally:
        if groups:
            groups.close()
    ctx.details["smtp_spread"] = r
    return {"smtp_spread_full_msgs_s": round(statistics.median(x["msgs_s"] for x in r["runs"]["full"]), 1),
            "smtp_spread_bare_msgs_s": round(statistics.median(x["msgs_s"] for x in r["runs"]["bare"]), 1),
            "smtp_ratio_spread": round(statistics.median(r["ratios"]), 3), "smtp_ratio_spread_rounds": r["ratios"],
            "smtp_spread_mailbox_changes": sum(x["mailbox_changes"] for x in r["runs"]["full"]),
            "smtp_spread_mailboxes": cfg["spread_mailboxes"], "smtp_spread_population": cfg["spread_population"],
            "smtp_spread_domains": DOMAINS,
            "smtp_spread_messages": cfg["spread_messages"], **cpu_ms.figures("smtp_spread")}
