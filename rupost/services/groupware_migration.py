"""Migration of calendars and contacts into SOGo: from ICS and VCF files as Outlook and
Exchange export them, or from a CalDAV/CardDAV server (another groupware, an older SOGo).

- Into each user's own calendar and address book (``Calendar/personal``,
  ``Contacts/personal``) over CalDAV/CardDAV, logged in to SOGo as one of its super users
  (``SOGoSuperUsernames``, template parameter ``sogo_super_users``), which SOGo lets write
  into every user's folders: no user password is needed.
- Idempotent by UID: an item's resource name is derived from its UID, the names already in
  the target collection are read first (one PROPFIND) and only the others are PUT, with
  ``If-None-Match: *`` so that nothing on SOGo is ever overwritten. A re-run adds nothing.
- State per user in ``rupost_logs.groupware_migrations`` (counts, every refused item with
  its reason); ``--resume`` skips users an earlier run of the same source finished.
"""
from __future__ import annotations

import concurrent.futures
import csv
import hashlib
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import select

from .. import validation
from ..db.models import utcnow
from ..db.ops_models import GroupwareMigration
from ..errors import ValidationError
from .groupware_calendar import Item, Refusal, calendar_items
from .groupware_contacts import contact_items, decode_text
from .groupware_dav import DavClient, DavNotFound
from .migration import existing_targets, parse_map
from .migration_source import MigrationError, tls_context

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from . import Services

FILES = "files"
_CONTENT_TYPES = {"Calendar": "text/calendar", "Contacts": "text/vcard"}
# (counts key, SOGo folder, collection name, display name of a new collection, items and refusals)
Place = tuple[str, str, str, str, tuple[list[Item], list[Refusal]]]


def calendar_name(source_path: str) -> str:
    """The SOGo collection of a source calendar: stable, so a re-run finds it again."""
    base = re.sub(r"[^a-z0-9-]+", "-", source_path.rstrip("/").rsplit("/", 1)[-1].lower()).strip("-")[:40]
    return f"mig-{base or 'calendar'}-{hashlib.sha256(source_path.encode()).hexdigest()[:8]}"


@dataclass
class UserRow:
    line: int
    target: str
    login: str = ""  # the source login (server), or the files read (files)
    password: str = ""
    ics: list[Path] = field(default_factory=list)
    vcf: list[Path] = field(default_factory=list)


@dataclass
class UserResult:
    login: str
    target: str
    status: str = "pending"  # done | incomplete | failed | skipped
    counts: dict = field(default_factory=dict)
    refused: list = field(default_factory=list)
    error: str = ""
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return dict(self.__dict__)

    @property
    def added(self) -> int:
        return sum(c.get("added", 0) for c in self.counts.values())


def file_row(line: int, target: str, ics: list[Path], vcf: list[Path]) -> UserRow:
    local, domain = validation.address(target)
    for path in [*ics, *vcf]:
        if not path.is_file():
            raise ValidationError(f"{path}: no such file")
    if not ics and not vcf:
        raise ValidationError(f"{local}@{domain}: give an ICS and/or a VCF file")
    login = " + ".join(str(p.resolve()) for p in [*ics, *vcf])
    return UserRow(line, f"{local}@{domain}", login, "", ics, vcf)


def parse_file_map(text: str, base: Path, name: str = "map") -> list[UserRow]:
    """CSV ``target_address,ics,vcf`` (a header line is allowed, paths relative to the map's
    directory, either file may be empty). Every bad line is reported; nothing runs until all
    are right."""
    rows: list[UserRow] = []
    problems: list[str] = []
    seen: dict[str, int] = {}
    for number, cells in enumerate(csv.reader(text.splitlines()), start=1):
        cells = [c.strip() for c in cells]
        if not cells or not any(cells) or cells[0].startswith("#"):
            continue
        if number == 1 and cells[0].lower() in ("target_address", "target", "address"):
            continue
        if len(cells) not in (2, 3):
            problems.append(f"line {number}: expected target_address,ics,vcf ({len(cells)} fields)")
            continue
        cells += [""] * (3 - len(cells))
        try:
            row = file_row(number, cells[0], [base / cells[1]] if cells[1] else [],
                           [base / cells[2]] if cells[2] else [])
        except ValidationError as exc:
            problems.append(f"line {number}: {exc}")
            continue
        if row.target in seen:
            problems.append(f"line {number}: {row.target} is already the target of line {seen[row.target]}")
            continue
        seen[row.target] = number
        rows.append(row)
    if problems:
        raise ValidationError(f"{name}: " + "; ".join(problems))
    if not rows:
        raise ValidationError(f"{name}: no users to migrate")
    return rows


def parse_server_map(text: str, name: str = "map") -> list[UserRow]:
    """CSV ``source_login,source_password,target_address``, as for ``migrate imap``."""
    return [UserRow(r.line, r.target, r.login, r.password) for r in parse_map(text, source_name=name)]


