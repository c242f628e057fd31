"""HAProxy, the HA agent.

On every node it holds the public ports and balances across the cluster: the local
mail stack first, the other nodes as backups behind it, with one stick
table keyed by the client's source address (idle expiry 30 minutes) shared by all
services and synchronised between the nodes through ``peers``. A node's health is
served on the health port: ``/health/<listener>`` fails when a local component that
listener needs does not answer or when the node agent has drained the node, and the
peers' health checks then route that listener's clients around it; ``/health`` covers
every component. Traffic a node forwards to another node enters that node on a
*cluster port* that accepts the PROXY protocol and goes straight to its local stack,
so the client's address survives every hop. With a highly available database, HAProxy
is also every local daemon's way to its primary (adapters/haproxy_db.py).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from . import haproxy_db
from .base import Adapter, ProcessSpec, RenderContext, RenderedFile, extra_block, listen_schema, snippet_schema

if TYPE_CHECKING:
    from rupost.paths import Layout

_DURATION = {"type": "string", "pattern": r"^\d+(us|ms|s|m|h|d)?$"}
_PORT = {"type": "integer", "minimum": 1, "maximum": 65535}
_NAME = {"type": "string", "pattern": r"^[A-Za-z0-9_.-]+$"}

SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["cluster", "listeners", "health_checks"],
    "properties": {
        "maxconn": {"type": "integer", "minimum": 1},
        "extra": snippet_schema(),
        "database": haproxy_db.SCHEMA,
        "timeouts": {
            "type": "object",
            "additionalProperties": False,
            "properties": {"connect": _DURATION, "client": _DURATION, "server": _DURATION, "check": _DURATION},
        },
        "cluster": {
            "type": "object",
            "additionalProperties": False,
            "required": ["self", "address", "nodes", "peers_port", "health_port"],
            "properties": {
                "self": _NAME,
                "address": {"type": "string", "pattern": r"^[0-9A-Za-z.:-]+$"},
                "nodes": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["name", "address", "id"],
                        "properties": {"name": _NAME, "address": {"type": "string"},
                                       "id": {"type": "integer", "minimum": 1}},
                    },
                },
                "peers_port": _PORT,
                "health_port": _PORT,
                "stick_expire": _DURATION,
                "check_interval": _DURATION,
            },
        },
        "health_checks": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["name", "address"],
                "properties": {"name": {"type": "string", "pattern": r"^[a-z0-9_-]+$"}, "address": listen_schema(),
                               "send_proxy": {"type": "boolean"},
                               # the listeners that need this component (default: all of them)
                               "listeners": {"type": "array",
                                             "items": {"type": "string", "pattern": r"^[a-z0-9_-]+$"}}},
            },
        },
        "listeners": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["name", "bind", "local", "cluster_port"],
                "properties": {
                    "name": {"type": "string", "pattern": r"^[a-z0-9_-]+$"},
                    "bind": listen_schema(),
                    # this node's server: host:port, or a Unix socket (unix@/path) of a
                    # daemon on this node (HAProxy runs as root and reaches postfix's private/)
                    "local": {"anyOf": [listen_schema(), {"type": "string", "pattern": r"^unix@/[^\s]+$"}]},
                    "cluster_port": _PORT,
                    "send_proxy": {"enum": ["v1", "v2", "none"]},
                    "accept_proxy": {"type": "boolean"},
                    # sessions this node's frontend admits; the next clients go to `refusal`,
                    # a server that answers them (BYE, 421, 503) and closes
                    "max_sessions": {"type": "integer", "minimum": 1},
                    "refusal": {"anyOf": [listen_schema(), {"type": "string", "pattern": r"^unix@/[^\s]+$"}]},
                },
            },
        },
    },
}

_SEND_PROXY = {"v1": " send-proxy", "v2": " send-proxy-v2", "none": ""}
PEERS_SECTION = "rupost"
STICK_TABLE = "sticky_clients"
LOCAL_HEALTH = "be_local_health"


def render_haproxy_cfg(model: dict, ctx: RenderContext) -> str:
    cl = model["cluster"]
    nodes = sorted(cl["nodes"], key=lambda n: n["name"])
    if cl["self"] not in [n["name"] for n in nodes]:
        raise ValueError(f"cluster.self {cl['self']!r} is not in cluster.nodes")
    out = ["# Generated by RuPost from the active configuration template. Do not edit.",
           *global_sections(model, ctx), "", *peers_sections(cl, nodes), "", *health_sections(model)]
    for listener in model["listeners"]:
        out += listener_sections(listener, cl, nodes)
    out += haproxy_db.database_sections(model.get("database"))
    return "\n".join(out + [""] + extra_block(model.get("extra"))) + "\n"


def global_sections(model: dict, ctx: RenderContext) -> list[str]:
    """global and defaults."""
    t = {"connect": "5s", "client": "30m", "server": "30m", "check": "2s", **model.get("timeouts", {})}
    return [
        "global",
        f"    maxconn {model.get('maxconn', 8000)}",
        "    log stdout format raw daemon info",
        f"    stats socket {ctx.layout.run_dir('haproxy')}/admin.sock mode 600 level admin expose-fd listeners",
        f"    localpeer {model['cluster']['self']}",
        "",
        "defaults",
        "    mode tcp",
        "    log global",
        "    option tcplog",
        "    option dontlognull",
        "    option redispatch",  # a client stuck to a node that went down goes to a healthy one
        "    retries 2",
        f"    timeout connect {t['connect']}",
        f"    timeout client {t['client']}",
        f"    timeout server {t['server']}",
        f"    timeout check {t['check']}",
    ]


def peers_sections(cl: dict, nodes: list[dict]) -> list[str]:
    """The peers (every node) and the stick table they share."""
    return [
        f"peers {PEERS_SECTION}",
        *(f"    peer {n['name']} {n['address']}:{cl['peers_port']}" for n in nodes),
        "",
        f"backend {STICK_TABLE}",
        f"    stick-table type ip size 1m expire {cl.get('stick_expire', '30m')} peers {PEERS_SECTION}",
    ]


def health_sections(model: dict) -> list[str]:
    """The health frontend peers check, and the backend of the local components behind it."""
    cl = model["cluster"]
    interval = cl.get("check_interval", "2s")
    return [
        "# this node's health, as its peers see it: every local component answers and",
        "# the node agent has not drained the node (it disables these servers then);",
        "# /health/<listener>: the components that listener needs",
        "frontend health",
        "    mode http",
        f"    bind {cl['address']}:{cl['health_port']}",
        *([f"    bind 127.0.0.1:{cl['health_port']}"] if cl["address"] != "127.0.0.1" else []),
        "    monitor-uri /health",
        f"    monitor fail if {{ nbsrv({LOCAL_HEALTH}) lt {len(model['health_checks'])} }}",
        *listener_health_rules(model),
        "",
        f"backend {LOCAL_HEALTH}",
        *(f"    server {h['name']} {h['address']} check inter {interval} fall 1 rise 2"
          + (" check-send-proxy" if h.get("send_proxy") else "") for h in model["health_checks"]),
    ]


def listener_sections(listener: dict, cl: dict, nodes: list[dict]) -> list[str]:
    """One public listener: its frontend, the frontend of the cluster port other nodes forward
    to, the backend balancing across the nodes, and the local backend of the cluster port."""
    name = listener["name"]
    accept = " accept-proxy" if listener.get("accept_proxy") else ""
    send = _SEND_PROXY[listener.get("send_proxy", "v2")]
    return ["", f"frontend fe_{name}", f"    bind {listener['bind']}{accept}", *session_limit(listener, f"be_{name}"),
            f"    default_backend be_{name}",
            "", f"frontend fe_cluster_{name}",
            f"    bind {cl['address']}:{listener['cluster_port']} accept-proxy",
            *session_limit(listener, f"be_local_{name}"),
            f"    default_backend be_local_{name}",
            "", f"backend be_{name}", "    balance roundrobin", f"    stick on src table {STICK_TABLE}",
            f"    option httpchk GET /health/{name}",
            *listener_servers(listener, send, cl, nodes),
            "", f"backend be_local_{name}", f"    server local {listener['local']}{send}",
            *refusal_backend(listener)]


def refusal_slots(sessions: int) -> int:
    """Connections a full frontend still accepts in order to answer them (the same figure as
    rupost.templating.limits.refusal_slots, which sizes the global maxconn with it)."""
    return max(10, sessions // 10)


def session_limit(listener: dict, backend: str) -> list[str]:
    """A frontend's bound: once its backend holds max_sessions, the next clients are sent to
    the refusal server, which answers them. HAProxy's own maxconn (and any daemon's limit
    behind it) would leave a client waiting in a queue or the kernel's backlog, then close
    without a word (issue 25); the frontend's maxconn is therefore max_sessions plus the slots
    the refusals need.

    The backend's count, not the frontend's: HAProxy reserves a frontend slot before each
    accept(), so fe_conn can count a connection that does not exist yet and refused the
    max_sessions-th client about one time in two in the test; a client is counted by its
    backend only once it is sent there. Two clients arriving in the same instant on two
    threads can both be admitted, one beyond the limit: the daemons behind are sized above."""
    if "max_sessions" not in listener:
        return []
    sessions = listener["max_sessions"]
    lines = [f"    maxconn {sessions + refusal_slots(sessions)}"]
    if listener.get("refusal"):
        lines.append(f"    use_backend be_refuse_{listener['name']} if {{ be_conn({backend}) ge {sessions} }}")
    return lines


def refusal_backend(listener: dict) -> list[str]:
    if "max_sessions" not in listener or not listener.get("refusal"):
        return []
    return ["", f"backend be_refuse_{listener['name']}", f"    server refusal {listener['refusal']}"]


def listener_servers(listener: dict, send: str, cl: dict, nodes: list[dict]) -> list[str]:
    """A listener's backend servers: the local stack first, the other nodes as backups."""
    me, interval = cl["self"], cl.get("check_interval", "2s")
    out = []
    for n in sorted(nodes, key=lambda n: (n["name"] != me, n["name"])):  # the local stack first
        if n["name"] == me and len(nodes) == 1:
            # alone, there is nowhere else to send a client: a health check could only
            # refuse it (for seconds after every SOGo restart, say) where postfix would
            # have queued the mail; drains and failures still show on /health
            out.append(f"    server {n['name']} {listener['local']}{send} id {n['id']}")
            continue
        if n["name"] == me:
            target, check_addr = listener["local"], "127.0.0.1"
        else:
            target, check_addr = f"{n['address']}:{listener['cluster_port']}", n["address"]
        # peers are backups: new clients stay local; a stuck client follows its table entry
        backup = "" if n["name"] == me else " backup"
        out.append(f"    server {n['name']} {target}{send} id {n['id']}{backup} check addr {check_addr} "
                   f"port {cl['health_port']} inter {interval} fall 2 rise 2")
    return out


