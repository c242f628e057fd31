"""First install and re-configuration of a node (what rupost-wizard runs).

Idempotent: every step checks what exists before creating it. A wrong password or
an unreachable server stops before anything is created; when the database server
is local and the role or databases are missing, they are created, and removed
again if creating them fails part-way.
"""
from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy import select

from .. import config as node_config
from .. import netinfo, tls, validation
from ..db import endpoints, migrate
from ..db.engine import Databases, describe_db_error
from ..db.models import Certificate, DHParam, Setting
from ..errors import DatabaseError, ValidationError
from ..paths import Layout
from ..tls import ffdhe_default
from . import db_roles

if TYPE_CHECKING:
    from . import Services

BUILTIN_MAIL_CERT = "rupost-builtin"
BUILTIN_PANEL_CERT = "rupost-control-panel-builtin"
BUILTIN_DHPARAM = "rupost-builtin-dhparam.pem"
LOCAL_SOCKET_DIR = Path("/var/run/postgresql")
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


@dataclass(frozen=True)
class MailHostChoice:
    """What the wizard was told about the mail host name (rupost-wizard --mail-host,
    --allow-unqualified-host, --client-host); None: keep the stored one, else the node's FQDN."""
    name: str | None = None
    allow_unqualified: bool = False
    client_host: str | None = None

    def checked(self) -> MailHostChoice:
        """The same choice with its names checked (before anything is created)."""
        name = validation.mail_host(self.name, self.allow_unqualified) if self.name else None
        client = self.client_host.strip() if self.client_host else None
        if client and not validation.is_ip_address(client):
            client = validation.host_name(client, "client host")
        return MailHostChoice(name, self.allow_unqualified, client)


@dataclass
class SetupReport:
    steps: list[str] = field(default_factory=list)

    def add(self, text: str) -> None:
        self.steps.append(text)


def check_identifiers(db: node_config.DatabaseSettings) -> None:
    for label, value in (("user", db.user), ("database name", db.main), ("data database name", db.data),
                         ("logs database name", db.logs)):
        if not _IDENT.match(value or ""):
            raise ValidationError(f"invalid {label} {value!r}: use letters, digits and _ (max 63)")
    if len({db.main, db.data, db.logs}) != 3:
        raise ValidationError("the three database names must differ")
    if not (0 < int(db.port) < 65536):
        raise ValidationError(f"invalid port {db.port}")


def server_is_local(db: node_config.DatabaseSettings) -> bool:
    """A server on this machine (not a highly available cluster's member: its role and
    databases are created once on the primary, docs/database-ha.md)."""
    return not endpoints.is_ha(db) and db.host in ("127.0.0.1", "localhost", "::1") and \
        (LOCAL_SOCKET_DIR / f".s.PGSQL.{db.port}").exists()


def _probe(db: node_config.DatabaseSettings) -> str | None:
    """None when all three databases accept our credentials, else the server's reason."""
    dbs = Databases(db)
    try:
        for kind in ("main", "data", "logs"):
            dbs.check(kind)
        return None
    except DatabaseError as exc:
        return str(exc)
    finally:
        dbs.dispose()


def _psql_as_postgres(port: int, sql: str) -> subprocess.CompletedProcess:
    """Run SQL as the local postgres superuser. The SQL goes to psql on stdin, never on its
    command line: CREATE ROLE carries the role's password, and any local user reads the
    command lines of running processes in /proc."""
    return subprocess.run(["runuser", "-u", "postgres", "--", "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1",
                           "-h", str(LOCAL_SOCKET_DIR), "-p", str(port), "-d", "postgres", "-tA", "-f", "-"],
                          input=sql, capture_output=True, text=True, timeout=60, cwd="/")


def local_superuser(db: node_config.DatabaseSettings) -> db_roles.Superuser | None:
    """Runs SQL as the local postgres superuser when this is root on the database server's
    machine; None otherwise (a DBA runs `rupost db grants --print`)."""
    if os.geteuid() != 0 or not server_is_local(db):
        return None
    return lambda script: _psql_as_postgres(db.port, script)


