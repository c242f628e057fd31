"""Lookup latency on a live node, through the same sockets the daemons use.

- recipient: postfix's proxymap service (the node's own `private/proxymap` socket,
  the request port 25's smtpd sends for every RCPT TO), i.e. proxymap -> the node's
  `pgsql-recipient_access.cf` -> PostgreSQL function `lookup_recipient_access` (DUNNO for
  a mailbox, alias or list, a list's restriction, 550 for an unknown address); one
  connection kept open, as smtpd keeps it.
- auth: a PLAIN authentication on dovecot's `auth-client` socket (what imap-login
  sends): passdb SQL query + SHA512-CRYPT verification, with the auth cache flushed
  (CACHE-FLUSH on auth-master, what `doveadm auth cache flush` sends) before each batch
  of distinct users so that every lookup reaches the database.
- passdb: a PASS request on dovecot's `auth-master` socket (what `doveadm auth lookup`
  does): the passdb SQL query alone, no password verification; cache flushed.
- userdb: a USER request on `auth-master` (what LMTP asks for each recipient), also with
  the cache flushed.
"""
from __future__ import annotations

import base64
import os
import random
import socket
import statistics
import time

from .common import summary_ms


class ProxymapClient:
    def __init__(self, queue_directory, timeout: float = 10):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(timeout)
        self.sock.connect(str(queue_directory / "private" / "proxymap"))
        self.buf = b""
        hello = self._read()
        if hello.get("protocol") != "proxymap_protocol":
            raise RuntimeError(f"unexpected proxymap greeting {hello!r}")

    def _read(self) -> dict:
        while self._incomplete():
            chunk = self.sock.recv(65536)
            if not chunk:
                raise RuntimeError("proxymap closed the connection")
            self.buf += chunk
        fields, end = [], 0
        while True:
            nul = self.buf.index(b"\0", end)
            if nul == end and len(fields) % 2 == 0:  # an empty name ends the record
                self.buf = self.buf[end + 1:]
                break
            fields.append(self.buf[end:nul].decode())
            end = nul + 1
        return dict(zip(fields[0::2], fields[1::2]))

    def _incomplete(self) -> bool:
        # a record is name\0value\0...\0; an empty value also gives \0\0, so walk the pairs
        pos = 0
        while True:
            try:
                name_end = self.buf.index(b"\0", pos)
            except ValueError:
                return True
            if name_end == pos:
                return False
            try:
                pos = self.buf.index(b"\0", name_end + 1) + 1
            except ValueError:
                return True

    def lookup(self, table: str, key: str) -> tuple[int, str]:
        request = ["request", "lookup", "table", table, "flags", "0", "key", key]
        self.sock.sendall(b"".join(x.encode() + b"\0" for x in request) + b"\0")
        reply = self._read()
        return int(reply["status"]), reply.get("value", "")

    def close(self):
        self.sock.close()


class AuthClient:
    """dovecot auth-client protocol (PLAIN) and auth-master (PASS, USER) requests."""

    def __init__(self, base_dir, timeout: float = 10):
        self.client = self._connect(base_dir / "auth-client", f"VERSION\t1\t2\nCPID\t{os.getpid()}\n", b"DONE", timeout)
        self.master = self._connect(base_dir / "auth-master", "VERSION\t1\t0\n", b"SPID", timeout)
        self.n = 0

    @staticmethod
    def _connect(path, hello: str, until: bytes, timeout: float):
        sock = socket.socket(socket.AF_UNIX)
        sock.settimeout(timeout)
        sock.connect(str(path))
        stream = sock.makefile("rwb")
        stream.write(hello.encode())
        stream.flush()
        while not stream.readline().startswith(until):
            pass
        return stream

    def auth(self, user: str, password: str) -> bool:
        self.n += 1
        resp = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
        self.client.write(f"AUTH\t{self.n}\tPLAIN\tservice=imap\tsecured\tnologin\trip=127.0.0.1\t"
                          f"lip=127.0.0.1\tresp={resp}\n".encode())
        self.client.flush()
        return self.client.readline().startswith(b"OK\t")

    def passdb(self, user: str) -> bool:
        """A passdb lookup without verifying a password (what `doveadm auth lookup` does)."""
        self.n += 1
        self.master.write(f"PASS\t{self.n}\t{user}\tservice=imap\n".encode())
        self.master.flush()
        return self.master.readline().startswith(b"PASS\t")

    def flush_cache(self) -> int:
        """Empty the auth cache, as `doveadm auth cache flush` does (the same request on the
        same auth-master socket): without starting a process whose CPU would compete with
        the next measured lookups. Returns how many entries were dropped."""
        self.n += 1
        self.master.write(f"CACHE-FLUSH\t{self.n}\n".encode())
        self.master.flush()
        reply = self.master.readline().decode().rstrip("\n").split("\t")
        if reply[:2] != ["OK", str(self.n)]:
            raise RuntimeError(f"dovecot did not flush its auth cache: {reply!r}")
        return int(reply[2]) if len(reply) > 2 else 0

    def user(self, user: str) -> bool:
        self.n += 1
        self.master.write(f"USER\t{self.n}\t{user}\tservice=lmtp\n".encode())
        self.master.flush()
        return self.master.readline().startswith(b"USER\t")


def warm_up(pm: "ProxymapClient", table: str, keys: list[str]) -> None:
    """20 lookups not measured: proxymap opens its database connection on first use."""
    for key in keys[:20]:
        pm.lookup(table, key)


