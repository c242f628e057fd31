"""Mailboxes of the local user directory. Creating one writes rows, never a file."""
from __future__ import annotations

import builtins
import csv
import io
import multiprocessing
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, TextIO

from sqlalchemy import ColumnElement, func, insert, select
from sqlalchemy.exc import IntegrityError

from .. import validation
from ..db.models import Alias, AuditRecord, Domain, Mailbox
from ..errors import ConflictError, NotFoundError, PermissionDeniedError, RuPostError, ValidationError
from ..passwords import check_password_policy, hash_password
from .cache import accounts_changed
from .shared_mailboxes import NO_LOGIN as SHARED_NO_LOGIN

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from . import Services

IMPORT_COLUMNS = ("address", "password", "quota", "name")
IMPORT_REQUIRED = ("address", "password")
IMPORT_MAX_ROWS = 1_000_000
IMPORT_ERRORS_SHOWN = 50
PARALLEL_HASHING_FROM = 64  # rows; below this a process pool costs more than it saves


class MailboxService:
    def __init__(self, app: Services) -> None:
        self.app = app

    def add(self, address: str, password: str, quota: str | int = 0, display_name: str = "") -> dict:
        local, domain_name = validation.address(address)
        full = f"{local}@{domain_name}"
        quota_bytes = validation.size_bytes(quota)
        password_hash = hash_password(password)
        try:
            with self.app.dbs.session("data") as s:
                domain = self.app.domains.get(s, domain_name)
                if s.scalar(select(Alias.id).where(Alias.address == full)):
                    raise ConflictError(f"{full} is already an alias")
                mailbox = Mailbox(domain_id=domain.id, local_part=local, address=full, password_hash=password_hash,
                                  display_name=display_name.strip(), quota_bytes=quota_bytes, enabled=True)
                s.add(mailbox)
                s.flush()
                out = self._as_dict(mailbox)
        except IntegrityError:
            raise ConflictError(f"mailbox {full} already exists") from None
        self.app.audit.record("mailbox.add", full, quota_bytes=quota_bytes)
        return out

    def _get(self, session: Session, address: str) -> Mailbox:
        local, domain = validation.address(address)
        self.app.require_domain(domain)
        mailbox = session.scalar(select(Mailbox).where(Mailbox.address == f"{local}@{domain}"))
        if mailbox is None:
            raise NotFoundError(f"mailbox {local}@{domain} does not exist")
        return mailbox

    def show(self, address: str) -> dict:
        with self.app.dbs.session("data") as s:
            return self._as_dict(self._get(s, address))

    def list(self, domain: str | None = None, search: str | None = None, limit: int = 1000,
             offset: int = 0) -> list[dict]:
        with self.app.dbs.session("data") as s:
            query = select(Mailbox).order_by(Mailbox.address).limit(limit).offset(offset)
            if domain:
                query = query.where(Mailbox.domain_id == self.app.domains.get(s, domain).id)
            elif (scope := self.app.scoped(None)) is not None:  # a domain administrator: their domains
                query = query.where(Mailbox.domain_id.in_(select(Domain.id).where(Domain.name.in_(scope))))
            if search:
                query = query.where(Mailbox.address.contains(search.lower(), autoescape=True))
            return [self._as_dict(m) for m in s.scalars(query)]

    PAGE_SORTS = {"address": Mailbox.address, "name": Mailbox.display_name, "quota": Mailbox.quota_bytes,
                  "enabled": Mailbox.enabled, "created": Mailbox.created_at}

    def page(self, search: str | None = None, domains: builtins.list[str] | None = None, sort: str = "address",
             descending: bool = False, limit: int = 50, offset: int = 0) -> dict:
        """One page of mailboxes, filtered, sorted and counted in SQL. `domains` limits the
        result to those domains (None: all); `search` matches the address or the display name."""
        if sort not in self.PAGE_SORTS:
            raise ValidationError(f"cannot sort mailboxes by {sort!r} (use {', '.join(self.PAGE_SORTS)})")
        conditions: builtins.list[ColumnElement[bool]] = []
        domains = self.app.scoped(domains)
        if domains is not None:
            conditions.append(Mailbox.domain_id.in_(select(Domain.id).where(Domain.name.in_(domains))))
        if search:
            conditions.append(Mailbox.address.contains(search.strip().lower(), autoescape=True)
                              | Mailbox.display_name.icontains(search.strip(), autoescape=True))
        column = self.PAGE_SORTS[sort]
        order = [column.desc() if descending else column.asc()] + ([Mailbox.address] if sort != "address" else [])
        limit, offset = max(1, min(limit, 500)), max(0, offset)
        count_all = select(func.count()).select_from(Mailbox).where(*conditions)
        with self.app.dbs.session("data") as s:
            if not search:  # the page walks the address index; the count is a separate fast scan
                rows = s.scalars(select(Mailbox).where(*conditions).order_by(*order).limit(limit).offset(offset))
                return {"rows": [self._as_dict(m) for m in rows], "total": s.scalar(count_all)}
            # a substring search reads every row once: the matches are counted in the same scan
            found = s.execute(select(Mailbox, func.count().over().label("total")).where(*conditions)
                              .order_by(*order).limit(limit).offset(offset)).all()
            total = found[0].total if found else s.scalar(count_all)
            return {"rows": [self._as_dict(r.Mailbox) for r in found], "total": total}

    def set_password(self, address: str, password: str) -> None:
        password_hash = hash_password(password)
        with self.app.dbs.session("data") as s:
            mailbox = self._get(s, address)
            if mailbox.password_hash == SHARED_NO_LOGIN:
                raise ValidationError(f"{mailbox.address} is a shared mailbox: it has no login of its own, its "
                                      "members open it (rupost shared-mailboxes members)")
            mailbox.password_hash = password_hash
        accounts_changed(self.app)
        self.app.audit.record("mailbox.passwd", address)

    def set_quota(self, address: str, quota: str | int) -> None:
        quota_bytes = validation.size_bytes(quota)
        with self.app.dbs.session("data") as s:
            mailbox = self._get(s, address)
            mailbox.quota_bytes = quota_bytes
            shared = mailbox.password_hash == SHARED_NO_LOGIN
        accounts_changed(self.app)  # dovecot caches the quota with the userdb answer
        if shared:  # members' sessions read a shared mailbox's limit from its maildirsize
            self.app.shared_mailboxes.write_quota_limit(mailbox.address)
        self.app.audit.record("mailbox.quota", address, quota_bytes=quota_bytes)

    def set_enabled(self, address: str, enabled: bool) -> None:
        with self.app.dbs.session("data") as s:
            self._get(s, address).enabled = enabled
        accounts_changed(self.app)
        self.app.audit.record("mailbox.enable" if enabled else "mailbox.disable", address)

    def remove(self, address: str) -> None:
        """Remove the mailbox from the directory; its stored mail stays on disk (never lost implicitly)."""
        with self.app.dbs.session("data") as s:
            mailbox = self._get(s, address)
            self.app.shared_mailboxes.mailboxes_removed(s, [mailbox.address])
            s.delete(mailbox)
        accounts_changed(self.app)
        self.app.audit.record("mailbox.remove", address)

    @staticmethod
    def _as_dict(m: Mailbox) -> dict:
        return {"address": m.address, "display_name": m.display_name, "quota_bytes": m.quota_bytes,
                "enabled": m.enabled}

    # ------------------------------------------------------------------ bulk import
    def import_csv(self, source: str | os.PathLike[str] | TextIO, *, check_only: bool = False,
                   workers: int | None = None) -> dict:
        """Create every mailbox of a CSV file, all or nothing.

        `source` is a path or an open text stream. The first row names the columns:
        `address` and `password` are required, `quota` (0, 500M, 2G...) and `name` (display
        name) are optional, in any order. Every row is checked first (address syntax, domain
        exists, password policy, quota, duplicates in the file, existing mailboxes and
        aliases); if any row is bad, the error lists each bad row by its line number and
        nothing is written. Otherwise the passwords are hashed (in parallel across
        `workers` processes, default one per CPU) and all rows are inserted in one
        transaction: they all appear at once or not at all. No file is written and no
        daemon reloads. `check_only` stops after the checks."""
        label, rows = self._read_import_rows(source)
        wanted, addressed, errors = check_import_rows(rows)
        if not rows:
            raise ValidationError(f"{label}: no mailbox rows after the header line; nothing to import")
        foreign = sorted({a[2] for a in addressed if not self.app.in_scope(a[2])})
        if foreign:  # a domain administrator's file: all of it inside their domains, or nothing
            raise PermissionDeniedError(f"{label}: {self.app.actor} administers "
                                        f"{', '.join(sorted(self.app.acting.domains or ()))} only, not "
                                        f"{', '.join(foreign)}; nothing imported")
        domains, existing, aliases = self._import_targets(addressed)
        errors += import_conflicts(addressed, domains, existing, aliases)
        if errors:
            errors.sort(key=lambda e: int(e.split(":", 1)[0].split()[1]))  # stable: a row's problems stay in order
            raise _nothing_imported(label, errors)
        if check_only:
            return {"checked": len(wanted), "imported": 0, "domains": sorted({w.domain for w in wanted})}
        hashes = _hash_all([w.password for w in wanted], workers)
        values = [{"domain_id": domains[w.domain], "local_part": w.local, "address": f"{w.local}@{w.domain}",
                   "password_hash": h, "display_name": w.name, "quota_bytes": w.quota_bytes, "enabled": True}
                  for w, h in zip(wanted, hashes, strict=True)]
        self._insert_imported(label, values)
        return {"checked": len(values), "imported": len(values), "domains": sorted({w.domain for w in wanted})}

    def _import_targets(self, addressed: Sequence[tuple[int, str, str]]) -> tuple[dict[str, int], set[str], set[str]]:
        """The ids of the rows' domains, and which of their addresses are taken by a
        mailbox or an alias."""
        with self.app.dbs.session("data") as s:
            domains = {d.name: d.id for d in s.scalars(select(Domain).where(
                Domain.name.in_({a[2] for a in addressed})))}
            addresses = [f"{a[1]}@{a[2]}" for a in addressed]
            existing: set[str] = set()
            aliases: set[str] = set()
            for i in range(0, len(addresses), 5000):
                chunk = addresses[i:i + 5000]
                existing.update(s.scalars(select(Mailbox.address).where(Mailbox.address.in_(chunk))))
                aliases.update(s.scalars(select(Alias.address).where(Alias.address.in_(chunk))))
        return domains, existing, aliases

    def _insert_imported(self, label: str, values: Sequence[dict]) -> None:
        try:
            with self.app.dbs.session("data") as s:
                s.execute(insert(Mailbox), values)
        except IntegrityError:
            raise ConflictError(f"{label}: a mailbox of this file was created by someone else while it was "
                                "being imported; nothing was imported, run the import again") from None
        with self.app.dbs.session("logs") as s:
            s.execute(insert(AuditRecord), [
                {"actor": self.app.actor, "source": self.app.acting.source, "action": "mailbox.add",
                 "target": v["address"], "details": {"quota_bytes": v["quota_bytes"], "via": "import",
                                                     **self._acting_details()}} for v in values])
        self.app.audit.record("mailbox.import", label, count=len(values))

    def _acting_details(self) -> dict:
        """What audit.record adds to each row (relayed details, the client address)."""
        acting = self.app.acting
        return {**acting.details, **({"address": acting.address} if acting.address is not None else {})}

    @staticmethod
    def _read_import_rows(source: str | os.PathLike[str] | TextIO) -> tuple[str, builtins.list[tuple[int, dict]]]:
        if isinstance(source, (str, os.PathLike)):
            label = str(source)
            try:
                text = Path(source).read_bytes().decode("utf-8-sig")
            except OSError as exc:
                raise ValidationError(f"cannot read {label}: {exc.strerror or exc}") from None
            except UnicodeDecodeError as exc:
                raise ValidationError(f"{label} is not UTF-8 text (byte {exc.start}): save it as UTF-8 CSV") from None
            stream: TextIO = io.StringIO(text, newline="")
        else:
            label, stream = str(getattr(source, "name", "<stdin>")), source
        reader = csv.reader(stream)
        try:
            header = next(reader, None)
            if header is None:
                raise ValidationError(f"{label} is empty: the first line must name the columns "
                                      f"({','.join(IMPORT_COLUMNS)})")
            columns = [c.strip().lower().lstrip("\ufeff") for c in header]
            unknown = [c for c in columns if c not in IMPORT_COLUMNS]
            if unknown:
                raise ValidationError(f"{label}, line 1: unknown column(s) {', '.join(map(repr, unknown))}; "
                                      f"the columns are {', '.join(IMPORT_COLUMNS)} (address and password required)")
            dupes = sorted({c for c in columns if columns.count(c) > 1})
            if dupes:
                raise ValidationError(f"{label}, line 1: column(s) {', '.join(dupes)} named twice")
            missing = [c for c in IMPORT_REQUIRED if c not in columns]
            if missing:
                raise ValidationError(f"{label}, line 1: missing column(s) {', '.join(missing)}; the first line "
                                      f"must name the columns, e.g. address,password,quota,name")
            rows, bad = [], []
            for fields in reader:
                line = reader.line_num
                if not any(f.strip() for f in fields):
                    continue  # blank line
                if len(fields) != len(columns):
                    bad.append(f"line {line}: {len(fields)} field(s), the header has {len(columns)}")
                    continue
                rows.append((line, dict(zip(columns, fields, strict=True))))
                if len(rows) > IMPORT_MAX_ROWS:
                    raise ValidationError(f"{label}: more than {IMPORT_MAX_ROWS} rows; split the file")
        except csv.Error as exc:
            raise ValidationError(f"{label}, line {reader.line_num}: not valid CSV: {exc}") from None
        if bad:
            raise _nothing_imported(label, bad)
        return label, rows


