"""Real third-party clients from Debian packages, configured as a user would: msmtp sends
through submission (465), mbsync (isync) synchronises a local Maildir both ways, folders
included, over IMAPS (993), fetchmail fetches over IMAPS into a local delivery agent, and mutt
reads over IMAPS, copying the messages to a local mailbox."""
from __future__ import annotations

import email
import email.policy
import os
import re
import subprocess
import uuid
from mailbox import mbox
from pathlib import Path

from mailclients import IMAPSFrom, inbox_subjects, message, smtp, wait_for_subject

from support.cluster import wait_until


def private_file(path: Path, text: str) -> Path:
    path.write_text(text)
    os.chmod(path, 0o600)  # msmtp refuses a configuration holding a password that others can read
    return path


def test_msmtp_sends_through_submission(node, mailbox, tmp_path):
    sender, password = mailbox("msmtpuser")
    rcpt, rcpt_password = mailbox("msmtprcpt")
    conf = private_file(tmp_path / "msmtprc", "\n".join([
        "defaults", "tls on", "tls_starttls off", "tls_certcheck off", "logfile -",
        "account rupost", "host 127.0.0.1", f"port {node.ports['submissions']}", "auth plain",
        f"user {sender}", f"password {password}", f"from {sender}", "account default : rupost", ""]))
    subject = f"msmtp {uuid.uuid4().hex[:8]}"
    sent = subprocess.run(["msmtp", "-C", str(conf), "-t"], input=message(sender, rcpt, subject).as_string(),
                          capture_output=True, text=True, timeout=60)
    assert sent.returncode == 0, sent.stdout + sent.stderr
    raw = wait_for_subject(node.ports["imaps"], rcpt, rcpt_password, subject)
    assert f"From: {sender}".encode() in raw


