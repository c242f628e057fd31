"""The screens of the interactive rupost-wizard (guide §2.11), without pythondialog.

`Wizard` drives a `UI` (wizard.dialogs.DialogUI shows it with the `dialog`
program) through: start/confirmation, PostgreSQL connection (checked on Next;
a local server may get its role and databases created), node identity,
confirmation, auto-configuration (rupost.services.setup.install, the same
function as --silent) and the completion message. Every screen checks its
input and shows the problem on the same screen, keeping what was typed.
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, replace
from typing import Protocol

from rupost import config as node_config
from rupost import validation
from rupost.errors import RuPostError
from rupost.paths import Layout
from rupost.services.setup import MailHostChoice

from .i18n import Catalogue

EXIT_OK, EXIT_ABORTED = 0, 1
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                       r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$")
_NODE_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9_-]{0,62})$")


class UI(Protocol):
    def yesno(self, title: str, text: str) -> bool: ...

    def form(self, title: str, text: str, fields: list[Field]) -> list[str] | None:
        """The values typed (in the order of `fields`), or None for Cancel/Esc."""

    def info(self, title: str, text: str) -> None:
        """A message shown while work goes on (no button)."""

    def message(self, title: str, text: str) -> None:
        """A message with an OK button."""


@dataclass
class Field:
    label: str
    value: str
    hidden: bool = False


def _is_address(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
        return True
    except ValueError:
        return bool(_HOSTNAME.match(value))


def format_members(members: list[node_config.DatabaseMember]) -> str:
    """The members as the form shows them: HOST:PORT:API_PORT, comma-separated."""
    return ", ".join(f"{f'[{m.host}]' if ':' in m.host else m.host}:{m.port}:{m.api_port}" for m in members)


def parse_members(text: str) -> list[node_config.DatabaseMember]:
    """The form's member list (what --db-member takes, comma- or space-separated); a
    ConfigError names a malformed member, a ValueError a repeated one."""
    members = [node_config.parse_member(v) for v in text.replace(",", " ").split()]
    if len({(m.host, m.port) for m in members}) != len(members):
        raise ValueError("a member is given twice")
    return members


def check_members(t: Catalogue, text: str) -> str | None:
    try:
        members = parse_members(text)
    except node_config.ConfigError as exc:
        return t("err.member", reason=str(exc))
    except ValueError:
        return t("err.member.twice")
    if any(not _is_address(m.host) for m in members):
        return t("err.host", value=next(m.host for m in members if not _is_address(m.host)))
    return None


def check_database(t: Catalogue, values: dict[str, str]) -> str | None:
    """The first problem in the connection form (in the order of its fields), as the text to show, or None.
    With members (a highly available database) the host and port are not used."""
    members = values.get("members", "").strip()
    for key in ("host", "port", "main", "data", "logs", "user", "password"):
        if members and key in ("host", "port"):
            continue
        value = values[key] if key == "password" else values[key].strip()
        if not value:
            return t("err.empty", field=t(f"db.{key}"))
        if key == "host" and not (value.startswith("/") or _is_address(value)):
            return t("err.host", value=value)
        if key == "port" and (not value.isdigit() or not 0 < int(value) < 65536):
            return t("err.port", value=value)
        if key in ("main", "data", "logs", "user") and not _IDENT.match(value):
            return t("err.ident", field=t(f"db.{key}"), value=value)
        if key == "logs" and len({values["main"].strip(), values["data"].strip(), value}) != 3:
            return t("err.distinct")
    return check_members(t, members) if members else None


NODE_LABELS = {"node_name": "node.name", "fqdn": "node.fqdn", "mail_host": "node.mail_host",
               "address": "node.address"}


def check_node(t: Catalogue, values: dict[str, str], allow_unqualified: bool = False) -> str | None:
    for key, label in NODE_LABELS.items():
        if not values[key].strip():
            return t("err.empty", field=t(label))
    if not _NODE_NAME.match(values["node_name"].strip()):
        return t("err.node", field=t("node.name"), value=values["node_name"].strip())
    if not _HOSTNAME.match(values["fqdn"].strip()):
        return t("err.node", field=t("node.fqdn"), value=values["fqdn"].strip())
    error = check_mail_host(t, values["mail_host"].strip(), allow_unqualified)
    if error:
        return error
    if not _is_address(values["address"].strip()):
        return t("err.address", value=values["address"].strip())
    return None


def check_mail_host(t: Catalogue, value: str, allow_unqualified: bool) -> str | None:
    """The same rules as rupost.validation.mail_host, told in the screen's language."""
    if validation.is_ip_address(value):
        return t("err.mail_host.ip", value=value)
    try:
        name = validation.host_name(value)
    except RuPostError:
        return t("err.mail_host.invalid", value=value)
    if validation.mail_host_problem(name) and not allow_unqualified:
        return t("err.mail_host.unqualified", value=value, flag=validation.UNQUALIFIED_FLAG)
    return None


