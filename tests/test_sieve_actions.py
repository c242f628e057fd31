"""Forwarding and vacation rules that users set up themselves (ManageSieve, SOGo's Forward and
Vacation pages write the same Sieve) are carried out through the node's own postfix: uploaded
here with a real ManageSieve client, sieve-connect (Debian package)."""
from __future__ import annotations

import json
import os
import re
import subprocess
import time
import uuid

from mailclients import UNREACHABLE, inbox_subjects, message, smtp, wait_for_subject


def upload_sieve(node, tmp_path, user: str, password: str, script: str) -> None:
    path = tmp_path / "rules.sieve"
    path.write_text(script)
    for action in (["--upload", "--localsieve", str(path)], ["--activate"]):
        done = subprocess.run(["sieve-connect", "--server", "127.0.0.1", "--port", str(node.ports["sieve"]),
                               "--user", user, "--passwordfd", "0", "--notlsverify", "--remotesieve", "rules",
                               *action], input=password + "\n", capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr


def test_redirect_and_vacation_reach_their_targets(node, mailbox, tmp_path):
    user, password = mailbox("traveller")
    target, target_password = mailbox("deputy")
    sender, sender_password = mailbox("colleague")
    upload_sieve(node, tmp_path, user, password, (
        'require ["vacation", "copy"];\n'
        f'redirect :copy "{target}";\n'
        'vacation :days 1 :subject "Away until Monday" "I am travelling; my deputy has your message.";\n'))
    tag = uuid.uuid4().hex[:8]
    for n in (1, 2):
        with smtp(node.ports["smtp"]) as client:  # the node itself: a trusted relay for hosted senders
            assert client.send_message(message(sender, user, f"question {n} {tag}")) == {}
        wait_for_subject(node.ports["imaps"], user, password, f"question {n} {tag}")  # kept: :copy
        forwarded = wait_for_subject(node.ports["imaps"], target, target_password, f"question {n} {tag}")
        assert f"X-Sieve-Redirected-From: {user}".encode() in forwarded
    reply = wait_for_subject(node.ports["imaps"], sender, sender_password, "Away until Monday")
    assert b"my deputy has your message" in reply
    time.sleep(3)  # the second question must not bring a second answer (:days 1)
    assert inbox_subjects("127.0.0.1", node.ports["imaps"], sender, sender_password).count("Away until Monday") == 1
    # this user's deliveries only: the log is the session's (other tests make actions fail on purpose)
    mine = [line for line in node.layout.log_file("dovecot").read_text().splitlines() if f"lmtp({user})" in line]
    assert mine and not [line for line in mine if "failed to redirect" in line or "failed to send vacation" in line]


def queued(node) -> list[dict]:
    conf = node.layout.component_config("postfix")
    out = subprocess.run(["postqueue", "-c", str(conf), "-j"], capture_output=True, text=True, check=True).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def wait_for_queued(node, recipient: str, sender_prefix: str, timeout: float = 60) -> dict:
    """The queued message to `recipient` whose envelope sender starts with `sender_prefix` (the
    forward passes postfix_forward first: before that its sender is still the original)."""
    deadline = time.monotonic() + timeout
    while True:
        found = [m for m in queued(node) if [r["address"] for r in m["recipients"]] == [recipient]
                 and m["sender"].startswith(sender_prefix)]
        if found:
            return found[0]
        assert time.monotonic() < deadline, f"no message to {recipient} from {sender_prefix}... in the queue: " \
                                            f"{[(m['sender'], m['recipients']) for m in queued(node)]}"
        time.sleep(0.5)


def srs_pattern(node, origin: str) -> re.Pattern:
    local, domain = origin.split("@")
    mail_host = re.escape(node.app.settings.mail_host())
    return re.compile(rf"SRS0=[^=]+=[^=]+={re.escape(domain)}={re.escape(local)}@{mail_host}", re.IGNORECASE)


def test_a_forward_that_cannot_leave_yet_keeps_the_original_and_waits_in_the_queue_with_an_srs_sender(
        node, mailbox, tmp_path):
    user, password = mailbox("forwarder")
    far = f"away-{uuid.uuid4().hex[:6]}@[{UNREACHABLE}]"
    upload_sieve(node, tmp_path, user, password, f'require ["copy"];\nredirect :copy "{far}";\n')
    subject = f"to forward {uuid.uuid4().hex[:8]}"
    with smtp(node.ports["smtp"]) as client:
        assert client.send_message(message("partner@example.org", user, subject)) == {}
    wait_for_subject(node.ports["imaps"], user, password, subject)  # the original, at once
    try:
        forward = wait_for_queued(node, far, "SRS0=")
        # it leaves with a sender of the mail host that encodes the original one: the
        # receiver's SPF check passes, and a bounce comes back here to be reversed
        assert srs_pattern(node, "partner@example.org").fullmatch(forward["sender"]), forward["sender"]
        # nothing of the user's own delivery waits, and nothing was deferred on the way
        assert not [m for m in queued(node) if user in [r["address"] for r in m["recipients"]]]
        log = node.layout.log_file("postfix").read_text()
        assert not [line for line in log.splitlines() if f"to=<{user}>" in line and "status=deferred" in line]
        assert not [line for line in node.layout.log_file("dovecot").read_text().splitlines()
                    if f"lmtp({user})" in line and "temporary failure" in line]
    finally:
        node.app.mailqueues.act("delete", match=[f"recipient={far}"])


def test_a_bounce_to_the_srs_sender_of_a_forward_reaches_the_original_sender(node, mailbox, tmp_path):
    user, password = mailbox("away")
    origin, origin_password = mailbox("origin")
    far = f"gone-{uuid.uuid4().hex[:6]}@[{UNREACHABLE}]"
    upload_sieve(node, tmp_path, user, password, f'require ["copy"];\nredirect :copy "{far}";\n')
    subject = f"bounce me {uuid.uuid4().hex[:8]}"
    with smtp(node.ports["smtp"]) as client:  # the node itself: a trusted relay for hosted senders
        assert client.send_message(message(origin, user, subject)) == {}
    try:
        srs_address = wait_for_queued(node, far, "SRS0=")["sender"]
    finally:
        node.app.mailqueues.act("delete", match=[f"recipient={far}"])
    assert srs_pattern(node, origin).fullmatch(srs_address), srs_address
    # the receiver's bounce arrives on port 25, addressed to the SRS sender
    notice = f"Undelivered Mail Returned to Sender {uuid.uuid4().hex[:8]}"
    with smtp(node.ports["smtp"]) as client:
        assert client.send_message(message("MAILER-DAEMON@example.net", srs_address, notice),
                                   from_addr="", to_addrs=[srs_address]) == {}
    bounce = wait_for_subject(node.ports["imaps"], origin, origin_password, notice)
    assert f"Delivered-To: {origin}".encode() in bounce
    # a forged one (wrong signature) is refused like any address this node does not serve
    local, _, host = srs_address.partition("@")
    parts = local.split("=")
    parts[1] = "AAAA" if parts[1].upper() != "AAAA" else "BBBB"
    with smtp(node.ports["smtp"]) as client:
        client.mail("")
        code, reply = client.rcpt("=".join(parts) + "@" + host)
    assert code == 554 and b"Relay access denied" in reply, (code, reply)


def test_notify_mailto_reaches_its_target(node, mailbox, tmp_path):
    user, password = mailbox("watched")
    target, target_password = mailbox("watcher")
    upload_sieve(node, tmp_path, user, password, (
        'require ["enotify", "variables"];\n'
        'if header :matches "subject" "*" { set "s" "${1}"; }\n'
        f'notify :message "new mail: ${{s}}" "mailto:{target}";\n'))
    subject = f"watch this {uuid.uuid4().hex[:8]}"
    with smtp(node.ports["smtp"]) as client:
        assert client.send_message(message("partner@example.org", user, subject)) == {}
    wait_for_subject(node.ports["imaps"], user, password, subject)  # implicit keep
    wait_for_subject(node.ports["imaps"], target, target_password, f"new mail: {subject}")


def test_reject_returns_the_message_to_its_sender_and_loses_nothing(node, mailbox, tmp_path):
    user, password = mailbox("refuser")
    sender, sender_password = mailbox("rejected")
    upload_sieve(node, tmp_path, user, password, 'require ["reject"];\nreject "I do not take mail here.";\n')
    subject = f"please take this {uuid.uuid4().hex[:8]}"
    with smtp(node.ports["smtp"]) as client:
        assert client.send_message(message(sender, user, subject)) == {}
    # Pigeonhole's reject in LMTP: the delivery succeeds and the sender gets a rejection
    # notice (RFC 5429) with the reason and the original message attached
    notice = wait_for_subject(node.ports["imaps"], sender, sender_password, f"Rejected: {subject}")
    assert b"I do not take mail here." in notice and subject.encode() in notice.split(b"\r\n\r\n", 1)[1]
    assert subject not in inbox_subjects("127.0.0.1", node.ports["imaps"], user, password)


def test_with_postsrsd_down_the_original_is_delivered_and_the_forward_waits(node, mailbox, tmp_path):
    user, password = mailbox("steady")
    far = f"later-{uuid.uuid4().hex[:6]}@[{UNREACHABLE}]"
    upload_sieve(node, tmp_path, user, password, f'require ["copy"];\nredirect :copy "{far}";\n')
    runtime = node.app.component_runtime
    assert runtime.stop(["postsrsd"]) == ["postsrsd"]
    try:
        subject = f"while srs is down {uuid.uuid4().hex[:8]}"
        with smtp(node.ports["smtp"]) as client:
            assert client.send_message(message("partner@example.org", user, subject)) == {}
            # a bounce to an SRS address meanwhile: "try again later", never a refusal
            client.mail("")
            code, _ = client.rcpt(f"SRS0=AAAA=JZ=example.org=partner@{node.app.settings.mail_host()}")
            assert 400 <= code < 500, code
        wait_for_subject(node.ports["imaps"], user, password, subject)  # the original, at once
        # Sieve's submission was accepted (queued); the hop that rewrites waits for postsrsd
        waiting = wait_for_queued(node, far, "partner@example.org")
        assert "dovecot" not in runtime.stopped()
    finally:
        runtime.start(["postsrsd"])
    try:
        conf = node.layout.component_config("postfix")
        subprocess.run(["postqueue", "-c", str(conf), "-i", waiting["queue_id"]], check=True, capture_output=True)
        forward = wait_for_queued(node, far, "SRS0=")
        assert srs_pattern(node, "partner@example.org").fullmatch(forward["sender"])
        assert not [line for line in node.layout.log_file("dovecot").read_text().splitlines()
                    if f"lmtp({user})" in line and "temporary failure" in line]
    finally:
        node.app.mailqueues.act("delete", match=[f"recipient={far}"])


def test_postsrsd_runs_with_the_clusters_secret_readable_by_it_alone(node):
    import pwd
    import stat

    from adapters.probes import probe_srs_forward
    from rupost.services.srs import srs_secrets

    stored = srs_secrets(node.app.dbs)
    assert stored == srs_secrets(node.app.dbs) and len(stored[0]) >= 40  # created once, then the same
    path = node.layout.state / "postsrsd" / "secrets"
    assert path.read_text().splitlines() == stored
    st, owner = path.stat(), pwd.getpwnam("postsrsd")
    assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == owner.pw_uid
    # the daemon itself runs as postsrsd, and the deploy's probe answers
    pid = node.app.backend.pid("postsrsd")
    assert pid is not None and os.stat(f"/proc/{pid}").st_uid == owner.pw_uid
    result = probe_srs_forward("127.0.0.1", node.ports["srs_forward"])
    assert result.ok and f"@{node.app.settings.mail_host()}" in result.detail, result.detail


def test_a_rotated_secret_verifies_everywhere_before_it_signs_and_old_addresses_still_reverse(node):
    from click.testing import CliRunner

    from adapters.probes import tcp_table_get
    from rupost.cli import main as rupost
    from rupost.services.srs import srs_secrets

    def forward(address: str) -> str:
        return tcp_table_get("127.0.0.1", node.ports["srs_forward"], address).split(" ", 1)[1]

    def reverse(address: str) -> str:
        return tcp_table_get("127.0.0.1", node.ports["srs_reverse"], address)

    secrets_file = node.layout.state / "postsrsd" / "secrets"
    before = srs_secrets(node.app.dbs)
    old_address = forward("partner@example.org")
    pid = node.app.backend.pid("postsrsd")
    done = CliRunner().invoke(rupost, ["--root", str(node.root), "srs", "rotate"], catch_exceptions=False)
    assert done.exit_code == 0 and "rotation under way" in done.output, done.output
    assert not any(secret in done.output for secret in secrets_file.read_text().splitlines())
    # the new secret verifies at once (last line, postsrsd restarted) and does not sign yet
    lines = secrets_file.read_text().splitlines()
    assert lines[:-1] == before and len(lines) == len(before) + 1
    assert node.app.backend.pid("postsrsd") != pid
    assert forward("partner@example.org") == old_address
    # its time comes (a reader after sign_from promotes it): the agent's reconciliation restarts postsrsd
    assert srs_secrets(node.app.dbs, now=time.time() + 3600)[0] == lines[-1]
    assert node.app.srs.reconcile() is True and node.app.srs.reconcile() is False
    assert secrets_file.read_text().splitlines()[0] == lines[-1]
    new_address = forward("partner@example.org")
    assert new_address != old_address and new_address.startswith("SRS0=")
    assert reverse(new_address) == reverse(old_address) == "200 partner@example.org"


def test_a_forward_to_a_removed_mailbox_keeps_the_original_for_the_user(node, mailbox, tmp_path):
    user, password = mailbox("left-behind")
    gone, _ = mailbox("departed")
    node.app.mailboxes.remove(gone)
    # no :copy: had the forward been taken, the original would not be kept
    upload_sieve(node, tmp_path, user, password, f'redirect "{gone}";\n')
    subject = f"for a colleague who left {uuid.uuid4().hex[:8]}"
    with smtp(node.ports["smtp"]) as client:
        assert client.send_message(message("partner@example.org", user, subject)) == {}
    # postfix_sieve refuses the unknown address (550), and Pigeonhole keeps the original
    wait_for_subject(node.ports["imaps"], user, password, subject)
    log = node.layout.log_file("dovecot").read_text()
    assert f"failed to redirect message to <{gone}>" in log and "(permanent failure)" in log
    assert not [line for line in node.layout.log_file("postfix").read_text().splitlines()
                if "to=<partner@example.org>" in line]  # nothing bounced to the sender
