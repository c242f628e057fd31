"""IMAP migration from a second dovecot instance started here (its own config under a temp
dir, passwd-file passdb, IMAPS on a free port with a test certificate) holding folders,
flags and 1,000 messages: everything is copied (count per folder and flags), a re-run copies
nothing new, and broken source mailboxes are reported without stopping the run."""
from __future__ import annotations

import imaplib
import json
import os
import pwd
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mailclients import IMAPSFrom
from rupost.services.migration_source import decode_mutf7
from support.instance import free_ports
from rupost.tls import ffdhe_default, self_signed

# source folders (IMAP names, separator ".") -> messages; 1,000 in all
ALICE_FOLDERS = {"INBOX": 600, "Sent": 200, "Archive.2024": 120, "Проекты": 30, "Drafts": 50}
TARGET_NAME = {"Archive.2024": "Archive/2024"}


def encode_mutf7(name: str) -> str:
    out, buf = [], []

    def flush():
        if buf:
            import base64

            data = base64.b64encode("".join(buf).encode("utf-16-be")).decode().rstrip("=").replace("/", ",")
            out.append("&" + data + "-")
            buf.clear()

    for ch in name:
        if 0x20 <= ord(ch) <= 0x7E:
            flush()
            out.append("&-" if ch == "&" else ch)
        else:
            buf.append(ch)
    flush()
    return "".join(out)


def flags_for(i: int) -> str:
    flags = set()
    if i % 3 == 0:
        flags.add("S")
    if i % 10 == 0:
        flags.add("F")
    if i % 7 == 0:
        flags.add("R")
    return "".join(sorted(flags))


def expected_flags(count: int) -> dict:
    return {"SEEN": sum(1 for i in range(count) if i % 3 == 0),
            "FLAGGED": sum(1 for i in range(count) if i % 10 == 0),
            "ANSWERED": sum(1 for i in range(count) if i % 7 == 0)}


