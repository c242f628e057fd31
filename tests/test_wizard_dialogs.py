"""The interactive rupost-wizard: the real `dialog` program driven in tmux, against the test PostgreSQL.

Keys go in with `tmux send-keys`, the screen comes back with `tmux capture-pane -p`. Every wait is
bounded (a missing screen fails with the last screen in the message); nothing asserts on time.
"""
from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from wizard.flow import check_database, check_node
from wizard.i18n import MESSAGES, Catalogue, pick_language

REPO = Path(__file__).resolve().parent.parent
RIGHT = "right-pass-1"


@pytest.fixture(scope="module")
def tmux_bin():
    if not shutil.which("tmux"):
        subprocess.run(["apt-get", "install", "-y", "-q", "tmux"], check=True, capture_output=True)
    if not shutil.which("dialog"):
        subprocess.run(["apt-get", "install", "-y", "-q", "dialog"], check=True, capture_output=True)
    return shutil.which("tmux")


class Terminal:
    """One rupost-wizard run in a tmux session on a private tmux server."""

    def __init__(self, tmux: str, argv: list[str], env: dict[str, str]):
        self.tmux = tmux
        self.socket = f"rupost-wizard-{uuid.uuid4().hex[:8]}"
        envs = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
        command = (f"cd {shlex.quote(str(REPO))} && env {envs} {shlex.quote(sys.executable)} -m wizard.cli "
                   f"{' '.join(shlex.quote(a) for a in argv)}; echo EXIT=$?; sleep 600")
        self._tmux("new-session", "-d", "-s", "w", "-x", "100", "-y", "40", command)

    def _tmux(self, *args) -> str:
        return subprocess.run([self.tmux, "-u", "-L", self.socket, *args], check=True, capture_output=True,
                              text=True).stdout

    def screen(self) -> str:
        return self._tmux("capture-pane", "-p", "-t", "w")

    def wait_for(self, *texts: str, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while True:
            screen = self.screen()
            if all(t in screen for t in texts):
                return screen
            if time.monotonic() > deadline:
                raise AssertionError(f"{texts} not on the screen after {timeout}s:\n{screen}")
            time.sleep(0.2)

    def keys(self, *keys: str) -> None:
        for key in keys:
            self._tmux("send-keys", "-t", "w", key)

    def type(self, text: str) -> None:
        self._tmux("send-keys", "-t", "w", "-l", text)

    def set_field(self, downs: int, value: str) -> None:
        """From the first field of a form: go down to a field, replace its value."""
        self.keys(*["Down"] * downs, "C-u")
        self.type(value)

    def close(self) -> None:
        subprocess.run([self.tmux, "-L", self.socket, "kill-server"], capture_output=True)


@pytest.fixture
def terminal(tmux_bin):
    opened = []

    def start(argv, lang_env="C.UTF-8"):
        term = Terminal(tmux_bin, argv, {"LANG": lang_env, "LC_ALL": lang_env, "TERM": "screen"})
        opened.append(term)
        return term

    yield start
    for term in opened:
        term.close()


def names(user):
    return ["-u", user, "-n", f"{user}_main", "-d", f"{user}_data", "-l", f"{user}_logs"]


def command_lines_with(secret: str) -> list[str]:
    """The command lines (/proc/PID/cmdline) of running processes that contain `secret`."""
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                    line = f.read()
            except OSError:
                continue
            if secret.encode() in line:
                found.append(line.replace(b"\0", b" ").decode(errors="replace"))
    return found


def test_wrong_password_is_shown_on_the_screen_and_can_be_corrected(pg, tmp_path, terminal):
    user = f"wd{uuid.uuid4().hex[:8]}"
    pg.psql(f"CREATE ROLE {user} LOGIN PASSWORD '{RIGHT}'")
    for suffix in ("main", "data", "logs"):
        pg.psql(f"CREATE DATABASE {user}_{suffix} OWNER {user}")
    root = tmp_path / "root"
    term = terminal(["--root", str(root), "-h", "127.0.0.1", "-p", str(pg.port), *names(user),
                     "--node-name", "dlg", "--fqdn", "dlg.rupost.test"])
    ru = MESSAGES["ru"]
    term.wait_for("Продолжить?", "< Да  >", "< Нет >")        # Russian by default
    term.keys("Enter")
    term.wait_for(ru["db.title"], ru["db.password"], "<Далее >")
    term.set_field(6, "not-the-password")
    term.keys("Enter")
    screen = term.wait_for("Ошибка подключения", "password authentication failed", timeout=60)
    assert ru["db.title"] in screen and f"{user}_main" in screen        # still the form, values kept
    assert "not-the-password" not in screen                            # the password field is masked
    # the form is shown again with the password kept in its field: dialog gets it from a file,
    # not on its command line, which any local user reads in /proc
    assert not command_lines_with("not-the-password")
    assert not (root / "etc/rupost/config.json").exists()
    term.set_field(6, RIGHT)
    term.keys("Enter")
    term.wait_for(ru["node.title"], "dlg.rupost.test", timeout=60)
    term.keys("Enter")
    screen = term.wait_for("Начать настройку?")
    assert f"{user}@127.0.0.1:{pg.port}" in screen and "config.json" in screen   # (the path wraps)
    term.keys("Enter")
    screen = term.wait_for("Следующий шаг: rupost deploy", "node dlg registered", timeout=180)
    assert "created database" not in screen                             # they existed already
    term.keys("Enter")
    term.wait_for("EXIT=0")
    cfg = json.loads((root / "etc/rupost/config.json").read_text())
    assert cfg["database"]["user"] == user and cfg["database"]["password"] == RIGHT
    assert cfg["database"]["main"] == f"{user}_main" and cfg["node_name"] == "dlg"


def test_english_checks_every_screen_and_creates_the_local_role_and_databases(pg, tmp_path, terminal):
    user = f"we{uuid.uuid4().hex[:8]}"
    root = tmp_path / "root"
    term = terminal(["--lang", "en", "--root", str(root), "-p", str(pg.port), *names(user),
                     "--fqdn", "dlg-en.rupost.test"])
    en = MESSAGES["en"]
    term.wait_for("Continue?", "< Yes >", "< No  >")
    term.keys("Enter")
    term.wait_for(en["db.title"], en["db.password"])
    term.set_field(1, "70000")
    term.keys("Enter")
    term.wait_for('Port "70000": expected a number from 1 to 65535')
    term.set_field(1, str(pg.port))
    term.set_field(1, f"{user}_data")                                     # now on the main database name
    term.keys("Enter")
    screen = term.wait_for("The three databases must have different names.")
    assert f"{user}_logs" in screen
    term.set_field(2, f"{user}_main")
    term.keys("Enter")
    term.wait_for('The field "Password" is empty.')
    term.set_field(6, "new-role-pass-1")
    term.keys("Enter")
    screen = term.wait_for(en["db.create.title"], f"user {user}", f"database {user}_logs", timeout=60)
    term.keys("Enter")                                                   # Yes: create them
    term.wait_for(en["node.title"], "dlg-en.rupost.test", timeout=60)
    term.set_field(0, "bad name!")
    term.keys("Enter")
    term.wait_for('"Node name" = "bad name!": not a valid name')
    term.set_field(0, "dlgen")
    term.set_field(2, "localhost")                                        # the mail host name
    term.keys("Enter")
    term.wait_for('Mail host name "localhost" is not fully')
    term.set_field(2, "mail.dlg-en.rupost.test")
    term.keys("Enter")
    term.wait_for("Start the configuration?", "Node: dlgen (dlg-en.rupost.test", "Mail host: mail.dlg-en.rupost.test")
    term.keys("Enter")
    screen = term.wait_for("Next step: rupost deploy", timeout=180)
    assert f"created database role {user}" in screen and "node dlgen registered" in screen
    term.keys("Enter")
    term.wait_for("EXIT=0")
    dbs = pg.psql(f"SELECT datname FROM pg_database WHERE datname LIKE '{user}%' ORDER BY 1").split()
    assert dbs == [f"{user}_data", f"{user}_logs", f"{user}_main"]
    cfg = json.loads((root / "etc/rupost/config.json").read_text())
    assert cfg["node_name"] == "dlgen" and cfg["database"]["password"] == "new-role-pass-1"
    stored = pg.psql("SELECT value FROM settings WHERE key = 'mail_host'", dbname=f"{user}_main").strip()
    assert json.loads(stored) == "mail.dlg-en.rupost.test" and cfg["fqdn"] == "dlg-en.rupost.test"


def test_no_on_the_first_screen_aborts_and_english_follows_lang(pg, tmp_path, terminal):
    root = tmp_path / "root"
    term = terminal(["--root", str(root), "-p", str(pg.port)], lang_env="en_US.UTF-8")
    term.wait_for("Continue?")
    term.keys("Right", "Enter")                                          # No
    screen = term.wait_for("EXIT=1")
    assert MESSAGES["en"]["aborted"] in screen
    assert not (root / "etc").exists()


def test_language_choice_and_catalogue():
    assert pick_language(None, {}) == "ru"
    assert pick_language(None, {"LANG": "en_GB.UTF-8"}) == "en"
    assert pick_language(None, {"LANG": "en_US.UTF-8", "LC_ALL": "ru_RU.UTF-8"}) == "ru"
    assert pick_language(None, {"LANG": "C.UTF-8"}) == "ru"
    assert pick_language("en", {"LANG": "ru_RU.UTF-8"}) == "en"
    with pytest.raises(ValueError):
        pick_language("de", {})
    assert set(MESSAGES["ru"]) == set(MESSAGES["en"])                    # every string in both languages


def test_screen_checks():
    t = Catalogue("en")
    good = {"host": "db.example.test", "port": "5432", "main": "rupost", "data": "rupost_data",
            "logs": "rupost_logs", "user": "rupost", "password": "x"}
    assert check_database(t, good) is None
    assert check_database(t, {**good, "host": "::1"}) is None
    assert check_database(t, {**good, "host": "/var/run/postgresql"}) is None
    assert "Host" in check_database(t, {**good, "host": "a b"})
    assert "65535" in check_database(t, {**good, "port": "0"})
    assert "Latin letters" in check_database(t, {**good, "user": "1abc"})
    assert "Latin letters" in check_database(t, {**good, "main": "a-b"})
    assert "empty" in check_database(t, {**good, "logs": " "})
    node = {"node_name": "mx1", "fqdn": "mx1.example.test", "mail_host": "mail.example.test", "address": "10.0.0.5"}
    assert check_node(t, node) is None
    assert "Address" in check_node(t, {**node, "address": "10.0.0.300 x"})
    assert "Fully qualified" in check_node(t, {**node, "fqdn": "-bad-.test"})
    # the mail host name: the rules of rupost.validation.mail_host, in the screen's language
    for unqualified in ("mx1", "localhost", "localhost.localdomain", "mx.localhost"):
        assert "--allow-unqualified-host" in check_node(t, {**node, "mail_host": unqualified}), unqualified
        assert check_node(t, {**node, "mail_host": unqualified}, allow_unqualified=True) is None
    assert "is an IP address" in check_node(t, {**node, "mail_host": "10.0.0.5"}, allow_unqualified=True)
    assert "not a valid host name" in check_node(t, {**node, "mail_host": "mail_host.example"})
    assert "полное" in check_node(Catalogue("ru"), {**node, "mail_host": "mx1"})


def test_the_member_field_of_the_connection_screen():
    """A highly available database: the Patroni members in one field (what --db-member takes),
    host and port then unused; a malformed or repeated member is named, in both languages."""
    from wizard.flow import format_members, parse_members

    t = Catalogue("en")
    form = {"host": "", "port": "", "main": "rupost", "data": "rupost_data", "logs": "rupost_logs",
            "user": "rupost", "password": "x", "members": "10.0.0.11, 10.0.0.12:5433 [fd00::1]:5432:8009"}
    assert check_database(t, form) is None
    members = parse_members(form["members"])
    assert [(m.host, m.port, m.api_port) for m in members] == [
        ("10.0.0.11", 5432, 8008), ("10.0.0.12", 5433, 8008), ("fd00::1", 5432, 8009)]
    assert parse_members(format_members(members)) == members  # shown again as typed back
    assert "given twice" in check_database(t, {**form, "members": "10.0.0.11 10.0.0.11:5432"})
    assert "10.0.0.11:99999" in check_database(t, {**form, "members": "10.0.0.11:99999"})
    assert '"a_b!"' in check_database(t, {**form, "members": "a_b!"})
    assert "Host" in check_database(t, {**form, "members": " "})  # no members: the host is needed again
    assert "дважды" in check_database(Catalogue("ru"), {**form, "members": "db1 db1"})