def _quote_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def create_local_role_and_databases(db: node_config.DatabaseSettings, report: SetupReport) -> None:
    """As the local postgres superuser (peer auth), create what is missing; undo on failure."""
    created_dbs: list[str] = []
    created_role = False
    role_missing, dbs_missing = _local_missing(db)
    try:
        if role_missing:
            r = _psql_as_postgres(db.port, f'CREATE ROLE "{db.user}" WITH NOSUPERUSER CREATEDB NOCREATEROLE LOGIN '
                                           f"PASSWORD {_quote_literal(db.password)}")
            if r.returncode != 0:
                raise DatabaseError(f"creating role {db.user}: {r.stderr.strip()}")
            created_role = True
            report.add(f"created database role {db.user}")
        for name in dbs_missing:
            r = _psql_as_postgres(db.port, f"CREATE DATABASE \"{name}\" WITH ENCODING 'UTF8' OWNER \"{db.user}\" "
                                           "TEMPLATE template0")
            if r.returncode != 0:
                raise DatabaseError(f"creating database {name}: {r.stderr.strip()}")
            created_dbs.append(name)
            report.add(f"created database {name}")
    except DatabaseError:
        for name in created_dbs:
            _psql_as_postgres(db.port, f'DROP DATABASE IF EXISTS "{name}"')
        if created_role:
            _psql_as_postgres(db.port, f'DROP ROLE IF EXISTS "{db.user}"')
        raise


def _local_missing(db: node_config.DatabaseSettings) -> tuple[bool, list[str]]:
    """(role missing, databases missing), asked as the local postgres superuser."""
    r = _psql_as_postgres(db.port, f"SELECT 1 FROM pg_roles WHERE rolname = {_quote_literal(db.user)}")
    if r.returncode != 0:
        raise DatabaseError(f"cannot administer the local PostgreSQL on port {db.port}: {r.stderr.strip()}")
    role_missing = r.stdout.strip() != "1"
    missing = []
    for name in (db.main, db.data, db.logs):
        r = _psql_as_postgres(db.port, f"SELECT 1 FROM pg_database WHERE datname = {_quote_literal(name)}")
        if r.stdout.strip() != "1":
            missing.append(name)
    return role_missing, missing


def stored_mail_host(db: node_config.DatabaseSettings) -> str | None:
    """The cluster's mail host name in an existing configuration database, or None (no
    database, no schema yet, no name stored): the wizard's screen starts from it."""
    dbs = Databases(db)
    try:
        with dbs.session("main") as s:
            row = s.get(Setting, "mail_host")
            return str(row.value) if row is not None and row.value else None
    except (DatabaseError, sa.exc.SQLAlchemyError):
        return None
    finally:
        dbs.dispose()


def connect_or_create(db: node_config.DatabaseSettings, report: SetupReport) -> None:
    check_identifiers(db)
    reason = _probe(db)
    if reason is None:
        report.add(f"connected to {endpoints.core_description(db)} as {db.user}")
        return
    # PostgreSQL answers "password authentication failed" for a role that does not
    # exist too, so a local server is asked directly what is missing
    if server_is_local(db):
        role_missing, dbs_missing = _local_missing(db)
        if role_missing or dbs_missing:
            create_local_role_and_databases(db, report)
            reason = _probe(db)
            if reason is None:
                report.add(f"connected to {endpoints.core_description(db)} as {db.user}")
                return
    raise DatabaseError(reason)


def ensure_mail_host(app: Services, cfg: node_config.NodeConfig, choice: MailHostChoice,
                     report: SetupReport) -> None:
    """Store the mail host name: the one asked for, else the stored one (a re-run, a node joining
    the cluster: accepted as it is, the administrator accepted it once), else this node's FQDN.
    An unqualified name leaves clients with nothing to look up, so they are told this node's
    address instead (client_mail_host), unless they are told something already."""
    stored = app.settings.get("mail_host")
    keeping = choice.name is None and stored is not None
    state = app.settings.set_mail_host(choice.name or stored or cfg.fqdn, choice.allow_unqualified or keeping)
    report.add(f"mail host name {state['mail_host']}" + (f" (changed from {stored})" if stored and state["changed"]
                                                         else ""))
    if choice.client_host:
        app.templates.set_parameters({"client_mail_host": choice.client_host})
        report.add(f"mail clients are told {choice.client_host} (client_mail_host)")
    if state["qualified"]:
        return
    told = choice.client_host or state["client_mail_host"]
    if told:
        outcome = f"mail clients are told {told} (client_mail_host)"
    else:
        address = cfg.address if not netinfo.is_loopback(cfg.address) else netinfo.primary_address()
        if address:
            app.templates.set_parameters({"client_mail_host": address})
            outcome = f"mail clients are told this node's address {address} instead (client_mail_host)"
        else:
            outcome = "and this node has no address clients could use: give one with --client-host"
    report.add(f"WARNING: mail host name {state['mail_host']} {state['problem']}: {outcome}")