class SourceDovecot:
    """A plain dovecot 2.3 with maildirs written directly (then force-resync)."""

    def __init__(self, base: Path):
        self.base = base
        self.port = free_ports(1)[0]
        self.conf = base / "dovecot.conf"
        self.proc = None

    def write_config(self, users: dict[str, str]) -> None:
        b = self.base
        (b / "run").mkdir(parents=True, exist_ok=True)
        (b / "mail").mkdir(exist_ok=True)
        cert, key, _ = self_signed("localhost", ["localhost", "127.0.0.1"])
        (b / "cert.pem").write_text(cert)
        (b / "key.pem").write_text(key)
        os.chmod(b / "key.pem", 0o600)
        (b / "dh.pem").write_text(ffdhe_default()[0])
        (b / "passwd").write_text("".join(f"{u}:{{PLAIN}}{p}::::::\n" for u, p in users.items()))
        vmail = pwd.getpwnam("vmail")
        os.chown(b / "mail", vmail.pw_uid, vmail.pw_gid)
        self.conf.write_text(f"""
instance_name = migsrc{self.port}
base_dir = {b}/run
state_dir = {b}/state
log_path = {b}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = required
ssl_cert = <{b}/cert.pem
ssl_key = <{b}/key.pem
ssl_dh = <{b}/dh.pem
auth_mechanisms = plain login
mail_location = maildir:{b}/mail/%n/Maildir
mail_uid = vmail
mail_gid = vmail
first_valid_uid = 420
namespace inbox {{
  inbox = yes
  separator = .
}}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%n {b}/passwd
}}
userdb {{
  driver = static
  args = uid=vmail gid=vmail home={b}/mail/%n
}}
service imap-login {{
  inet_listener imap {{
    port = 0
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {self.port}
  }}
}}
service stats {{
  unix_listener stats-writer {{
    mode = 0666
  }}
}}
""")

    def fill(self, user: str, folders: dict[str, int]) -> None:
        vmail = pwd.getpwnam("vmail")
        maildir = self.base / "mail" / user / "Maildir"
        now = int(time.time())
        for folder, count in folders.items():
            d = maildir if folder == "INBOX" else maildir / ("." + encode_mutf7(folder))
            for sub in ("cur", "new", "tmp"):
                (d / sub).mkdir(parents=True, exist_ok=True)
            if folder != "INBOX":
                (d / "maildirfolder").touch()
            for i in range(count):
                body = (f"From: sender{i}@example.org\r\nTo: {user}@source.example\r\n"
                        f"Subject: {folder} message {i}\r\nMessage-ID: <{user}.{i}.{abs(hash(folder))}@src>\r\n"
                        f"Date: Mon, 02 Mar 2026 10:{i % 60:02d}:00 +0000\r\n\r\nbody {i} of {folder}\r\n")
                data = body.encode()
                name = f"{now - count + i}.M{i}P1.src,S={len(data)}:2,{flags_for(i)}"
                (d / "cur" / name).write_bytes(data)
        for root, dirs, files in os.walk(self.base / "mail" / user):
            os.chown(root, vmail.pw_uid, vmail.pw_gid)
            for f in files:
                os.chown(os.path.join(root, f), vmail.pw_uid, vmail.pw_gid)

    def start(self) -> None:
        self.proc = subprocess.Popen(["dovecot", "-F", "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, start_new_session=True)
        deadline = time.monotonic() + 20
        while True:
            try:
                IMAPSFrom("127.0.0.1", self.port).logout()
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"source dovecot did not start: {self.proc.stderr.read().decode()}"
                                         f"{(self.base / 'dovecot.log').read_text() if (self.base / 'dovecot.log').exists() else ''}")
                time.sleep(0.2)

    def resync(self, user: str) -> None:
        subprocess.run(["doveadm", "-c", str(self.conf), "force-resync", "-u", user, "*"], check=True,
                       capture_output=True, timeout=120)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(20)


@pytest.fixture(scope="module")
def source(workdir):
    src = SourceDovecot(workdir / "migsrc")
    src.write_config({"alice": "alice-src-pw", "bob": "bob-src-pw", "carol": "carol-src-pw"})
    src.fill("alice", ALICE_FOLDERS)
    src.fill("bob", {"INBOX": 5})
    src.fill("carol", {"INBOX": 7, "Broken": 3})
    src.start()
    for user in ("alice", "bob", "carol"):
        src.resync(user)
    # carol's "Broken" folder becomes unreadable for the server (root-owned, mode 000)
    broken = src.base / "mail" / "carol" / "Maildir" / ".Broken"
    os.chown(broken, 0, 0)
    os.chmod(broken, 0)
    yield src
    os.chmod(broken, 0o700)
    src.stop()


def migrate(node, *args, stdin=None):
    return subprocess.run([sys.executable, "-m", "rupost.cli", "--root", str(node.root), "migrate", *args],
                          input=stdin, capture_output=True, text=True, timeout=900)


def target_view(node, address, password) -> dict:
    """{folder (decoded): (messages, {flag: count})} as the RuPost user sees it over IMAPS."""
    imap = IMAPSFrom("127.0.0.1", node.ports["imaps"])
    try:
        imap.login(address, password)
        _, listing = imap.list('""', "*")
        view = {}
        for raw in listing:
            name = re.match(rb'^\([^)]*\) "(?:[^"]*)" (.+)$', raw).group(1).decode()
            name = name[1:-1] if name.startswith('"') else name
            typ, data = imap.select(f'"{name}"', readonly=True)
            assert typ == "OK", (name, data)
            flags = {}
            for flag in ("SEEN", "FLAGGED", "ANSWERED"):
                _, found = imap.search(None, flag)
                flags[flag] = len(found[0].split())
            view[decode_mutf7(name)] = (int(data[0]), flags)
        return view
    finally:
        try:
            imap.logout()
        except (OSError, imaplib.IMAP4.error):
            pass


def test_migration_copies_everything_reports_broken_and_is_incremental(node, domain, mailbox, source, tmp_path):
    alice, alice_pw = mailbox("alice")
    bob, _ = mailbox("bob")
    carol, _ = mailbox("carol")
    dave = f"dave@{domain}"  # not created on RuPost
    mapfile = tmp_path / "map.csv"
    mapfile.write_text("source_login,source_password,target_address\n"
                       f"alice,alice-src-pw,{alice}\n"
                       f"bob,wrong-password,{bob}\n"
                       f"carol,carol-src-pw,{carol}\n"
                       f"alice,alice-src-pw,{dave}\n")
    cert = source.base / "cert.pem"
    url = f"imaps://localhost:{source.port}"

    first = migrate(node, "imap", "--source", url, "--map", str(mapfile), "--ca-file", str(cert))
    print(first.stdout)
    out = first.stdout + first.stderr
    assert first.returncode == 2, out  # some mailboxes failed: reported, the run went on
    assert "alice-src-pw" not in out and "wrong-password" not in out
    assert re.search(rf"alice -> {re.escape(alice)}: done, 1000 messages in 5 folders on the source, "
                     r"1000 on RuPost, 1000 new", out), out
    assert re.search(rf"bob -> {re.escape(bob)}: failed: login as bob .* failed", out), out
    assert re.search(rf"carol -> {re.escape(carol)}: incomplete, 7 messages in 2 folders on the source, 7 on RuPost, 7 new.*Broken: cannot be read", out), out
    assert re.search(rf"alice -> {re.escape(dave)}: failed: mailbox {re.escape(dave)} does not exist", out), out
    assert "NOT COPIED:" in out

    view = target_view(node, alice, alice_pw)
    for folder, count in ALICE_FOLDERS.items():
        name = TARGET_NAME.get(folder, folder)
        assert name in view, (name, sorted(view))
        assert view[name] == (count, expected_flags(count)), (name, view[name])

    # a re-run copies nothing new and the mailbox looks the same
    second = migrate(node, "imap", "--source", url, "--map", str(mapfile), "--ca-file", str(cert), "--json")
    summary = json.loads(second.stdout)
    by_target = {r["target"]: r for r in summary["results"]}
    assert by_target[alice]["status"] == "done" and by_target[alice]["copied"] == 0
    assert by_target[bob]["status"] == "failed" and by_target[carol]["status"] in ("failed", "incomplete")
    assert target_view(node, alice, alice_pw) == view

    # state per mailbox in rupost_logs; --resume skips what is done
    status = json.loads(migrate(node, "status", "--source", url, "--json").stdout)
    rows = {r["target"]: r for r in status}
    assert rows[alice]["status"] == "done" and rows[alice]["runs"] == 2 and rows[alice]["source_messages"] == 1000
    assert "login as bob" in rows[bob]["error"]
    resumed = json.loads(migrate(node, "imap", "--source", url, "--map", str(mapfile), "--ca-file", str(cert),
                                 "--resume", "--json").stdout)
    assert {r["target"]: r["status"] for r in resumed["results"]}[alice] == "skipped"

    # an unverifiable certificate is a per-mailbox failure too, naming the problem
    single = tmp_path / "single.csv"
    single.write_text(f"alice,alice-src-pw,{alice}\n")
    untrusted = migrate(node, "imap", "--source", url, "--map", str(single))
    assert untrusted.returncode == 2 and "certificate" in untrusted.stdout.lower(), untrusted.stdout


def test_bad_map_and_source_are_refused_before_anything_runs(node, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("alice,pw\nbob,,bob@x.test\ncarol,pw,not-an-address\n")
    proc = migrate(node, "imap", "--source", "imaps://localhost:1", "--map", str(bad), "--insecure")
    assert proc.returncode == 1
    assert "line 1" in proc.stderr and "line 2" in proc.stderr and "line 3" in proc.stderr
    proc = migrate(node, "imap", "--source", "ftp://host", "--map", str(bad))
    assert proc.returncode == 1 and "imaps://HOST" in proc.stderr