class ImportRow(NamedTuple):
    """A CSV row that passed its own checks."""

    line: int
    local: str
    domain: str
    password: str
    quota_bytes: int
    name: str


def check_import_rows(rows: list[tuple[int, dict]]) -> tuple[list[ImportRow], list[tuple[int, str, str]], list[str]]:
    """Each row's own checks, without the database: the good rows; every row with a valid
    address not earlier in the file (line, local part, domain), to check against the
    database; and the problems, as "line N: problem"."""
    errors: list[str] = []
    seen: dict[str, int] = {}
    wanted: list[ImportRow] = []
    addressed: list[tuple[int, str, str]] = []
    for line, row in rows:
        problems = []
        full = local = domain_name = ""
        try:
            local, domain_name = validation.address(row["address"])
            full = f"{local}@{domain_name}"
        except ValidationError as exc:
            problems.append(str(exc))
        try:
            check_password_policy(row["password"])
        except ValidationError as exc:
            problems.append(str(exc))
        quota_bytes = 0
        try:
            quota_bytes = validation.size_bytes(row.get("quota", "").strip() or "0")
        except ValidationError as exc:
            problems.append(f"quota: {exc}")
        name = row.get("name", "").strip()
        if len(name) > 256:
            problems.append(f"name is longer than 256 characters ({len(name)})")
        if full and full in seen:
            problems.append(f"{full} is already on line {seen[full]}")
        elif full:
            seen[full] = line
            addressed.append((line, local, domain_name))
        if problems:
            errors.extend(f"line {line}: {p}" for p in problems)
        else:
            wanted.append(ImportRow(line, local, domain_name, row["password"], quota_bytes, name))
    return wanted, addressed, errors


