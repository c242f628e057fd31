"""`rupost migrate groupware` into the node's real SOGo: an Outlook-exported calendar (a weekly
meeting with two moved and one cancelled occurrence, Windows zone names, attendees, an
all-day event, reminders) and 200 Outlook contacts with photos and a group, read back as the
user over CalDAV (python-caldav) and CardDAV; the expanded occurrences
(recurring-ical-events) are those of the source. A second run adds and rewrites nothing.
Then Debian's radicale, holding a few hundred items, as the CalDAV/CardDAV source."""
from __future__ import annotations

import base64
import datetime as dt
import json
import re
import uuid
import xml.etree.ElementTree as ET

import caldav
import icalendar
import pytest
import recurring_ical_events
from click.testing import CliRunner
from groupware_data import (
    ALLDAY_UID,
    BAD_ZONE_UID,
    WEEKLY_UID,
    Radicale,
    group_members,
    outlook_ics,
    outlook_vcf,
    photo,
    source_card,
    source_event,
)
from test_web import _auth

from adapters.probes import https_request
from rupost.cli import main as rupost
from rupost.services.groupware_calendar import calendar_items, resource_name
from rupost.services.groupware_contacts import contact_items, decode_text

WINDOW = (dt.datetime(2026, 12, 1, tzinfo=dt.UTC), dt.datetime(2027, 6, 1, tzinfo=dt.UTC))


@pytest.fixture(scope="module")
def sogo_admin(node):
    """A mailbox made a SOGo super user (template parameter sogo_super_users), for the module."""
    domain = f"mig{uuid.uuid4().hex[:8]}.test"
    node.app.domains.add(domain)
    address, password = f"migrator@{domain}", f"pw-{uuid.uuid4().hex[:12]}"
    node.app.mailboxes.add(address, password, "0")
    node.app.templates.set_parameters({"sogo_super_users": [address]})
    node.deploy()
    yield address, password, domain
    node.app.templates.set_parameters({}, unset=["sogo_super_users"])
    node.deploy()


def new_user(node, domain: str, local: str) -> tuple[str, str]:
    address, password = f"{local}-{uuid.uuid4().hex[:6]}@{domain}", f"pw-{uuid.uuid4().hex[:12]}"
    node.app.mailboxes.add(address, password, "0")
    return address, password


def migrate(node, admin_password: str, *args: str):
    return CliRunner().invoke(rupost, ["--root", str(node.root), "migrate", "groupware", *args],
                              input=admin_password + "\n", catch_exceptions=False)


def user_events(node, user: str, password: str) -> dict[str, icalendar.Calendar]:
    """The user's calendar as a CalDAV client sees it (python-caldav over nginx's HTTPS)."""
    client = caldav.DAVClient(url=f"https://127.0.0.1:{node.ports['https']}/SOGo/dav/", username=user,
                              password=password, ssl_verify_cert=False)
    calendar = client.calendar(url=f"https://127.0.0.1:{node.ports['https']}/SOGo/dav/{user}/Calendar/personal/")
    out = {}
    for event in calendar.events():
        cal = icalendar.Calendar.from_ical(event.data)
        out[str(next(iter(cal.walk("VEVENT")))["UID"])] = cal
    return out


def instances(cal: icalendar.Calendar) -> set[tuple]:
    """(start, end, summary) of every occurrence in the window, in UTC (dates stay dates)."""
    def utc(value):
        return value.astimezone(dt.UTC) if isinstance(value, dt.datetime) else value

    return {(utc(e.decoded("DTSTART")), utc(e.decoded("DTEND")), str(e.get("SUMMARY")))
            for e in recurring_ical_events.of(cal).between(*WINDOW)}


def dav_report(node, user: str, password: str, path: str, body: str, depth: str = "1") -> list[ET.Element]:
    status, _, data = https_request("127.0.0.1", node.ports["https"], "REPORT" if "multiget" in body else "PROPFIND",
                                    path, body=body.encode(), headers={**_auth(user, password), "Depth": depth,
                                                                       "Content-Type": "application/xml"})
    assert status == 207, data[:300]
    return ET.fromstring(data).findall("{DAV:}response")


