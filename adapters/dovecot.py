"""Dovecot, the IMAP agent: dovecot.conf plus the SQL passdb/userdb file."""
from __future__ import annotations

import grp
import os
import pwd
import re
import shutil
import tempfile
from pathlib import Path

from .base import (
    Adapter,
    LogReopen,
    Probe,
    ProcessSpec,
    RenderContext,
    RenderedFile,
    extra_block,
    ldap_directory_schema,
    scalar_schema,
    snippet_schema,
)
from .probes import probe_imaps

_SECTION_VALUE = {"anyOf": [scalar_schema(), {"type": "array"}, {"type": "object"}]}

SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["settings", "sql"],
    "properties": {
        "settings": {"type": "object", "additionalProperties": _SECTION_VALUE},
        "extra": snippet_schema(),
        # global Sieve scripts, written as sieve/NAME.sieve and checked with sievec
        "sieve_scripts": {"type": "object", "propertyNames": {"pattern": r"^[a-z][a-z0-9_-]*$"},
                          "additionalProperties": snippet_schema()},
        # new-mail events spooled by the push_notification Lua driver (push.lua, adapters/dovecot_push.py)
        "push_notification": {"type": "boolean"},
        # one LDAP passdb with auth binds per LDAP domain (rupost.services.directories),
        # tried after the passdbs of `settings`, only for users of its mail domains
        "ldap_passdbs": ldap_directory_schema(
            ["name", "uris", "bind_dn", "bind_password", "base", "filter", "domains"],
            tls={"type": "boolean"}, timeout={"type": "integer"},
            domains={"type": "array", "minItems": 1, "items": {"type": "string"}}),
        # Kerberos single sign-on of one LDAP domain (rupost ldap-domains kerberos): GSSAPI with
        # the keytab the core writes from the database, a passdb mapping LOGIN@REALM to a mailbox
        "kerberos": {
            "type": "object",
            "additionalProperties": False,
            "required": ["enabled"],
            "properties": {
                "enabled": {"type": "boolean"},
                "keytab": {"type": "string"},
                "hostname": {"type": "string", "pattern": r"^[A-Za-z0-9.-]*$"},
                "realm": {"type": "string", "pattern": r"^[A-Za-z0-9.-]*$"},
                "domains": {"type": "array", "items": {"type": "string", "pattern": r"^[a-z0-9.-]+$"}},
                "password_query": {"type": "string"},
            },
        },
        # impersonation accounts (rupost impersonation): a master passdb, and an IMAP
        # post-login script that records every use through the policy server
        "impersonation": {
            "type": "object",
            "additionalProperties": False,
            "required": ["separator", "password_query", "log_url"],
            "properties": {
                "enabled": {"type": "boolean"},
                "separator": {"type": "string", "pattern": r"^[*%#!~^]$"},
                "password_query": {"type": "string"},
                "log_url": {"type": "string", "pattern": r"^http://[A-Za-z0-9.:\[\]-]+/[A-Za-z0-9/_-]*$"},
            },
        },
        # shared mailboxes (rupost shared-mailboxes): the views dovecot's acl_shared_dict reads
        # through the SQL dict (dict "acl" in settings), rendered as dovecot-dict-sql.conf.ext
        "acl_shared_dict": {
            "type": "object",
            "additionalProperties": False,
            "required": ["user_table", "anyone_table"],
            "properties": {"user_table": {"type": "string", "pattern": r"^[a-z_][a-z0-9_]*$"},
                           "anyone_table": {"type": "string", "pattern": r"^[a-z_][a-z0-9_]*$"},
                           # groups (acl_groups from the userdb): shared/shared-boxes/group/GROUP/FROM
                           "group_table": {"type": "string", "pattern": r"^[a-z_][a-z0-9_]*$"}},
        },
        "sql": {
            "type": "object",
            "additionalProperties": False,
            "required": ["password_query", "user_query"],
            "properties": {
                "default_pass_scheme": {"type": "string"},
                "password_query": {"type": "string"},
                "user_query": {"type": "string"},
                "iterate_query": {"type": "string"},
            },
        },
    },
}

# Owner of mail storage: UID/GID 420 on every node (guide §2.7, NFS ownership).
MAIL_USER = "vmail"
MAIL_UID = 420

_NEEDS_QUOTES = re.compile(r"(^\s|\s$|#|^$|[{}\"])")


