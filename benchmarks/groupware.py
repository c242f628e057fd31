"""Calendars and contacts migration: items/s for N calendar items and N contacts, and a re-run.

On a throwaway node (its own SOGo, PostgreSQL and nginx), one user gets N events (an
Outlook-style ICS: Windows zone names, attendees, a reminder; every tenth event weekly with an
overridden and a cancelled occurrence) and N contacts (Outlook vCard 2.1, every one with a
photo) through `rupost migrate groupware` (service layer, 4 parallel PUTs, as the CLI's
default). The baseline, measured in the same run on a second user: the same prepared objects
PUT straight to SOGo with the same parallelism (no parsing, no listing, no bookkeeping), so
`ratio` = migration rate / SOGo's own PUT rate says what the migration itself costs. The
re-run is the same command again (it lists the collections and adds nothing).

    python3 -m benchmarks.groupware [--items N] [--json FILE]      (PYTHONPATH=tests)
"""
from __future__ import annotations

import argparse
import base64
import concurrent.futures
import json
import tempfile
import time
from pathlib import Path

from groupware_data import ALARM, ATTENDEES, MSK, OUTLOOK_ZONES, _event, _fold, photo

from .common import node_instance

PASSWORD = "bench-groupware-password"
WORKERS = 4


def events_ics(count: int) -> str:
    body = []
    for i in range(count):
        uid = f"bench-event-{i:06d}"
        day = 1 + i % 28
        start, end = f"202702{day:02d}T{8 + i % 9:02d}0000", f"202702{day:02d}T{9 + i % 9:02d}0000"
        lines = [*ATTENDEES, f"DTSTART;{MSK}:{start}", f"DTEND;{MSK}:{end}", f"SUMMARY:Встреча {i}", *ALARM]
        if i % 10 == 0:
            lines += ["RRULE:FREQ=WEEKLY;COUNT=8", f"EXDATE;{MSK}:{start[:6]}{day + 7:02d}{start[8:]}"
                      if day + 7 <= 28 else f"EXDATE;{MSK}:202703{day + 7 - 28:02d}{start[8:]}"]
        body.append(_event(uid, lines))
        if i % 10 == 0:
            body.append(_event(uid, [*ATTENDEES, f"RECURRENCE-ID;{MSK}:{start}", f"DTSTART;{MSK}:{start[:9]}170000",
                                     f"DTEND;{MSK}:{start[:9]}180000", f"SUMMARY:Встреча {i} (перенесена)"]))
    return ("BEGIN:VCALENDAR\r\nPRODID:-//Microsoft Corporation//Outlook 16.0 MIMEDIR//EN\r\nVERSION:2.0\r\n"
            + OUTLOOK_ZONES + "".join(body) + "END:VCALENDAR\r\n")


def contacts_vcf(count: int) -> str:
    return "".join(
        f"BEGIN:VCARD\r\nVERSION:2.1\r\nUID:bench-card-{i:06d}\r\nN;CHARSET=utf-8:Фамилия{i};Имя{i}\r\n"
        f"FN;CHARSET=utf-8:Имя{i} Фамилия{i}\r\nTEL;WORK;VOICE:+7 495 {i:07d}\r\n"
        f"EMAIL;PREF;INTERNET:c{i}@bench.example\r\n"
        + _fold(f"PHOTO;TYPE=JPEG;ENCODING=BASE64:{base64.b64encode(photo(i)).decode()}") + "\r\n\r\nEND:VCARD\r\n"
        for i in range(count))


def raw_puts(inst, user: str, items, folder: str, content_type: str) -> float:
    """The baseline: the prepared objects PUT straight to SOGo, WORKERS at a time; seconds."""
    sogo = inst.app.groupware_migration.sogo(user, PASSWORD)
    base = f"/SOGo/dav/{user}/{folder}/personal/"

    def put(item) -> None:
        status, text = sogo.put_new(base + item.name, item.body, content_type)
        if status not in (201, 204):
            raise RuntimeError(f"baseline PUT {item.name}: HTTP {status} {text[:200]}")

    t0 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(max_workers=WORKERS) as pool:
        list(pool.map(put, items))
    return time.perf_counter() - t0


def measure(inst, count: int, work: Path) -> dict:
    from rupost.services.groupware_calendar import calendar_items
    from rupost.services.groupware_contacts import contact_items
    from rupost.services.groupware_migration import file_row

    domain = "gw.bench.test"
    inst.app.domains.add(domain)
    for local in ("admin", "migrated", "baseline"):
        inst.app.mailboxes.add(f"{local}@{domain}", PASSWORD, "0")
    inst.app.templates.set_parameters({"sogo_super_users": [f"admin@{domain}"]})
    inst.deploy()
    ics, vcf = work / "calendar.ics", work / "contacts.vcf"
    ics.write_text(events_ics(count), encoding="utf-8")
    vcf.write_text(contacts_vcf(count), encoding="utf-8")
    service = inst.app.groupware_migration
    out: dict = {"items": count}
    for kind, paths, folder, content_type in (("calendar", ([ics], []), "Calendar", "text/calendar"),
                                              ("contacts", ([], [vcf]), "Contacts", "text/vcard")):
        row = file_row(1, f"migrated@{domain}", *paths)
        t0 = time.perf_counter()
        first = service.run([row], sogo_admin=f"admin@{domain}", sogo_password=PASSWORD, workers=WORKERS)
        seconds = time.perf_counter() - t0
        if first["added"] != count or first["refused"]:
            raise RuntimeError(f"{kind}: {first['added']} added, {first['refused']} refused of {count}")
        t0 = time.perf_counter()
        again = service.run([row], sogo_admin=f"admin@{domain}", sogo_password=PASSWORD, workers=WORKERS)
        rerun = time.perf_counter() - t0
        if again["added"]:
            raise RuntimeError(f"{kind}: the re-run added {again['added']}")
        text = paths[0][0].read_text() if paths[0] else paths[1][0].read_text()
        items = (calendar_items([("x", text)]) if kind == "calendar" else contact_items([("x", text)]))[0]
        base = raw_puts(inst, f"baseline@{domain}", items, folder, content_type)
        out.update({f"{kind}_s": round(seconds, 1), f"{kind}_items_s": round(count / seconds, 1),
                    f"{kind}_rerun_s": round(rerun, 1), f"{kind}_baseline_items_s": round(count / base, 1),
                    f"{kind}_ratio": round(base / seconds, 2)})
        print(json.dumps({k: v for k, v in out.items() if k.startswith(kind)}), flush=True)
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=10_000, help="calendar items and contacts each (default 10,000)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    if not 10 <= args.items <= 100_000:
        parser.error("--items must be between 10 and 100,000")
    with node_instance("gwbench") as (inst, _pg), tempfile.TemporaryDirectory(prefix="rpb-gw-") as work:
        inst.deploy()
        results = measure(inst, args.items, Path(work))
    print(json.dumps(results, indent=1))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)
    return results


if __name__ == "__main__":
    main()
