"""rupost-wizard --silent against a real PostgreSQL."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
import uuid

import pytest
from click.testing import CliRunner

from wizard.cli import main as wizard


def wizard_args(root, pg, user, *extra):
    return ["--silent", "-h", "127.0.0.1", "-p", str(pg.port), "-u", user, "-n", f"{user}_main",
            "-d", f"{user}_data", "-l", f"{user}_logs", "--root", str(root), "--node-name", "wiz",
            "--fqdn", "wiz.rupost.test", *extra]


def run_wizard(root, pg, *extra, user=None, password="wizard-pass-1", env=None, input=None):
    """The silent wizard, the password in the environment (the way that shows it to nobody)."""
    user = user or f"w{uuid.uuid4().hex[:8]}"
    env = dict(env or {})
    if password is not None:
        env["RUPOST_INSTALLER_DB_PASSWORD"] = password
    result = CliRunner().invoke(wizard, wizard_args(root, pg, user, *extra), env=env, input=input,
                                catch_exceptions=False)
    return result, user


def databases(pg, prefix):
    out = pg.psql(f"SELECT datname FROM pg_database WHERE datname LIKE '{prefix}%' ORDER BY 1")
    return out.split()


def test_silent_install_creates_everything_and_is_idempotent(pg, tmp_path):
    root = tmp_path / "root"
    first, user = run_wizard(root, pg)
    assert first.exit_code == 0, first.output
    assert f"created database role {user}" in first.output
    assert databases(pg, user) == [f"{user}_data", f"{user}_logs", f"{user}_main"]
    config_file = root / "etc/rupost/config.json"
    assert stat.S_IMODE(config_file.stat().st_mode) == 0o600
    cfg = json.loads(config_file.read_text())
    assert cfg["database"]["main"] == f"{user}_main" and cfg["node_name"] == "wiz"
    second, _ = run_wizard(root, pg, user=user)
    assert second.exit_code == 0, second.output
    assert "created" not in second.output.replace("generated", "")  # nothing created twice
    counts = pg.psql("SELECT count(*) FROM certificates", dbname=f"{user}_main").strip()
    assert counts == "2"
    assert pg.psql("SELECT count(*) FROM dhparams", dbname=f"{user}_main").strip() == "1"
    assert pg.psql("SELECT count(*) FROM nodes", dbname=f"{user}_main").strip() == "1"
    assert pg.psql("SELECT name || '@' || version || ':' || active FROM templates",
                   dbname=f"{user}_main").strip() == "standard@1.0.0:true"


def test_password_from_environment(pg, tmp_path):
    result, _ = run_wizard(tmp_path / "root", pg, password=None,
                           env={"RUPOST_INSTALLER_DB_PASSWORD": "from-the-env-1"})
    assert result.exit_code == 0, result.output


def test_missing_password_is_a_usage_error(pg, tmp_path):
    result, _ = run_wizard(tmp_path / "root", pg, password=None, env={"RUPOST_INSTALLER_DB_PASSWORD": ""})
    assert result.exit_code == 2
    assert "RUPOST_INSTALLER_DB_PASSWORD" in result.output


def test_wrong_password_fails_cleanly_and_creates_nothing(pg, tmp_path):
    root = tmp_path / "root"
    ok, user = run_wizard(tmp_path / "first", pg)
    assert ok.exit_code == 0
    before = databases(pg, user)
    result, _ = run_wizard(root, pg, user=user, password="not-the-password")
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "password authentication failed" in lines[0]
    assert "not-the-password" not in result.output
    assert not (root / "etc/rupost/config.json").exists()
    assert databases(pg, user) == before


def test_unreachable_server_fails_with_one_line(tmp_path):
    from support.instance import free_ports

    class Closed:
        port = free_ports(1)[0]

    result, _ = run_wizard(tmp_path / "root", Closed)
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "Connection refused" in lines[0] and str(Closed.port) in lines[0]
    assert not (tmp_path / "root/etc/rupost/config.json").exists()


@pytest.mark.parametrize("flag, value, message", [
    ("-n", "bad name;", "invalid database name"),
    ("-u", "Robert'); DROP", "invalid user"),
    ("--port", "smtp=99999", "expected NAME=PORT"),
])
def test_bad_input_is_named(pg, tmp_path, flag, value, message):
    result, _ = run_wizard(tmp_path / "root", pg, flag, value)
    assert result.exit_code != 0
    assert message in result.output
    assert not (tmp_path / "root/etc/rupost/config.json").exists()


# ------------------------------------------------------------------ the mail host name
def open_app(root):
    from rupost.services import RuPost

    return RuPost.open(root, actor="test")


@pytest.mark.parametrize("extra, named", [
    (["--mail-host", "localhost"], "'localhost' is a loopback name"),
    (["--mail-host", "localhost.localdomain"], "'localhost.localdomain' is a loopback name"),
    (["--mail-host", "mx.localhost"], "'mx.localhost' is a loopback name"),
    (["--mail-host", "mailhost"], "'mailhost' is not fully qualified"),
    (["--fqdn", "vm"], "'vm' is not fully qualified"),           # the default: the node's FQDN
])
def test_unqualified_mail_host_is_refused_naming_it_and_the_flag(pg, tmp_path, extra, named):
    result, _ = run_wizard(tmp_path / "root", pg, *extra)
    assert result.exit_code == 1, result.output
    assert f"mail host name {named}" in result.output and "--allow-unqualified-host" in result.output
    assert not (tmp_path / "root/etc/rupost/config.json").exists()


def test_an_ip_address_is_never_a_mail_host_name(pg, tmp_path):
    result, _ = run_wizard(tmp_path / "root", pg, "--mail-host", "192.0.2.10", "--allow-unqualified-host")
    assert result.exit_code == 1
    assert "mail host name '192.0.2.10' is an IP address" in result.output and "client_mail_host" in result.output
    assert not (tmp_path / "root/etc/rupost/config.json").exists()


def test_allowed_unqualified_mail_host_tells_clients_the_node_address(pg, tmp_path):
    root = tmp_path / "root"
    result, user = run_wizard(root, pg, "--mail-host", "vm", "--allow-unqualified-host", "--address", "192.0.2.10")
    assert result.exit_code == 0, result.output
    assert ("  !!  WARNING: mail host name vm is not fully qualified (no domain): other mail servers and clients "
            "cannot look it up: mail clients are told this node's address 192.0.2.10 instead") in result.output
    # a re-run keeps the name accepted once, and says again what it means
    again, _ = run_wizard(root, pg, "--address", "192.0.2.10", user=user)
    assert again.exit_code == 0, again.output
    assert "WARNING: mail host name vm is not fully qualified" in again.output
    assert "mail clients are told 192.0.2.10 (client_mail_host)" in again.output
    app = open_app(root)
    try:
        state = app.settings.mail_host_state()
        assert (state["mail_host"], state["qualified"], state["client_host"]) == ("vm", False, "192.0.2.10")
        assert "192.0.2.10" in app.certificates.show("rupost-builtin")["names"]
    finally:
        app.close()


def test_mail_host_is_stored_kept_on_a_rerun_and_changed_on_request(pg, tmp_path):
    root = tmp_path / "root"
    first, user = run_wizard(root, pg, "--mail-host", "Mail.Corp.Test.")
    assert first.exit_code == 0, first.output
    assert "mail host name mail.corp.test" in first.output
    app = open_app(root)
    try:
        assert app.settings.mail_host() == "mail.corp.test" and app.config.fqdn == "wiz.rupost.test"
        builtin = app.certificates.show("rupost-builtin")
        assert builtin["subject"].endswith("CN=mail.corp.test") and builtin["missing_names"] == []
        first_cert = builtin["sha256"]
    finally:
        app.close()
    # a re-run (a node joining the cluster) keeps the cluster's name and its certificate
    again, _ = run_wizard(root, pg, user=user)
    assert again.exit_code == 0 and "mail host name mail.corp.test" in again.output and "changed" not in again.output
    # a new name: stored, and the builtin certificates issued again for it
    changed, _ = run_wizard(root, pg, "--mail-host", "mx.corp.test", user=user)
    assert changed.exit_code == 0, changed.output
    assert "mail host name mx.corp.test (changed from mail.corp.test)" in changed.output
    assert "issued self-signed certificate rupost-builtin again, for mx.corp.test" in changed.output
    app = open_app(root)
    try:
        builtin = app.certificates.show("rupost-builtin")
        assert builtin["sha256"] != first_cert and "mx.corp.test" in builtin["names"]
        assert app.autoconfig.client_host() == "mx.corp.test"
    finally:
        app.close()


def test_quickstart_flags_configure_a_node_whatever_this_machine_is_called(pg, tmp_path):
    """scripts/quickstart passes no name, only --allow-unqualified-host: on a machine without a
    fully qualified name (CI runners, fresh VMs) the node is configured with that name and mail
    clients are told the machine's address; the quickstart summary reads the same state."""
    from rupost import netinfo, validation
    from rupost.cli import main as rupost
    from rupost.config import default_fqdn

    user = f"q{uuid.uuid4().hex[:8]}"
    root = tmp_path / "root"
    args = ["--silent", "-h", "127.0.0.1", "-p", str(pg.port), "-u", user, "-n", f"{user}_main", "-d",
            f"{user}_data", "-l", f"{user}_logs", "--root", str(root), "--db-password", "quick-pass-1",
            "--allow-unqualified-host"]
    result = CliRunner().invoke(wizard, args, env={}, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    shown = CliRunner().invoke(rupost, ["--root", str(root), "settings", "mail-host", "--json"])
    state = json.loads(shown.stdout)
    name = validation.host_name(default_fqdn())
    assert state["mail_host"] == name and state["mail_host"] != "localhost"
    if validation.mail_host_problem(name):
        assert state["qualified"] is False and state["client_host"] == netinfo.primary_address()
        assert f"mail clients are told this node's address {state['client_host']}" in result.output
    else:
        assert state["qualified"] is True and state["client_host"] == name


@pytest.mark.parametrize("value, allowed, expected", [
    ("Mail.Example.ORG.", False, "mail.example.org"),
    ("почта.пример.рф", False, "xn--80a1acny.xn--e1afmkfd.xn--p1ai"),
    ("vm", True, "vm"),
    ("localhost", True, "localhost"),
    ("vm", False, "'vm' is not fully qualified"),
    ("LOCALHOST.localdomain", False, "'localhost.localdomain' is a loopback name"),
    ("a.localhost", False, "'a.localhost' is a loopback name"),
    ("mail.123", False, "'mail.123' ends in a number"),
    ("10.0.0.1", True, "'10.0.0.1' is an IP address"),
    ("[::1]", True, "'[::1]' is an IP address"),
    ("mail_host.example.org", True, "is not a valid host name"),
    ("-mail.example.org", True, "is not a valid host name"),
    ("", True, "is not a valid host name"),
])
def test_one_rule_for_the_mail_host_name(value, allowed, expected):
    from rupost import validation
    from rupost.errors import ValidationError

    if "'" not in expected and " " not in expected:
        assert validation.mail_host(value, allowed) == expected
        return
    with pytest.raises(ValidationError) as caught:
        validation.mail_host(value, allowed)
    assert expected in str(caught.value)
    if "fully qualified" in expected or "loopback" in expected:
        assert "--allow-unqualified-host" in str(caught.value)


# ------------------------------------------------------------ no secret in any process's argv

def _command_lines_with(secret: str, stop: threading.Event, seen: list[str]) -> None:
    """Poll every process's /proc/PID/cmdline (readable by any local user) for `secret`."""
    needle = secret.encode()
    while not stop.is_set():
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                    line = f.read()
            except OSError:
                continue  # the process ended meanwhile
            if needle in line:
                seen.append(line.replace(b"\0", b" ").decode(errors="replace"))


def test_the_database_password_is_in_no_command_line_during_a_silent_install(pg, tmp_path):
    """The wizard reads the password from the environment and creates the role (CREATE ROLE ...
    PASSWORD) through psql reading SQL on stdin: no process it starts shows the password."""
    password = f"argv-{uuid.uuid4().hex}"
    user = f"w{uuid.uuid4().hex[:8]}"
    seen: list[str] = []
    stop = threading.Event()
    watcher = threading.Thread(target=_command_lines_with, args=(password, stop, seen), daemon=True)
    watcher.start()
    try:
        result = subprocess.run([sys.executable, "-m", "wizard.cli", *wizard_args(tmp_path / "root", pg, user)],
                                env={**os.environ, "RUPOST_INSTALLER_DB_PASSWORD": password},
                                capture_output=True, text=True, timeout=300)
    finally:
        stop.set()
        watcher.join()
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"created database role {user}" in result.stdout  # the CREATE ROLE path ran
    assert not seen, seen


def test_the_password_flag_still_works_and_warns(pg, tmp_path):
    user = f"w{uuid.uuid4().hex[:8]}"
    result = CliRunner().invoke(wizard, wizard_args(tmp_path / "root", pg, user, "--db-password", "flag-pass-1"),
                                env={}, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "warning: --db-password is visible to every local user" in result.stderr


def test_password_from_a_file_or_stdin(pg, tmp_path):
    secret = tmp_path / "db-password"
    secret.write_text("file-pass-1\n")
    result, user = run_wizard(tmp_path / "root", pg, "--db-password-file", str(secret), password=None)
    assert result.exit_code == 0, result.output
    assert "warning" not in result.output
    # the role now has that password: a re-run from stdin with it connects
    again, _ = run_wizard(tmp_path / "root", pg, "--db-password-stdin", user=user, password=None,
                          input="file-pass-1\n")
    assert again.exit_code == 0, again.output


@pytest.mark.parametrize("extra, input, message", [
    (["--db-password-file", "/nonexistent/db-password"], None, "--db-password-file /nonexistent/db-password: No such"),
    (["--db-password-stdin"], "\n", "--db-password-stdin: the first line is empty"),
    (["--db-password-stdin", "--db-password", "x-pass-123"], "y\n", "--db-password and --db-password-stdin"),
])
def test_bad_password_sources_are_named(pg, tmp_path, extra, input, message):
    result, _ = run_wizard(tmp_path / "root", pg, *extra, password=None, input=input)
    assert result.exit_code == 2 and message in result.output, result.output
    assert not (tmp_path / "root/etc/rupost/config.json").exists()