def import_conflicts(addressed: list[tuple[int, str, str]], domains: dict[str, int], existing: set[str],
                     aliases: set[str]) -> list[str]:
    """The rows whose domain does not exist or whose address is taken."""
    errors = []
    for line, local, domain_name in addressed:
        full = f"{local}@{domain_name}"
        if domain_name not in domains:
            errors.append(f"line {line}: domain {domain_name} does not exist (rupost domains add {domain_name})")
        elif full in existing:
            errors.append(f"line {line}: mailbox {full} already exists")
        elif full in aliases:
            errors.append(f"line {line}: {full} is already an alias")
    return errors


def _nothing_imported(label: str, problems: list[str]) -> ValidationError:
    shown = problems[:IMPORT_ERRORS_SHOWN]
    more = f"\n... and {len(problems) - len(shown)} more" if len(problems) > len(shown) else ""
    return ValidationError(f"{label}: {len(problems)} problem(s), nothing was imported:\n" + "\n".join(shown) + more)


def _hash_all(passwords: list[str], workers: int | None) -> list[str]:
    """SHA512-CRYPT every password; a pool of processes when it pays (crypt holds the GIL)."""
    workers = workers or os.cpu_count() or 1
    if workers <= 1 or len(passwords) < PARALLEL_HASHING_FROM:
        return [hash_password(p) for p in passwords]
    chunk = max(16, len(passwords) // (workers * 8))
    # fork: the children only hash (no database access) and leave with os._exit
    try:
        with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("fork")) as pool:
            return list(pool.map(hash_password, passwords, chunksize=chunk))
    except OSError as exc:
        raise RuPostError(f"cannot start the password hashing processes: {exc}") from None