def format_scalar(value: object) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    text = str(value)
    if "\n" in text:
        raise ValueError("dovecot setting values cannot contain a newline")
    if text.startswith("<"):
        return text  # "<file" reads the value from a file
    if _NEEDS_QUOTES.search(text):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return text


def render_settings(settings: dict, indent: int = 0) -> list[str]:
    """Nested mappings become `name { ... }` sections; a list of mappings repeats a section."""
    pad = "  " * indent
    lines: list[str] = []
    for key, value in settings.items():
        if isinstance(value, dict):
            lines.append(f"{pad}{key} {{")
            lines += render_settings(value, indent + 1)
            lines.append(f"{pad}}}")
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            for item in value:
                lines.append(f"{pad}{key} {{")
                lines += render_settings(item, indent + 1)
                lines.append(f"{pad}}}")
        elif isinstance(value, list):
            lines.append(f"{pad}{key} = {' '.join(format_scalar(v) for v in value)}")
        else:
            lines.append(f"{pad}{key} = {format_scalar(value)}")
    return lines


def libpq_quote(value: object) -> str:
    text = str(value)
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


# dovecot's SQL pool (lib-sql's sqlpool) retries a query that failed on a broken connection
# once per host it knows, and on a switchover or a PostgreSQL restart *every* idle connection
# it holds is broken without its knowing: with one host and its default five connections a
# login whose query met two dead connections in a row failed ("Temporary authentication
# failure", the first login after a switchover). One connection per host and as many hosts
# as connections: a query walks through every dead connection, and then waits for a new one.
SQL_HOSTS = 6


def sql_hosts(db_host: str, spares: tuple[str, ...]) -> tuple[str, ...]:
    """The lookup addresses with HA (each a way to the same HAProxy frontend), else the one
    database host repeated: sqlpool keeps each listed host's connection apart."""
    return (db_host, *spares) if spares else (db_host,) * SQL_HOSTS


def _connect(ctx: RenderContext) -> str:
    """lib-sql's connect string (the passdb/userdb and the ACL dict share it; both only read)."""
    db = ctx.consumer_database("dovecot", lookup=True)
    hosts = " ".join(f"host={libpq_quote(h)}" for h in sql_hosts(db.host, ctx.lookup_spares))
    connect = " ".join(f"{k}={libpq_quote(v)}" for k, v in (
        ("port", db.port), ("dbname", db.data), ("user", db.user), ("password", db.password),
        ("connect_timeout", 5)))
    # maxconns: sqlpool's own setting (per host), not libpq's; it must not be quoted
    return f"{hosts} {connect} maxconns=1"


def render_sql_conf(sql: dict, ctx: RenderContext) -> str:
    lines = ["# Generated by RuPost. Live lookups of the local user directory.", "driver = pgsql",
             f"connect = {_connect(ctx)}"]
    for key in ("default_pass_scheme", "password_query", "user_query", "iterate_query"):
        if key in sql:
            lines.append(f"{key} = {' '.join(str(sql[key]).split())}")
    return "\n".join(lines) + "\n"


def render_acl_dict_conf(tables: dict, ctx: RenderContext) -> str:
    """The SQL dict behind acl_shared_dict: which owners' mailboxes each user may see under
    the shared namespace (keys shared/shared-boxes/user/TO/FROM, group/GROUP/FROM for the
    user's acl_groups; "anyone" shares apart).
    Dovecot only reads it here: the views are the members RuPost keeps, and an IMAP SETACL
    that would add a share fails to update them (the CLI and the panel change members)."""
    return "\n".join([
        "# Generated by RuPost. Shared mailboxes each user sees (live lookup).",
        f"connect = {_connect(ctx)}",
        "map {", "  pattern = shared/shared-boxes/user/$to/$from", f"  table = {tables['user_table']}",
        "  value_field = dummy", "  fields {", "    from_user = $from", "    to_user = $to", "  }", "}",
        "map {", "  pattern = shared/shared-boxes/anyone/$from", f"  table = {tables['anyone_table']}",
        "  value_field = dummy", "  fields {", "    from_user = $from", "  }", "}",
        *(["map {", "  pattern = shared/shared-boxes/group/$to/$from", f"  table = {tables['group_table']}",
           "  value_field = dummy", "  fields {", "    from_user = $from", "    to_group = $to", "  }", "}"]
          if tables.get("group_table") else []),
    ]) + "\n"