def listener_health_rules(model: dict) -> list[str]:
    """The health frontend's answers for /health/<listener>: 503 while a component that
    listener needs is not up (or drained), else 200. A peer routes a listener's clients around
    this node only for its own components: a SOGo restart takes HTTPS away for seconds, and
    leaves SMTP and IMAP where they are."""
    names = [listener["name"] for listener in model["listeners"]]
    rules = []
    for check in model["health_checks"]:
        unknown = [n for n in check.get("listeners", []) if n not in names]
        if unknown:
            raise ValueError(f"health_checks {check['name']}: no listener named {', '.join(unknown)}")
    for name in names:
        for check in model["health_checks"]:
            if name in check.get("listeners", names):
                down = f'string "{check["name"]} down"'
                rules.append(f"    http-request return status 503 content-type text/plain {down} "
                             f"if {{ path /health/{name} }} !{{ srv_is_up({LOCAL_HEALTH}/{check['name']}) }}")
    return rules + [
        f'    http-request return status 200 content-type text/plain string "up" if {{ path {path} }}'
        for path in (f"/health/{name}" for name in names)] + [
        '    http-request return status 404 content-type text/plain string "no such health check"']


class HAProxyAdapter(Adapter):
    name = "haproxy"
    schema = SCHEMA

    def render(self, model: dict, ctx: RenderContext) -> list[RenderedFile]:
        return [RenderedFile("haproxy.cfg", render_haproxy_cfg(model, ctx))]

    def _prepare_dirs(self, ctx: RenderContext) -> None:
        ctx.layout.run_dir(self.name).mkdir(parents=True, exist_ok=True)

    def validate(self, config_dir: Path, ctx: RenderContext) -> None:
        self._prepare_dirs(ctx)
        self.run_checker(["haproxy", "-c", "-q", "-f", str(config_dir / "haproxy.cfg")])

    def process(self, ctx: RenderContext) -> ProcessSpec:
        host = ctx.node.listen_address if ctx.node.listen_address not in ("*", "0.0.0.0", "::") else "127.0.0.1"
        return ProcessSpec(
            argv=["haproxy", "-W", "-db", "-f", str(ctx.config_dir(self.name) / "haproxy.cfg")],
            reload="usr2",
            prepare=lambda: self._prepare_dirs(ctx),
            ports=[(host, ctx.node.port("smtp"))],
        )


