"""The consumers' database roles (rupost/db/roles.py): their passwords, their creation and
grants, and the rotation of their passwords.

The passwords are the setting ``db.consumers`` of ``rupost`` (a table only the owner role
reads): ``{consumer: {"active": "a", "a": PASSWORD, "b": PASSWORD}}``. Every node renders the
active slot's password into its daemons' files (0640, root and the daemon's group), so the
nodes of a cluster share the roles.
"""
from __future__ import annotations

import subprocess
from collections.abc import Callable
from typing import TYPE_CHECKING

import psycopg
import sqlalchemy as sa
from psycopg import sql
from sqlalchemy.dialects.postgresql import insert

from ..config import DatabaseSettings
from ..db import roles
from ..db.engine import Databases
from ..db.models import Setting
from ..errors import DatabaseError, NotFoundError

if TYPE_CHECKING:
    from . import Services

SETTING = "db.consumers"

# runs SQL as a database superuser; None when there is none at hand (another server)
Superuser = Callable[[str], subprocess.CompletedProcess]


def stored(dbs: Databases) -> dict[str, dict]:
    with dbs.session("main") as s:
        row = s.get(Setting, SETTING)
        return dict(row.value) if row is not None and isinstance(row.value, dict) else {}


def _store(dbs: Databases, value: dict) -> None:
    with dbs.session("main") as s:
        s.execute(insert(Setting).values(key=SETTING, value=value)
                  .on_conflict_do_update(index_elements=["key"], set_={"value": value}))


def active_logins(dbs: Databases) -> dict[str, roles.ConsumerLogin]:
    """The login each consumer's daemon uses now; none for a consumer without roles yet."""
    settings = dbs.settings
    logins = {}
    for name, entry in stored(dbs).items():
        if name in roles.CONSUMERS and entry.get("ready"):
            slot = entry["active"]
            logins[name] = roles.ConsumerLogin(name, roles.slot_role(settings, name, slot), entry[slot])
    return logins


def _with_passwords(current: dict) -> dict:
    """Every consumer with a password for each slot (new ones generated)."""
    value = {name: dict(entry) for name, entry in current.items()}
    for name in roles.CONSUMERS:
        entry = value.setdefault(name, {"active": "a"})
        for slot in roles.SLOTS:
            entry.setdefault(slot, roles.new_password())
    return value


def can_login(settings: DatabaseSettings, user: str, password: str) -> bool:
    try:
        with psycopg.connect(host=settings.host, port=settings.port, user=user, password=password,
                             dbname=settings.data, connect_timeout=5, application_name="rupost-roles"):
            return True
    except psycopg.OperationalError:
        return False


def _existing_roles(dbs: Databases) -> set[str]:
    with dbs.engine("main").connect() as conn:
        return set(conn.execute(sa.text("SELECT rolname FROM pg_roles WHERE rolname LIKE :p"),
                                {"p": f"{dbs.settings.main[:40]}\\_%"}).scalars())


def creation_script(dbs: Databases, only_missing: bool = False) -> str:
    """The SQL a superuser runs: every consumer's roles with the stored passwords (created
    here when missing), the owner a member of each group (it backs up what SOGo creates)."""
    settings = dbs.settings
    value = _with_passwords(stored(dbs))
    _store(dbs, value)
    existing = _existing_roles(dbs)
    parts = []
    for name in roles.CONSUMERS:
        entry = value[name]
        if only_missing and all(
                can_login(settings, roles.slot_role(settings, name, s), entry[s]) for s in roles.SLOTS):
            continue
        parts.append(roles.create_sql(settings, name, entry, existing))
        parts.append(f'GRANT "{roles.group_role(settings, name)}" TO "{settings.user}";\n')
    return "".join(parts)


def apply_grants(dbs: Databases) -> list[str]:
    """As the owner: CONNECT per database, then each consumer's grants on the objects of each
    database (idempotent: run by every `rupost db upgrade`). Consumers whose group role does
    not exist are left out; the ones granted are returned."""
    existing = _existing_roles(dbs)
    names = [n for n in roles.CONSUMERS if roles.group_role(dbs.settings, n) in existing]
    with dbs.engine("main").begin() as conn:
        for statement in roles.database_grants_sql(dbs.settings, names):
            conn.execute(sa.text(statement))
    for kind in ("main", "data", "logs"):
        statements = roles.object_grants_sql(dbs.settings, kind, names)
        if statements:
            with dbs.engine(kind).begin() as conn:
                for statement in statements:
                    conn.execute(sa.text(statement))
    return names


def _mark_ready(dbs: Databases) -> list[str]:
    """Consumers whose active slot logs in are marked ready (their daemons get their login at
    the next render); the others are returned."""
    value = stored(dbs)
    missing = []
    for name in roles.CONSUMERS:
        entry = value.get(name) or {}
        slot = entry.get("active", "a")
        ready = bool(entry.get(slot)) and can_login(dbs.settings, roles.slot_role(dbs.settings, name, slot),
                                                   entry[slot])
        if name in value:
            entry["ready"] = ready  # not ready (a restored old password): its daemon uses the owner
        if not ready:
            missing.append(name)
    _store(dbs, value)
    return missing