SYSTEM_CA_DIR = "/etc/ssl/certs"


def render_ldap_passdbs(passdbs: list[dict], ctx: RenderContext,
                        gssapi: bool = False) -> tuple[list[str], list[RenderedFile]]:
    """passdb blocks (auth_bind: the user's password is checked by a bind as the user,
    never read) and their LDAP settings files, one per LDAP domain."""
    lines, files = [], []
    conf_dir = ctx.config_dir("dovecot")
    # libldap's TLS options are process-wide and dovecot sets them from each passdb in
    # turn: every passdb must name the same CA file, or the last one wins for all. One
    # bundle of every directory's CA, plus the system's trusted CAs (directory).
    cas = list(dict.fromkeys(p["ca_pem"].strip() + "\n" for p in passdbs if p.get("ca_pem", "").strip()))
    ca_file = ""
    if cas:
        files.append(RenderedFile("ldap-ca.pem", "".join(cas)))
        ca_file = str(conf_dir / "ldap-ca.pem")
    for p in passdbs:
        name = p["name"]
        for key in ("bind_dn", "bind_password", "base", "filter"):
            if "\n" in p[key] or "\r" in p[key]:
                raise ValueError(f"ldap_passdbs {name}: {key} cannot contain a line break")
        settings = [
            ("uris", " ".join(p["uris"])),
            ("ldap_version", 3),
            ("dn", p["bind_dn"]),
            ("dnpass", p["bind_password"]),
            ("tls", "yes" if p.get("starttls") else "no"),
            ("base", p["base"]),
            ("scope", "subtree"),
            ("deref", "never"),
            ("auth_bind", "yes"),
            ("pass_filter", p["filter"]),
            # dovecot's default pass_attrs (uid=user) would rename the user to its directory
            # uid; the login stays the mail address the mailbox is keyed by
            ("pass_attrs", "=user=%Lu"),
        ]
        if any(q.get("tls", True) for q in passdbs):
            settings += [("tls_ca_cert_dir", SYSTEM_CA_DIR), ("tls_require_cert", "hard")]
            if ca_file:
                settings.append(("tls_ca_cert_file", ca_file))
        body = ["# Generated by RuPost: LDAP domain " + name + " (authentication by bind)."]
        body += [f"{k} = {_ldap_value(v)}" for k, v in settings]
        files.append(RenderedFile(f"dovecot-ldap-{name}.conf.ext", "\n".join(body) + "\n", mode=0o640,
                                  group="dovecot"))
        lines += ["passdb {", "  driver = ldap", f"  args = {conf_dir / f'dovecot-ldap-{name}.conf.ext'}",
                  "  username_filter = " + " ".join(f"*@{d}" for d in p["domains"])]
        lines += [f"  mechanisms = {PASSWORD_MECHANISMS}"] * bool(gssapi) + ["}"]
    return lines, files


POSTLOGIN_SCRIPT = """#!/bin/sh
# Generated by RuPost: IMAP post-login script. A mailbox opened by an impersonation
# account (a dovecot master user) is recorded in rupost_logs through the policy server
# before the session starts; when it cannot be recorded, the session does not start.
if [ -n "$MASTER_USER" ]; then
  if ! curl -fsS -m 10 -o /dev/null -H @@API_HEADER_FILE@ \\
       --data-urlencode "account=$MASTER_USER" --data-urlencode "target=$USER" \\
       --data-urlencode "ip=$IP" --data-urlencode "mechanism=$AUTH_MECH" --data-urlencode "protocol=imap" \\
       "@LOG_URL@"; then
    echo "* BYE The use of the impersonation account could not be recorded; try again later"
    exit 1
  fi
fi
exec "$@"
"""


def render_impersonation(imp: dict, ctx: RenderContext) -> tuple[list[str], list[RenderedFile]]:
    """Master passdb (the account's password; the query checks the target's domain) and
    the post-login script service wrapped around every IMAP session."""
    from .policy import api_header_file

    script = POSTLOGIN_SCRIPT.replace("@LOG_URL@", imp["log_url"]).replace(
        "@API_HEADER_FILE@", str(api_header_file(ctx.layout)))
    conf_dir = ctx.config_dir("dovecot")
    lines = [f"auth_master_user_separator = {imp['separator']}",
             # the target is then looked up in the userdb only (it must exist and be enabled
             # there): a passdb lookup would miss directory users, whose passdb is an LDAP bind
             "passdb {", "  driver = sql", f"  args = {conf_dir / 'dovecot-sql-master.conf.ext'}", "  master = yes",
             "}",
             "service imap {", "  executable = imap rupost-postlogin", "}",
             "service rupost-postlogin {", f"  executable = script-login {conf_dir / 'postlogin.sh'}",
             "  user = $default_internal_user", "  unix_listener rupost-postlogin {", "  }", "}"]
    files = [RenderedFile("dovecot-sql-master.conf.ext",
                          render_sql_conf({"password_query": imp["password_query"]}, ctx), mode=0o640,
                          group="dovecot"),
             RenderedFile("postlogin.sh", script, mode=0o755)]
    return lines, files


