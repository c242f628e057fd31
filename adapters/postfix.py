"""Postfix, the SMTP agent: main.cf, master.cf and proxy:pgsql lookup tables."""
from __future__ import annotations

import functools
import os
import pwd
import re
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

from rupost.errors import ComponentCheckError

from .base import (
    Adapter,
    LogReopen,
    Probe,
    ProcessSpec,
    RenderContext,
    RenderedFile,
    extra_block,
    scalar_schema,
    snippet_schema,
)
from .probes import probe_smtp, probe_submissions

if TYPE_CHECKING:
    from rupost.config import DatabaseSettings

_SERVICE_FIELDS = ("name", "type", "private", "unpriv", "chroot", "wakeup", "maxproc", "command")
_FLAG = {"type": "string", "pattern": r"^[-yn]$"}

SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["main", "master", "lookups"],
    "properties": {
        "main": {
            "type": "object",
            "propertyNames": {"pattern": r"^[a-z][a-z0-9_]*$"},
            "additionalProperties": {"anyOf": [scalar_schema(), {"type": "array", "items": scalar_schema()}]},
        },
        "master": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["name", "type", "command"],
                "properties": {
                    "name": {"type": "string", "pattern": r"^[A-Za-z0-9_.:\[\]-]+$"},
                    "type": {"enum": ["inet", "unix", "unix-dgram", "fifo", "pass"]},
                    "private": _FLAG, "unpriv": _FLAG, "chroot": _FLAG,
                    "wakeup": {"type": ["string", "integer"], "pattern": r"^(-|\d+\??)$"},
                    "maxproc": {"type": ["string", "integer"], "pattern": r"^(-|\d+)$"},
                    "command": {"type": "string", "pattern": r"^[a-z0-9_.-]+$"},
                    "args": {"type": "array", "items": {"type": "string"}},
                    "options": {"type": "object", "additionalProperties": scalar_schema()},
                    "enabled": {"type": "boolean"},
                },
            },
        },
        "extra": {"type": "object", "additionalProperties": False,
                  "properties": {"main": snippet_schema(), "master": snippet_schema()}},
        # small static tables (regexp/pcre/texthash), written as table-NAME in the config directory
        "tables": {"type": "object", "propertyNames": {"pattern": r"^[a-z][a-z0-9_.-]*$"},
                   "additionalProperties": snippet_schema()},
        "lookups": {
            "type": "object",
            "propertyNames": {"pattern": r"^[a-z][a-z0-9_-]*$"},
            "additionalProperties": {
                "type": "object",
                "additionalProperties": False,
                "required": ["query"],
                "properties": {"query": {"type": "string"}, "result_format": {"type": "string"},
                               # answered from lookup_cache first: memcache-NAME.cf, with the
                               # cache key postfix builds from the lookup key (%s, or %u@%d:
                               # keys without a domain are then never asked at all)
                               "cache": {"type": "object", "additionalProperties": False, "required": ["key"],
                                         "properties": {"key": {"type": "string", "enum": ["%s", "%u@%d", "%d"]}}}},
            },
        },
        # the memcached in front of the lookups marked `cache`; every change to the rows they
        # read empties it on every node (data migration 0008_data_lookup_changes)
        "lookup_cache": {
            "type": "object", "additionalProperties": False, "required": ["memcache", "ttl"],
            "properties": {"memcache": {"type": "string", "pattern": r"^(inet:[^\s]+:\d{1,5}|unix:/\S+)$"},
                           "ttl": {"type": "integer", "minimum": 1, "maximum": 86400}},
        },
    },
}


@functools.lru_cache(maxsize=1)
def known_parameters() -> frozenset[str]:
    """Every parameter this postfix knows, from its own `postconf -d`."""
    out = subprocess.run(["postconf", "-d"], capture_output=True, text=True, check=True).stdout
    return frozenset(line.split(" =", 1)[0] for line in out.splitlines() if " =" in line)


@functools.lru_cache(maxsize=1)
def default_proxy_read_maps() -> str:
    return subprocess.run(["postconf", "-d", "-h", "proxy_read_maps"], capture_output=True, text=True,
                          check=True).stdout.strip()


_PROXY_TABLE = re.compile(r"proxy:[a-z0-9_]+:[^\s,{}]+")


