"""Delegated calendars through SOGo's own ACLs, checked over CalDAV as a client does: a
delegate with write rights creates an event in the owner's calendar, a read-only delegate
reads it and is refused a PUT, a revoked delegate is refused again."""
from __future__ import annotations

import base64
import uuid

import pytest
from click.testing import CliRunner

from adapters.probes import https_request
from rupost.cli import main as rupost
from rupost.errors import NotFoundError, ValidationError


def _auth(user: str, password: str) -> dict:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def _calendar(owner: str) -> str:
    return f"/SOGo/dav/{owner}/Calendar/personal/"


def _put(node, user, password, owner, summary):
    uid = uuid.uuid4().hex
    event = ("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//RuPost tests//EN\r\nBEGIN:VEVENT\r\n"
             f"UID:{uid}\r\nDTSTAMP:20261207T100000Z\r\nDTSTART:20261214T090000Z\r\nDTEND:20261214T100000Z\r\n"
             f"SUMMARY:{summary}\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n").encode()
    status, _, _ = https_request("127.0.0.1", node.ports["https"], "PUT", f"{_calendar(owner)}{uid}.ics", body=event,
                                 headers={**_auth(user, password), "Content-Type": "text/calendar; charset=utf-8"})
    return uid, status


def _get(node, user, password, owner, uid):
    status, _, body = https_request("127.0.0.1", node.ports["https"], "GET", f"{_calendar(owner)}{uid}.ics",
                                    headers=_auth(user, password))
    return status, body.decode("utf-8", "replace")


def cli(node, *args):
    return CliRunner().invoke(rupost, ["--root", str(node.root), *args], catch_exceptions=False)


@pytest.fixture
def people(node, mailbox):
    users = {name: mailbox(name) for name in ("boss", "assistant", "reader")}
    boss, boss_password = users["boss"]
    # the owner's first CalDAV look creates the personal calendar, as any client's would
    status, _, _ = https_request("127.0.0.1", node.ports["https"], "PROPFIND", _calendar(boss),
                                 body=b'<?xml version="1.0"?><propfind xmlns="DAV:"><prop><displayname/></prop>'
                                      b'</propfind>',
                                 headers={**_auth(boss, boss_password), "Depth": "0", "Content-Type": "application/xml"})
    assert status == 207
    return users


def test_a_write_delegate_creates_an_event_a_read_delegate_is_refused_a_put(node, people):
    boss = people["boss"][0]
    assistant, reader = people["assistant"], people["reader"]
    # before any grant, the assistant cannot write into the boss's calendar (SOGo answers 404
    # to a user with no right at all on a folder: it does not even say the folder exists)
    assert _put(node, *assistant, boss, "uninvited")[1] in (403, 404)
    out = cli(node, "calendars", "delegate", boss, assistant[0], "--rights", "write")
    assert out.exit_code == 0, out.output
    node.app.calendar_delegations.delegate(boss, reader[0], "read")

    uid, status = _put(node, *assistant, boss, "Board meeting")
    assert status == 201, status
    status, body = _get(node, *people["boss"], boss, uid)
    assert status == 200 and "SUMMARY:Board meeting" in body  # in the owner's own calendar
    status, body = _get(node, *reader, boss, uid)
    assert status == 200 and "SUMMARY:Board meeting" in body
    assert _put(node, *reader, boss, "not mine to add")[1] == 403

    listing = cli(node, "calendars", "list", boss, "--json")
    assert f'"delegate": "{assistant[0]}"' in listing.output and '"rights": "write"' in listing.output, listing.output
    assert {(r["delegate"], r["rights"]) for r in node.app.calendar_delegations.list(boss)} == \
        {(assistant[0], "write"), (reader[0], "read")}

    out = cli(node, "calendars", "revoke", boss, assistant[0])
    assert out.exit_code == 0, out.output
    assert _put(node, *assistant, boss, "after revoke")[1] in (403, 404)
    assert [r["delegate"] for r in node.app.calendar_delegations.list(boss)] == [reader[0]]


def test_bad_delegations_are_refused(node, people, domain):
    boss, assistant = people["boss"][0], people["assistant"][0]
    with pytest.raises(ValidationError, match="unknown calendar right 'admin'"):
        node.app.calendar_delegations.delegate(boss, assistant, "admin")
    with pytest.raises(NotFoundError, match=f"delegate ghost@{domain} is not a mailbox"):
        node.app.calendar_delegations.delegate(boss, f"ghost@{domain}", "read")
    with pytest.raises(ValidationError, match="themselves"):
        node.app.calendar_delegations.delegate(boss, boss, "read")
    with pytest.raises(NotFoundError, match="has no rights"):
        node.app.calendar_delegations.revoke(boss, assistant)
    assert node.app.calendar_delegations.list(boss) == []


def test_a_group_delegate_follows_the_group(node, people, domain):
    """A distribution list as delegate: SOGo's ACLs take no SQL-sourced groups, so each member
    gets the ACL, and a member added to or removed from the list (CLI) gains or loses it."""
    boss = people["boss"][0]
    assistant, reader = people["assistant"], people["reader"]
    team = f"assistants@{domain}"
    assert cli(node, "distribution-lists", "add", team, "--member", assistant[0]).exit_code == 0
    out = cli(node, "calendars", "delegate", boss, team, "--rights", "write")
    assert out.exit_code == 0, out.output
    assert _put(node, *assistant, boss, "by a group member")[1] == 201
    assert _put(node, *reader, boss, "not in the group yet")[1] in (403, 404)

    assert cli(node, "distribution-lists", "members", "add", team, reader[0]).exit_code == 0
    assert _put(node, *reader, boss, "joined the group")[1] == 201
    assert cli(node, "distribution-lists", "members", "remove", team, assistant[0]).exit_code == 0
    assert _put(node, *assistant, boss, "left the group")[1] in (403, 404)
    groups = [r for r in node.app.calendar_delegations.list(boss) if r["group"]]
    assert [(r["delegate"], r["rights"], r["members"]) for r in groups] == [(team, "write", [reader[0]])]

    node.app.calendar_delegations.revoke(boss, team)
    assert _put(node, *reader, boss, "group revoked")[1] in (403, 404)
    assert node.app.calendar_delegations.list(boss) == []
