"""The PostgreSQL roles of the daemons that read RuPost's databases (issue 26).

The core, the agent and the panel log in as the owner role of config.json; no daemon does.
Each consumer has

- a *group* role (``NOLOGIN``), ``<main database>_<consumer>``, which holds the consumer's
  grants and nothing else;
- two *login* roles (slots ``a`` and ``b``), ``<group>_a`` and ``<group>_b``, members of
  the group, whose sessions run as the group (``ALTER ROLE ... SET role``): a table SOGo
  creates belongs to the group, whichever slot created it.

The daemons' configurations hold the *active* slot's password. A rotation sets a new
password on the other slot, makes it active, re-renders and deploys: connections opened with
the old slot's password keep working while the daemons reload, so nothing is refused. The
previous slot is then retired (its password replaced by one no file holds).

Creating the roles needs a superuser (the owner role has no CREATEROLE: on PostgreSQL 15 it
would let it grant itself pg_execute_server_program). The wizard and ``rupost db upgrade``
do it through the local ``postgres`` account when the server is local; for another server
``rupost db grants --print`` prints the SQL for its administrator. Everything else (the
grants on the objects the owner owns, a slot changing its own password) the owner and the
slots do themselves.

Names are prefixed with the main database's name, not the owner's: two installations on one
server (tests, staging) never share a consumer role.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass, field, replace

from ..config import DatabaseSettings

SLOTS = ("a", "b")
# the SCRAM iteration count PostgreSQL itself uses (scram_iterations' default)
SCRAM_ITERATIONS = 4096


@dataclass(frozen=True)
class Consumer:
    """What one daemon may do, per database kind (grants are SQL fragments on the objects)."""
    name: str
    description: str
    # database kind -> views/tables (LIKE patterns) it may SELECT
    select: dict[str, tuple[str, ...]]
    # database kind -> tables (LIKE patterns) it may read and write
    write: dict[str, tuple[str, ...]]
    create_in: tuple[str, ...] = ()  # database kinds where it may create tables (schema public)
    # database kind -> tables (LIKE patterns) it may read and add to, never change (journals)
    append: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def kinds(self) -> set[str]:
        return set(self.select) | set(self.write) | set(self.append) | set(self.create_in)


LOOKUP_VIEWS = ("lookup\\_%",)
CONSUMERS: dict[str, Consumer] = {
    c.name: c for c in (
        Consumer("postfix", "postfix's lookup tables (proxymap)", {"data": LOOKUP_VIEWS}, {}),
        # the shared-mailbox views take dovecot's shared-dict writes and drop them (data migration
        # 0011_data_shared_mailboxes): the grant lets the statement reach the rule
        Consumer("dovecot", "dovecot's passdb, userdb and shared-mailbox dict", {"data": LOOKUP_VIEWS},
                 {"data": ("lookup\\_shared\\_boxes%",)}),
        # SOGo's user sources are two views; its own tables (profiles, sessions, folders,
        # alarms, store, ACLs, cache) it creates itself on first start, all named sogo_*
        Consumer("sogo", "SOGo's users, address list and its own tables",
                 {"data": ("sogo\\_users", "sogo\\_gal")}, {"data": ("sogo\\_%",)}, create_in=("data",)),
        # the block list and counters, list membership, send-on-behalf grants, the DKIM keys it
        # writes for OpenDKIM, the journals it adds to (a block, an impersonation use)
        Consumer("policy", "the policy server's block list, counters, list members, DKIM keys, antispam lists",
                 {"main": ("dkim\\_keys",), "data": ("distribution\\_lists", "distribution\\_list\\_members",
                                                           "lookup\\_sender\\_grants", "antispam\\_map")},
                 {"main": ("auth\\_failures", "auth\\_blocks", "sender\\_messages")},
                 append={"logs": ("impersonation\\_uses", "audit\\_log")}),
    )
}


@dataclass(frozen=True)
class ConsumerLogin:
    """The login a daemon's configuration holds."""
    consumer: str
    user: str
    password: str


def group_role(db: DatabaseSettings, consumer: str) -> str:
    return f"{db.main[:40]}_{consumer}"


def slot_role(db: DatabaseSettings, consumer: str, slot: str) -> str:
    return f"{group_role(db, consumer)}_{slot}"


def consumer_database(base: DatabaseSettings, login: ConsumerLogin | None) -> DatabaseSettings:
    """The settings a consumer connects with: the node's server (host, port: whatever
    config.json says, a local proxy included) and database names, the consumer's own user and
    password. The one place the two meet, so where and as whom stay separate concerns. None
    (no roles yet): the owner's, as before issue 26."""
    if login is None:
        return base
    return replace(base, user=login.user, password=login.password)


