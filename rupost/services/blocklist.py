"""Authentication failure rate limiting with a block list shared by all nodes.

Every failed authentication (IMAP and submission through dovecot's auth policy, the
webmail, the control panel) is recorded in ``auth_failures``. When one client address
reaches ``ip_failures`` failures, or one account ``account_failures`` failures, inside
``window`` seconds, a row in ``auth_blocks`` blocks it for ``block_time`` seconds. The
table lives in the ``rupost`` database, so a block made on one node holds on every
node. Times are the database server's (``now()``): nodes with skewed clocks agree.

The policy server answers dovecot before every authentication, so it does not ask the
database each time: it keeps the active blocks in memory (``BlockView``), loaded when it
connects and kept current by NOTIFY ``rupost_blocks``, which every block and unblock sends
in its own transaction. While that listening connection is down it asks the database.

The limits come from the active template's parameters (``auth_ip_failure_limit``,
``auth_account_failure_limit``, ``auth_failure_window``, ``auth_block_time``,
``auth_rate_limit``, ``auth_rate_limit_exempt``); a template without them gets the
defaults below.
"""
from __future__ import annotations

import ipaddress
import json
import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from sqlalchemy import text

from adapters.policy import INTERNAL_HOPS, Limits  # noqa: F401 (the policy server's limits)

from ..errors import NotFoundError, ValidationError

if TYPE_CHECKING:
    from collections.abc import Mapping

    import psycopg
    from sqlalchemy import Connection

    from . import Services

CHANNEL = "rupost_blocks"

log = logging.getLogger("rupost.blocklist")

PARAMETER_NAMES = {
    "auth_rate_limit": "enabled",
    "auth_ip_failure_limit": "ip_failures",
    "auth_account_failure_limit": "account_failures",
    "auth_failure_window": "window",
    "auth_block_time": "block_time",
    "auth_rate_limit_exempt": "exempt",
}


def limits_from_parameters(parameters: dict) -> Limits:
    return Limits(**{attr: parameters[name] for name, attr in PARAMETER_NAMES.items() if name in parameters})




def normalize_ip(value: str) -> str:
    text_value = (value or "").strip()
    if not text_value:
        return ""
    try:
        address = ipaddress.ip_address(text_value)
    except ValueError:
        raise ValidationError(f"{value!r} is not an IP address") from None
    if address.version == 6 and address.ipv4_mapped:
        address = address.ipv4_mapped
    return str(address)


def normalize_account(value: str) -> str:
    account = (value or "").strip().lower()
    if len(account) > 320 or any(c.isspace() or ord(c) < 32 for c in account):
        raise ValidationError(f"{value!r} is not an account name")
    return account