def admin_socket(ctx_layout: Layout) -> Path:
    return ctx_layout.run_dir("haproxy") / "admin.sock"


def runtime_command(layout: Layout, command: str, timeout: float = 5.0) -> str:
    """One command on HAProxy's runtime API (the admin socket)."""
    import socket

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(admin_socket(layout)))
        sock.sendall(command.encode() + b"\n")
        chunks = []
        while True:
            data = sock.recv(65536)
            if not data:
                break
            chunks.append(data)
    return b"".join(chunks).decode(errors="replace")


def stick_entries(layout: Layout) -> dict[str, int]:
    """Client address -> server id, from this node's copy of the shared stick table."""
    entries = {}
    for line in runtime_command(layout, f"show table {STICK_TABLE}").splitlines():
        fields = dict(part.split("=", 1) for part in line.split() if "=" in part)
        if "key" in fields and "server_id" in fields:
            entries[fields["key"]] = int(fields["server_id"])
    return entries


def health_servers(layout: Layout) -> list[str]:
    """Names of the local health checks, as the running HAProxy knows them."""
    lines = runtime_command(layout, f"show servers state {LOCAL_HEALTH}").splitlines()
    # format 1: "be_id be_name srv_id srv_name ..."; the first lines are the version and a header
    return [line.split()[3] for line in lines[2:] if len(line.split()) > 3]