def user_cards(node, user: str, password: str) -> dict[str, str]:
    """uid -> vCard of the user's personal address book over CardDAV (PROPFIND + multiget)."""
    path = f"/SOGo/dav/{user}/Contacts/personal/"
    hrefs = [r.findtext("{DAV:}href") for r in dav_report(
        node, user, password, path, '<d:propfind xmlns:d="DAV:"><d:prop><d:getetag/></d:prop></d:propfind>')]
    hrefs = [h for h in hrefs if h and not h.endswith("/personal/")]
    body = ('<r:addressbook-multiget xmlns:d="DAV:" xmlns:r="urn:ietf:params:xml:ns:carddav"><d:prop><d:getetag/>'
            "<r:address-data/></d:prop>" + "".join(f"<d:href>{h}</d:href>" for h in hrefs)
            + "</r:addressbook-multiget>")
    cards = {}
    for response in dav_report(node, user, password, path, body):
        text = response.findtext(".//{urn:ietf:params:xml:ns:carddav}address-data") or ""
        text = text.replace("\r\n ", "").replace("\n ", "")
        uid = re.search(r"^UID:(.*?)\r?$", text, re.MULTILINE)
        if uid:
            cards[uid.group(1).strip()] = text
    return cards


def etags(node, user: str, password: str, folder: str) -> dict[str, str]:
    return {r.findtext("{DAV:}href"): r.findtext(".//{DAV:}getetag") for r in dav_report(
        node, user, password, f"/SOGo/dav/{user}/{folder}/personal/",
        '<d:propfind xmlns:d="DAV:"><d:prop><d:getetag/></d:prop></d:propfind>')}


