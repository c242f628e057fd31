"""Calendars and contacts as Outlook/Exchange export them, and a radicale server to hold them:
the sources of tests/test_groupware_migration.py and benchmarks/groupware.py."""
from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import time
import uuid
from pathlib import Path

from support.instance import free_ports

# Outlook 2016+ on Windows: Windows zone names, a VTIMEZONE with only the current rule
OUTLOOK_ZONES = """BEGIN:VTIMEZONE\r
TZID:Russian Standard Time\r
BEGIN:STANDARD\r
DTSTART:16010101T000000\r
TZOFFSETFROM:+0300\r
TZOFFSETTO:+0300\r
END:STANDARD\r
END:VTIMEZONE\r
BEGIN:VTIMEZONE\r
TZID:W. Europe Standard Time\r
BEGIN:STANDARD\r
DTSTART:16011028T030000\r
RRULE:FREQ=YEARLY;BYDAY=-1SU;BYMONTH=10\r
TZOFFSETFROM:+0200\r
TZOFFSETTO:+0100\r
END:STANDARD\r
BEGIN:DAYLIGHT\r
DTSTART:16010325T020000\r
RRULE:FREQ=YEARLY;BYDAY=-1SU;BYMONTH=3\r
TZOFFSETFROM:+0100\r
TZOFFSETTO:+0200\r
END:DAYLIGHT\r
END:VTIMEZONE\r
"""

WEEKLY_UID = "040000008200E00074C5B7101A82E00800000000D0A5D2B1E56BDB01000000000000000010000000C3A1F0B5"
ALLDAY_UID = "040000008200E00074C5B7101A82E00800000000A1B2C3D4E56BDB01000000000000000010000000AABBCCDD"
BAD_ZONE_UID = "040000008200E00074C5B7101A82E0080000000011223344E56BDB01000000000000000010000000FFEEDDCC"
MSK = "TZID=Russian Standard Time"


def _event(uid: str, lines: list[str]) -> str:
    return "BEGIN:VEVENT\r\n" + "".join(f"{line}\r\n" for line in [
        "CLASS:PUBLIC", "CREATED:20261101T080000Z", "DTSTAMP:20261201T080000Z", "PRIORITY:5", "SEQUENCE:0",
        "TRANSP:OPAQUE", f"UID:{uid}", "X-MICROSOFT-CDO-BUSYSTATUS:BUSY", "X-MICROSOFT-CDO-IMPORTANCE:1",
        *lines]) + "END:VEVENT\r\n"


ATTENDEES = ['ORGANIZER;CN="Иван Петров":mailto:ivan.petrov@corp.example',
             'ATTENDEE;CN="Анна Смирнова";RSVP=TRUE;ROLE=REQ-PARTICIPANT:mailto:anna@corp.example',
             "ATTENDEE;CN=Petr Sidorov;RSVP=TRUE;ROLE=OPT-PARTICIPANT:mailto:petr@corp.example"]
ALARM = ["BEGIN:VALARM", "TRIGGER:-PT15M", "ACTION:DISPLAY", "DESCRIPTION:Reminder", "END:VALARM"]


def outlook_ics() -> str:
    """A weekly Monday meeting (Moscow time, 12 occurrences) with two moved occurrences (one
    to Tuesday, one written in W. Europe time) and one cancelled (EXDATE); an all-day event as
    Outlook writes it (midnight to midnight); an event in a zone nobody knows (refused)."""
    weekly = _event(WEEKLY_UID, [
        *ATTENDEES, "DESCRIPTION:Еженедельная планёрка отдела\\n", f"DTSTART;{MSK}:20270111T100000",
        f"DTEND;{MSK}:20270111T110000", f"EXDATE;{MSK}:20270201T100000",
        "RRULE:FREQ=WEEKLY;COUNT=12;BYDAY=MO", "LOCATION:Переговорная 1", "SUMMARY;LANGUAGE=ru:Планёрка", *ALARM])
    moved_1 = _event(WEEKLY_UID, [
        *ATTENDEES, f"RECURRENCE-ID;{MSK}:20270118T100000", f"DTSTART;{MSK}:20270119T140000",
        f"DTEND;{MSK}:20270119T150000", "LOCATION:Переговорная 2", "SUMMARY;LANGUAGE=ru:Планёрка (вторник)", *ALARM])
    moved_2 = _event(WEEKLY_UID, [
        *ATTENDEES, f"RECURRENCE-ID;{MSK}:20270215T100000", "DTSTART;TZID=W. Europe Standard Time:20270215T120000",
        "DTEND;TZID=W. Europe Standard Time:20270215T130000", "SUMMARY;LANGUAGE=ru:Планёрка (из Берлина)", *ALARM])
    all_day = _event(ALLDAY_UID, [
        f"DTSTART;{MSK}:20270308T000000", f"DTEND;{MSK}:20270309T000000", "SUMMARY:Международный женский день",
        "X-MICROSOFT-CDO-ALLDAYEVENT:TRUE"])
    bad_zone = _event(BAD_ZONE_UID, [
        "DTSTART;TZID=Nowhere Standard Time:20270120T100000", "DTEND;TZID=Nowhere Standard Time:20270120T110000",
        "SUMMARY:Zone nobody knows"])
    return ("BEGIN:VCALENDAR\r\nPRODID:-//Microsoft Corporation//Outlook 16.0 MIMEDIR//EN\r\nVERSION:2.0\r\n"
            "METHOD:PUBLISH\r\nX-MS-OLK-FORCEINSPECTOROPEN:TRUE\r\n" + OUTLOOK_ZONES
            + weekly + moved_1 + moved_2 + all_day + bad_zone + "END:VCALENDAR\r\n")


