"""Sender policy "members" of distribution lists, through the real postfix and the
RuPost policy server: members (by envelope sender on port 25, by login on submission)
may write to the list, anybody else gets a 5xx naming the policy."""
from __future__ import annotations

import smtplib
import uuid

import pytest

from mailclients import message, smtp, smtps, wait_for_subject
from rupost.errors import ValidationError


def test_members_only_list(node, domain, mailbox):
    lists = node.app.distribution_lists
    a, a_pw = mailbox("alice")
    b, b_pw = mailbox("bob")
    outsider, outsider_pw = mailbox("carol")
    address = f"team@{domain}"
    created = lists.add(address, members=[a, b], sender_policy="members")
    assert created["sender_policy"] == "members"
    with pytest.raises(ValidationError, match="anyone, internal or members"):
        lists.set(address, sender_policy="friends")

    # a member writes from outside (port 25, envelope sender): delivered to every member
    subject = f"members {uuid.uuid4().hex}"
    with smtp(node.ports["smtp"]) as client:
        assert client.send_message(message(a, address, subject)) == {}
    wait_for_subject(node.ports["imaps"], a, a_pw, subject)
    wait_for_subject(node.ports["imaps"], b, b_pw, subject)

    # a stranger on port 25: refused at RCPT with a 5xx that names the list's policy
    with smtp(node.ports["smtp"]) as client:
        with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
            client.send_message(message("someone@example.org", address, "stranger"))
    code, text = refused.value.recipients[address]
    assert code == 550 and b"sender policy: members" in text and address.encode() in text
    # the list address with a recipient delimiter tag is the same list
    tagged = f"team+news@{domain}"
    with smtp(node.ports["smtp"]) as client:
        with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
            client.send_message(message("someone@example.org", tagged, "stranger tagged"))
    assert refused.value.recipients[tagged][0] == 550

    # submission: an authenticated user who is not a member is refused, a member is accepted
    with smtps(node.ports["submissions"]) as client:
        client.login(outsider, outsider_pw)
        with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
            client.send_message(message(outsider, address, "not a member"))
    assert refused.value.recipients[address][0] == 550
    subject = f"member login {uuid.uuid4().hex}"
    with smtps(node.ports["submissions"]) as client:
        client.login(b, b_pw)
        assert client.send_message(message(b, address, subject)) == {}
    wait_for_subject(node.ports["imaps"], a, a_pw, subject)

    # membership is read at each message: a new member may write at once
    lists.add_members(address, [outsider])
    subject = f"new member {uuid.uuid4().hex}"
    with smtps(node.ports["submissions"]) as client:
        client.login(outsider, outsider_pw)
        assert client.send_message(message(outsider, address, subject)) == {}
    wait_for_subject(node.ports["imaps"], b, b_pw, subject)

    # back to "anyone": the stranger is accepted
    lists.set(address, sender_policy="anyone")
    subject = f"anyone {uuid.uuid4().hex}"
    with smtp(node.ports["smtp"]) as client:
        assert client.send_message(message("someone@example.org", address, subject)) == {}
    wait_for_subject(node.ports["imaps"], a, a_pw, subject)


def test_members_policy_leaves_other_recipients_and_internal_lists_alone(node, domain, mailbox):
    """Mail to an ordinary mailbox never reaches the policy check; "internal" still works."""
    lists = node.app.distribution_lists
    a, a_pw = mailbox("dave")
    staff = f"staff@{domain}"
    lists.add(staff, members=[a], sender_policy="internal")
    subject = f"plain {uuid.uuid4().hex}"
    with smtp(node.ports["smtp"]) as client:
        assert client.send_message(message("someone@example.org", a, subject)) == {}
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            client.send_message(message(a, staff, "internal list from outside"))
    wait_for_subject(node.ports["imaps"], a, a_pw, subject)


def test_policy_server_list_decision(node, domain, mailbox):
    """The decision itself, as postfix's policy request asks for it."""
    from rupost.policy.server import PolicyApp

    a, _ = mailbox("erin")
    address = f"board@{domain}"
    node.app.distribution_lists.add(address, members=[a], sender_policy="members")
    policy = PolicyApp(node.app, {"limits": {}})
    ask = lambda **kw: policy.postfix_policy({"request": "smtpd_access_policy", "protocol_state": "RCPT", **kw})
    assert ask(recipient=address, sender=a) == "DUNNO"
    assert ask(recipient=address.upper(), sender=a.upper()) == "DUNNO"
    assert ask(recipient=address, sender="x@example.org", sasl_username=a) == "DUNNO"
    assert ask(recipient=address, sender="x@example.org").startswith("550 5.7.1")
    assert ask(recipient=address, sender="").startswith("550 5.7.1")  # bounces to a members-only list
    assert ask(recipient=f"nobody@{domain}", sender="x@example.org") == "DUNNO"
    assert ask(recipient="not-an-address", sender="x@example.org") == "DUNNO"
