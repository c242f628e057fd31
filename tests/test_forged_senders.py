"""Port 25 refuses an unauthenticated client that claims a sender in a hosted domain, unless it
comes from a trusted relay network (template parameter trusted_relay_networks)."""
from __future__ import annotations

import smtplib
import uuid

import pytest

from mailclients import message, wait_for_subject
from rupost.errors import TemplateError

OUTSIDER = "127.0.0.66"  # through HAProxy's PROXY protocol, postfix sees this client address


def rcpt_reply(node, source: str, sender: str, recipient: str) -> tuple[int, bytes]:
    with smtplib.SMTP("127.0.0.1", node.ports["smtp"], timeout=30, source_address=(source, 0)) as client:
        client.ehlo("client.example.org")
        code, reply = client.mail(sender)
        assert code == 250, reply
        return client.rcpt(recipient)


def test_a_forged_hosted_sender_is_refused_and_real_outside_mail_is_not(node, mailbox, domain):
    address, password = mailbox("victim")
    code, reply = rcpt_reply(node, OUTSIDER, f"ceo@{domain}", address)
    assert code == 550 and b"5.7.1" in reply and b"authenticate" in reply, reply
    assert rcpt_reply(node, OUTSIDER, "partner@example.org", address)[0] == 250
    assert rcpt_reply(node, OUTSIDER, "", address)[0] == 250  # bounces have no sender to check
    log = node.layout.log_file("postfix").read_text()
    assert f"reject: RCPT from unknown[{OUTSIDER}]" in log and f"<ceo@{domain}>: Sender address rejected" in log


def test_the_node_itself_is_a_trusted_relay_by_default(node, mailbox, domain):
    address, password = mailbox("fromscanner")
    subject = f"scanner {uuid.uuid4().hex}"
    with smtplib.SMTP("127.0.0.1", node.ports["smtp"], timeout=30) as client:
        client.ehlo("scanner.example.org")
        assert client.send_message(message(f"scanner@{domain}", address, subject)) == {}
    wait_for_subject(node.ports["imaps"], address, password, subject)


def test_a_trusted_relay_network_may_use_hosted_senders(node, mailbox, domain):
    address, password = mailbox("fromerp")
    trusted = {**node.parameters, "trusted_relay_networks": ["127.0.0.1/32", f"{OUTSIDER}/32"]}
    assert node.app.deploys.deploy(node.app.deploys.plan(trusted)).result == "applied"
    try:
        assert rcpt_reply(node, OUTSIDER, f"erp@{domain}", address)[0] == 250
    finally:
        node.app.deploys.deploy(node.app.deploys.plan(node.parameters))
    assert rcpt_reply(node, OUTSIDER, f"erp@{domain}", address)[0] == 550


@pytest.mark.parametrize("networks, expected", [
    (["10.0.0.0/8", "office"], "'office' does not match"),
    (["10.0.0.300/8"], "'10.0.0.300/8' is not a network"),
])
def test_a_bad_trusted_network_is_refused_before_anything_changes(node, networks, expected):
    live = node.layout.current.resolve()
    with pytest.raises(TemplateError, match=expected):
        node.app.deploys.plan({**node.parameters, "trusted_relay_networks": networks})
    assert node.layout.current.resolve() == live