def with_master_proxy_tables(main: dict, services: list[dict], extra_tables: Sequence[str] = ()) -> dict:
    """proxymap serves only the tables named in main.cf (`proxy_read_maps`, by default the
    main.cf parameters that hold tables); a table that only a master.cf `-o` override names
    would make that smtpd exit fatally at its first connection, after every checker passed.
    Such tables are added to `proxy_read_maps`, and so are `extra_tables` (the backups that
    memcache tables name in their own files)."""
    in_main = set(_PROXY_TABLE.findall(" ".join(format_value(v) for v in main.values())))
    missing = [t for t in extra_tables if t not in in_main]
    for svc in services:
        if svc.get("enabled", True):
            for value in (svc.get("options") or {}).values():
                for table in _PROXY_TABLE.findall(format_value(value)):
                    if table not in in_main and table not in missing:
                        missing.append(table)
    if not missing:
        return main
    base = main.get("proxy_read_maps") or default_proxy_read_maps()
    return {**main, "proxy_read_maps": " ".join([format_value(base)] + missing)}


def format_value(value: object) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(format_value(v) for v in value)
    text = str(value)
    if "\n" in text:
        raise ValueError("postfix parameter values cannot contain a newline")
    return text


def render_main_cf(main: dict, extra: str | None = None) -> str:
    lines = ["# Generated by RuPost from the active configuration template. Do not edit."]
    lines += [f"{key} = {format_value(value)}" for key, value in main.items()]
    return "\n".join(lines + extra_block(extra)) + "\n"


def _master_option(key: str, value: object) -> str:
    text = format_value(value)
    # master.cf -o values cannot hold whitespace unless wrapped in { } (postfix >= 3.0)
    return f"  -o {{ {key} = {text} }}" if re.search(r"\s", text) else f"  -o {key}={text}"


def render_master_cf(services: list[dict], extra: str | None = None) -> str:
    lines = ["# Generated by RuPost from the active configuration template. Do not edit."]
    for svc in services:
        if not svc.get("enabled", True):
            continue
        cols = [str(svc.get(f, "-")) for f in _SERVICE_FIELDS]
        lines.append(" ".join(cols + list(svc.get("args", []))))
        lines += [_master_option(k, v) for k, v in (svc.get("options") or {}).items()]
    return "\n".join(lines + extra_block(extra)) + "\n"


def pgsql_hosts(db: DatabaseSettings, spares: tuple[str, ...] = ()) -> str:
    """postfix's `hosts` for the database: HOST:PORT (and the spare addresses of the same
    port, see haproxy_db.LOOKUP_ADDRESSES), or for a Unix socket directory a connection URI.
    postfix's "unix:/dir" form cannot carry a port (libpq then looks for .s.PGSQL.5432), and
    with a URI postfix passes only the URI to libpq, so the user and password ride in it too."""
    if not db.host.startswith("/"):
        return " ".join(f"{host}:{db.port}" for host in (db.host, *spares))
    return (f"postgresql://{quote(db.user, safe='')}:{quote(db.password, safe='')}@/{quote(db.data, safe='')}"
            f"?host={quote(db.host, safe='')}&port={db.port}")


def render_memcache_table(name: str, backup: str, cache: dict, key: str) -> str:
    """A memcache table in front of `backup`: a hit never reaches proxymap or PostgreSQL, a
    miss asks the backup and stores what it found (never a "not found"). One try, one second:
    a memcached that is down or hung costs one failed connect and the lookup goes to the
    backup, so mail keeps flowing on PostgreSQL alone."""
    return "\n".join([
        "# Generated by RuPost. Lookup cache (memcached) in front of a Postgres lookup table.",
        f"memcache = {cache['memcache']}",
        f"backup = {backup}",
        f"key_format = rupost:{name}:{key}",
        f"ttl = {cache['ttl']}",
        "max_try = 1",
        "timeout = 1",
    ]) + "\n"


def cached_lookups(model: dict, config_dir: str) -> dict[str, str]:
    """name -> the proxy table each cached lookup's memcache table falls back to."""
    return {name: f"proxy:pgsql:{config_dir}/pgsql-{name}.cf"
            for name, table in model["lookups"].items() if table.get("cache")}