def mbsync(conf: Path) -> None:
    done = subprocess.run(["mbsync", "-c", str(conf), "-a"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_mbsync_synchronises_mail_and_folders_both_ways(node, mailbox, tmp_path):
    user, password = mailbox("syncuser")
    subject = f"to sync {uuid.uuid4().hex[:8]}"
    with smtp(node.ports["smtp"]) as client:
        assert client.send_message(message("partner@example.org", user, subject)) == {}
    wait_for_subject(node.ports["imaps"], user, password, subject)
    local = tmp_path / "Mail"
    local.mkdir()
    # the TLS session is openssl's (the node's certificate is self-signed); IMAP is mbsync's own
    tunnel = f"openssl s_client -quiet -verify_quiet -connect 127.0.0.1:{node.ports['imaps']} 2>/dev/null"
    conf = private_file(tmp_path / "mbsyncrc", "\n".join([
        "IMAPAccount rupost", f'Tunnel "{tunnel}"', f"User {user}", f"Pass {password}", "AuthMechs LOGIN",
        "", "IMAPStore remote", "Account rupost", "",
        "MaildirStore local", f"Path {local}/", f"Inbox {local}/INBOX", "SubFolders Verbatim", "",
        "Channel rupost", "Far :remote:", "Near :local:", "Patterns *", "Create Both", "Expunge Both",
        "SyncState *", ""]))
    mbsync(conf)
    synced = [p.read_bytes() for p in (local / "INBOX" / "new").iterdir()] + \
        [p.read_bytes() for p in (local / "INBOX" / "cur").iterdir()]
    assert any(subject.encode() in m for m in synced), "the message did not reach the local INBOX"
    assert (local / "Sent").is_dir() and (local / "Trash").is_dir()  # the server's folders

    # a folder and a message made locally appear on the server
    project = local / "Projects"
    for sub in ("cur", "new", "tmp"):
        (project / sub).mkdir(parents=True)
    local_subject = f"made locally {uuid.uuid4().hex[:8]}"
    (project / "new" / f"{uuid.uuid4().hex}.local").write_text(
        message(user, user, local_subject).as_string())
    mbsync(conf)
    imap = IMAPSFrom("127.0.0.1", node.ports["imaps"])
    try:
        imap.login(user, password)
        assert imap.select("Projects")[0] == "OK"
        _, data = imap.search(None, "SUBJECT", f'"{local_subject}"')
        assert data[0].split(), "the local message did not reach the server's Projects folder"
        # a folder made on the server appears locally
        assert imap.create("FromServer")[0] == "OK"
    finally:
        imap.logout()
    mbsync(conf)
    assert (local / "FromServer").is_dir()

    # moves, both ways: on the server, the first message into FromServer; locally, the one
    # made locally into INBOX (a mail client's move in Maildir: the file renamed into the
    # other folder, without the ",U=" of the folder it came from, as mbsync asks)
    imap = IMAPSFrom("127.0.0.1", node.ports["imaps"])
    try:
        imap.login(user, password)
        imap.select("INBOX")
        _, data = imap.uid("SEARCH", "SUBJECT", f'"{subject}"')
        assert imap.uid("MOVE", data[0].split()[0].decode(), "FromServer")[0] == "OK"
    finally:
        imap.logout()
    moved = next(p for sub in ("cur", "new") for p in (project / sub).iterdir()
                 if local_subject.encode() in p.read_bytes())
    moved.rename(local / "INBOX" / "cur" / re.sub(r",U=\d+", "", moved.name))
    mbsync(conf)

    def local_subjects(folder: str) -> list[bytes]:
        return [p.read_bytes() for sub in ("cur", "new") for p in (local / folder / sub).iterdir()]

    assert any(subject.encode() in m for m in local_subjects("FromServer")), "the server's move did not reach here"
    assert not any(subject.encode() in m for m in local_subjects("INBOX"))
    imap = IMAPSFrom("127.0.0.1", node.ports["imaps"])
    try:
        imap.login(user, password)
        for folder, subject_there, expected in (("INBOX", local_subject, True), ("Projects", local_subject, False),
                                                ("FromServer", subject, True), ("INBOX", subject, False)):
            imap.select(folder)
            _, data = imap.search(None, "SUBJECT", f'"{subject_there}"')
            assert bool(data[0].split()) is expected, f"{subject_there!r} in the server's {folder}: {data}"
    finally:
        imap.logout()


def send_two(node, user: str, what: str) -> dict[str, str]:
    """Two messages with unique subjects through port 25; subject -> body."""
    tag = uuid.uuid4().hex[:8]
    sent = {f"{what} {n} {tag}": f"body number {n} of {tag}\n" for n in (1, 2)}
    with smtp(node.ports["smtp"]) as client:
        for subject, body in sent.items():
            assert client.send_message(message("partner@example.org", user, subject, body)) == {}
    return sent


def fetchmail(conf: Path, home: Path) -> subprocess.CompletedProcess:
    # FETCHMAILHOME: its lock and the ids of fetched messages stay in the test's directory
    return subprocess.run(["fetchmail", "-f", str(conf), "--nodetach"], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "FETCHMAILHOME": str(home)})


def test_fetchmail_fetches_over_imaps_checking_the_certificate(node, mailbox, tmp_path):
    user, password = mailbox("fetcher")
    sent = send_two(node, user, "to fetch")
    # read without marking them seen: fetchmail fetches the unseen
    assert wait_until(lambda: sorted(inbox_subjects("127.0.0.1", node.ports["imaps"], user, password)) == sorted(sent),
                      timeout=20), "the messages did not arrive"
    delivered = tmp_path / "delivered"
    delivered.mkdir()
    host = node.config.fqdn
    conf = private_file(tmp_path / "fetchmailrc", "\n".join([
        "set no syslog",
        f"poll {host} via 127.0.0.1 service {node.ports['imaps']} protocol IMAP",
        f'  user "{user}" password "{password}"',
        # the node's self-signed certificate is the only trust anchor, its name the mail host's
        f"  ssl sslcertck sslcertfile {node.layout.current / 'tls' / 'mail.crt'} sslcommonname {host}",
        # a local delivery agent: one file per message
        f"  mda \"/bin/sh -c 'cat > {delivered}/$$.eml'\"", ""]))
    done = fetchmail(conf, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr  # 0: mail was fetched
    fetched = [email.message_from_bytes(p.read_bytes(), policy=email.policy.default) for p in delivered.iterdir()]
    assert {m["Subject"]: m.get_content() for m in fetched} == sent
    # fetched messages are deleted on the server (no "keep"), so a second run finds nothing
    assert inbox_subjects("127.0.0.1", node.ports["imaps"], user, password) == []
    again = fetchmail(conf, tmp_path)
    assert again.returncode == 1, again.stdout + again.stderr  # 1: no mail


def test_mutt_reads_over_imaps_and_copies_the_messages(node, mailbox, tmp_path):
    user, password = mailbox("muttreader")
    sent = send_two(node, user, "to read")
    for subject in sent:
        wait_for_subject(node.ports["imaps"], user, password, subject)
    saved = tmp_path / "saved.mbox"
    login = user.replace("@", "%40")
    conf = private_file(tmp_path / "muttrc", "\n".join([
        f'set folder="imaps://{login}@127.0.0.1:{node.ports["imaps"]}/"', f'set imap_pass="{password}"',
        'set spoolfile="+INBOX"', "set ssl_force_tls=yes",
        # the node's self-signed certificate is trusted; any other would stop mutt at a question
        f'set certificate_file="{node.layout.current / "tls" / "mail.crt"}"',
        "set confirmcreate=no", "set quit=yes", "set mbox_type=mbox", ""]))
    # mutt is a terminal program: `script` gives it one; the pushed keys tag every message, copy
    # them to a local mailbox and quit
    keys = f"<tag-pattern>~A<enter><tag-prefix><copy-message>{saved}<enter><quit>"
    done = subprocess.run(["script", "-qec", f"mutt -n -F {conf} -e 'push \"{keys}\"'", "/dev/null"],
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "HOME": str(tmp_path), "TERM": "xterm"})
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr
    assert saved.exists(), done.stdout[-2000:]
    copied = {m["Subject"]: m.get_payload() for m in mbox(str(saved))}
    assert copied == sent