def test_outlook_files_every_occurrence_contact_photo_and_group_then_a_rerun_adds_nothing(node, sogo_admin, tmp_path):
    admin, admin_password, domain = sogo_admin
    user, password = new_user(node, domain, "ivan")
    ics, vcf = tmp_path / "calendar.ics", tmp_path / "contacts.vcf"
    ics.write_text(outlook_ics(), encoding="utf-8")
    vcf.write_bytes(outlook_vcf(200).encode("utf-8-sig"))  # Outlook writes a BOM
    done = migrate(node, admin_password, "--user", user, "--ics", str(ics), "--vcf", str(vcf), "--sogo-admin", admin)
    # one event is refused (a zone nobody knows): named, with the reason, and the exit code says so
    assert done.exit_code == 2, done.output
    assert re.search(rf"{BAD_ZONE_UID} \(Zone nobody knows\): unknown time zone 'Nowhere Standard Time'", done.output)
    assert "calendar: 3 in the source, 2 added, 0 already there, 1 refused" in done.output, done.output
    assert "contacts: 201 in the source, 201 added, 0 already there, 0 refused" in done.output, done.output

    # the calendar as the user's client sees it: the same occurrences as the source
    seen = user_events(node, user, password)
    assert set(seen) == {WEEKLY_UID, ALLDAY_UID}
    source = icalendar.Calendar.from_ical(outlook_ics())
    only = icalendar.Calendar()
    for part in source.walk("VTIMEZONE"):
        only.add_component(part)
    for event in source.walk("VEVENT"):
        if str(event["UID"]) == WEEKLY_UID:
            only.add_component(event)
    weekly = instances(seen[WEEKLY_UID])
    assert weekly == instances(only)
    assert len(weekly) == 11  # 12 Mondays, one cancelled
    msk = dt.timezone(dt.timedelta(hours=3))
    assert (dt.datetime(2027, 1, 19, 14, tzinfo=msk), dt.datetime(2027, 1, 19, 15, tzinfo=msk),
            "Планёрка (вторник)") in weekly
    assert (dt.datetime(2027, 2, 15, 11, tzinfo=dt.UTC), dt.datetime(2027, 2, 15, 12, tzinfo=dt.UTC),
            "Планёрка (из Берлина)") in weekly  # 12:00 in Berlin (CET)
    assert not any(start == dt.datetime(2027, 2, 1, 7, tzinfo=dt.UTC) for start, _, _ in weekly)
    # Outlook's midnight-to-midnight all-day event is a date on SOGo (it does not move with the zone)
    assert instances(seen[ALLDAY_UID]) == {(dt.date(2027, 3, 8), dt.date(2027, 3, 9), "Международный женский день")}
    master = next(e for e in seen[WEEKLY_UID].walk("VEVENT") if "RECURRENCE-ID" not in e)
    assert "ivan.petrov@corp.example" in str(master["ORGANIZER"])
    assert {str(a).lower() for a in master.get("ATTENDEE")} >= {"mailto:anna@corp.example",
                                                               "mailto:petr@corp.example"}
    assert [str(a["TRIGGER"].to_ical(), "ascii") for a in master.walk("VALARM")] == ["-PT15M"]
    assert "Europe/Moscow" in str(master["DTSTART"].params.get("TZID", ""))

    # contacts: every photo's bytes, and the group with its members
    cards = user_cards(node, user, password)
    assert len(cards) == 201
    for i in (1, 2, 100, 199):
        card = cards[f"contact-{i:05d}"]
        data = re.search(r"^PHOTO;[^:]*:(\S+)", card, re.MULTILINE | re.IGNORECASE)
        assert data and base64.b64decode(data.group(1)) == photo(i), card[:400]
        assert f"contact{i}@corp.example" in card and "Line two and more" in card
    # the group, as CardDAV clients read it (SOGo keeps it as a card, see groupware_contacts.py)
    group = cards["group-sales"]
    members = re.findall(r"X-ADDRESSBOOKSERVER-MEMBER:urn:uuid:(\S+)", group)
    assert "X-ADDRESSBOOKSERVER-KIND:GROUP" in group.upper() and "FN:Отдел продаж" in group, group
    assert sorted(members) == sorted(group_members(outlook_vcf(200))), group

    # a second run: nothing added, nothing rewritten (the etags stay)
    before = (etags(node, user, password, "Calendar"), etags(node, user, password, "Contacts"))
    again = migrate(node, admin_password, "--user", user, "--ics", str(ics), "--vcf", str(vcf), "--sogo-admin",
                    admin, "--json")
    summary = json.loads(again.output)
    counts = summary["results"][0]["counts"]
    assert summary["added"] == 0 and counts["calendar"]["existing"] == 2 and counts["contacts"]["existing"] == 201
    assert (etags(node, user, password, "Calendar"), etags(node, user, password, "Contacts")) == before
    status = CliRunner().invoke(rupost, ["--root", str(node.root), "migrate", "groupware-status", "--user", user,
                                         "--json"], catch_exceptions=False)
    rows = json.loads(status.output)
    assert rows[0]["runs"] == 2 and rows[0]["status"] == "incomplete"
    assert [r["uid"] for r in rows[0]["refused"]] == [BAD_ZONE_UID]


def test_bad_input_is_refused_before_anything_runs(node, sogo_admin, tmp_path):
    admin, admin_password, domain = sogo_admin
    user, _ = new_user(node, domain, "bad")
    mapping = tmp_path / "map.csv"
    mapping.write_text(f"target_address,ics,vcf\n{user},missing.ics,\nnot-an-address,,x.vcf\n")
    done = migrate(node, admin_password, "--map", str(mapping), "--sogo-admin", admin)
    assert done.exit_code == 1 and "line 2:" in done.output and "missing.ics: no such file" in done.output
    assert "line 3:" in done.output
    ics = tmp_path / "a.ics"
    ics.write_text(outlook_ics())
    wrong = migrate(node, "not-the-password", "--user", user, "--ics", str(ics), "--sogo-admin", admin)
    assert wrong.exit_code == 1 and f"SOGo refused the login of {admin}" in wrong.output
    assert node.app.groupware_migration.status(user) == []
    # not a RuPost mailbox (SOGo would take items for any name from a super user): refused
    ghost = f"ghost-{uuid.uuid4().hex[:6]}@{domain}"
    failed = migrate(node, admin_password, "--user", ghost, "--ics", str(ics), "--sogo-admin", admin)
    assert failed.exit_code == 2 and f"mailbox {ghost} does not exist on RuPost" in failed.output
    assert "calendar:" not in failed.output
    assert node.app.groupware_migration.status(ghost)[0]["status"] == "failed"