def ensure_builtin_tls(app: Services, report: SetupReport) -> None:
    """The builtin self-signed certificates (issued for CertificateService.builtin_names) and
    DH parameters; a builtin certificate that does not cover the mail host name (issued before
    the name changed) is issued again."""
    mail_host = app.settings.mail_host()
    names = app.certificates.builtin_names()
    with app.dbs.session("main") as s:
        for name, cert_type in ((BUILTIN_MAIL_CERT, "mail"), (BUILTIN_PANEL_CERT, "control_panel")):
            row = s.scalar(select(Certificate).where(Certificate.name == name))
            if row is not None and any(tls.name_matches(n, mail_host)
                                       for n in tls.describe_stored(row.cert_pem)["names"]):
                continue
            cert_pem, key_pem, not_after = tls.self_signed(mail_host, names)
            if row is None:
                has_active = s.scalar(select(Certificate.id).where(Certificate.cert_type == cert_type,
                                                                    Certificate.active))
                s.add(Certificate(name=name, cert_type=cert_type, cert_pem=cert_pem, key_pem=key_pem, builtin=True,
                                  active=has_active is None, not_after=not_after, added_by="rupost-wizard"))
                report.add(f"generated self-signed certificate {name}")
            else:
                row.cert_pem, row.key_pem, row.not_after, row.added_by = cert_pem, key_pem, not_after, "rupost-wizard"
                report.add(f"issued self-signed certificate {name} again, for {mail_host}")
        if s.scalar(select(DHParam.id).where(DHParam.name == BUILTIN_DHPARAM)) is None:
            pem, bits = ffdhe_default()
            has_active = s.scalar(select(DHParam.id).where(DHParam.active))
            s.add(DHParam(name=BUILTIN_DHPARAM, pem=pem, bits=bits, active=has_active is None))
            report.add(f"loaded DH parameters {BUILTIN_DHPARAM} (RFC 7919 ffdhe{bits})")


def install(layout: Layout, cfg: node_config.NodeConfig, mail_host: MailHostChoice | None = None) -> SetupReport:
    from adapters.dovecot import ensure_mail_user

    from . import Actor, Runtime

    choice = (mail_host or MailHostChoice()).checked()
    report = SetupReport()
    connect_or_create(cfg.database, report)
    runtime = Runtime(layout, cfg)
    dbs = runtime.dbs
    try:
        try:
            migrate.upgrade(dbs)
        except sa.exc.SQLAlchemyError as exc:
            raise DatabaseError(describe_db_error(exc, cfg.database, "migrations")) from None
        report.add("database schema is up to date (rupost, rupost_data, rupost_logs)")
        for line in db_roles.ensure(dbs, local_superuser(cfg.database)):
            report.add(line)
        layout.ensure_base()
        app = runtime.services(Actor("rupost-wizard"))
        loaded = app.templates.load_builtin()
        report.add(f"builtin templates loaded: {', '.join(loaded)}")
        # registered first: template parameters are validated by rendering the whole template,
        # whose cluster sections list the registered nodes (none on a new database)
        node = app.nodes.register()
        report.add(f"node {node['name']} registered")
        ensure_mail_host(app, cfg, choice, report)
        ensure_builtin_tls(app, report)
        ensure_mail_user()
        path = node_config.save(layout, cfg, owner="rupost")
        report.add(f"node configuration written to {path} (mode 0600)")
        app.audit.record("wizard.install", cfg.node_name, source="wizard")
    finally:
        dbs.dispose()
    if os.environ.get("RUPOST_SKIP_TIMERS") is None and Path("/run/systemd/system").is_dir() \
            and layout.root == Path("/"):
        r = subprocess.run(["systemctl", "enable", "--now", "rupost-mailqueue-evacuator.timer",
                            "rupost-distribution-lists-updater.timer"], capture_output=True, text=True)
        report.add("timers registered" if r.returncode == 0 else f"timers not registered: {r.stderr.strip()}")
        # The package enables both at install time, when their ConditionPathExists (the node
        # configuration written above) still failed: without this they would wait for a reboot.
        # The agent reports "nothing deployed yet" until the first rupost deploy.
        r = subprocess.run(["systemctl", "enable", "--now", "rupost.service", "rupost-scheduler.service"],
                           capture_output=True, text=True)
        report.add("node agent and scheduler started (rupost.service, rupost-scheduler.service)"
                   if r.returncode == 0 else f"node agent not started: {r.stderr.strip()}")
    else:
        report.add("timers: systemd is not PID 1 here, units not registered")
    return report
