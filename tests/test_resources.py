"""Calendar resources through the real SOGo (CalDAV): a room accepts a booking by itself,
refuses an overlapping one (SOGo's simultaneous-bookings limit), and its booking owner
manages its calendar."""
from __future__ import annotations

import base64
import html
import imaplib
import uuid

import pytest

from mailclients import IMAPSFrom
from rupost.errors import ConflictError, NotFoundError, ValidationError
from adapters.probes import https_request
from rupost.services.resources import ResourceService


def _auth(user: str, password: str) -> dict:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def _book(node, organizer, password, resource, start, end, summary="Meeting"):
    """The organizer's client PUTs an event naming the resource as an attendee into the
    organizer's calendar; SOGo schedules it (CalDAV implicit scheduling)."""
    uid = uuid.uuid4().hex
    event = ("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//RuPost tests//EN\r\nBEGIN:VEVENT\r\n"
             f"UID:{uid}\r\nDTSTAMP:20261129T100000Z\r\nDTSTART:{start}\r\nDTEND:{end}\r\nSUMMARY:{summary}\r\n"
             f"ORGANIZER:mailto:{organizer}\r\nATTENDEE;PARTSTAT=ACCEPTED:mailto:{organizer}\r\n"
             f"ATTENDEE;CUTYPE=RESOURCE;ROLE=REQ-PARTICIPANT;PARTSTAT=NEEDS-ACTION;RSVP=TRUE:mailto:{resource}\r\n"
             "END:VEVENT\r\nEND:VCALENDAR\r\n").encode()
    status, _, body = https_request("127.0.0.1", node.ports["https"], "PUT",
                                    f"/SOGo/dav/{organizer}/Calendar/personal/{uid}.ics", body=event,
                                    headers={**_auth(organizer, password),
                                             "Content-Type": "text/calendar; charset=utf-8"})
    return uid, status, html.unescape(body.decode("utf-8", "replace"))


def _get(node, user, password, owner, uid):
    status, _, body = https_request("127.0.0.1", node.ports["https"], "GET",
                                    f"/SOGo/dav/{owner}/Calendar/personal/{uid}.ics",
                                    headers=_auth(user, password))
    return status, body.decode("utf-8", "replace").replace("\r\n ", "")


def test_room_accepts_a_booking_and_refuses_an_overlap(node, domain, mailbox):
    service = ResourceService(node.app)
    alice, alice_pw = mailbox("alice")
    bob, bob_pw = mailbox("bob")
    keeper, keeper_pw = mailbox("keeper")
    room = f"room-101@{domain}"
    created = service.add(room, "room", display_name="Room 101", owner=keeper)
    assert created["calendar"] == "ready", created
    assert created["kind"] == "room" and created["multiple_bookings"] == 1 and created["owner"] == keeper

    uid1, status, body = _book(node, alice, alice_pw, room, "20261207T090000Z", "20261207T100000Z", "Planning")
    assert status == 201, body
    # the organizer's copy shows the room's answer; the room's calendar holds the event, accepted
    status, text = _get(node, alice, alice_pw, alice, uid1)
    assert status == 200 and f"PARTSTAT=ACCEPTED;CUTYPE=RESOURCE;ROLE=REQ-PARTICIPANT:mailto:{room}" in text, text
    status, text = _get(node, keeper, keeper_pw, room, uid1)
    assert status == 200 and "SUMMARY:Planning" in text and "PARTSTAT=ACCEPTED" in text, text

    # an overlapping booking is refused by SOGo, naming the limit; nothing is filed
    uid2, status, body = _book(node, bob, bob_pw, room, "20261207T093000Z", "20261207T103000Z", "Clash")
    assert status == 409 and "(1)" in body and room in body, body
    assert _get(node, bob, bob_pw, bob, uid2)[0] == 404
    assert _get(node, keeper, keeper_pw, room, uid2)[0] == 404
    # right after it, the room is free again
    uid3, status, body = _book(node, bob, bob_pw, room, "20261207T100000Z", "20261207T110000Z", "Next")
    assert status == 201, body
    assert _get(node, keeper, keeper_pw, room, uid3)[0] == 200
    # other users see when the room is busy, not what is booked
    status, text = _get(node, bob, bob_pw, room, uid1)
    assert "SUMMARY:Planning" not in text

    # the booking owner manages the room's calendar: cancels a booking
    status, _, _ = https_request("127.0.0.1", node.ports["https"], "DELETE",
                                 f"/SOGo/dav/{room}/Calendar/personal/{uid3}.ics", headers=_auth(keeper, keeper_pw))
    assert status in (200, 204)
    assert _get(node, keeper, keeper_pw, room, uid3)[0] == 404
    # the resource itself cannot log in anywhere
    imap = IMAPSFrom("127.0.0.1", node.ports["imaps"], "127.0.9.9")
    with pytest.raises(imaplib.IMAP4.error):
        imap.login(room, "!resource")
    listed = {r["address"]: r for r in service.list(domain)}
    assert listed[room]["display_name"] == "Room 101"