class GroupwareMigrationService:
    def __init__(self, app: Services) -> None:
        self.app = app

    def sogo(self, admin: str, password: str) -> DavClient:
        """SOGo's DAV tree on this node (loopback, the port nginx proxies to)."""
        return DavClient(f"http://127.0.0.1:{self.app.config.ports['sogo']}/SOGo/dav/", admin, password)

    def _check_admin(self, sogo: DavClient, admin: str) -> None:
        status, _ = sogo.request("PROPFIND", f"/SOGo/dav/{admin}/", b"", {"Depth": "0"})
        if status == 401:
            raise ValidationError(f"SOGo refused the login of {admin}: wrong password, or not a SOGo user")
        if status != 207:
            raise ValidationError(f"SOGo answered HTTP {status} to {admin}'s login: is SOGo running (rupost deploy)?")

    # ------------------------------------------------------------------ run
    def run(self, rows: list[UserRow], *, sogo_admin: str, sogo_password: str, source_url: str | None = None,
            ca_file: str | None = None, insecure: bool = False, resume: bool = False, workers: int = 4,
            progress: Callable[[str], None] | None = None) -> dict:
        if ca_file and insecure:
            raise ValidationError("give either --ca-file or --insecure, not both")
        if not 1 <= workers <= 16:
            raise ValidationError("--workers must be between 1 and 16")
        for row in rows:  # a domain administrator migrates into their own domains only
            self.app.require_domain(row.target.rpartition("@")[2])
        local, domain = validation.address(sogo_admin)
        sogo_admin = f"{local}@{domain}"
        sogo = self.sogo(sogo_admin, sogo_password)
        self._check_admin(sogo, sogo_admin)
        source = source_url.rstrip("/") + "/" if source_url else FILES
        say = progress or (lambda _text: None)
        done_before = self._done(source) if resume else set()
        # SOGo lets a super user write into the folders of any name, even one no user has
        existing = existing_targets(self.app, [row.target for row in rows])
        started = time.monotonic()
        results = []
        for index, row in enumerate(rows, start=1):
            if row.target not in existing:
                res = UserResult(row.login, row.target, status="failed",
                                 error=f"mailbox {row.target} does not exist on RuPost (rupost mailboxes add "
                                       f"{row.target})")
                self._record(source, res)
            elif (row.login, row.target) in done_before:
                res = UserResult(row.login, row.target, status="skipped", error="done in an earlier run")
            else:
                self._mark_running(source, row)
                res = self._migrate_one(sogo, source, row, ca_file, insecure, workers)
                self._record(source, res)
            say(f"[{index}/{len(rows)}] {_line(res)}")
            results.append(res)
        summary = {"source": source, "users": len(results),
                   **{s: sum(r.status == s for r in results) for s in ("done", "skipped", "incomplete", "failed")},
                   "added": sum(r.added for r in results), "refused": sum(len(r.refused) for r in results),
                   "seconds": round(time.monotonic() - started, 1), "results": [r.as_dict() for r in results]}
        self.app.audit.record("migrate.groupware", source, users=summary["users"], done=summary["done"],
                              failed=summary["failed"], incomplete=summary["incomplete"], added=summary["added"])
        return summary

    def _migrate_one(self, sogo: DavClient, source: str, row: UserRow, ca_file: str | None, insecure: bool,
                     workers: int) -> UserResult:
        res = UserResult(row.login, row.target)
        t0 = time.monotonic()
        try:
            def known(name: str) -> set[str]:  # what a calendar already holds: those items are not rebuilt
                try:
                    return sogo.member_names(f"/SOGo/dav/{row.target}/Calendar/{name}/")
                except DavNotFound:
                    return set()

            plan = (self._plan_files(row, known) if source == FILES
                    else self._plan_server(source, row, ca_file, insecure, known))
            for place, folder, name, display, (items, refused) in plan:
                res.counts[place] = self._upload(sogo, row.target, (folder, name, display), items, workers,
                                                 res.refused)
                res.counts[place]["source"] = len(items) + len(refused)
                res.counts[place]["refused"] += len(refused)
                res.refused += [r.as_dict() for r in refused]
            res.status = "incomplete" if res.refused else "done"
        except (MigrationError, OSError) as exc:
            res.status, res.error = "failed", str(exc)
        res.seconds = round(time.monotonic() - t0, 1)
        return res

    @staticmethod
    def _plan_files(row: UserRow, known: Callable[[str], set[str]]) -> list[Place]:
        return [("calendar", "Calendar", "personal", "",
                 calendar_items(((str(p), decode_text(p.read_bytes())) for p in row.ics), known("personal"))),
                ("contacts", "Contacts", "personal", "",
                 contact_items((str(p), decode_text(p.read_bytes())) for p in row.vcf))]

    @staticmethod
    def _plan_server(source: str, row: UserRow, ca_file: str | None, insecure: bool,
                     known: Callable[[str], set[str]]) -> list[Place]:
        """The source's first calendar (by path) into the personal one, each other calendar
        into a SOGo calendar of its own (same display name); every address book into the
        personal address book."""
        client = DavClient(source, row.login, row.password,
                           tls_context(ca_file, insecure) if source.startswith("https:") else None)
        found = client.collections()
        calendars = sorted((c for c in found if c.kind == "calendar"), key=lambda c: c.path)
        plan: list[Place] = []
        for index, collection in enumerate(calendars):
            name = "personal" if index == 0 else calendar_name(collection.path)
            items = calendar_items(client.objects(collection), known(name))
            plan.append(("calendar" if index == 0 else f"calendar {collection.name}", "Calendar", name,
                         collection.name if index else "", items))
        cards = [o for c in found if c.kind == "addressbook" for o in client.objects(c)]
        plan.append(("contacts", "Contacts", "personal", "", contact_items(cards)))
        return plan

    def _upload(self, sogo: DavClient, target: str, where: tuple[str, str, str], items: list[Item], workers: int,
                refused: list[dict]) -> dict:
        folder, name, display = where
        content_type = _CONTENT_TYPES[folder]
        collection = f"/SOGo/dav/{target}/{folder}/{name}/"
        try:
            existing = sogo.member_names(collection)
        except DavNotFound:
            if name == "personal":
                raise MigrationError(f"SOGo has no {folder}/personal for {target}") from None
            sogo.make_calendar(collection, display)
            existing = set()
        todo = [item for item in items if item.name not in existing and item.body]  # no body: known before
        counts = {"added": 0, "existing": len(items) - len(todo), "refused": 0}

        def put(item: Item) -> tuple[Item, int, str]:
            return (item, *sogo.put_new(collection + item.name, item.body, content_type))

        # groups last: SOGo resolves a list's members when it stores the list
        for batch in ([i for i in todo if i.kind != "group"], [i for i in todo if i.kind == "group"]):
            with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
                for item, status, text in pool.map(put, batch):
                    if status in (200, 201, 204):
                        counts["added"] += 1
                    elif status == 412:
                        counts["existing"] += 1
                    else:
                        counts["refused"] += 1
                        refused.append(Refusal(item.kind, item.uid, item.summary,
                                               f"SOGo refused it: HTTP {status} {text[:300]}").as_dict())
        return counts

    # ---------------------------------------------------------------- state
    def _row(self, s: Session, source: str, login: str, target: str) -> GroupwareMigration:
        row = s.scalar(select(GroupwareMigration).where(GroupwareMigration.source == source,
                                                        GroupwareMigration.source_login == login,
                                                        GroupwareMigration.target == target))
        if row is None:
            row = GroupwareMigration(source=source, source_login=login, target=target, status="pending", runs=0,
                                     counts={}, refused=[])
            s.add(row)
        return row

    def _mark_running(self, source: str, row: UserRow) -> None:
        with self.app.dbs.session("logs") as s:
            r = self._row(s, source, row.login, row.target)
            r.status, r.started_at, r.finished_at, r.error = "running", utcnow(), None, ""
            r.runs = (r.runs or 0) + 1

    def _record(self, source: str, res: UserResult) -> None:
        with self.app.dbs.session("logs") as s:
            r = self._row(s, source, res.login, res.target)
            r.status, r.finished_at, r.error = res.status, utcnow(), res.error
            r.counts, r.refused = res.counts, res.refused

    def _done(self, source: str) -> set[tuple[str, str]]:
        with self.app.dbs.session("logs") as s:
            return {(r.source_login, r.target) for r in s.scalars(
                select(GroupwareMigration).where(GroupwareMigration.source == source,
                                                 GroupwareMigration.status == "done"))}

    def status(self, target: str | None = None) -> list[dict]:
        with self.app.dbs.session("logs") as s:
            query = select(GroupwareMigration).order_by(GroupwareMigration.source, GroupwareMigration.target)
            if target:
                query = query.where(GroupwareMigration.target == target.strip().lower())
            return [{"id": r.id, "source": r.source, "source_login": r.source_login, "target": r.target,
                     "status": r.status, "runs": r.runs, "counts": r.counts, "refused": r.refused,
                     "error": r.error, "started_at": r.started_at.isoformat() if r.started_at else None,
                     "finished_at": r.finished_at.isoformat() if r.finished_at else None}
                    for r in s.scalars(query) if self.app.in_scope(r.target.rpartition("@")[2])]


def _line(res: UserResult) -> str:
    base = f"{res.target}: {res.status}"
    for place, c in res.counts.items():
        base += (f", {place}: {c.get('source', 0)} in the source, {c['added']} added, {c['existing']} already there, "
                 f"{c['refused']} refused")
    if res.status in ("done", "incomplete"):
        base += f" ({res.seconds} s)"
    if res.error:
        base += f": {res.error}"
    return base
