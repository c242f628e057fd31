"""Forwarding and vacation rules that users set up themselves (ManageSieve, SOGo's Forward and
Vacation pages write the same Sieve) are carried out through the node's own postfix: uploaded
here with a real ManageSieve client, sieve-connect (Debian package)."""
from __future__ import annotations

import json
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
    dovecot_log = node.layout.log_file("dovecot").read_text()
    assert "failed to redirect" not in dovecot_log and "failed to send vacation" not in dovecot_log


def test_a_forward_that_cannot_leave_yet_keeps_the_original_and_waits_in_the_queue(node, mailbox, tmp_path):
    user, password = mailbox("forwarder")
    far = f"away-{uuid.uuid4().hex[:6]}@[{UNREACHABLE}]"
    upload_sieve(node, tmp_path, user, password, f'require ["copy"];\nredirect :copy "{far}";\n')
    subject = f"to forward {uuid.uuid4().hex[:8]}"
    with smtp(node.ports["smtp"]) as client:
        assert client.send_message(message("partner@example.org", user, subject)) == {}
    wait_for_subject(node.ports["imaps"], user, password, subject)  # the original, at once

    def queue() -> list[dict]:
        conf = node.layout.component_config("postfix")
        out = subprocess.run(["postqueue", "-c", str(conf), "-j"], capture_output=True, text=True, check=True).stdout
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    deadline = time.monotonic() + 60
    forwards: list[dict] = []
    while not forwards and time.monotonic() < deadline:
        forwards = [m for m in queue() if [r["address"] for r in m["recipients"]] == [far]]
        time.sleep(0.5)
    try:
        assert forwards, "the forward is not in the queue"
        # it leaves as the forwarding user, a sender of a hosted domain: the receiver's SPF passes
        assert forwards[0]["sender"] == user
        # nothing of the user's own delivery waits
        assert not [m for m in queue() if user in [r["address"] for r in m["recipients"]]]
    finally:
        node.app.mailqueues.act("delete", match=[f"recipient={far}"])
