"""The daemons' own database roles (issue 26): each logs in as itself, reads what it needs and
is refused the configuration database's secrets; rotating their passwords during a mail
flow loses nothing. Real PostgreSQL, real psycopg and psql connections as each role."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import threading
import uuid

import psycopg
import pytest

from mailclients import message, smtp, wait_for_subject
from rupost.db import roles
from rupost.services import db_roles

CONSUMERS = ("postfix", "dovecot", "sogo", "policy")
DAEMONS = ("postfix", "dovecot", "sogo")  # the ones that never reach the configuration database
SECRETS = ("panel_admins", "settings", "certificates", "dkim_keys", "push_endpoints", "ldap_domains")


def _login(node, consumer: str) -> roles.ConsumerLogin:
    return db_roles.active_logins(node.app.dbs)[consumer]


def _connect(node, user: str, password: str, dbname: str) -> psycopg.Connection:
    db = node.config.database
    return psycopg.connect(host=db.host, port=db.port, user=user, password=password, dbname=dbname,
                           connect_timeout=5, autocommit=True)


def test_every_daemon_has_its_own_ready_role(node):
    status = {row["consumer"]: row for row in node.app.db_roles.status()}
    assert set(status) == set(CONSUMERS)
    for consumer in CONSUMERS:
        assert status[consumer]["ready"], status[consumer]
        login = _login(node, consumer)
        assert login.user != node.config.database.user
        assert login.password != node.config.database.password
        with _connect(node, login.user, login.password, node.config.database.data) as conn:
            # sessions run as the group role, which holds the grants
            assert conn.execute("SELECT current_user").fetchone()[0] == roles.group_role(node.config.database,
                                                                                         consumer)


@pytest.mark.parametrize("consumer", DAEMONS)
def test_daemon_role_is_refused_the_configuration_database(node, consumer):
    login = _login(node, consumer)
    db = node.config.database
    for dbname in (db.main, db.logs):
        with pytest.raises(psycopg.OperationalError, match="permission denied for database"):
            _connect(node, login.user, login.password, dbname)
    # the same through psql, as an administrator would try it (password in the environment)
    env = {**os.environ, "PGPASSWORD": login.password}
    for table in SECRETS:
        r = subprocess.run(["psql", "-X", "-h", db.host, "-p", str(db.port), "-U", login.user, "-d", db.main,
                            "-tAc", f"SELECT count(*) FROM {table}"], capture_output=True, text=True, env=env,
                           timeout=30)
        assert r.returncode != 0 and "permission denied for database" in r.stderr, (table, r.stdout, r.stderr)


@pytest.mark.parametrize("consumer", ("postfix", "dovecot"))
def test_lookup_roles_read_the_lookups_and_not_the_tables(node, mailbox, consumer):
    address, _ = mailbox("lookup")
    login = _login(node, consumer)
    with _connect(node, login.user, login.password, node.config.database.data) as conn:
        assert conn.execute("SELECT lookup_mailbox(%s)", (address,)).fetchone() == (1,)
        assert conn.execute("SELECT lookup_domain(%s)", (address.split("@")[1],)).fetchone() == (1,)
        assert conn.execute("SELECT address FROM lookup_mailboxes WHERE address = %s",
                            (address,)).fetchone() == (address,)
        for table in ("mailboxes", "domains", "aliases", "impersonation_accounts"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(f"SELECT * FROM {table} LIMIT 1")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("CREATE TABLE forged (x int)")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            # an updatable view (one table): refused for want of the privilege, not of a trigger
            conn.execute("DELETE FROM lookup_domains WHERE name = %s", (address.split("@")[1],))


def test_sogo_role_reads_its_sources_and_owns_its_tables(node, mailbox):
    address, _ = mailbox("sogouser")
    login = _login(node, "sogo")
    with _connect(node, login.user, login.password, node.config.database.data) as conn:
        assert conn.execute("SELECT c_uid FROM sogo_users WHERE c_uid = %s", (address,)).fetchone() == (address,)
        conn.execute("SELECT count(*) FROM sogo_gal")
        # SOGo created its own tables at its first start, as its role
        owners = dict(conn.execute("SELECT tablename, tableowner FROM pg_tables WHERE tablename LIKE 'sogo\\_%'"))
        assert owners.get("sogo_user_profile") == roles.group_role(node.config.database, "sogo"), owners
        conn.execute("SELECT count(*) FROM sogo_user_profile")
        for table in ("mailboxes", "domains", "lookup_aliases", "lookup_master_users"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(f"SELECT * FROM {table} LIMIT 1")


def test_policy_role_keeps_its_tables_and_reaches_no_secret(node, mailbox):
    """The policy server's role: the block list, counters, list members and DKIM keys (it
    writes OpenDKIM's files), the journals to add to; not the administrators, settings,
    certificates, nor the mailboxes; a journal row cannot be changed or removed."""
    login = _login(node, "policy")
    db = node.config.database
    with _connect(node, login.user, login.password, db.main) as conn:
        for table in ("auth_failures", "auth_blocks", "sender_messages", "dkim_keys"):
            conn.execute(f"SELECT count(*) FROM {table}")
        for table in SECRETS:
            if table == "dkim_keys":
                continue
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(f"SELECT * FROM {table} LIMIT 1")
    with _connect(node, login.user, login.password, db.data) as conn:
        conn.execute("SELECT count(*) FROM distribution_list_members")
        for table in ("mailboxes", "lookup_mailboxes", "impersonation_accounts", "sogo_users"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(f"SELECT * FROM {table} LIMIT 1")
    with _connect(node, login.user, login.password, db.logs) as conn:
        conn.execute("SELECT count(*) FROM impersonation_uses")
        for statement in ("DELETE FROM audit_log", "UPDATE audit_log SET actor = 'x'", "DELETE FROM impersonation_uses"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)
    # what the server does with it besides requests: rewrite OpenDKIM's files from the keys
    # (its DKIM sync, every 15 s), as the policy role
    from rupost.policy.server import _open_as_policy_role

    policy_app = _open_as_policy_role(str(node.root))
    try:
        assert policy_app.dbs.settings.user == login.user
        policy_app.dkim.apply()
    finally:
        policy_app.close()
    # the running server logs in as it
    with node.app.dbs.engine("main").connect() as conn:
        from sqlalchemy import text

        users = set(conn.execute(text("SELECT usename FROM pg_stat_activity WHERE datname = :d "
                                      "AND application_name = 'rupost-listen'"), {"d": db.main}).scalars())
    assert login.user in users, users


def _generation_files(node):
    for path in node.layout.current.resolve().rglob("*"):
        if path.is_file() and not path.is_symlink():
            yield path


def test_rendered_files_hold_each_daemon_its_own_password_only(node):
    owner = node.config.database.password
    logins = {c: _login(node, c) for c in CONSUMERS}
    holders: dict[str, set[str]] = {c: set() for c in CONSUMERS}
    for path in _generation_files(node):
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        assert owner not in text, f"{path} holds the owner role's password"
        for consumer, login in logins.items():
            if login.password in text:
                holders[consumer].add(path.parent.name if path.parent.name != "sieve" else "dovecot")
                mode = path.stat()
                assert stat.S_IMODE(mode.st_mode) == 0o640 and mode.st_uid == 0, (path, oct(mode.st_mode))
    # the policy server reads its password from the database (its file names the login only)
    assert holders == {"postfix": {"postfix"}, "dovecot": {"dovecot"}, "sogo": {"sogo"}, "policy": set()}
    policy = json.loads((node.layout.current / "policy" / "policy.json").read_text())
    assert policy["database_login"] == logins["policy"].user


def test_grants_script_names_every_role_without_clear_passwords(node):
    script = node.app.db_roles.grants_script()
    for consumer in CONSUMERS:
        login = _login(node, consumer)
        assert f'"{login.user}"' in script and login.password not in script
    assert "SCRAM-SHA-256$4096:" in script


def test_rotation_during_mail_flow_loses_nothing(node, mailbox):
    address, password = mailbox("rotation")
    before = {c: _login(node, c) for c in CONSUMERS}
    subjects, refused, errors = [], [], []
    stop = threading.Event()

    def send():
        for i in range(200):  # bounded: stops when the rotation is done
            if stop.is_set() and i >= 5:
                return
            subject = f"rotation {i} {uuid.uuid4().hex}"
            try:
                with smtp(node.ports["smtp"], source="127.0.0.41") as client:
                    refused.append(client.send_message(message("someone@example.org", address, subject)))
                subjects.append(subject)
            except Exception as exc:  # noqa: BLE001 - counted: a refused connection fails the test
                errors.append(repr(exc))

    sender = threading.Thread(target=send)
    sender.start()
    try:
        result = node.app.db_roles.rotate_and_deploy()
    finally:
        stop.set()
        sender.join(timeout=300)
    assert not errors and all(r == {} for r in refused), (errors, refused)
    assert result["retired"] and not result["other_nodes"]
    for subject in subjects:
        wait_for_subject(node.ports["imaps"], address, password, subject, timeout=60)
    after = {c: _login(node, c) for c in CONSUMERS}
    for consumer in CONSUMERS:
        assert after[consumer].user != before[consumer].user
        assert db_roles.can_login(node.config.database, after[consumer].user, after[consumer].password)
        # the previous login no longer opens anything
        assert not db_roles.can_login(node.config.database, before[consumer].user, before[consumer].password)
    actions = [r["action"] for r in node.app.audit.page(action="db.rotate_passwords")["rows"]]
    assert actions and len(subjects) >= 5


def test_external_server_roles_from_the_printed_sql_then_upgrade(pg):
    """An installation whose database server is not local (no superuser at hand), as an
    existing one meets issue 26: `rupost db upgrade` names the missing roles and the daemons
    keep the owner's login; the DBA runs the SQL of `rupost db grants --print`; the next
    upgrade applies the grants and the daemons get their own logins."""
    from rupost.config import DatabaseSettings
    from rupost.db import migrate
    from rupost.db.engine import Databases

    suffix = uuid.uuid4().hex[:8]
    owner = f"rp_ext_{suffix}"
    settings = DatabaseSettings(host="127.0.0.1", port=pg.port, user=owner, password=f"pw-{suffix}",
                                main=f"ext_{suffix}", data=f"ext_{suffix}_data", logs=f"ext_{suffix}_logs")
    pg.psql(f"CREATE ROLE {owner} LOGIN PASSWORD '{settings.password}'")
    for name in settings.names().values():
        pg.psql(f"CREATE DATABASE {name} OWNER {owner}")
    dbs = Databases(settings)
    try:
        migrate.upgrade(dbs)
        lines = db_roles.ensure(dbs, superuser=None)
        assert any(line.startswith("WARNING") and "postfix, dovecot, sogo, policy" in line and "grants --print" in line
                   for line in lines), lines
        assert db_roles.active_logins(dbs) == {}  # rendered files keep the owner's login meanwhile

        script = db_roles.creation_script(dbs)
        assert "PASSWORD 'SCRAM-SHA-256$" in script
        pg.psql(script)  # the DBA
        lines = db_roles.ensure(dbs, superuser=None)
        assert lines == ["database grants applied: postfix, dovecot, sogo, policy log in with their own roles"], lines
        logins = db_roles.active_logins(dbs)
        assert set(logins) == set(CONSUMERS)
        db = settings
        with psycopg.connect(host=db.host, port=db.port, user=logins["postfix"].user,
                             password=logins["postfix"].password, dbname=db.data, autocommit=True) as conn:
            assert conn.execute("SELECT count(*) FROM lookup_domain('nothing.test')").fetchone() == (0,)
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("SELECT * FROM domains")
        with pytest.raises(psycopg.OperationalError, match="permission denied for database"):
            psycopg.connect(host=db.host, port=db.port, user=logins["sogo"].user, password=logins["sogo"].password,
                            dbname=db.main)
    finally:
        dbs.dispose()


def test_cli_rotation_of_one_role_in_a_cluster_keeps_the_previous_until_retired(node, mailbox):
    """`rupost db rotate-passwords --consumer sogo --keep-previous` (what a cluster needs: the
    other nodes still hold the previous login), then `--only-retire`; SOGo logs users in
    with its new role throughout (CalDAV through nginx)."""
    import base64
    import json

    from click.testing import CliRunner

    from adapters.probes import https_request
    from rupost.cli import main as rupost

    address, password = mailbox("sogorot")
    auth = {"Authorization": "Basic " + base64.b64encode(f"{address}:{password}".encode()).decode(), "Depth": "0"}

    def propfind() -> int:
        return https_request("127.0.0.1", node.ports["https"], "PROPFIND", f"/SOGo/dav/{address}/Calendar/",
                             headers=auth)[0]

    def cli(*args):
        r = CliRunner().invoke(rupost, ["--root", str(node.root), "db", *args])
        assert r.exit_code == 0, r.output
        return r.output

    assert propfind() == 207
    before = {c: _login(node, c) for c in CONSUMERS}
    out = cli("rotate-passwords", "--consumer", "sogo", "--keep-previous")
    idle = "a" if before["sogo"].user.endswith("_b") else "b"
    assert f"sogo: now logs in as {roles.slot_role(node.config.database, 'sogo', idle)}" in out
    after = _login(node, "sogo")
    assert after.user != before["sogo"].user
    assert f"{after.user}:" in (node.layout.current / "sogo" / "sogo.conf").read_text()
    assert {c: _login(node, c) for c in ("postfix", "dovecot")} == {c: before[c] for c in ("postfix", "dovecot")}
    assert db_roles.can_login(node.config.database, before["sogo"].user, before["sogo"].password)  # kept
    assert propfind() == 207
    assert "retired: " + before["sogo"].user in cli("rotate-passwords", "--only-retire")
    assert not db_roles.can_login(node.config.database, before["sogo"].user, before["sogo"].password)
    assert propfind() == 207
    rows = {r["consumer"]: r for r in json.loads(cli("roles", "--json"))}
    assert rows["sogo"]["login"] == after.user and all(r["ready"] for r in rows.values())
    assert after.password not in cli("roles")