def photo(i: int) -> bytes:
    """A small JPEG-shaped blob per contact (SOGo stores the bytes, it does not decode them)."""
    return b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + hashlib.sha256(str(i).encode()).digest() * 8 + b"\xff\xd9"


def _fold(line: str) -> str:
    return "\r\n ".join(line[i:i + 74] for i in range(0, len(line), 74))


def outlook_vcf(count: int = 200, group_size: int = 20) -> str:
    """`count` contacts as Outlook writes them (vCard 2.1: bare TYPE parameters,
    quoted-printable notes with soft line breaks, ENCODING=BASE64 photos, no UID on every
    third), and one group (vCard 4 KIND:group / MEMBER) of the first `group_size`."""
    cards = []
    for i in range(count):
        b64 = base64.b64encode(photo(i)).decode()
        uid = "" if i % 3 == 0 else f"UID:contact-{i:05d}\r\n"
        note = "Line one=0D=0ALine two =\r\nand more"  # a soft line break inside the value
        cards.append(
            f"BEGIN:VCARD\r\nVERSION:2.1\r\n{uid}N;LANGUAGE=ru;CHARSET=utf-8:Фамилия{i};Имя{i}\r\n"
            f"FN;CHARSET=utf-8:Имя{i} Фамилия{i}\r\nORG:Corp;Отдел {i % 7}\r\nTEL;WORK;VOICE:+7 495 555-{i:04d}\r\n"
            f"EMAIL;PREF;INTERNET:contact{i}@corp.example\r\nNOTE;ENCODING=QUOTED-PRINTABLE:{note}\r\n"
            + _fold(f"PHOTO;TYPE=JPEG;ENCODING=BASE64:{b64}") + "\r\n\r\nEND:VCARD\r\n")
    members = "".join(f"MEMBER:urn:uuid:contact-{i:05d}\r\n" for i in [i for i in range(count) if i % 3][:group_size])
    cards.append(f"BEGIN:VCARD\r\nVERSION:4.0\r\nUID:group-sales\r\nKIND:group\r\nFN:Отдел продаж\r\n{members}"
                 "END:VCARD\r\n")
    return "".join(cards)


def group_members(vcf: str) -> list[str]:
    return [line.split("urn:uuid:", 1)[1] for line in vcf.split("\r\n") if line.startswith("MEMBER:")]


class Radicale:
    """Debian's radicale on a free loopback port, htpasswd (plain) logins, its storage filled
    directly on disk (the filesystem layout radicale 3 reads)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_ports(1)[0]
        self.users: dict[str, str] = {}
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def add_user(self, login: str, password: str) -> None:
        self.users[login] = password

    def collection(self, login: str, name: str, tag: str, items: dict[str, str], display: str = "") -> None:
        path = self.root / "collections" / "collection-root" / login / name
        path.mkdir(parents=True, exist_ok=True)
        (path / ".Radicale.props").write_text(json.dumps({"tag": tag, "D:displayname": display or name}))
        for href, text in items.items():
            (path / href).write_text(text, encoding="utf-8")

    def start(self) -> Radicale:
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "users").write_text("".join(f"{u}:{p}\n" for u, p in self.users.items()))
        conf = self.root / "config"
        conf.write_text(f"[server]\nhosts = 127.0.0.1:{self.port}\n[auth]\ntype = htpasswd\n"
                        f"htpasswd_filename = {self.root / 'users'}\nhtpasswd_encryption = plain\n"
                        f"[storage]\nfilesystem_folder = {self.root / 'collections'}\n[logging]\nlevel = warning\n")
        self.log = open(self.root / "radicale.log", "w")  # noqa: SIM115 (open for the server's lifetime)
        self.proc = subprocess.Popen(["radicale", "--config", str(conf)], stdout=self.log, stderr=subprocess.STDOUT)
        import socket

        for _ in range(100):  # bounded: 10 s
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"radicale did not listen: {(self.root / 'radicale.log').read_text()}")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.log.close()


def source_event(i: int) -> str:
    """A plain or a recurring event in an IANA zone, as a CalDAV server holds it."""
    uid = f"radicale-event-{i:05d}-{uuid.UUID(int=i).hex[:8]}"
    rule = "RRULE:FREQ=DAILY;COUNT=5\r\n" if i % 10 == 0 else ""
    day = 1 + i % 28
    return ("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//Radicale test//EN\r\nBEGIN:VEVENT\r\n"
            f"UID:{uid}\r\nDTSTAMP:20261201T080000Z\r\n"
            f"DTSTART;TZID=Europe/Moscow:202703{day:02d}T{9 + i % 8:02d}0000\r\n"
            f"DTEND;TZID=Europe/Moscow:202703{day:02d}T{10 + i % 8:02d}0000\r\n{rule}SUMMARY:Event {i}\r\n"
            "END:VEVENT\r\nEND:VCALENDAR\r\n")


def source_card(i: int) -> str:
    return (f"BEGIN:VCARD\r\nVERSION:3.0\r\nUID:radicale-card-{i:05d}\r\nFN:Person {i}\r\nN:{i};Person;;;\r\n"
            f"EMAIL;TYPE=INTERNET:person{i}@source.example\r\nEND:VCARD\r\n")
