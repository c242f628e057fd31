"""A highly available database as this node sees it: the Patroni members (role, state, lag,
from their REST API) and which member each of this node's ways to the database reaches now
(the core's libpq target, HAProxy's db_primary and db_lookup). `rupost db status` shows it;
the `database-ha` check fails on no primary, a member down or lagging, and a local HAProxy
that has lost the primary. Nothing here changes the cluster: Patroni owns the failover.
"""
from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

from ..db import endpoints
from .checks import CRITICAL, OK, WARNING, CheckResult, register_check, setting

if TYPE_CHECKING:
    from . import Services

API_TIMEOUT = 2.0
# Patroni's member roles for a primary (3.0 says "leader", older releases "master")
PRIMARY_ROLES = ("leader", "master", "primary", "standby_leader")


@dataclass
class MemberState:
    name: str
    host: str
    port: int
    role: str  # leader, sync_standby, replica; "unreachable" when its REST API does not answer
    state: str  # running, streaming, stopped, starting...; "" when unknown
    lag_bytes: int | None = None  # replicas: bytes behind the primary
    timeline: int | None = None


@dataclass
class HAStatus:
    ha: bool
    members: list[MemberState] = field(default_factory=list)
    reaches: dict[str, str] = field(default_factory=dict)  # way (core, db_primary, db_lookup) -> member host

    @property
    def primary(self) -> MemberState | None:
        return next((m for m in self.members if m.role in PRIMARY_ROLES and m.state == "running"), None)

    def as_dict(self) -> dict:
        return {"ha": self.ha, "primary": self.primary.host if self.primary else None,
                "members": [asdict(m) for m in self.members], "reaches": self.reaches}


def _get(host: str, port: int, path: str) -> dict | None:
    """A Patroni REST answer; None when the member does not answer (any HTTP status is an
    answer: /cluster answers 200, the role endpoints 503 on the wrong role)."""
    url = f"http://{host}:{port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=API_TIMEOUT) as resp:
            return json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        try:
            return json.loads(exc.read() or b"{}")
        except ValueError:
            return {}
    except (OSError, ValueError):
        return None


class DatabaseHAService:
    def __init__(self, app: Services) -> None:
        self.app = app

    def status(self, probe_ways: bool = True) -> HAStatus:
        db = self.app.config.database
        if not endpoints.is_ha(db):
            return HAStatus(False, reaches={"core": f"{db.host}:{db.port}"} if probe_ways else {})
        cluster = next((c for c in (_get(m.host, m.api_port, "/cluster") for m in db.members) if c), {})
        known = {(item.get("host"), int(item.get("port") or 0)): item for item in cluster.get("members", [])}
        members = []
        for m in db.members:
            item = known.get((m.host, m.port))
            if item is None:  # not in the cluster's view: ask the member itself
                own = _get(m.host, m.api_port, "/patroni")
                members.append(MemberState(own.get("patroni", {}).get("name", m.host) if own else m.host, m.host,
                                           m.port, own.get("role", "unknown") if own else "unreachable",
                                           own.get("state", "") if own else ""))
                continue
            lag = item.get("lag")
            members.append(MemberState(item.get("name", m.host), m.host, m.port, item.get("role", "unknown"),
                                       item.get("state", ""), lag if isinstance(lag, int) else None,
                                       item.get("timeline")))
        return HAStatus(True, members, self.reaches() if probe_ways else {})

    def reaches(self) -> dict[str, str]:
        """Which member each way leads to now: the server's own address, asked over that way."""
        import psycopg

        cfg, db = self.app.config, self.app.config.database
        ways = {"core": endpoints.core_target(db),
                "db_primary": {"host": endpoints.LOOPBACK, "port": cfg.port("db_primary")},
                "db_lookup": {"host": endpoints.LOOPBACK, "port": cfg.port("db_lookup")}}
        out = {}
        for way, target in ways.items():
            try:
                with psycopg.connect(**target, user=db.user, password=db.password, dbname=db.main,
                                     connect_timeout=3, application_name="rupost-status") as conn:
                    row = conn.execute("SELECT host(inet_server_addr()), pg_is_in_recovery()").fetchone()
                out[way] = f"{row[0]} ({'replica' if row[1] else 'primary'})" if row else "no answer"
            except psycopg.Error as exc:
                out[way] = "unreachable: " + (str(exc).strip().splitlines() or ["?"])[-1]
        return out


def check_database_ha(app: Services) -> list[CheckResult]:
    """No primary or no way to it from here: critical; a member down or lagging: warning."""
    if not endpoints.is_ha(app.config.database):
        return []
    status = app.database_ha.status(probe_ways=False)
    out = []
    primary = status.primary
    if primary is None:
        out.append(CheckResult("database-ha", "primary", CRITICAL,
                               "no member is the primary: writes fail until Patroni elects one "
                               f"({_summary(status)})"))
    else:
        out.append(CheckResult("database-ha", "primary", OK, f"{primary.name} ({primary.host}) is the primary"))
    limit = int(setting(app, "monitor_database_lag_bytes"))
    for m in status.members:
        if m is primary:
            continue
        if m.state not in ("running", "streaming"):
            out.append(CheckResult("database-ha", m.name, WARNING if primary else CRITICAL,
                                   f"{m.host}: {m.role} {m.state or 'not answering'}; lookups go to the primary"))
        elif m.lag_bytes is not None and m.lag_bytes > limit:
            out.append(CheckResult("database-ha", m.name, WARNING,
                                   f"{m.host}: {m.role} {m.lag_bytes} bytes behind the primary (limit {limit}); "
                                   "it serves no lookups until it catches up"))
        else:
            out.append(CheckResult("database-ha", m.name, OK, f"{m.host}: {m.role} {m.state}, lag {m.lag_bytes or 0}"))
    out.append(_local_way(app, primary is not None))
    return out


def _local_way(app: Services, has_primary: bool) -> CheckResult:
    """This node's HAProxy: its db_primary backend must see the primary the cluster has."""
    from adapters.haproxy import proxy_stats
    from adapters.haproxy_db import PRIMARY

    try:
        stats = proxy_stats(app.layout)
    except (OSError, ValueError) as exc:
        return CheckResult("database-ha", "haproxy", CRITICAL, f"cannot read HAProxy's state: {exc}")
    up = [sv for (px, sv), row in stats.items() if px == PRIMARY and sv not in ("BACKEND", "FRONTEND")
          and row.get("status", "").startswith("UP")]
    if up:
        return CheckResult("database-ha", "haproxy", OK, f"this node's daemons reach the primary through {up[0]}")
    status = CRITICAL if has_primary else WARNING
    return CheckResult("database-ha", "haproxy", status,
                       "this node's HAProxy sees no primary: postfix, dovecot and SOGo cannot write")


def _summary(status: HAStatus) -> str:
    return ", ".join(f"{m.name} {m.role}/{m.state or '-'}" for m in status.members)


register_check("database-ha", check_database_ha)