def ensure(dbs: Databases, superuser: Superuser | None) -> list[str]:
    """Roles, passwords and grants as they should be; what was done, in report lines. Without
    a superuser, missing roles are named with the command that prints their SQL."""
    lines = []
    script = creation_script(dbs, only_missing=True)
    if script and superuser is not None:
        result = superuser(script)
        if result.returncode != 0:
            raise DatabaseError(f"creating the consumers' database roles: {result.stderr.strip()}")
        lines.append("database roles of the daemons created or their passwords set again")
    apply_grants(dbs)
    missing = _mark_ready(dbs)
    ready = [n for n in roles.CONSUMERS if n not in missing]
    if ready:
        lines.append(f"database grants applied: {', '.join(ready)} log in with their own roles")
    if missing:
        lines.append(f"WARNING: database roles missing or with other passwords for {', '.join(missing)}: a "
                     "superuser of the database server runs the SQL of `rupost db grants --print`, then "
                     "`rupost db upgrade` and `rupost deploy`; until then they log in as the owner role")
    return lines


def set_own_password(settings: DatabaseSettings, user: str, old: str, new: str) -> None:
    """A slot changes its own password (no CREATEROLE needed), as a SCRAM verifier."""
    try:
        with psycopg.connect(host=settings.host, port=settings.port, user=user, password=old,
                             dbname=settings.data, connect_timeout=5, autocommit=True,
                             application_name="rupost-rotate") as conn:
            conn.execute("SET ROLE NONE")  # sessions run as the group: change the slot's own
            conn.execute(sql.SQL("ALTER ROLE SESSION_USER PASSWORD {}").format(
                sql.Literal(roles.scram_verifier(new))))
    except psycopg.Error as exc:
        raise DatabaseError(f"cannot change the password of role {user}: {str(exc).strip().splitlines()[0]}; "
                            "`rupost db upgrade` run as root on a node with a local server (or the SQL of "
                            "`rupost db grants --print` run by a superuser) sets the stored ones again") from None


class DbRoleService:
    def __init__(self, app: Services) -> None:
        self.app = app

    def consumers(self, consumer: str | None) -> list[str]:
        if consumer is None:
            return list(roles.CONSUMERS)
        if consumer not in roles.CONSUMERS:
            raise NotFoundError(f"no database consumer {consumer!r}: one of {', '.join(roles.CONSUMERS)}")
        return [consumer]

    def status(self) -> list[dict]:
        value = stored(self.app.dbs)
        settings = self.app.dbs.settings
        rows = []
        for name, consumer in roles.CONSUMERS.items():
            entry = value.get(name) or {}
            rows.append({"consumer": name, "group_role": roles.group_role(settings, name),
                         "login": roles.slot_role(settings, name, entry.get("active", "a")),
                         "ready": bool(entry.get("ready")), "reads": consumer.description})
        return rows

    def rotate(self, consumer: str | None = None) -> list[dict]:
        """New passwords on the other slot of each consumer, made active (deployed by the
        caller); the previous slot still logs in until retire_previous()."""
        dbs = self.app.dbs
        names = self.consumers(consumer)
        value = stored(dbs)
        unready = [n for n in names if not (value.get(n) or {}).get("ready")]
        if unready:
            raise DatabaseError(f"no database roles yet for {', '.join(unready)}: run `rupost db upgrade` first")
        done = []
        for name in names:
            entry = value[name]
            previous = entry["active"]
            slot = "b" if previous == "a" else "a"
            password = roles.new_password()
            set_own_password(dbs.settings, roles.slot_role(dbs.settings, name, slot), entry[slot], password)
            entry[slot], entry["active"], entry["previous"] = password, slot, previous
            _store(dbs, value)  # at once: the role has the new password now
            done.append({"consumer": name, "login": roles.slot_role(dbs.settings, name, slot),
                         "previous": roles.slot_role(dbs.settings, name, previous)})
        self.app.audit.record("db.rotate_passwords", ",".join(names), logins=[d["login"] for d in done])
        return done

    def retire_previous(self, consumer: str | None = None) -> list[str]:
        """The previous slot's password replaced by one no daemon holds: after every node
        deployed the rotation, an old password opens nothing."""
        dbs = self.app.dbs
        value = stored(dbs)
        retired = []
        for name in self.consumers(consumer):
            entry = value.get(name) or {}
            previous = entry.pop("previous", None)
            if previous is None:
                continue
            password = roles.new_password()
            set_own_password(dbs.settings, roles.slot_role(dbs.settings, name, previous), entry[previous], password)
            entry[previous] = password
            _store(dbs, value)
            retired.append(roles.slot_role(dbs.settings, name, previous))
        if retired:
            self.app.audit.record("db.retire_passwords", ",".join(retired))
        return retired

    def rotate_and_deploy(self, consumer: str | None = None, retire: bool | None = None) -> dict:
        """Rotate, deploy this node (its daemons reload with the new login while connections
        opened with the previous one go on), then retire the previous slot: by default only
        when this is the cluster's one node (the others still hold the previous password
        until their own deploy; then `rupost db rotate-passwords --retire-previous`)."""
        rotated = self.rotate(consumer)
        outcome = self.app.deploys.deploy()  # DeployError when it did not apply: nothing retired
        others = [n["name"] for n in self.app.nodes.members() if n["name"] != self.app.config.node_name]
        if retire is None:
            retire = not others
        retired = self.retire_previous(consumer) if retire else []
        return {"rotated": rotated, "deploy": str(outcome.result), "generation": outcome.generation,
                "retired": retired, "other_nodes": others}

    def upgrade(self, superuser: Superuser | None) -> list[str]:
        """`rupost db upgrade`'s second half: the consumers' roles and grants."""
        return ensure(self.app.dbs, superuser)

    def grants_script(self) -> str:
        """Everything a superuser of another server runs (roles with the stored passwords),
        then the owner's grants are applied by `rupost db upgrade`."""
        return creation_script(self.app.dbs)