def test_equipment_with_two_simultaneous_bookings(node, domain, mailbox):
    service = ResourceService(node.app)
    alice, alice_pw = mailbox("carol")
    projector = f"projector@{domain}"
    assert service.add(projector, "equipment", multiple_bookings=2)["calendar"] == "ready"
    slot = ("20261208T090000Z", "20261208T100000Z")
    assert _book(node, alice, alice_pw, projector, *slot)[1] == 201
    assert _book(node, alice, alice_pw, projector, *slot)[1] == 201
    uid, status, body = _book(node, alice, alice_pw, projector, *slot)
    assert status == 409 and "(2)" in body
    # the limit is read live: raised to "no limit", the third booking is accepted
    service.set(projector, multiple_bookings=0)
    assert _book(node, alice, alice_pw, projector, *slot)[1] == 201
    service.remove(projector)
    assert projector not in {r["address"] for r in service.list(domain)}


def test_resource_input_errors(node, domain, mailbox):
    service = ResourceService(node.app)
    user, _ = mailbox("dave")
    for kwargs, error, why in [
        ({"kind": "boat"}, ValidationError, "use room or equipment"),
        ({"multiple_bookings": -1}, ValidationError, "between 0"),
        ({"multiple_bookings": "many"}, ValidationError, "whole number"),
        ({"owner": f"ghost@{domain}"}, NotFoundError, "is not a mailbox"),
        ({"owner": "not an address"}, ValidationError, ""),
    ]:
        with pytest.raises(error, match=why):
            service.add(f"r{uuid.uuid4().hex[:6]}@{domain}", **kwargs)
    with pytest.raises(NotFoundError, match="domain"):
        service.add("room@missing-domain.test")
    with pytest.raises(ConflictError):
        service.add(user)
    with pytest.raises(NotFoundError, match="rupost resources list"):
        service.remove(f"none@{domain}")
    assert service.list(domain) == []


def test_cli(node, domain, mailbox):
    from click.testing import CliRunner

    from rupost.cli import main

    owner, _ = mailbox("erin")
    runner = CliRunner()
    root = ["--root", str(node.root)]
    room = f"hall@{domain}"
    r = runner.invoke(main, root + ["resources", "add", room, "--name", "Main hall", "--owner", owner])
    assert r.exit_code == 0 and "calendar: ready" in r.output, r.output
    r = runner.invoke(main, root + ["resources", "add", f"x@{domain}", "--bookings", "-3"])
    assert r.exit_code == 1 and "between 0" in r.output
    r = runner.invoke(main, root + ["resources", "list", "--domain", domain])
    assert r.exit_code == 0 and room in r.output and "Main hall" in r.output
    r = runner.invoke(main, root + ["resources", "set", room, "--bookings", "3"])
    assert r.exit_code == 0 and "simultaneous bookings 3" in r.output
    r = runner.invoke(main, root + ["resources", "remove", room, "--yes"])
    assert r.exit_code == 0