def test_radicale_source_with_a_few_hundred_items(node, sogo_admin, tmp_path):
    admin, admin_password, domain = sogo_admin
    server = Radicale(tmp_path / "radicale")
    targets, passwords = [], {}
    for n in range(2):
        login, (target, passwords[target]) = f"src{n}", new_user(node, domain, f"dav{n}")
        server.add_user(login, f"secret-{n}")
        events = {f"e{i}.ics": source_event(n * 1000 + i) for i in range(100)}
        server.collection(login, "work", "VCALENDAR", dict(list(events.items())[:60]), "Работа")
        server.collection(login, "home", "VCALENDAR", dict(list(events.items())[60:]), "Home")
        server.collection(login, "contacts", "VADDRESSBOOK",
                          {f"c{i}.vcf": source_card(n * 1000 + i) for i in range(60)})
        targets.append((login, target))
    server.start()
    try:
        mapping = tmp_path / "map.csv"
        mapping.write_text("".join(f"{login},secret-{n},{target}\n" for n, (login, target) in enumerate(targets)))
        done = migrate(node, admin_password, "--source", server.url, "--map", str(mapping), "--sogo-admin", admin,
                       "--json")
        summary = json.loads(done.output)
        assert done.exit_code == 0, done.output
        assert summary["added"] == 320 and summary["done"] == 2
        for result in summary["results"]:  # "home" (first by path) into personal, "work" a calendar of its own
            counts = result["counts"]
            assert counts["calendar"]["added"] == 40 and counts["calendar Работа"]["added"] == 60, counts
            assert counts["contacts"]["added"] == 60
        user = targets[1][1]
        client = caldav.DAVClient(url=f"https://127.0.0.1:{node.ports['https']}/SOGo/dav/", username=user,
                                  password=passwords[user], ssl_verify_cert=False)
        calendars = {c.get_display_name(): c for c in client.principal().calendars()}
        assert len(calendars["Работа"].events()) == 60, list(calendars)
        again = json.loads(migrate(node, admin_password, "--source", server.url, "--map", str(mapping),
                                   "--sogo-admin", admin, "--json").output)
        assert again["added"] == 0 and again["done"] == 2
        resumed = json.loads(migrate(node, admin_password, "--source", server.url, "--map", str(mapping),
                                     "--sogo-admin", admin, "--resume", "--json").output)
        assert resumed["skipped"] == 2
        # a wrong source password: that user fails with the reason, the other is still done
        mapping.write_text(f"{targets[0][0]},wrong,{targets[0][1]}\n{targets[1][0]},secret-1,{targets[1][1]}\n")
        mixed = migrate(node, admin_password, "--source", server.url, "--map", str(mapping), "--sogo-admin", admin)
        assert mixed.exit_code == 2 and "the login was refused (401)" in mixed.output
    finally:
        server.stop()


def refused_reasons(text: str) -> list[str]:
    return [r.reason for r in calendar_items([("test.ics", text)])[1]]


def wrap(*events: str) -> str:
    return "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:x\r\n" + "".join(events) + "END:VCALENDAR\r\n"