def render_pgsql_table(query: str, ctx: RenderContext, result_format: str | None) -> str:
    """No retry setting: postfix 3.7's PostgreSQL client has none (pgsql_table(5)); a server it
    failed to reach stays dead for a hard-coded 60 s in each proxymap process. After a database
    outage the node agent reloads postfix instead (rupost/services/lookup_probe.py)."""
    db = ctx.consumer_database("postfix", lookup=True)
    lines = [
        "# Generated by RuPost. Postgres lookup table (served through proxymap).",
        f"hosts = {pgsql_hosts(db, ctx.lookup_spares)}",
        f"user = {db.user}",
        f"password = {db.password}",
        f"dbname = {db.data}",
        f"query = {' '.join(query.split())}",
    ]
    if result_format:
        lines.append(f"result_format = {result_format}")
    return "\n".join(lines) + "\n"


_MILTER = re.compile(r"^(inet:[^\s,:]+:\d{1,5}|inet:\[[0-9A-Fa-f:.]+\]:\d{1,5}|unix:/[^\s,]+|local:/[^\s,]+)$")
_MILTER_KEYS = ("smtpd_milters", "non_smtpd_milters")


def check_milters(model: dict) -> list[str]:
    """Every milter is inet:HOST:PORT or unix:/PATH (a typo would make postfix apply
    milter_default_action to every message)."""
    places = [(f"components.postfix.main.{k}", model["main"].get(k)) for k in _MILTER_KEYS]
    for i, svc in enumerate(model["master"]):
        places += [(f"components.postfix.master[{i}].options.{k}", (svc.get("options") or {}).get(k))
                   for k in _MILTER_KEYS]
    problems = []
    for path, value in places:
        if value in (None, "") or (isinstance(value, str) and "{" in value):
            continue  # empty, or postfix's grouped syntax { milter, option=... }: left to postfix
        entries = value if isinstance(value, list) else re.split(r"[\s,]+", str(value).strip())
        for entry in entries:
            if entry and not _MILTER.match(str(entry)):
                problems.append(f"{path}: {entry!r} is not a milter address (inet:HOST:PORT or unix:/PATH)")
    return problems


_CIDR_TABLE = re.compile(r"cidr:[^\s,]*/table-([a-z][a-z0-9_.-]*)")