class BlocklistService:
    LIMITS_TTL = 60.0  # seconds a long-running caller (the panel) keeps the parameters it read

    def __init__(self, app: Services, limits: Limits | None = None) -> None:
        self.app = app
        self._fixed = limits  # the policy server's, from its configuration; else the template's parameters
        self._limits: Limits | None = None
        self._read_at = 0.0
        self.view: BlockView | None = None  # the policy server's in-memory copy of the active blocks

    @property
    def limits(self) -> Limits:
        if self._fixed is not None:
            return self._fixed
        if self._limits is None or time.monotonic() - self._read_at > self.LIMITS_TTL:
            try:
                params = {p["name"]: p["value"] for p in self.app.templates.parameters()}
            except NotFoundError:
                params = {}
            self._limits, self._read_at = limits_from_parameters(params), time.monotonic()
        return self._limits

    def _node(self) -> str:
        return getattr(self.app.config, "node_name", "")

    # ------------------------------------------------------------ recording
    def record_failure(self, ip: str, account: str, protocol: str) -> list[dict]:
        """Record one failed authentication; returns the blocks it caused (may be empty)."""
        ip, account = normalize_ip(ip), normalize_account(account)
        limits = self.limits
        if not limits.enabled or (not ip and not account):
            return []
        created = []
        with self.app.dbs.engine("main").begin() as conn:
            conn.execute(text("INSERT INTO auth_failures (ip, account, protocol, node) "
                              "VALUES (:ip, :account, :protocol, :node)"),
                         {"ip": ip, "account": account, "protocol": (protocol or "")[:32], "node": self._node()})
            checks = []
            if ip and not limits.is_exempt(ip):
                checks.append(("ip", ip, limits.ip_failures))
            if account:
                checks.append(("account", account, limits.account_failures))
            for kind, value, limit in checks:
                if limit <= 0:
                    continue
                count = conn.execute(text(
                    f"SELECT count(*) FROM auth_failures WHERE {kind} = :v "
                    "AND at > now() - make_interval(secs => :w)"), {"v": value, "w": limits.window}).scalar() or 0
                if count >= limit:
                    reason = (f"{count} failed authentications in {limits.window} s "
                              f"(limit {limit}; last: {protocol or '-'} from {ip or '-'} as {account or '-'})")
                    row = conn.execute(text(
                        "INSERT INTO auth_blocks (kind, value, reason, expires_at) "
                        "VALUES (:k, :v, :r, now() + make_interval(secs => :t)) "
                        "ON CONFLICT (kind, value) DO UPDATE SET reason = EXCLUDED.reason, "
                        "expires_at = GREATEST(auth_blocks.expires_at, EXCLUDED.expires_at), "
                        "created_at = CASE WHEN auth_blocks.expires_at <= now() THEN now() "
                        "ELSE auth_blocks.created_at END "
                        "RETURNING kind, value, reason, created_at, expires_at, "
                        "extract(epoch FROM expires_at - now())::float AS seconds_left"),
                        {"k": kind, "v": value, "r": reason, "t": limits.block_time}).mappings().one()
                    created.append(dict(row))
                    _announce(conn, "block", row)
        if created:
            if self.view is not None:  # at once here; the other nodes' views follow the NOTIFY
                for block in created:
                    self.view.apply_block(block)
            for block in created:
                self.app.audit.record("security.block", f"{block['kind']} {block['value']}",
                                      reason=block["reason"], expires_at=block["expires_at"].isoformat())
        return created

    def is_blocked(self, ip: str = "", account: str = "") -> dict | None:
        """The active block covering this client address or account, or None."""
        ip, account = normalize_ip(ip), normalize_account(account)
        if not self.limits.enabled or (not ip and not account):
            return None
        if ip and self.limits.is_exempt(ip):
            ip = ""
        if self.view is not None and self.view.live:
            return self.view.find(ip, account)
        with self.app.dbs.engine("main").connect() as conn:
            row = conn.execute(text(
                "SELECT kind, value, reason, created_at, expires_at FROM auth_blocks "
                "WHERE expires_at > now() AND ((kind = 'ip' AND value = :ip) OR (kind = 'account' AND value = :acc)) "
                "ORDER BY expires_at DESC LIMIT 1"), {"ip": ip or None, "acc": account or None}).mappings().first()
        return dict(row) if row else None

    # ------------------------------------------------------------ administration
    def list(self, include_expired: bool = False) -> list[dict]:
        where = "" if include_expired else "WHERE expires_at > now()"
        with self.app.dbs.engine("main").connect() as conn:
            rows = conn.execute(text(
                f"SELECT kind, value, reason, created_at, expires_at, expires_at > now() AS active "
                f"FROM auth_blocks {where} ORDER BY created_at")).mappings().all()
        return [dict(r) for r in rows]

    def unblock(self, value: str) -> dict:
        """Lift the block on an address or an account, and forget its recorded failures
        (otherwise the next failure would block it again at once)."""
        value = (value or "").strip()
        try:
            kind, value = "ip", normalize_ip(value)
        except ValidationError:
            kind, value = "account", normalize_account(value)
        if not value:
            raise ValidationError("name a client address or an account to unblock")
        with self.app.dbs.engine("main").begin() as conn:
            row = conn.execute(text("DELETE FROM auth_blocks WHERE kind = :k AND value = :v "
                                    "RETURNING kind, value, expires_at > now() AS active"),
                               {"k": kind, "v": value}).mappings().first()
            forgotten = conn.execute(text(f"DELETE FROM auth_failures WHERE {kind} = :v"), {"v": value}).rowcount
            if row is not None:
                _announce(conn, "unblock", {"kind": kind, "value": value})
        if row is None:
            raise NotFoundError(f"{value} is not on the block list (rupost security blocks list)")
        self.app.audit.record("security.unblock", f"{kind} {value}")
        return {"kind": kind, "value": value, "was_active": row["active"], "failures_forgotten": forgotten}

    def expire(self) -> dict:
        """Delete expired blocks and failures older than the window (run periodically by the
        policy server; harmless to run by hand)."""
        with self.app.dbs.engine("main").begin() as conn:
            blocks = conn.execute(text("DELETE FROM auth_blocks WHERE expires_at <= now()")).rowcount
            failures = conn.execute(text("DELETE FROM auth_failures WHERE at <= now() - make_interval(secs => :w)"),
                                    {"w": self.limits.window}).rowcount
        return {"blocks": blocks, "failures": failures}


