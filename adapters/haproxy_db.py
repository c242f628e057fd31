"""HAProxy's way to a highly available database (Patroni; docs/database-ha.md).

Two loopback frontends on every node: ``db_primary`` leads to the member whose Patroni REST
API answers ``GET /primary`` with 200, ``db_lookup`` to the same primary while there is one
and otherwise to any running replica (``GET /replica``, bounded lag: backup servers tracking
those checks), so lookups keep being answered while the members elect a new primary. A
member marked down has its sessions shut (``on-marked-down shutdown-sessions``): a client
holding a connection to a primary that stopped being one is disconnected at once and
reconnects to the new primary, instead of writing into a server that became read-only or
waiting on one that is gone.
"""
from __future__ import annotations

_PORT = {"type": "integer", "minimum": 1, "maximum": 65535}

SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["members", "primary_port", "lookup_port"],
    "properties": {
        # empty: a single database server, reached directly (no section rendered)
        "members": {"type": "array", "items": {
            "type": "object", "additionalProperties": False, "required": ["host", "port", "api_port"],
            "properties": {"host": {"type": "string", "pattern": r"^[0-9A-Za-z.:-]+$"}, "port": _PORT,
                           "api_port": _PORT}}},
        "primary_port": _PORT,
        "lookup_port": _PORT,
        "check_interval": {"type": "string", "pattern": r"^\d+(ms|s)$"},
        # a replica further behind than this serves no lookups (Patroni's ?lag=)
        "max_replica_lag": {"type": "string", "pattern": r"^\d+(kB|MB|GB)?$"},
    },
}

PRIMARY = "be_db_primary"
REPLICAS = "be_db_replicas"
LOOKUP = "be_db_lookup"
# the lookup frontend listens on several loopback addresses: postfix's pgsql client holds a
# host whose query failed as dead for a fixed minute (RETRY_CONN_INTV, not configurable), so
# after a switch it needs another "host" it has not used yet; each address is one for it
LOOKUP_ADDRESSES = tuple(f"127.0.0.{i}" for i in range(1, 7))


def database_sections(db: dict | None) -> list[str]:
    """The frontends and backends; none without members."""
    if not db or not db.get("members"):
        return []
    lag = db.get("max_replica_lag", "16MB")
    return ["", "# the database's primary, and lookups (the primary, else any replica)",
            "frontend fe_db_primary", f"    bind 127.0.0.1:{db['primary_port']}", f"    default_backend {PRIMARY}",
            "", "frontend fe_db_lookup", *(f"    bind {a}:{db['lookup_port']}" for a in LOOKUP_ADDRESSES),
            f"    default_backend {LOOKUP}",
            *_checked_backend(PRIMARY, "/primary", db), *_checked_backend(REPLICAS, f"/replica?lag={lag}", db),
            *_lookup_backend(db)]


def _common(db: dict, shut: bool = True) -> list[str]:
    """A connection refused by a member that died a moment ago, before two checks marked it
    down, is tried again after a second (HAProxy's turn-around timer) and, once it is marked
    down, on another server: a daemon waits a few seconds instead of failing (postfix would
    hold the "host" as dead for a minute). `shut`: sessions to a server marked down are closed."""
    interval = db.get("check_interval", "1s")
    on_down = " on-marked-down shutdown-sessions" if shut else ""
    return ["    retries 5", "    option redispatch 1", f"    default-server inter {interval} fall 2 rise 1{on_down}"]


def _checked_backend(name: str, check: str, db: dict) -> list[str]:
    return ["", f"backend {name}", f"    option httpchk GET {check}", "    http-check expect status 200",
            *_common(db),
            *(f"    server {_server_name(m)} {_address(m)} check port {m['api_port']}" for m in db["members"])]


def _lookup_backend(db: dict) -> list[str]:
    """The primary (tracked from be_db_primary) as the active server, the replicas (tracked
    from be_db_replicas) as backups: HAProxy uses backups only while no active server is up.
    A server marked down keeps its sessions: a replica being promoted still answers reads,
    and a member that stops or restarts closes its sessions itself. When a primary is marked
    up, the sessions on the replicas are shut (``on-marked-up shutdown-backup-sessions``):
    the daemons' connections are long-lived, and one left on a replica after a switch reads
    behind the primary (an asynchronous member; a standby replaying), where a mailbox created
    a moment ago is "user unknown" and its mail bounces. The daemons reconnect to the
    primary; postfix holds each "host" whose session was shut as dead for a minute, which
    the lookup revival ends (a postfix reload: rupost/services/lookup_probe.py)."""
    return ["", f"backend {LOOKUP}", *_common(db, shut=False),
            *(f"    server {_server_name(m)} {_address(m)} track {PRIMARY}/{_server_name(m)} "
              "on-marked-up shutdown-backup-sessions" for m in db["members"]),
            *(f"    server {_server_name(m)}_replica {_address(m)} backup track {REPLICAS}/{_server_name(m)}"
              for m in db["members"])]
def _address(member: dict) -> str:
    host = member["host"]
    return f"[{host}]:{member['port']}" if ":" in host else f"{host}:{member['port']}"


def _server_name(member: dict) -> str:
    return "pg_" + member["host"].replace(":", "_").replace(".", "_") + f"_{member['port']}"