def test_calendar_rewrites_and_refusals_table():
    """Without SOGo: what the normalisation keeps, rewrites and refuses, and why."""
    iana = wrap("BEGIN:VEVENT\r\nUID:a\r\nDTSTAMP:20270101T000000Z\r\nDTSTART;TZID=Asia/Yekaterinburg:"
                "20270105T090000\r\nDTEND;TZID=Asia/Yekaterinburg:20270105T100000\r\nSUMMARY:x\r\nEND:VEVENT\r\n")
    items, refused = calendar_items([("f", iana)])
    assert not refused and "TZID:Asia/Yekaterinburg" in items[0].body and items[0].name == "a.ics"
    windows = iana.replace("Asia/Yekaterinburg", "Ekaterinburg Standard Time")
    assert "DTSTART;TZID=Asia/Yekaterinburg:20270105T090000" in calendar_items([("f", windows)])[0][0].body
    backwards = iana.replace("DTEND;TZID=Asia/Yekaterinburg:20270105T100000", "DTEND;TZID=Asia/Yekaterinburg:"
                             "20270105T080000")
    assert refused_reasons(backwards)[0].startswith("ends (")
    assert refused_reasons(wrap("BEGIN:VEVENT\r\nUID:b\r\nSUMMARY:no start\r\nEND:VEVENT\r\n")) == [
        "an event without a start (DTSTART)"]
    assert "not stored in SOGo" in refused_reasons(wrap("BEGIN:VJOURNAL\r\nUID:j\r\nEND:VJOURNAL\r\n"))[0]
    assert refused_reasons("not a calendar")[0].startswith("not an iCalendar document")
    # a custom zone defined in the file is kept with its own definition
    custom = ("BEGIN:VTIMEZONE\r\nTZID:Head office\r\nBEGIN:STANDARD\r\nDTSTART:16010101T000000\r\n"
              "TZOFFSETFROM:+0500\r\nTZOFFSETTO:+0500\r\nEND:STANDARD\r\nEND:VTIMEZONE\r\n")
    items, refused = calendar_items([("f", wrap(custom + iana.split("VERSION:2.0\r\nPRODID:x\r\n")[1]
                                                  .replace("Asia/Yekaterinburg", "Head office")
                                                  .replace("END:VCALENDAR\r\n", "")))])
    assert not refused and "TZID:Head office" in items[0].body
    # the same export twice is one item; a re-run of the parser gives the same names
    assert [i.name for i in calendar_items([("f", iana), ("g", iana)])[0]] == ["a.ics"]
    assert resource_name("a/b@c", "ics").startswith("uid-")


def test_contacts_rewrites_and_refusals_table():
    photo_bytes = photo(7)
    v4 = ("BEGIN:VCARD\r\nVERSION:4.0\r\nUID:v4\r\nFN:Four\r\nPHOTO:data:image/png;base64,"
          + base64.b64encode(photo_bytes).decode() + "\r\nEND:VCARD\r\n")
    items, refused = contact_items([("f", v4)])
    assert not refused and "PHOTO;ENCODING=b;TYPE=PNG:" in items[0].body.replace("\r\n ", "")
    cp1251 = "BEGIN:VCARD\r\nVERSION:2.1\r\nN:Петров;Пётр\r\nEND:VCARD\r\n".encode("cp1251")
    items, _ = contact_items([("f", decode_text(cp1251))])
    assert "FN:Пётр Петров" in items[0].body and items[0].uid.startswith("rupost-")
    assert items[0].uid == contact_items([("f", decode_text(cp1251))])[0][0].uid  # stable across runs
    nameless = "BEGIN:VCARD\r\nVERSION:3.0\r\nTEL:1\r\nEND:VCARD\r\n"
    bad_photo = "BEGIN:VCARD\r\nVERSION:3.0\r\nFN:P\r\nPHOTO;ENCODING=b;TYPE=JPEG:@@@\r\nEND:VCARD\r\n"
    _, refused = contact_items([("f", nameless + bad_photo + "BEGIN:VCARD\r\nFN:cut")])
    assert [r.reason for r in refused] == ["a contact without a name (no FN, N, ORG or EMAIL)",
                                           "PHOTO is not valid base64",
                                           "the last card has no END:VCARD (a truncated file?)"]