# the passdbs that check passwords; with GSSAPI on they must not answer for a principal (a
# mailbox whose address happens to be LOGIN@REALM is not that principal's); "none": lookups
# that authenticate nothing (doveadm auth lookup, the impersonation target) still reach them
PASSWORD_MECHANISMS = "plain login none"


def render_kerberos(krb: dict, ctx: RenderContext) -> tuple[list[str], list[RenderedFile]]:
    """GSSAPI settings and the passdb that maps a principal to its mailbox (the query gets
    LOGIN@REALM, or the mail address a client sent as its authorization name)."""
    for key in ("keytab", "hostname", "realm", "password_query"):
        if not krb.get(key):
            raise ValueError(f"kerberos: {key} is required when enabled")
    conf_dir = ctx.config_dir("dovecot")
    realm = krb["realm"].lower()
    users = " ".join(f"*@{d}" for d in [realm, *krb.get("domains", [])])
    lines = [f"auth_krb5_keytab = {format_scalar(krb['keytab'])}",
             f"auth_gssapi_hostname = {format_scalar(krb['hostname'])}",
             "passdb {", "  driver = sql", f"  args = {conf_dir / 'dovecot-sql-kerberos.conf.ext'}",
             "  mechanisms = gssapi", f"  username_filter = {users}",
             # no row (no such account, disabled, no mailbox): the login fails here, it is
             # not left to the next passdb or to GSSAPI's own default of success
             "  result_failure = return-fail", "}"]
    files = [RenderedFile("dovecot-sql-kerberos.conf.ext",
                          render_sql_conf({"password_query": krb["password_query"]}, ctx), mode=0o640,
                          group="dovecot")]
    return lines, files


def _with_mechanisms(settings: dict) -> dict:
    """settings with the password passdbs limited to PASSWORD_MECHANISMS and GSSAPI offered."""
    out = dict(settings)
    passdbs = out.get("passdb")
    items = passdbs if isinstance(passdbs, list) else [passdbs] if isinstance(passdbs, dict) else []
    out["passdb"] = [p if p.get("master") else {**p, "mechanisms": PASSWORD_MECHANISMS} for p in items]
    mechs = out.get("auth_mechanisms") or ["plain"]
    mechs = mechs.split() if isinstance(mechs, str) else list(mechs)
    out["auth_mechanisms"] = mechs + ["gssapi"] * ("gssapi" not in mechs)
    return out


def _ldap_value(value: object) -> str:
    # the LDAP settings file is read line by line: the value runs to the end of the line;
    # quotes keep leading/trailing blanks and a '#'
    text = str(value)
    if text != text.strip() or "#" in text or text.startswith(('"', "'", "<")):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return text


