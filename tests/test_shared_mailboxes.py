"""Shared mailboxes over IMAP (dovecot's shared namespace and ACL plugin, members from
PostgreSQL), and send-as / send-on-behalf rights at submission (smtpd_sender_login_maps and
the policy server's Sender: header), with real clients: imaplib, mbsync, msmtp, smtplib."""
from __future__ import annotations

import imaplib
import json
import os
import re
import smtplib
import subprocess
import urllib.parse
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner

from mailclients import IMAPSFrom, message, smtp, smtps, wait_for_subject
from rupost.cli import main as rupost
from rupost.errors import NotFoundError, ValidationError


def cli(node, *args):
    return CliRunner().invoke(rupost, ["--root", str(node.root), *args], catch_exceptions=False)


def deliver(node, to: str, subject: str) -> None:
    with smtp(node.ports["smtp"]) as client:
        assert client.send_message(message("partner@example.org", to, subject)) == {}


def imap(node, user: str, password: str) -> IMAPSFrom:
    session = IMAPSFrom("127.0.0.1", node.ports["imaps"])
    session.login(user, password)
    return session


def listed(session: IMAPSFrom, pattern: str = "*") -> list[str]:
    _, data = session.list('""', pattern)
    return [re.sub(r'^\(.*?\) "/" ', "", line.decode()).strip('"') for line in data if line]