def _announce(conn: Connection, change: str, block: Mapping[Any, Any]) -> None:
    """NOTIFY the policy servers of every node, delivered when this transaction commits."""
    payload = {"change": change, "kind": block["kind"], "value": block["value"]}
    if change == "block":
        payload.update(reason=block["reason"], created_at=block["created_at"].isoformat(),
                       expires_at=block["expires_at"].isoformat(), seconds_left=block["seconds_left"])
    conn.execute(text("SELECT pg_notify(:c, :p)"), {"c": CHANNEL, "p": json.dumps(payload)})


class BlockView:
    """The active blocks in memory, for the policy server's hot path (one lookup per
    authentication). A background thread LISTENs on ``CHANNEL``, loads every active block
    when it (re)connects, applies each block and unblock as it is announced, and reloads
    everything every `refresh` seconds (a row changed by hand in SQL is seen then).

    Expiry is kept in this host's monotonic clock from the seconds the database had left:
    a node whose wall clock is skewed still agrees with the others. While the listening
    connection is down, `live` is false and callers ask the database instead."""

    def __init__(self, app: Services, refresh: float = 60.0, retry: float = 2.0) -> None:
        self.app = app
        self.refresh, self.retry = refresh, retry
        self._blocks: dict[tuple[str, str], tuple[float, dict]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.live = False
        self.backend_pid = 0  # of the listening connection

    def start(self) -> BlockView:
        threading.Thread(target=self._run, name="block-view", daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def find(self, ip: str, account: str) -> dict | None:
        """The block on this (normalized) address or account that lasts longest, or None."""
        now = time.monotonic()
        found = [entry for key in (("ip", ip), ("account", account)) if key[1]
                 if (entry := self._blocks.get(key)) is not None and entry[0] > now]
        return dict(max(found, key=lambda e: e[0])[1]) if found else None

    def apply_block(self, block: dict) -> None:
        deadline = time.monotonic() + float(block["seconds_left"])
        row = {k: block[k] for k in ("kind", "value", "reason", "created_at", "expires_at")}
        with self._lock:
            held = self._blocks.get((row["kind"], row["value"]))
            if held is None or held[0] < deadline:
                self._blocks[(row["kind"], row["value"])] = (deadline, row)

    def apply_notification(self, payload: str) -> None:
        from datetime import datetime

        note = json.loads(payload)
        if note.get("change") == "unblock":
            with self._lock:
                self._blocks.pop((note["kind"], note["value"]), None)
        elif note.get("change") == "block":
            for stamp in ("created_at", "expires_at"):
                note[stamp] = datetime.fromisoformat(note[stamp])
            self.apply_block(note)
        else:
            raise ValueError(f"unknown change {note.get('change')!r}")

    def load(self, conn: psycopg.Connection[Any]) -> None:
        rows = conn.execute(
            "SELECT kind, value, reason, created_at, expires_at, "
            "extract(epoch FROM expires_at - now())::float FROM auth_blocks WHERE expires_at > now()").fetchall()
        now = time.monotonic()
        names = ("kind", "value", "reason", "created_at", "expires_at")  # r[5] is the seconds left
        blocks = {(r[0], r[1]): (now + r[5], dict(zip(names, r[:5], strict=True)))
                  for r in rows}
        with self._lock:
            self._blocks = blocks

    def _run(self) -> None:
        import psycopg

        while not self._stop.is_set():
            try:
                with self.app.dbs.listener("main", CHANNEL) as conn:
                    # LISTEN first, then load: a change made in between is both loaded and announced
                    self.load(conn)
                    self.backend_pid, self.live = conn.info.backend_pid, True
                    loaded = time.monotonic()
                    while not self._stop.is_set():
                        for note in conn.notifies(timeout=1.0, stop_after=1):
                            try:
                                self.apply_notification(note.payload)
                            except (ValueError, KeyError, TypeError) as exc:
                                log.warning("unreadable block announcement %r (%s): reloading", note.payload, exc)
                                loaded = 0.0
                        if time.monotonic() - loaded >= self.refresh:
                            self.load(conn)
                            loaded = time.monotonic()
            except psycopg.Error as exc:
                if self.live:
                    log.warning("block list: lost the database's announcements (%s); asking the database "
                                "for each check until they are back", str(exc).strip())
                self.live = False
                self._stop.wait(self.retry)
        self.live = False