def new_password() -> str:
    # URL-safe: it rides in postfix's connection URI and SOGo's URLs unquoted as well
    return secrets.token_urlsafe(24)


def scram_verifier(password: str, salt: bytes | None = None, iterations: int = SCRAM_ITERATIONS) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL stores for `password` (RFC 5802/7677), computed
    here so that the password itself never reaches the server: not its statement log (a
    failing ALTER ROLE is logged with its text), not pg_stat_activity."""
    salt = salt if salt is not None else secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    b64 = base64.b64encode
    return (f"SCRAM-SHA-256${iterations}:{b64(salt).decode()}"
            f"${b64(stored_key).decode()}:{b64(server_key).decode()}")


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def create_sql(db: DatabaseSettings, consumer: str, passwords: dict[str, str], existing: set[str]) -> str:
    """What a superuser runs so that `consumer`'s roles exist with these slot passwords
    (a missing role is created, an existing slot gets the password again)."""
    group = group_role(db, consumer)
    lines = []
    if group not in existing:
        lines.append(f"CREATE ROLE {_ident(group)} NOLOGIN NOINHERIT;")
    for slot in SLOTS:
        role = slot_role(db, consumer, slot)
        verifier = _literal(scram_verifier(passwords[slot]))
        if role in existing:
            lines.append(f"ALTER ROLE {_ident(role)} LOGIN PASSWORD {verifier};")
        else:
            lines.append(f"CREATE ROLE {_ident(role)} LOGIN INHERIT NOSUPERUSER NOCREATEDB NOCREATEROLE "
                         f"PASSWORD {verifier} IN ROLE {_ident(group)};")
        lines.append(f"ALTER ROLE {_ident(role)} SET role = {_literal(group)};")
    return "\n".join(lines) + "\n"


def database_grants_sql(db: DatabaseSettings, consumers: list[str]) -> list[str]:
    """Run by the owner on the server (any database): who may connect to which database.
    PUBLIC loses CONNECT on all three, so a consumer reaches only its own."""
    names = db.names()
    statements = [f"REVOKE CONNECT, TEMPORARY ON DATABASE {_ident(name)} FROM PUBLIC" for name in names.values()]
    for consumer in (CONSUMERS[n] for n in consumers):
        group = _ident(group_role(db, consumer.name))
        for kind in sorted(consumer.kinds()):
            statements.append(f"GRANT CONNECT ON DATABASE {_ident(names[kind])} TO {group}")
    return statements


def object_grants_sql(db: DatabaseSettings, kind: str, consumers: list[str]) -> list[str]:
    """Run by the owner in database `kind`: each consumer's grants on the objects that exist
    now (a DO block expands the name patterns; a migration adding a lookup view is followed by
    these again: `rupost db upgrade`)."""
    statements = []
    for consumer in (CONSUMERS[n] for n in consumers):
        group = group_role(db, consumer.name)
        if kind not in consumer.kinds():
            continue
        selects, writes, appends = (consumer.select.get(kind, ()), consumer.write.get(kind, ()),
                                    consumer.append.get(kind, ()))
        statements.append(f"GRANT USAGE ON SCHEMA public TO {_ident(group)}")
        if kind in consumer.create_in:
            statements.append(f"GRANT CREATE ON SCHEMA public TO {_ident(group)}")
        for patterns, privileges in ((selects, "SELECT"), (writes, "SELECT, INSERT, UPDATE, DELETE"),
                                     (appends, "SELECT, INSERT")):
            for pattern in patterns:
                statements.append(_grant_matching(pattern, privileges, group))
        for pattern in (*writes, *appends):  # their id sequences (serial columns)
            statements.append(_grant_matching(pattern + "\\_%\\_seq", "USAGE, SELECT, UPDATE", group,
                                              sequences=True))
    return statements


def _grant_matching(pattern: str, privileges: str, group: str, sequences: bool = False) -> str:
    kinds = "('S')" if sequences else "('r', 'v', 'm', 'p')"
    what = "SEQUENCE" if sequences else "TABLE"
    return (f"DO $grant$ DECLARE r record; BEGIN FOR r IN SELECT c.relname FROM pg_class c "
            f"JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public' "
            f"AND c.relkind IN {kinds} AND c.relname LIKE {_literal(pattern)} "
            f"AND pg_get_userbyid(c.relowner) = current_user LOOP "
            f"EXECUTE format('GRANT {privileges} ON {what} public.%I TO %I', r.relname, {_literal(group)}); "
            f"END LOOP; END $grant$")