def subjects(session: IMAPSFrom, folder: str) -> list[str]:
    assert session.select(f'"{folder}"')[0] == "OK", folder
    _, data = session.search(None, "ALL")
    found = []
    for num in data[0].split():
        _, fetched = session.fetch(num, "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        found.append(fetched[0][1].decode().split(":", 1)[1].strip())
    return found


@pytest.fixture
def team(node, mailbox, domain):
    """info@ shared with alice and bob (read, write, insert, delete), a read-only reader; carol is no member."""
    info = f"info@{domain}"
    out = cli(node, "shared-mailboxes", "add", info, "--name", "Team info", "--quota", "1M")
    assert out.exit_code == 0, out.output
    users = {name: mailbox(name) for name in ("alice", "bob", "reader", "carol")}
    for name in ("alice", "bob"):
        out = cli(node, "shared-mailboxes", "members", info, users[name][0], "--rights", "read,write,insert,delete")
        assert out.exit_code == 0, out.output
    node.app.shared_mailboxes.set_member(info, users["reader"][0], "read")
    return info, users


def test_two_members_read_and_move_messages_a_non_member_sees_nothing(node, team, tmp_path):
    info, users = team
    first, second = (f"for the team {uuid.uuid4().hex[:8]}" for _ in range(2))
    deliver(node, info, first)
    deliver(node, info, second)
    shared_inbox = f"Shared/{info}"  # the shared INBOX: LIST shows it under the owner's name

    alice = imap(node, *users["alice"])
    try:
        assert shared_inbox in listed(alice), repr(listed(alice))
        _, rights = alice.myrights(f'"{shared_inbox}"')
        letters = set(rights[0].decode().split()[-1])
        assert set("lrwsipktex") <= letters and "a" not in letters, rights  # no "administer" right
        wait_for_shared(alice, shared_inbox, {first, second})
        assert alice.create(f'"Shared/{info}/Done"')[0] == "OK"
        alice.select(f'"{shared_inbox}"')
        _, found = alice.search(None, "SUBJECT", f'"{first}"')
        assert alice._simple_command("MOVE", found[0].split()[0].decode(), f'"Shared/{info}/Done"')[0] == "OK"
    finally:
        alice.logout()

    # bob, with a real client: mbsync copies the shared folders to a local Maildir
    local = tmp_path / "Mail"
    conf = mbsync_conf(node, tmp_path, *users["bob"], local, f"Shared/{info}/*")
    mbsync(conf)
    done = local / "Shared" / info / "Done"
    assert any(first.encode() in p.read_bytes() for p in [*(done / "cur").iterdir(), *_new(done)]), \
        "bob's mbsync did not see the message alice moved"
    bob = imap(node, *users["bob"])
    try:
        assert subjects(bob, f"Shared/{info}/Done") == [first]
        bob.select(f'"{shared_inbox}"')
        _, found = bob.search(None, "SUBJECT", f'"{second}"')
        assert bob._simple_command("MOVE", found[0].split()[0].decode(), f'"Shared/{info}/Done"')[0] == "OK"
        assert sorted(subjects(bob, f"Shared/{info}/Done")) == sorted([first, second])
        assert subjects(bob, shared_inbox) == []
    finally:
        bob.logout()

    carol = imap(node, *users["carol"])
    try:
        assert not [name for name in listed(carol) if name.startswith("Shared/")]
        assert carol.select(f'"{shared_inbox}"')[0] == "NO"
    finally:
        carol.logout()
    # the shared mailbox has no login of its own, and cannot be given one
    with pytest.raises(imaplib.IMAP4.error):
        imap(node, info, "!shared")
    with pytest.raises(ValidationError, match="is a shared mailbox: it has no login of its own"):
        node.app.mailboxes.set_password(info, "a-password-for-info")


def _new(folder: Path) -> list[Path]:
    return list((folder / "new").iterdir()) if (folder / "new").is_dir() else []


def wait_for_shared(session: IMAPSFrom, folder: str, expected: set[str]) -> None:
    import time

    deadline = time.monotonic() + 20
    while not expected <= set(subjects(session, folder)):
        assert time.monotonic() < deadline, f"{expected} not in {folder}: {subjects(session, folder)}"
        time.sleep(0.3)


def mbsync_conf(node, tmp_path: Path, user: str, password: str, local: Path, pattern: str) -> Path:
    local.mkdir()
    tunnel = f"openssl s_client -quiet -verify_quiet -connect 127.0.0.1:{node.ports['imaps']} 2>/dev/null"
    conf = tmp_path / "mbsyncrc"
    conf.write_text("\n".join([
        # mbsync's own 20 s timeout is less than this loaded machine sometimes needs
        "IMAPAccount rupost", f'Tunnel "{tunnel}"', f"User {user}", f"Pass {password}", "AuthMechs LOGIN",
        "Timeout 120", "", "IMAPStore remote", "Account rupost", "",
        "MaildirStore local", f"Path {local}/", f"Inbox {local}/INBOX", "SubFolders Verbatim", "",
        "Channel rupost", "Far :remote:", "Near :local:", f'Patterns "{pattern}"', "Create Near", "Sync Pull",
        "SyncState *", ""]))
    os.chmod(conf, 0o600)
    return conf


def mbsync(conf: Path) -> None:
    done = subprocess.run(["mbsync", "-c", str(conf), "-a"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def _webmail_folders(mailboxes: list[dict]) -> set[str]:
    return {m["path"] for m in mailboxes} | {p for m in mailboxes for p in _webmail_folders(m["children"])}


def test_webmail_shows_the_shared_mailbox_to_its_members(node, team):
    """SOGo lists the shared namespace under "Other users" by the mailbox's display name,
    and reads it over the member's own IMAP session."""
    from test_address_books import WebmailUser

    info, users = team
    subject = f"in webmail {uuid.uuid4().hex[:8]}"
    deliver(node, info, subject)
    alice = WebmailUser(node, *users["alice"])
    _, folders = alice._call("GET", f"{alice._base()}/Mail/0/view")
    shared = [c for m in folders["mailboxes"] if m["type"] == "otherUsers" for c in m["children"]]
    assert [(c["path"], c["name"]) for c in shared] == [(f"Shared/{info}", "Team info")], folders
    session = imap(node, *users["alice"])
    try:
        wait_for_shared(session, f"Shared/{info}", {subject})
    finally:
        session.logout()
    _, listing = alice._call("POST", f"{alice._base()}/Mail/0/folderShared/folder{urllib.parse.quote(info)}/view",
                             {"sortingAttributes": {"sort": "date", "asc": 0}})
    assert subject in [row[listing["headers"][0].index("Subject")] for row in listing["headers"][1:]], listing
    carol = WebmailUser(node, *users["carol"])
    _, folders = carol._call("GET", f"{carol._base()}/Mail/0/view")
    assert not [p for p in _webmail_folders(folders["mailboxes"]) if p.startswith("Shared")], folders


def test_rights_are_enforced_and_follow_the_database(node, team):
    info, users = team
    subject = f"read only {uuid.uuid4().hex[:8]}"
    deliver(node, info, subject)
    shared_inbox = f"Shared/{info}"  # the shared INBOX: LIST shows it under the owner's name
    reader = imap(node, *users["reader"])
    try:
        wait_for_shared(reader, shared_inbox, {subject})
        reader.select(f'"{shared_inbox}"')
        _, found = reader.search(None, "SUBJECT", f'"{subject}"')
        num = found[0].split()[0]
        # no "delete" right: the flag is not set (RFC 4314 lets STORE ignore it), no expunge
        reader.store(num, "+FLAGS", "\\Deleted")
        _, flags = reader.fetch(num, "(FLAGS)")
        assert b"\\Deleted" not in flags[0], flags
        assert reader.expunge()[0] == "NO" or subjects(reader, shared_inbox).count(subject) == 1
        assert reader.append(f'"{shared_inbox}"', None, None, message(info, info, "x").as_bytes())[0] == "NO"
    finally:
        reader.logout()
    # removing the member: the mailbox disappears from its LIST at once
    out = cli(node, "shared-mailboxes", "members", info, users["reader"][0], "--remove")
    assert out.exit_code == 0, out.output
    reader = imap(node, *users["reader"])
    try:
        assert shared_inbox not in listed(reader)
        assert reader.select(f'"{shared_inbox}"')[0] == "NO"
    finally:
        reader.logout()
    listing = cli(node, "shared-mailboxes", "list", "--domain", info.split("@")[1], "--json")
    assert listing.exit_code == 0 and [m["address"] for m in json.loads(listing.output)[0]["members"]] == \
        sorted([users["alice"][0], users["bob"][0]]), listing.output


def _sees(node, user: str, password: str, shared_inbox: str) -> tuple[bool, str]:
    """(LIST shows it, the rights MYRIGHTS gives or "NO") for a fresh login of `user`."""
    session = imap(node, user, password)
    try:
        shown = shared_inbox in listed(session)
        status, data = session._simple_command("MYRIGHTS", f'"{shared_inbox}"')
        if status != "OK":
            return shown, "NO"
        _, rights = session._untagged_response(status, data, "MYRIGHTS")
        # in RFC 4314's order, without RFC 2086's "c" and "d" dovecot adds for old clients
        letters = set(rights[0].decode().split()[-1]) - {"c", "d"}
        return shown, "".join(c for c in "lrwstipekxa" if c in letters)
    finally:
        session.logout()


def test_a_group_member_follows_the_group_live_and_setacl_is_refused(node, team, domain):
    """A distribution list as a member: its current members hold its rights (dovecot's
    group= ACL and the userdb's acl_groups); a member added to or removed from the list by
    the CLI gains or loses the shared mailbox at its next login, no sync. Nobody holds the
    administer right: SETACL is refused, so the ACL file stays what the database says."""
    info, users = team
    shared_inbox = f"Shared/{info}"
    group = f"helpers@{domain}"
    out = cli(node, "distribution-lists", "add", group, "--member", users["carol"][0])
    assert out.exit_code == 0, out.output
    out = cli(node, "shared-mailboxes", "members", info, group, "--rights", "read,insert")
    assert out.exit_code == 0 and f"group {group} (read,insert)" in out.output, out.output
    assert _sees(node, *users["carol"], shared_inbox) == (True, "lrsipk")
    subject = f"by a group member {uuid.uuid4().hex[:8]}"
    carol = imap(node, *users["carol"])
    try:
        assert carol.append(f'"{shared_inbox}"', None, None, message(info, info, subject).as_bytes())[0] == "OK"
        assert subject in subjects(carol, shared_inbox)
    finally:
        carol.logout()

    # out of the group: the next login neither lists nor opens it
    out = cli(node, "distribution-lists", "members", "remove", group, users["carol"][0])
    assert out.exit_code == 0, out.output
    assert _sees(node, *users["carol"], shared_inbox) == (False, "NO")
    # back into the group: back in the shared mailbox
    out = cli(node, "distribution-lists", "members", "add", group, users["carol"][0])
    assert out.exit_code == 0, out.output
    assert _sees(node, *users["carol"], shared_inbox) == (True, "lrsipk")
    # a member with a grant of its own keeps exactly that (dovecot: user= overrides group=)
    node.app.distribution_lists.add_members(group, [users["reader"][0]])
    assert _sees(node, *users["reader"], shared_inbox) == (True, "lrs")
    node.app.distribution_lists.remove_members(group, [users["carol"][0]])

    # SETACL: alice (read,write,insert,delete) may not hand out rights; the file is unchanged
    acl_file = node.app.shared_mailboxes._acl_dir(info) / "dovecot-acl"
    before = acl_file.read_text()
    assert f"group={group} lrsipk" in before and " lrwstipekx\n" in before and "a" not in before.split()[1]
    alice = imap(node, *users["alice"])
    try:
        status, data = alice._simple_command("SETACL", f'"{shared_inbox}"', users["carol"][0], "lrswipkxtea")
        assert status == "NO", (status, data)
    finally:
        alice.logout()
    assert acl_file.read_text() == before
    assert _sees(node, *users["carol"], shared_inbox) == (False, "NO")
    # the repair rewrites every shared mailbox's file from the database: the same text
    acl_file.write_text("owner lrwstipekxa\nanyone lrwstipekxa\n")
    out = cli(node, "shared-mailboxes", "sync")
    assert out.exit_code == 0 and f"ACL of {info} written" in out.output, out.output
    assert acl_file.read_text() == before

    # the list removed: its line leaves the ACL file (a new list of that name has no rights)
    node.app.distribution_lists.remove(group)
    assert f"group={group}" not in acl_file.read_text()
    assert [m["address"] for m in node.app.shared_mailboxes.show(info)["members"] if m["group"]] == []


def test_a_removed_member_recreated_under_the_same_address_has_no_rights(node, team):
    info, users = team
    bob = users["bob"][0]
    node.app.mailboxes.remove(bob)
    assert bob not in [m["address"] for m in node.app.shared_mailboxes.show(info)["members"]]
    password = f"pw-{uuid.uuid4().hex[:12]}"
    node.app.mailboxes.add(bob, password)
    session = imap(node, bob, password)
    try:
        assert session.select(f'"Shared/{info}"')[0] == "NO"  # the ACL file lost bob with his mailbox
    finally:
        session.logout()


def test_the_quota_of_the_shared_mailbox_holds_at_delivery(node, team):
    """Its own quota (1M, the fixture's), not its members': dovecot's LMTP refuses a message
    over it with 552 5.2.2 after DATA (postfix then bounces it to the sender)."""
    info, users = team
    big = message("partner@example.org", info, "too big", body="x" * 1_500_000 + "\n").as_bytes()
    with smtplib.LMTP(str(node.layout.run_dir("dovecot") / "lmtp")) as lmtp:
        lmtp.ehlo("tests")  # LHLO
        assert lmtp.mail("partner@example.org")[0] == 250
        assert lmtp.rcpt(info)[0] == 250
        code, reply = lmtp.data(big)
    assert code == 552 and b"5.2.2" in reply, (code, reply)
    # a member's own mailbox (no quota) takes the same message
    with smtplib.LMTP(str(node.layout.run_dir("dovecot") / "lmtp")) as lmtp:
        lmtp.ehlo("tests")
        lmtp.mail("partner@example.org")
        lmtp.rcpt(users["alice"][0])
        assert lmtp.data(big)[0] == 250


@pytest.mark.parametrize("rights, expected", [
    ("read,fly", "unknown right 'fly'"),
    ("", "no rights given"),
])
def test_bad_rights_are_refused_and_nothing_changes(node, team, rights, expected):
    info, users = team
    with pytest.raises(ValidationError, match=expected):
        node.app.shared_mailboxes.set_member(info, users["carol"][0], rights)
    assert users["carol"][0] not in [m["address"] for m in node.app.shared_mailboxes.show(info)["members"]]
    with pytest.raises(NotFoundError, match="is neither a mailbox nor a distribution list"):
        node.app.shared_mailboxes.set_member(info, f"ghost@{info.split('@')[1]}", "read")
    with pytest.raises(ValidationError, match="administer right is not granted"):
        node.app.shared_mailboxes.set_member(info, users["carol"][0], "read,administer")


# ---------------------------------------------------------------------- send-as, send-on-behalf
def submit(node, user: str, password: str, sender: str, to: str, subject: str):
    """Submit over 465; returns None when accepted, else (code, reply) of the refusal."""
    with smtps(node.ports["submissions"]) as client:
        client.login(user, password)
        try:
            client.send_message(message(sender, to, subject), from_addr=sender)
        except smtplib.SMTPSenderRefused as exc:
            return exc.smtp_code, exc.smtp_error
        except smtplib.SMTPRecipientsRefused as exc:
            return next(iter(exc.recipients.values()))
    return None


def test_send_as_a_member_is_accepted_a_non_member_refused_553(node, team, mailbox, domain):
    info, users = team
    rcpt, rcpt_password = mailbox("customer")
    out = cli(node, "mailboxes", "send-as", "grant", info, users["alice"][0])
    assert out.exit_code == 0, out.output
    subject = f"as info {uuid.uuid4().hex[:8]}"
    assert submit(node, *users["alice"], info, rcpt, subject) is None
    raw = wait_for_subject(node.ports["imaps"], rcpt, rcpt_password, subject)
    assert f"From: {info}".encode() in raw and b"\nSender:" not in raw

    code, reply = submit(node, *users["carol"], info, rcpt, "not allowed")
    assert code == 553 and b"5.7.1" in reply and b"not owned by user " + users["carol"][0].encode() in reply, reply

    # a group: members of a distribution list hold the right as long as they are members
    team_list = f"team@{domain}"
    node.app.distribution_lists.add(team_list, members=[users["carol"][0]])
    node.app.sender_rights.grant(info, team_list, "send-as")
    assert submit(node, *users["carol"], info, rcpt, f"as a group member {uuid.uuid4().hex[:8]}") is None
    listing = cli(node, "mailboxes", "send-as", "list", info, "--json")
    assert team_list in listing.output and users["alice"][0] in listing.output

    # revoked: refused again at once (a live lookup, nothing reloaded)
    out = cli(node, "mailboxes", "send-as", "revoke", info, users["alice"][0])
    assert out.exit_code == 0, out.output
    code, reply = submit(node, *users["alice"], info, rcpt, "revoked")
    assert code == 553 and b"5.7.1" in reply, reply


def test_send_on_behalf_sets_sender_through_msmtp(node, team, mailbox, tmp_path):
    info, users = team
    rcpt, rcpt_password = mailbox("client")
    bob, bob_password = users["bob"]
    node.app.sender_rights.grant(info, bob, "send-on-behalf")
    conf = tmp_path / "msmtprc"
    conf.write_text("\n".join([
        "defaults", "tls on", "tls_starttls off", "tls_certcheck off", "logfile -",
        "account rupost", "host 127.0.0.1", f"port {node.ports['submissions']}", "auth plain",
        f"user {bob}", f"password {bob_password}", f"from {info}", "account default : rupost", ""]))
    os.chmod(conf, 0o600)
    subject = f"on behalf {uuid.uuid4().hex[:8]}"
    written = message(info, rcpt, subject)
    written["Sender"] = "someone-else@example.org"  # what a client writes is replaced, not doubled
    sent = subprocess.run(["msmtp", "-C", str(conf), "-t"], input=written.as_string(),
                          capture_output=True, text=True, timeout=60)
    assert sent.returncode == 0, sent.stdout + sent.stderr
    raw = wait_for_subject(node.ports["imaps"], rcpt, rcpt_password, subject)
    headers = raw.split(b"\r\n\r\n", 1)[0].decode()
    assert f"From: {info}" in headers and re.findall(r"^Sender:[^\r\n]*", headers, re.M) == [f"Sender: {bob}"], headers
    assert "X-RuPost-On-Behalf-Of" not in headers and "someone-else" not in headers

    # bob sending as himself gets no Sender:; with send-as as well he sends as info@ plainly
    node.app.sender_rights.grant(info, bob, "send-as")
    subject = f"now as {uuid.uuid4().hex[:8]}"
    assert submit(node, bob, bob_password, info, rcpt, subject) is None
    raw = wait_for_subject(node.ports["imaps"], rcpt, rcpt_password, subject)
    assert b"\nSender:" not in raw.split(b"\r\n\r\n", 1)[0]


# ---------------------------------------------------------------------- pure pieces
@pytest.mark.parametrize("rights, letters", [
    ("read", "lrs"),
    ("read,write,insert,delete", "lrwsipktex"),
    (["insert"], "lipk"),
    ("delete, read", "lrstex"),
])
def test_rights_become_acl_letters_in_rfc_4314_order(rights, letters):
    from rupost.services.shared_mailboxes import rights_letters, rights_names

    assert rights_letters(rights) == "".join(c for c in "lrwstipekxa" if c in letters)
    assert set(rights_names(rights_letters(rights))) == set(
        [r.strip() for r in rights.split(",")] if isinstance(rights, str) else rights)


def test_the_acl_file_keeps_the_owner_and_lists_members_sorted():
    from rupost.services.shared_mailboxes import render_acl

    assert render_acl([("bob@x.test", "lrs"), ("alice@x.test", "lrwsipk")]) == (
        "owner lrwstipekx\nuser=alice@x.test lrwsipk\nuser=bob@x.test lrs\n")
    assert render_acl([("bob@x.test", "lrs")], [("team@x.test", "lrwsipk")]) == (
        "owner lrwstipekx\nuser=bob@x.test lrs\ngroup=team@x.test lrwsipk\n")


def test_the_quota_of_the_shared_mailbox_holds_for_members_saves(node, team):
    """Members' APPENDs into the shared mailbox count against the shared mailbox's own quota
    (1M, the fixture's), across sessions and members, and are refused over it although the
    members have none; a delivery sees what they saved."""
    info, users = team
    shared_inbox = f"Shared/{info}"
    big = message(info, info, "too big for info", body="x" * 1_500_000 + "\n").as_bytes()
    part = message(info, info, "two thirds of info", body="y" * 650_000 + "\n").as_bytes()
    alice = imap(node, *users["alice"])
    try:
        status, data = alice.append(f'"{shared_inbox}"', None, None, big)
        assert status == "NO" and b"[OVERQUOTA]" in data[0], (status, data)
        assert alice.append('"INBOX"', None, None, big)[0] == "OK"  # her own mailbox has no quota
        assert alice.append(f'"{shared_inbox}"', None, None, part)[0] == "OK"
    finally:
        alice.logout()
    bob = imap(node, *users["bob"])
    try:
        status, data = bob.append(f'"{shared_inbox}"', None, None, part)
        assert status == "NO" and b"[OVERQUOTA]" in data[0], (status, data)
    finally:
        bob.logout()
    with lmtp_client(node) as lmtp:
        lmtp.ehlo("tests")
        lmtp.mail("partner@example.org")
        assert lmtp.rcpt(info)[0] == 250
        code, reply = lmtp.data(part)
    assert code == 552 and b"5.2.2" in reply, (code, reply)
    # a higher quota: members may save again (the limit is written where their sessions read it);
    # a member's own quota holds in their own mailbox only
    node.app.mailboxes.set_quota(info, "3M")
    node.app.mailboxes.set_quota(users["bob"][0], "100K")
    bob = imap(node, *users["bob"])
    try:
        assert bob.append(f'"{shared_inbox}"', None, None, part)[0] == "OK"
        status, data = bob.append('"INBOX"', None, None, part)
        assert status == "NO" and b"[OVERQUOTA]" in data[0], (status, data)
    finally:
        bob.logout()


def lmtp_client(node) -> smtplib.LMTP:
    return smtplib.LMTP(str(node.layout.run_dir("dovecot") / "lmtp"))