def check_cidr_tables(model: dict) -> list[str]:
    """A `cidr:` table with a bad network makes every lookup in it fail at run time (smtpd
    then defers the mail): each network of a table the configuration names as cidr is
    checked here, before anything is written."""
    import ipaddress

    texts = [str(v) for v in model["main"].values()]
    texts += [str(v) for svc in model["master"] for v in (svc.get("options") or {}).values()]
    named = dict.fromkeys(name for text in texts for name in _CIDR_TABLE.findall(text))
    problems = []
    for name in named:
        for number, line in enumerate((model.get("tables") or {}).get(name, "").splitlines(), 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            network = line.split()[0]
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError:
                problems.append(f"components.postfix.tables.{name}: line {number}: {network!r} is not a network "
                                "(address/prefix)")
    return problems


class PostfixAdapter(Adapter):
    name = "postfix"
    reads_tls = True
    in_mail_unit = True
    log_reopen = LogReopen.RELOAD
    probes = (Probe(probe_smtp, "smtp"), Probe(probe_submissions, "submissions"))
    schema = SCHEMA

    def check_model(self, model: dict) -> list[str]:
        known = known_parameters()
        problems = [f"components.postfix.main.{key}: unknown key (not a postfix parameter)"
                    for key in model["main"] if key not in known]
        for i, svc in enumerate(model["master"]):
            for key in (svc.get("options") or {}):
                if key not in known and not key.startswith(("smtpd_", "smtp_", "lmtp_")):
                    problems.append(f"components.postfix.master[{i}].options.{key}: unknown key")
        problems += check_milters(model)
        problems += check_cidr_tables(model)
        if not model.get("lookup_cache"):
            problems += [f"components.postfix.lookups.{name}.cache: no lookup_cache (memcache, ttl) to answer from"
                         for name, table in model["lookups"].items() if table.get("cache")]
        return problems

    def render(self, model: dict, ctx: RenderContext) -> list[RenderedFile]:
        extra = model.get("extra") or {}
        backups = cached_lookups(model, str(ctx.config_dir(self.name)))
        main = with_master_proxy_tables(model["main"], model["master"], extra_tables=list(backups.values()))
        files = [RenderedFile("main.cf", render_main_cf(main, extra.get("main"))),
                 RenderedFile("master.cf", render_master_cf(model["master"], extra.get("master")))]
        for name, content in (model.get("tables") or {}).items():
            files.append(RenderedFile(f"table-{name}", content.rstrip("\n") + "\n"))
        for name, table in model["lookups"].items():
            files.append(RenderedFile(f"pgsql-{name}.cf",
                                      render_pgsql_table(table["query"], ctx, table.get("result_format")),
                                      mode=0o640, group="postfix"))
        for name, backup in backups.items():
            files.append(RenderedFile(f"memcache-{name}.cf", render_memcache_table(
                name, backup, model["lookup_cache"], model["lookups"][name]["cache"]["key"])))
        return files

    def _prepare_dirs(self, ctx: RenderContext) -> None:
        pf = pwd.getpwnam("postfix")
        for d in (ctx.layout.postfix_queue, ctx.layout.postfix_data):
            d.mkdir(parents=True, exist_ok=True)
        os.chown(ctx.layout.postfix_data, pf.pw_uid, pf.pw_gid)
        ctx.layout.logs.mkdir(parents=True, exist_ok=True)

    def validate(self, config_dir: Path, ctx: RenderContext) -> None:
        self._prepare_dirs(ctx)
        out = self.run_checker(["postconf", "-c", str(config_dir), "-n"])
        warnings = [line for line in out.splitlines() if "warning" in line]
        if warnings:
            raise ComponentCheckError(self.name, "\n".join(warnings))
        self.run_checker(["postconf", "-c", str(config_dir), "-M"])
        self.run_checker(["postfix", "-c", str(config_dir), "check"])

    def process(self, ctx: RenderContext) -> ProcessSpec:
        conf = str(ctx.config_dir(self.name))
        return ProcessSpec(
            argv=["postfix", "-c", conf, "start-fg"],
            reload="command",
            reload_argv=["postfix", "-c", conf, "reload"],
            stop_argv=["postfix", "-c", conf, "stop"],
            pid_file=ctx.layout.postfix_queue / "pid" / "master.pid",
            prepare=lambda: self._prepare_dirs(ctx),
            # readiness is checked on the listener without the PROXY protocol: a bare
            # connect to a PROXY listener makes postfix 3.7's smtpd exit fatally and
            # the master then throttles smtpd for a minute
            ports=[("127.0.0.1", ctx.node.port("postfix_submission_internal"))],
        )


# ---- secondary instances the core runs beside the node's own postfix (not from a template)

EVACUATOR_MASTER_CF = """\
# Generated by RuPost for one evacuation run. No listeners: it only empties the queue.
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


def _instance_main_cf(purpose: str, settings: dict) -> str:
    lines = [f"# Generated by RuPost {purpose}."]
    lines += [f"{key} = {format_value(value)}" for key, value in settings.items()]
    return "\n".join(lines) + "\n"


def render_evacuator(queue_dir: Path, data_dir: Path, logs: Path, relay_port: int) -> dict[str, str]:
    """main.cf and master.cf of the instance that empties a failed node's queue. It has no
    listeners; every recipient, whatever its domain, goes to this node's evacuation relay,
    which learns each message's queue id from XFORWARD."""
    main = {
        "compatibility_level": "3.6",
        "queue_directory": queue_dir,
        "data_directory": data_dir,
        "syslog_name": "postfix-rupost/evacuator",
        "maillog_file": f"{logs}/postfix-evacuator.log",
        "maillog_file_prefixes": logs,
        "inet_interfaces": "loopback-only",
        "inet_protocols": "ipv4",
        "mydestination": "",
        "local_recipient_maps": "",
        "virtual_alias_maps": "",
        "relay_domains": "",
        "alias_maps": "",
        "relayhost": f"[127.0.0.1]:{relay_port}",
        "smtp_send_xforward_command": True,
        "default_transport": "smtp",
        "relay_transport": "smtp",
        "smtp_tls_security_level": "none",
        "queue_run_delay": "1s",
        "minimal_backoff_time": "1s",
        "maximal_backoff_time": "10s",
        "default_destination_concurrency_limit": 20,
    }
    return {"main.cf": _instance_main_cf("for one evacuation run", main), "master.cf": EVACUATOR_MASTER_CF}


def render_queue_view(queue_dir: Path) -> dict[str, str]:
    """A configuration that only names another node's queue, for postqueue/postcat to read it."""
    main = {"compatibility_level": "3.6", "queue_directory": queue_dir}
    return {"main.cf": _instance_main_cf("as a read-only view of another node's queue", main)}