class DovecotAdapter(Adapter):
    name = "dovecot"
    reads_tls = True
    in_mail_unit = True
    log_reopen = LogReopen.SIGUSR1
    probes = (Probe(probe_imaps, "imaps"),)
    schema = SCHEMA

    def render(self, model: dict, ctx: RenderContext) -> list[RenderedFile]:
        conf = ["# Generated by RuPost from the active configuration template. Do not edit."]
        krb = model.get("kerberos") or {}
        gssapi = bool(krb.get("enabled"))
        settings = _with_mechanisms(model["settings"]) if gssapi else model["settings"]
        conf += render_settings(settings) + extra_block(model.get("extra"))
        if model["settings"].get("auth_policy_server_url"):
            from .policy import api_header_file

            # the policy server's secret header, from its file (root reads it; the value is in no rendered file)
            conf.append(f"auth_policy_server_api_header = <{api_header_file(ctx.layout)}")
        ldap_lines, ldap_files = render_ldap_passdbs(model.get("ldap_passdbs") or [], ctx, gssapi)
        conf += ldap_lines
        if gssapi:
            krb_lines, krb_files = render_kerberos(krb, ctx)
            conf += krb_lines
            ldap_files += krb_files
        impersonation = model.get("impersonation")
        if impersonation and impersonation.get("enabled", True):
            imp_lines, imp_files = render_impersonation(impersonation, ctx)
            conf += imp_lines
            ldap_files += imp_files
        push_files = []
        if model.get("push_notification"):
            from .dovecot_push import render_push_lua

            push_files.append(RenderedFile("push.lua", render_push_lua(ctx.layout.state / "push")))
        scripts = [RenderedFile(f"sieve/{name}.sieve", text.rstrip("\n") + "\n")
                   for name, text in (model.get("sieve_scripts") or {}).items()]
        if model.get("acl_shared_dict"):
            ldap_files.append(RenderedFile("dovecot-dict-sql.conf.ext",
                                           render_acl_dict_conf(model["acl_shared_dict"], ctx), mode=0o640,
                                           group="dovecot"))
        return scripts + ldap_files + push_files + [RenderedFile("dovecot.conf", "\n".join(conf) + "\n"),
                RenderedFile("dovecot-sql.conf.ext", render_sql_conf(model["sql"], ctx), mode=0o640,
                             group="dovecot")]

    def finalize(self, config_dir: Path) -> None:
        # LMTP runs as the mail user and cannot save compiled global scripts next to
        # the root-owned generation files: compile them now
        # with the instance's own configuration: a binary compiled under another
        # extension set is "out of date" to LMTP, which then tries (and fails) to recompile
        for script in sorted((config_dir / "sieve").glob("*.sieve")):
            self.run_checker(["sievec", "-c", str(config_dir / "dovecot.conf"), str(script)])

    def _prepare_dirs(self, ctx: RenderContext) -> None:
        from .policy import ensure_api_header

        ensure_api_header(ctx.layout)  # read by the auth policy settings and postlogin.sh
        if ctx.data is not None:
            write_keytabs(ctx.layout.state, ctx.data.kerberos_keytabs())
        for d in (ctx.layout.run_dir(self.name), ctx.layout.state / "dovecot", ctx.layout.logs):
            d.mkdir(parents=True, exist_ok=True)
        storage = ctx.layout.mail_storage
        storage.mkdir(parents=True, exist_ok=True)
        try:
            owner = pwd.getpwnam(MAIL_USER)
            os.chown(storage, owner.pw_uid, owner.pw_gid)
        except KeyError:
            owner = None
        from .dovecot_push import SPOOL_DIRS

        for sub in SPOOL_DIRS:  # LMTP (the mail user) writes push events here, the core reads them
            (ctx.layout.state / "push" / sub).mkdir(parents=True, exist_ok=True)
            if owner is not None:
                os.chown(ctx.layout.state / "push" / sub, owner.pw_uid, owner.pw_gid)
            os.chmod(ctx.layout.state / "push" / sub, 0o770)

    def validate(self, config_dir: Path, ctx: RenderContext) -> None:
        self._prepare_dirs(ctx)
        self.run_checker(["doveconf", "-c", str(config_dir / "dovecot.conf"), "-n"])
        for script in sorted((config_dir / "sieve").glob("*.sieve")):
            out_dir = Path(tempfile.mkdtemp(prefix="sievec-"))
            try:
                self.run_checker(["sievec", "-c", str(config_dir / "dovecot.conf"), str(script),
                                  str(out_dir / "check.svbin")])
            finally:
                shutil.rmtree(out_dir, ignore_errors=True)

    def process(self, ctx: RenderContext) -> ProcessSpec:
        conf = str(ctx.config_dir(self.name) / "dovecot.conf")
        return ProcessSpec(
            argv=["dovecot", "-F", "-c", conf],
            reload="hup",
            prepare=lambda: self._prepare_dirs(ctx),
            # the PROXY-protocol listeners would log every bare readiness connect
            ports=[("127.0.0.1", ctx.node.port("dovecot_imap_internal")),
                   ("127.0.0.1", ctx.node.port("dovecot_sieve_internal"))],
        )