def set_drained(layout: Layout, drained: bool) -> None:
    """Drained: the health endpoint fails, so peers (and this node) send traffic elsewhere."""
    state = "maint" if drained else "ready"
    for name in health_servers(layout):
        runtime_command(layout, f"set server {LOCAL_HEALTH}/{name} state {state}")


_REFUSAL_RULE = re.compile(r"^\s+use_backend be_refuse_(\S+) if \{ be_conn\(\S+\) ge (\d+) \}\s*$")


def session_limits(cfg_text: str) -> dict[str, int]:
    """Listener -> sessions its public frontend admits, read from a rendered haproxy.cfg's
    refusal rules (what runs, whatever the template or its parameters say now)."""
    limits, frontend = {}, None
    for line in cfg_text.splitlines():
        if not line.startswith((" ", "\t")):
            frontend = line.split()[1] if line.startswith("frontend ") else None
            continue
        match = _REFUSAL_RULE.match(line)
        if match and frontend == f"fe_{match.group(1)}":
            limits[match.group(1)] = int(match.group(2))
    return limits


def proxy_stats(layout: Layout, clear_max: bool = False) -> dict[tuple[str, str], dict[str, str]]:
    """(proxy, FRONTEND/BACKEND/server) -> HAProxy's counters (`show stat`: scur, smax, stot,
    slim...). ``clear_max``: in the same runtime-API call, reset the maxima (``clear counters``:
    smax and the rates; the totals stay), so the next reading's smax covers the time between."""
    lines = runtime_command(layout, "show stat;clear counters" if clear_max else "show stat").splitlines()
    if not lines or not lines[0].startswith("# "):
        raise ValueError(f"unexpected answer to 'show stat': {lines[:1]}")
    header = lines[0][2:].split(",")
    stats = {}
    for line in lines[1:]:
        if line.strip():
            row = dict(zip(header, line.split(","), strict=False))
            stats[(row["pxname"], row["svname"])] = row
    return stats
