"""Calendar items for the groupware migration: ICS documents (an Outlook or Exchange export,
or the objects of a CalDAV collection) -> one iCalendar object per UID, as a CalDAV server
stores them (RFC 4791 §4.1: a recurring event and its overridden instances share one
resource).

What is rewritten, and why:
- Time zones. Outlook and Exchange name zones the Windows way (``TZID:Russian Standard
  Time``) with a VTIMEZONE that often holds only this year's rule; such names are mapped to
  IANA zones with CLDR's windowsZones table (rupost/data/windows_zones.json, territory 001)
  and given a VTIMEZONE generated from the system's zoneinfo. An IANA name is kept (its
  VTIMEZONE regenerated the same way); any other name keeps the file's own VTIMEZONE, and a
  name without one is refused.
- All-day events that Outlook writes as midnight-to-midnight date-times
  (``X-MICROSOFT-CDO-ALLDAYEVENT:TRUE``) become DATE values, so they do not move when seen
  from another zone.
- A display reminder without a DESCRIPTION (RFC 5545 §3.6.6 requires one) gets the event's
  summary.

Everything else (attendees, organiser, RRULE, EXDATE, RECURRENCE-ID overrides, reminders,
categories, X- properties) is passed through as parsed by icalendar.
"""
from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import re
import zoneinfo
from collections.abc import Container, Iterable
from dataclasses import dataclass
from importlib import resources

import icalendar

PRODID = "-//RuPost//groupware migration//EN"
KINDS = {"VEVENT": "event", "VTODO": "task"}
_TZ_PROPERTIES = ("DTSTART", "DTEND", "DUE", "RECURRENCE-ID", "EXDATE", "RDATE")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,150}$")


@dataclass
class Item:
    """One object to store in the target collection."""

    kind: str  # event | task | contact | group
    uid: str
    name: str  # resource name in the collection, derived from the UID
    body: str
    summary: str = ""


@dataclass
class Refusal:
    kind: str
    uid: str
    summary: str
    reason: str

    def as_dict(self) -> dict:
        return dict(self.__dict__)


class Refused(Exception):
    """An item that cannot be migrated; the message is the reason."""


def resource_name(uid: str, extension: str) -> str:
    """The same UID always gives the same name: this is what makes a re-run add nothing."""
    if _SAFE_NAME.match(uid):
        return f"{uid}.{extension}"
    return f"uid-{hashlib.sha256(uid.encode()).hexdigest()[:40]}.{extension}"


@functools.cache
def windows_zones() -> dict[str, str]:
    data = json.loads(resources.files("rupost.data").joinpath("windows_zones.json").read_text(encoding="utf-8"))
    return {name.lower(): zone for name, zone in data["zones"].items()}


def iana_zone(tzid: str) -> str | None:
    """The IANA name for a TZID written the IANA or the Windows way; None when unknown."""
    name = tzid.strip().strip('"').strip()
    mapped = windows_zones().get(name.lower())
    if mapped:
        return mapped
    if "/" in name or name in ("UTC", "GMT"):
        try:
            zoneinfo.ZoneInfo(name)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            return None
        return name
    return None


@functools.cache
def _zone_definition(zone: str) -> bytes:
    return icalendar.Timezone.from_tzid(zone).to_ical()


def _timezone_text(tzid: str, own: dict[str, bytes]) -> bytes:
    """The VTIMEZONE of a TZID as text: the file's own for a zone only it defines, else one
    generated from zoneinfo (serialised once per zone and run, not once per event)."""
    return own[tzid] if tzid in own else _zone_definition(tzid)


def _values(component: icalendar.cal.Component, key: str) -> list:
    value = component.get(key)
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _map_zones(component: icalendar.cal.Component, own: dict[str, bytes]) -> set[str]:
    """Rewrites the TZID parameters to IANA names where known; the TZIDs now in use."""
    used = set()
    for key in _TZ_PROPERTIES:
        for value in _values(component, key):
            tzid = value.params.get("TZID") if hasattr(value, "params") else None
            if not tzid:
                continue
            zone = iana_zone(str(tzid))
            if zone is None and str(tzid) not in own:
                raise Refused(f"unknown time zone {tzid!r} ({key}): neither an IANA name, a Windows name "
                              "(CLDR windowsZones) nor defined by a VTIMEZONE in the file")
            value.params["TZID"] = zone or str(tzid)
            used.add(zone or str(tzid))
    return used


def _is_midnight(value: object) -> bool:
    return isinstance(value, dt.datetime) and value.time() == dt.time(0, 0)


def _all_day(component: icalendar.cal.Component) -> None:
    if str(component.get("X-MICROSOFT-CDO-ALLDAYEVENT", "")).upper() != "TRUE":
        return
    keys = [k for k in ("DTSTART", "DTEND", "RECURRENCE-ID") if k in component]
    if not all(_is_midnight(component.decoded(k)) for k in keys):
        return
    for key in keys:
        day = component.decoded(key).date()
        del component[key]
        component.add(key, day)
    exdates = [d.dt for value in _values(component, "EXDATE") for d in value.dts]
    if exdates:
        del component["EXDATE"]
        component.add("EXDATE", [d.date() if isinstance(d, dt.datetime) else d for d in exdates])