def timed_lookups(pm: "ProxymapClient", table: str, keys: list[str]) -> list[float]:
    """Seconds per lookup of each key (each must be found)."""
    times = []
    for key in keys:
        t0 = time.perf_counter()
        status, _ = pm.lookup(table, key)
        times.append(time.perf_counter() - t0)
        if status != 0:
            raise RuntimeError(f"proxymap did not find {key} in {table} (status {status})")
    return times


KINDS = ("recipient", "auth", "passdb", "userdb")
AUTH_BATCH = 50


def measure(inst, mailboxes: int, domain: str, password: str, samples: int, seed: int = 11) -> dict:
    """Seconds per lookup of random existing mailboxes u0..u{n-1}, per kind (KINDS), and
    the time to refuse one unknown address.

    Every kind's samples are spread over the whole measurement: each round takes a slice of
    the recipient lookups, then a batch of AUTH_BATCH distinct users for auth, passdb and
    userdb. A recipient lookup takes ~0.1 ms, so 1,000 of them in a row last a tenth of a
    second: one moment of contention on this shared machine then covered all of a visit's
    samples (and blocks), and decided a p99 ratio of 0.13 against 0.29 ms."""
    rng = random.Random(seed + mailboxes)
    users = [f"u{rng.randrange(mailboxes)}@{domain}" for _ in range(samples)]
    table = f"pgsql:{inst.layout.component_config('postfix') / 'pgsql-recipient_access.cf'}"
    rounds = max(1, samples // AUTH_BATCH)
    pm = ProxymapClient(inst.layout.postfix_queue)
    auth_client = AuthClient(inst.layout.run_dir("dovecot"))
    recipient_s, auth_s, passdb_s, userdb_s = [], [], [], []
    timings = ((auth_s, lambda u: auth_client.auth(u, password), "refused"),
               (passdb_s, auth_client.passdb, "passdb does not know"),
               (userdb_s, auth_client.user, "userdb does not know"))
    try:
        warm_up(pm, table, users)
        for r in range(rounds):
            recipient_s += timed_lookups(pm, table, users[r * len(users) // rounds:(r + 1) * len(users) // rounds])
            # the same request pattern at every table size: AUTH_BATCH distinct users, the
            # auth cache emptied before each kind, so that every lookup reaches PostgreSQL
            batch = [f"u{i}@{domain}" for i in rng.sample(range(mailboxes), min(AUTH_BATCH, mailboxes))]
            for times, lookup, failure in timings:
                auth_client.flush_cache()
                times += timed_each(lookup, batch, failure)
        if pm.lookup(table, users[0]) != (0, "DUNNO"):
            raise RuntimeError(f"{users[0]} is not accepted by {table}")
        t0 = time.perf_counter()
        status, verdict = pm.lookup(table, f"nobody-{rng.random()}@{domain}")
        unknown_s = time.perf_counter() - t0
        if status != 0 or not verdict.startswith("550 5.1.1"):
            raise RuntimeError(f"an unknown address was not refused (status {status}, {verdict!r})")
    finally:
        pm.close()
    return {"mailboxes": mailboxes, "unknown_recipient_ms": round(unknown_s * 1000, 3),
            "seconds": {"recipient": recipient_s, "auth": auth_s, "passdb": passdb_s, "userdb": userdb_s}}


def authentications(inst, users: list[str], password: str) -> list[float]:
    """Seconds per PLAIN authentication of each of `users` on dovecot's auth-client socket
    (what imap-login sends), the auth cache emptied before every AUTH_BATCH of them."""
    client = AuthClient(inst.layout.run_dir("dovecot"))
    times = []
    for start in range(0, len(users), AUTH_BATCH):
        client.flush_cache()
        times += timed_each(lambda u: client.auth(u, password), users[start:start + AUTH_BATCH], "refused")
    return times


def timed_each(lookup, users: list[str], failure: str) -> list[float]:
    """Seconds per dovecot request `lookup(user)` of each user (each must succeed)."""
    times = []
    for user in users:
        t0 = time.perf_counter()
        ok = lookup(user)
        times.append(time.perf_counter() - t0)
        if not ok:
            raise RuntimeError(f"dovecot {failure} {user}")
    return times


def summarize(visits: list[dict], blocks: int = 3) -> dict:
    """Per kind, over the visits of one table size: p50 and p99 over all samples (the true
    percentile: every slow lookup counts). Beside it, the median of the p99s of `blocks`
    consecutive blocks of each visit, which a burst of load from another tenant of the
    machine spoils block by block rather than whole: it tells noise from a real tail, and is
    never reported as the p99."""
    out = {"mailboxes": visits[0]["mailboxes"], "visits": len(visits),
           "unknown_recipient_ms": [v["unknown_recipient_ms"] for v in visits]}
    for kind in KINDS:
        every = [s for v in visits for s in v["seconds"][kind]]
        figures = summary_ms(every)
        by_visit = [block_p99s_ms(v["seconds"][kind], blocks) for v in visits]
        per_block = sorted(p for visit in by_visit for p in visit)
        if per_block:
            figures.update({"p99_block_median_ms": round(statistics.median(per_block), 3),
                            "p99_worst_block_ms": per_block[-1], "p99_blocks_ms": per_block,
                            "p99_blocks_by_visit_ms": by_visit})
        out[kind] = figures
    return out


def block_p99s_ms(seconds: list[float], blocks: int) -> list[float]:
    """The p99 of each of `blocks` consecutive blocks; none when a block would hold fewer
    than 100 samples (its p99 would be its maximum)."""
    size = len(seconds) // blocks
    if size < 100:
        return []
    return [summary_ms(seconds[i * size:(i + 1) * size])["p99_ms"] for i in range(blocks)]