class Wizard:
    DB_KEYS = ("host", "port", "main", "data", "logs", "user", "password", "members")
    NODE_KEYS = tuple(NODE_LABELS)

    def __init__(self, ui: UI, t: Catalogue, layout: Layout, initial: node_config.NodeConfig, setup=None,
                 mail_host: MailHostChoice | None = None):
        if setup is None:
            from rupost.services import setup
        self.ui, self.t, self.layout, self.setup = ui, t, layout, setup
        self.cfg = initial
        self.mail_host = mail_host or MailHostChoice()
        self.pre_steps: list[str] = []   # role/databases created on the connection screen
        self.steps: list[str] = []

    # -- screens ---------------------------------------------------------------------------------------------
    def run(self) -> int:
        t = self.t
        if not self.ui.yesno(t("start.title"), t("start.text")):
            return EXIT_ABORTED
        while True:
            if not self.database_screen() or not self.node_screen():
                return EXIT_ABORTED
            if not self.ui.yesno(t("confirm.title"), self.confirmation_text()):
                continue    # No on the confirmation: back to the connection screen, values kept
            if self.configure():
                return EXIT_OK

    def database_screen(self) -> bool:
        t, db = self.t, self.cfg.database
        values = {"host": db.host, "port": str(db.port), "main": db.main, "data": db.data, "logs": db.logs,
                  "user": db.user, "password": db.password, "members": format_members(db.members)}
        error = None
        while True:
            text = t("db.text") if error is None else error
            typed = self.ui.form(t("db.title"), text, [Field(t(f"db.{k}"), values[k], hidden=k == "password")
                                                       for k in self.DB_KEYS])
            if typed is None:
                return False
            values = dict(zip(self.DB_KEYS, typed, strict=False))
            error = check_database(t, values)
            if error:
                continue
            members = parse_members(values["members"])
            # with members, what messages name as the database until the primary is known
            host, port = (members[0].host, members[0].port) if members else \
                (values["host"].strip(), int(values["port"]))
            db = node_config.DatabaseSettings(host=host, port=port,
                                              main=values["main"].strip(), data=values["data"].strip(),
                                              logs=values["logs"].strip(), user=values["user"].strip(),
                                              password=values["password"], members=members)
            self.cfg = replace(self.cfg, database=db)
            error = self.connect(db)
            if error is None:
                return True

    def connect(self, db: node_config.DatabaseSettings) -> str | None:
        """None when connected (after creating the role/databases on a local server if
        the administrator agrees), else the error to show on the connection screen."""
        t, setup = self.t, self.setup
        self.ui.info(t("db.title"), t("db.connecting", host=db.host, port=db.port))
        reason = setup._probe(db)
        if reason is None:
            return None
        if setup.server_is_local(db):
            try:
                role_missing, dbs_missing = setup._local_missing(db)
            except RuPostError as exc:
                return t("db.failed", reason=str(exc))
            if role_missing or dbs_missing:
                missing = ([t("db.create.role", name=db.user)] if role_missing else []) + \
                          [t("db.create.db", name=n) for n in dbs_missing]
                listed = "\n".join(f"  - {m}" for m in missing)
                if not self.ui.yesno(t("db.create.title"), t("db.create.text", missing=listed)):
                    return t("db.create.declined")
                report = setup.SetupReport()
                try:
                    setup.create_local_role_and_databases(db, report)
                except RuPostError as exc:
                    return t("db.create.failed", reason=str(exc))
                self.pre_steps.extend(report.steps)
                reason = setup._probe(db)
                if reason is None:
                    return None
        return t("db.failed", reason=reason)

    def node_screen(self) -> bool:
        t = self.t
        # the mail host name is the cluster's: a node joining it starts from the stored one
        mail_host = self.mail_host.name or self.setup.stored_mail_host(self.cfg.database) or self.cfg.fqdn
        values = {"node_name": self.cfg.node_name, "fqdn": self.cfg.fqdn, "mail_host": mail_host,
                  "address": self.cfg.address}
        error = None
        while True:
            typed = self.ui.form(t("node.title"), t("node.text") if error is None else error,
                                 [Field(t(NODE_LABELS[k]), values[k]) for k in self.NODE_KEYS])
            if typed is None:
                return False
            values = dict(zip(self.NODE_KEYS, typed, strict=False))
            error = check_node(t, values, self.mail_host.allow_unqualified)
            if error is None:
                self.cfg = replace(self.cfg, node_name=values["node_name"].strip(), fqdn=values["fqdn"].strip(),
                                   address=values["address"].strip())
                self.mail_host = replace(self.mail_host, name=values["mail_host"].strip())
                return True

    def confirmation_text(self) -> str:
        db = self.cfg.database
        where = self.t("confirm.members", members=format_members(db.members)) if db.members else \
            f"{db.host}:{db.port}"
        return self.t("confirm.text", user=db.user, where=where, main=db.main, data=db.data,
                      logs=db.logs, node_name=self.cfg.node_name, fqdn=self.cfg.fqdn, address=self.cfg.address,
                      mail_host=self.mail_host.name or self.cfg.fqdn, config=self.layout.config_file)

    def configure(self) -> bool:
        t = self.t
        self.ui.info(t("run.title"), t("run.working"))
        try:
            report = self.setup.install(self.layout, self.cfg, self.mail_host)
        except RuPostError as exc:
            self.ui.message(t("run.title"), t("run.failed", reason=str(exc)))
            return False
        self.steps = self.pre_steps + report.steps
        self.ui.message(t("done.title"), t("done.text", steps="\n".join(f"* {s}" for s in self.steps)))
        return True
