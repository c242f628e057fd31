"""Forwarding and vacation set in webmail: SOGo's Preferences → Mail → Forward and Vacation pages,
driven through the web API those pages call (log in, read the preferences, save them back with the
rule on). SOGo writes its Sieve script over ManageSieve and dovecot carries it out, as for a rule
uploaded with a ManageSieve client (tests/test_sieve_actions.py)."""
from __future__ import annotations

import http.cookiejar
import json
import urllib.request
import uuid
from email.utils import make_msgid

from mailclients import inbox_subjects, insecure_tls, message, smtp, wait_for_subject

from support.cluster import wait_until


class Webmail:
    """A user's webmail session, as the browser holds it: the session cookie and the XSRF token
    SOGo sets at login, which every later request must carry in X-XSRF-TOKEN."""

    def __init__(self, node, user: str, password: str):
        self.base = f"https://127.0.0.1:{node.ports['https']}/SOGo"
        self.user = user
        self.cookies = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=insecure_tls()),
                                                  urllib.request.HTTPCookieProcessor(self.cookies))
        answer = self._request("/connect", {"userName": user, "password": password, "rememberLogin": 0})
        assert answer.status == 200, answer.status

    def _request(self, path: str, body: dict | None = None):
        headers = {"Content-Type": "application/json"}
        token = next((c.value for c in self.cookies if c.name == "XSRF-TOKEN"), None)
        if token:
            headers["X-XSRF-TOKEN"] = token
        data = json.dumps(body).encode() if body is not None else None
        return self.opener.open(urllib.request.Request(self.base + path, data=data, headers=headers), timeout=30)

    def preferences(self) -> dict:
        with self._request(f"/so/{self.user}/Preferences/jsonDefaults") as answer:
            return json.load(answer)

    def save_preferences(self, defaults: dict) -> None:
        """Save as the Preferences page does: every default back, without the locale it was sent."""
        defaults = {k: v for k, v in defaults.items() if k != "locale"}
        # SOGo answers 502 or 503 (urllib raises) when it saved the preferences but could not
        # write the Sieve script
        with self._request(f"/so/{self.user}/Preferences/save", {"defaults": defaults}) as answer:
            assert answer.status == 200, answer.status


def send(node, sender: str, rcpt: str, subject: str) -> str:
    """Send through port 25 (the node itself is a trusted relay for hosted senders); the Message-ID."""
    msg = message(sender, rcpt, subject)
    msg["Message-ID"] = make_msgid(domain="client.example.org")
    with smtp(node.ports["smtp"]) as client:
        assert client.send_message(msg) == {}
    return msg["Message-ID"]


def test_forward_set_in_webmail_reaches_the_target_and_keeps_a_copy(node, mailbox):
    user, password = mailbox("webforward")
    target, target_password = mailbox("webdeputy")
    webmail = Webmail(node, user, password)
    defaults = webmail.preferences()
    defaults["Forward"] = {"enabled": 1, "forwardAddress": [target], "keepCopy": 1}
    webmail.save_preferences(defaults)
    assert webmail.preferences()["Forward"]["forwardAddress"] == [target]

    subject = f"for the deputy {uuid.uuid4().hex[:8]}"
    send(node, "partner@example.org", user, subject)
    wait_for_subject(node.ports["imaps"], user, password, subject)  # "Keep a copy"
    forwarded = wait_for_subject(node.ports["imaps"], target, target_password, subject)
    assert f"X-Sieve-Redirected-From: {user}".encode() in forwarded
    # this user's deliveries only: the log is the session's (other tests make actions fail on purpose)
    mine = [line for line in node.layout.log_file("dovecot").read_text().splitlines() if f"lmtp({user})" in line]
    assert mine and not [line for line in mine if "failed to redirect" in line]


def test_vacation_set_in_webmail_answers_each_sender_once(node, mailbox):
    user, password = mailbox("webtraveller")
    sender, sender_password = mailbox("webcolleague")
    webmail = Webmail(node, user, password)
    defaults = webmail.preferences()
    defaults["Vacation"] = {"enabled": 1, "autoReplyText": "I am travelling; back on Monday.",
                            "autoReplyEmailAddresses": [user], "daysBetweenResponse": 1,
                            "customSubjectEnabled": 1, "customSubject": "Away until Monday"}
    webmail.save_preferences(defaults)

    tag = uuid.uuid4().hex[:8]
    send(node, sender, user, f"question 1 {tag}")
    reply = wait_for_subject(node.ports["imaps"], sender, sender_password, "Away until Monday")
    assert b"back on Monday" in reply

    second = send(node, sender, user, f"question 2 {tag}")
    wait_for_subject(node.ports["imaps"], user, password, f"question 2 {tag}")
    # dovecot decides while it delivers; its log names the message it did not answer (:days 1)
    decision = f"msgid={second}: vacation action: discarded duplicate vacation response to <{sender}>"
    assert wait_until(lambda: decision in node.layout.log_file("dovecot").read_text(), timeout=20), \
        "the second message was not recognised as already answered"
    assert inbox_subjects("127.0.0.1", node.ports["imaps"], sender, sender_password).count("Away until Monday") == 1