def _alarms(component: icalendar.cal.Component) -> None:
    for alarm in component.walk("VALARM"):
        if "TRIGGER" not in alarm:
            raise Refused("a reminder (VALARM) without a TRIGGER")
        if str(alarm.get("ACTION", "DISPLAY")).upper() == "DISPLAY" and "DESCRIPTION" not in alarm:
            alarm.add("DESCRIPTION", str(component.get("SUMMARY", "Reminder")))


def _check(component: icalendar.cal.Component) -> None:
    if component.name == "VEVENT" and "DTSTART" not in component:
        raise Refused("an event without a start (DTSTART)")
    try:
        start = component.decoded("DTSTART") if "DTSTART" in component else None
        end = component.decoded("DTEND") if "DTEND" in component else None
    except (ValueError, TypeError, KeyError) as exc:
        raise Refused(f"unreadable start or end: {exc}") from None
    if start is not None and end is not None:
        if isinstance(start, dt.datetime) != isinstance(end, dt.datetime):
            raise Refused("start and end are not both dates or both date-times")
        if _comparable(end) < _comparable(start):
            raise Refused(f"ends ({end}) before it starts ({start})")


def _comparable(value: dt.date) -> dt.datetime:
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    return dt.datetime(value.year, value.month, value.day, tzinfo=dt.UTC)


def _summary(components: list[icalendar.cal.Component]) -> str:
    return next((str(c.get("SUMMARY")) for c in components if c.get("SUMMARY")), "")


def build_object(uid: str, components: list[icalendar.cal.Component], own: dict[str, bytes]) -> str:
    """One iCalendar object: the master, its overrides and the time zones they use."""
    masters = [c for c in components if "RECURRENCE-ID" not in c]
    if len(masters) > 1:
        raise Refused(f"{len(masters)} different items share this UID")
    overrides = [str(c.get("RECURRENCE-ID").to_ical().decode()) for c in components if "RECURRENCE-ID" in c]
    if len(set(overrides)) != len(overrides):
        raise Refused("the same occurrence (RECURRENCE-ID) is overridden twice")
    zones: set[str] = set()
    for component in components:
        _check(component)
        _all_day(component)
        _alarms(component)
        zones |= _map_zones(component, own)
    parts = [f"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:{PRODID}\r\n".encode()]
    parts += [_timezone_text(tzid, own) for tzid in sorted(zones)]
    parts += [c.to_ical() for c in sorted(components, key=lambda c: "RECURRENCE-ID" in c)]  # the master first
    parts.append(b"END:VCALENDAR\r\n")
    return b"".join(parts).decode()


def _identity(component: icalendar.cal.Component) -> tuple[str, ...]:
    """An occurrence and its version: two copies of one item in an export are one item, two
    different versions of it are a conflict (refused in build_object)."""
    return tuple(str(component.get(key, "")) for key in ("RECURRENCE-ID", "SEQUENCE", "DTSTAMP", "LAST-MODIFIED",
                                                          "DTSTART", "SUMMARY"))


def _fallback_uid(component: icalendar.cal.Component) -> str:
    """Outlook always writes a UID; for an item without one, a UID from its content keeps
    a re-run from adding it twice."""
    return "rupost-" + hashlib.sha256(component.to_ical()).hexdigest()[:32]


def calendar_items(documents: Iterable[tuple[str, str]], known: Container[str] = ()
                   ) -> tuple[list[Item], list[Refusal]]:
    """(origin, ICS text) pairs -> the objects to store, and what is refused with the reason.
    An item whose resource name is in `known` (already on the target) is not built again:
    it is listed with an empty body, so that a re-run only parses."""
    groups: dict[str, list[icalendar.cal.Component]] = {}
    kinds: dict[str, str] = {}
    seen: dict[str, set[tuple[str, ...]]] = {}
    own: dict[str, bytes] = {}
    refused: list[Refusal] = []
    for origin, text in documents:
        try:
            calendars = icalendar.Calendar.from_ical(text, multiple=True)
        except ValueError as exc:
            refused.append(Refusal("calendar", "", origin, f"not an iCalendar document: {exc}"))
            continue
        for cal in calendars:
            for tz in cal.walk("VTIMEZONE"):
                if str(tz.get("TZID")) not in own:
                    own[str(tz.get("TZID"))] = tz.to_ical()
            for component in cal.subcomponents:
                name = component.name or ""
                if name == "VTIMEZONE":
                    continue
                kind = KINDS.get(name)
                if kind is None:
                    refused.append(Refusal(name.lower(), str(component.get("UID", "")),
                                           str(component.get("SUMMARY", "")),
                                           f"{name} is not stored in SOGo calendars (events and tasks are)"))
                    continue
                uid = str(component.get("UID") or "")
                if not uid:
                    uid = _fallback_uid(component)
                    component.add("UID", uid)
                group = groups.setdefault(uid, [])
                key = _identity(component)
                if key not in seen.setdefault(uid, set()):  # the same item exported twice
                    seen[uid].add(key)
                    group.append(component)
                kinds.setdefault(uid, kind)
    items = []
    for uid, components in groups.items():
        name = resource_name(uid, "ics")
        if name in known:
            items.append(Item(kinds[uid], uid, name, "", _summary(components)))
            continue
        try:
            body = build_object(uid, components, own)
        except Refused as exc:
            refused.append(Refusal(kinds[uid], uid, _summary(components), str(exc)))
            continue
        items.append(Item(kinds[uid], uid, name, body, _summary(components)))
    return items, refused