def write_keytabs(state: Path, keytabs: list[tuple[str, bytes]], keep: int = 3) -> None:
    """The Kerberos keytabs from the database, each under its content's name (a generation
    names the one it uses, so a rollback finds its own): directory 0750 and files 0640,
    root:dovecot (dovecot's auth process runs as the dovecot user). Older ones beyond
    `keep` are removed."""
    directory = state / "dovecot" / "kerberos"
    directory.mkdir(parents=True, exist_ok=True)
    try:
        gid = grp.getgrnam("dovecot").gr_gid
    except KeyError:
        gid = -1
    os.chown(directory, 0, gid)
    os.chmod(directory, 0o750)
    for name, data in keytabs:
        path = directory / name
        if not path.exists() or path.read_bytes() != data:
            tmp = directory / f".{name}.tmp"
            tmp.write_bytes(data)
            os.chown(tmp, 0, gid)
            os.chmod(tmp, 0o640)
            os.replace(tmp, path)
        os.utime(path)
    current = {name for name, _ in keytabs}
    others = sorted((p for p in directory.glob("*.keytab") if p.name not in current),
                    key=lambda p: p.stat().st_mtime, reverse=True)
    for old in others[max(0, keep - len(current)):]:
        old.unlink(missing_ok=True)


def ensure_mail_user(uid: int = MAIL_UID, name: str = MAIL_USER) -> None:
    import subprocess

    try:
        grp.getgrnam(name)
    except KeyError:
        subprocess.run(["groupadd", "--system", "--gid", str(uid), name], check=True)
    try:
        pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "--system", "--uid", str(uid), "--gid", name, "--home-dir", "/nonexistent",
                        "--no-create-home", "--shell", "/usr/sbin/nologin", name], check=True)



# The dovecot services whose processes hold a database connection (auth: passdb and userdb;
# dict: the shared-mailbox ACL dict) or a connection to the auth process that they do not
# watch while idle (lmtp: its first lookup after the auth process ended fails the delivery)
DATABASE_SERVICES = ("auth", "dict", "lmtp")


def service_processes(master_pid: int, services: tuple[str, ...]) -> dict[int, str]:
    """The processes of the named services (their executables' names: auth, dict, lmtp) that
    a dovecot master started, by pid."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                comm, rest = fh.read().rsplit(")", 1)
        except OSError:
            continue
        name = comm.split("(", 1)[-1]
        if name in services and int(rest.split()[1]) == master_pid:
            found[int(entry)] = name
    return found


def end_database_processes(master_pid: int) -> set[str]:
    """End the processes of DATABASE_SERVICES; the master starts new ones at the next request,
    which connect at once. Used instead of a reload when their SQL pool is stuck waiting out
    its reconnect timer (rupost/services/lookup_probe.py): a master reload would end idle IMAP
    sessions too ("Server shutting down.": dovecot 2.3's imap processes disconnect their idle
    clients when the master they belong to reloads), while this keeps every IMAP, POP3 and
    login process. dovecot handles SIGTERM between requests: a delivery whose reply was
    written is done, one still receiving its DATA is cut off and deferred by postfix. The
    services whose processes were signalled."""
    import signal

    ended = set()
    for pid, name in service_processes(master_pid, DATABASE_SERVICES).items():
        try:
            os.kill(pid, signal.SIGTERM)
            ended.add(name)
        except ProcessLookupError:
            pass
    return ended


def flush_auth_cache(run_dir: Path, timeout: float = 5.0) -> int:
    """Empty dovecot's auth cache (passdb and userdb answers) with the CACHE-FLUSH request
    `doveadm auth cache flush` sends on the auth-master socket, without starting doveadm and
    the doveconf it runs to read the whole configuration: every account change (password,
    enabled, quota) flushes, and a bulk change or an HR feed makes many. The number of entries
    dropped; OSError when dovecot does not answer as it should."""
    import socket

    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(timeout)
        sock.connect(str(run_dir / "auth-master"))
        stream = sock.makefile("rwb")
        stream.write(b"VERSION\t1\t0\nCACHE-FLUSH\t1\n")
        stream.flush()
        for line in iter(stream.readline, b""):
            fields = line.decode(errors="replace").rstrip("\n").split("\t")
            if fields[0] == "OK" and fields[1:2] == ["1"]:
                return int(fields[2]) if len(fields) > 2 and fields[2].isdigit() else 0
            if fields[0] not in ("VERSION", "SPID"):
                raise OSError(f"dovecot's auth-master answered {line[:80]!r} to CACHE-FLUSH")
    raise OSError("dovecot's auth-master closed the connection before answering CACHE-FLUSH")
