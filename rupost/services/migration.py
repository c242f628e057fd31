"""Migration of mailboxes from Microsoft Exchange or any IMAP server with dovecot's own
dsync: ``doveadm sync -1 -R -u TARGET imapc:`` run against this node's dovecot
configuration, the source given by imapc settings.

- One-way and incremental: messages already copied are not copied again, mail that
  arrived on RuPost meanwhile is kept (``sync -1``, not ``backup``, which would delete it).
- The source password never appears on a command line: each mailbox gets a private
  configuration file (0600, removed afterwards) that includes the node's dovecot.conf
  and adds the imapc settings.
- State per mailbox in ``rupost_logs.migration_mailboxes``: status, counts, what did
  not copy, the error. ``--resume`` skips mailboxes already done.
- After each mailbox the message count of every source folder (IMAP STATUS) is compared
  with the same folder on RuPost (``doveadm mailbox status``): folders with fewer
  messages are reported as not copied. A source mailbox that cannot be read (wrong
  password, broken folder) is reported and the run goes on with the next one.
"""
from __future__ import annotations

import concurrent.futures
import csv
import os
import shutil
import ssl
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import select

from .. import validation
from ..db.models import Mailbox, utcnow
from ..db.ops_models import MigrationMailbox
from ..errors import NotFoundError, ValidationError
from .migration_source import MigrationError, Source, parse_source, source_folders, tls_context

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from . import Services

DSYNC_TIMEOUT = 4 * 3600


@dataclass
class MapRow:
    line: int
    login: str
    password: str
    target: str


@dataclass
class MailboxResult:
    login: str
    target: str
    status: str = "pending"  # done | incomplete | failed | skipped
    folders: int = 0
    source_messages: int = 0
    target_messages: int = 0
    copied: int = 0
    missing: dict = field(default_factory=dict)
    error: str = ""
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def parse_map(text: str, master_user: bool = False, source_name: str = "map") -> list[MapRow]:
    """CSV rows `source_login,source_password,target_address` (a header line is allowed);
    with a master user, `source_login,target_address` (a password column is ignored).
    Every problem is reported with its line number; nothing runs unless all rows are good."""
    rows: list[MapRow] = []
    problems: list[str] = []
    seen: dict[str, int] = {}
    reader = csv.reader(text.splitlines())
    for number, cells in enumerate(reader, start=1):
        cells = [c.strip() for c in cells]
        if not cells or not any(cells) or cells[0].startswith("#"):
            continue
        if number == 1 and cells[0].lower() in ("source_login", "login"):
            continue
        if master_user and len(cells) == 2:
            login, password, target = cells[0], "", cells[1]
        elif len(cells) == 3:
            login, password, target = cells[0], ("" if master_user else cells[1]), cells[2]
        else:
            problems.append(f"line {number}: expected source_login,source_password,target_address "
                            f"({len(cells)} fields)")
            continue
        if not login or any(ch in login for ch in "\r\n\0"):
            problems.append(f"line {number}: empty or invalid source login")
            continue
        if not master_user and not password:
            problems.append(f"line {number}: no source password for {login} (or use --master-user)")
            continue
        if any(ch in password for ch in "\r\n\0"):
            problems.append(f"line {number}: the password contains a line break")
            continue
        try:
            local, domain = validation.address(target)
        except ValidationError as exc:
            problems.append(f"line {number}: {exc}")
            continue
        target = f"{local}@{domain}"
        if target in seen:
            problems.append(f"line {number}: {target} is already the target of line {seen[target]}")
            continue
        seen[target] = number
        rows.append(MapRow(number, login, password, target))
    if problems:
        raise ValidationError(f"{source_name}: " + "; ".join(problems))
    if not rows:
        raise ValidationError(f"{source_name}: no mailboxes to migrate")
    return rows


def dovecot_value(text: str) -> str:
    """A value for dovecot.conf: quoted, and '%' doubled (imapc settings are %-expanded)."""
    text = str(text).replace("%", "%%")
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


class MigrationService:
    def __init__(self, app: Services) -> None:
        self.app = app

    # --------------------------------------------------------------- source
    def _tls_context(self, ca_file: str | None, insecure: bool) -> ssl.SSLContext:
        return tls_context(ca_file, insecure)

    # --------------------------------------------------------------- target
    @property
    def dovecot_conf(self) -> Path:
        conf = self.app.layout.component_config("dovecot") / "dovecot.conf"
        if not conf.exists():
            raise NotFoundError(f"{conf} does not exist: deploy this node first (rupost deploy)")
        return conf

    def target_folders(self, address: str) -> dict[str, int]:
        proc = subprocess.run(["doveadm", "-c", str(self.dovecot_conf), "-f", "tab", "mailbox", "status", "-u", address,
                               "messages", "*"], capture_output=True, text=True, timeout=300)
        if proc.returncode != 0:
            raise MigrationError(f"doveadm mailbox status for {address}: {proc.stderr.strip() or proc.returncode}")
        folders = {}
        lines = proc.stdout.splitlines()
        header = lines[0].split("\t") if lines else []
        for line in lines[1:]:
            cells = dict(zip(header, line.split("\t"), strict=False))
            if "mailbox" in cells and cells.get("messages", "").isdigit():
                folders[cells["mailbox"]] = int(cells["messages"])
        return folders

    def _existing_targets(self, targets: list[str]) -> set[str]:
        return existing_targets(self.app, targets)

    # ------------------------------------------------------------------ run
    def run(self, source_url: str, map_text: str, *, map_name: str = "map", ca_file: str | None = None,
            insecure: bool = False, master_user: str | None = None, master_password: str | None = None,
            resume: bool = False, workers: int = 2, progress: Callable[[str], None] | None = None) -> dict:
        source = parse_source(source_url)
        _check_run_options(ca_file, insecure, master_user, master_password, workers)
        rows = parse_map(map_text, master_user=bool(master_user), source_name=map_name)
        conf = self.dovecot_conf
        tls = self._tls_context(ca_file, insecure)
        master: tuple[str, str] | None = ((master_user, master_password)  # type: ignore[assignment]
                                          if master_user else None)
        say = progress or (lambda _text: None)
        existing = self._existing_targets([r.target for r in rows])
        done_before = self._done(source.url) if resume else set()
        private, ca_copy = self._private_dir(ca_file)
        started = time.monotonic()
        results: list[MailboxResult] = []
        total = len(rows)
        try:
            def one(index_row: tuple[int, MapRow]) -> MailboxResult:
                index, row = index_row
                res = (settled_result(row, existing, done_before)
                       or self._migrate_one(source, row, conf, private, tls, master, ca_copy, insecure))
                if res.status != "skipped":
                    self._record(source.url, res)
                say(f"[{index}/{total}] {_line(res)}")
                return res

            with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
                results = list(pool.map(one, enumerate(rows, start=1)))
        finally:
            shutil.rmtree(private, ignore_errors=True)
        summary = run_summary(source.url, results, round(time.monotonic() - started, 1))
        self.app.audit.record("migrate.imap", source.url, mailboxes=summary["mailboxes"], done=summary["done"],
                              failed=summary["failed"], incomplete=summary["incomplete"], copied=summary["copied"])
        return summary

    def _private_dir(self, ca_file: str | None) -> tuple[Path, Path | None]:
        """A directory of this run for the mailboxes' imapc settings (removed afterwards),
        with a copy of the source's CA."""
        work = self.app.layout.state / "migration"
        work.mkdir(parents=True, exist_ok=True, mode=0o711)
        os.chmod(work, 0o711)
        private = Path(tempfile.mkdtemp(prefix="run-", dir=work))
        os.chmod(private, 0o711)  # the CA copy must be readable after doveadm drops to the mail user
        ca_copy = None
        if ca_file:
            ca_copy = private / "source-ca.pem"
            shutil.copyfile(ca_file, ca_copy)
            os.chmod(ca_copy, 0o644)
        return private, ca_copy

    def _migrate_one(self, source: Source, row: MapRow, conf: Path, private: Path, tls: ssl.SSLContext,
                     master: tuple[str, str] | None, ca_copy: Path | None, insecure: bool) -> MailboxResult:
        res = MailboxResult(row.login, row.target)
        t0 = time.monotonic()
        self._mark_running(source.url, row)
        try:
            before = sum(self.target_folders(row.target).values())
            src, unreadable = source_folders(source, row.login, row.password, tls, master)
            res.folders, res.source_messages = len(src) + len(unreadable), sum(src.values())
            # a folder the source cannot read is left out, so the others still copy
            self._dsync(source, row, conf, private, master, ca_copy, insecure, exclude=sorted(unreadable))
            after = self.target_folders(row.target)
            res.target_messages = sum(after.values())
            res.copied = max(0, res.target_messages - before)
            res.missing = {name: [count, after.get(name, 0)] for name, count in src.items()
                           if after.get(name, 0) < count}
            res.missing.update({name: [None, after.get(name, 0)] for name in unreadable})
            res.status = "incomplete" if res.missing else "done"
            problems = [f"{n} ({a[1]}/{a[0]} messages)" for n, a in sorted(res.missing.items()) if n not in unreadable]
            problems += [f"{n}: {why}" for n, why in sorted(unreadable.items())]
            if problems:
                res.error = "not copied: " + "; ".join(problems)
        except MigrationError as exc:
            res.status, res.error = "failed", str(exc)
        except subprocess.TimeoutExpired:
            res.status, res.error = "failed", f"dsync did not finish within {DSYNC_TIMEOUT} s"
        res.seconds = round(time.monotonic() - t0, 1)
        return res

    def _dsync(self, source: Source, row: MapRow, conf: Path, private: Path, master: tuple[str, str] | None,
               ca_copy: Path | None, insecure: bool, exclude: Sequence[str] = ()) -> None:
        settings = [f"!include {conf}",
                    f"imapc_host = {dovecot_value(source.host.strip('[]'))}",
                    f"imapc_port = {source.port}",
                    f"imapc_ssl = {source.ssl}",
                    f"imapc_ssl_verify = {'no' if insecure else 'yes'}",
                    f"imapc_user = {dovecot_value(row.login)}",
                    "imapc_features = rfc822.size fetch-headers",
                    "mail_prefetch_count = 20"]
        if master:
            settings += [f"imapc_master_user = {dovecot_value(master[0])}",
                         f"imapc_password = {dovecot_value(master[1])}"]
        else:
            settings.append(f"imapc_password = {dovecot_value(row.password)}")
        if ca_copy:
            settings.append(f"ssl_client_ca_file = {ca_copy}")
        elif not insecure:
            settings.append("ssl_client_ca_dir = /etc/ssl/certs")
        fd, name = tempfile.mkstemp(prefix="imapc-", suffix=".conf", dir=private)
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write("\n".join(settings) + "\n")
            argv = ["doveadm", "-c", name, "sync", "-1", "-R", "-u", row.target]
            for folder in exclude:
                argv += ["-x", folder]
            argv.append("imapc:")
            for _attempt in (1, 2):
                proc = subprocess.run(argv, capture_output=True, text=True, timeout=DSYNC_TIMEOUT)
                # 2: the mailbox changed while it was synced; one more pass picks the rest up
                if proc.returncode != 2:
                    break
            if proc.returncode not in (0, 2):
                lines = [line for line in (proc.stderr or proc.stdout).strip().splitlines() if line.strip()]
                detail = [line for line in lines if "Error:" in line] or lines
                raise MigrationError(f"dsync from {source.url} for {row.login} failed (exit {proc.returncode}): "
                                     + " / ".join(_strip_secret(d, row.password) for d in detail[-3:]))
        finally:
            os.unlink(name)

    # ---------------------------------------------------------------- state
    def _row(self, s: Session, source: str, login: str, target: str) -> MigrationMailbox:
        row = s.scalar(select(MigrationMailbox).where(MigrationMailbox.source == source,
                                                      MigrationMailbox.source_login == login,
                                                      MigrationMailbox.target == target))
        if row is None:
            row = MigrationMailbox(source=source, source_login=login, target=target, status="pending", runs=0,
                                   missing={})
            s.add(row)
        return row

    def _mark_running(self, source: str, row: MapRow) -> None:
        with self.app.dbs.session("logs") as s:
            r = self._row(s, source, row.login, row.target)
            r.status, r.started_at, r.finished_at, r.error = "running", utcnow(), None, ""
            r.runs = (r.runs or 0) + 1

    def _record(self, source: str, res: MailboxResult) -> None:
        with self.app.dbs.session("logs") as s:
            r = self._row(s, source, res.login, res.target)
            r.status, r.finished_at, r.error = res.status, utcnow(), res.error
            r.folders, r.source_messages, r.target_messages = res.folders, res.source_messages, res.target_messages
            r.copied, r.missing = res.copied, res.missing
            if r.started_at is None:
                r.started_at = utcnow()

    def _done(self, source: str) -> set[tuple[str, str]]:
        with self.app.dbs.session("logs") as s:
            return {(r.source_login, r.target) for r in s.scalars(
                select(MigrationMailbox).where(MigrationMailbox.source == source, MigrationMailbox.status == "done"))}

    def status(self, source: str | None = None) -> list[dict]:
        with self.app.dbs.session("logs") as s:
            query = select(MigrationMailbox).order_by(MigrationMailbox.source, MigrationMailbox.target)
            if source:
                query = query.where(MigrationMailbox.source == parse_source(source).url)
            return [{"source": r.source, "source_login": r.source_login, "target": r.target, "status": r.status,
                     "runs": r.runs, "folders": r.folders, "source_messages": r.source_messages,
                     "target_messages": r.target_messages, "copied": r.copied, "missing": r.missing,
                     "error": r.error, "finished_at": r.finished_at.isoformat() if r.finished_at else None}
                    for r in s.scalars(query)]


def existing_targets(app: Services, targets: list[str]) -> set[str]:
    """The addresses among `targets` that are RuPost mailboxes (local or from a directory)."""
    with app.dbs.session("data") as s:
        return set(s.scalars(select(Mailbox.address).where(Mailbox.address.in_(targets))))


def _check_run_options(ca_file: str | None, insecure: bool, master_user: str | None, master_password: str | None,
                       workers: int) -> None:
    if ca_file and insecure:
        raise ValidationError("give either --ca-file or --insecure, not both")
    if ca_file and not Path(ca_file).is_file():
        raise ValidationError(f"--ca-file {ca_file}: no such file")
    if master_user and not master_password:
        raise ValidationError("--master-user needs the master password (--master-password-stdin)")
    if not 1 <= workers <= 16:
        raise ValidationError("--workers must be between 1 and 16")


def settled_result(row: MapRow, existing: set[str], done_before: set[tuple[str, str]]) -> MailboxResult | None:
    """The result of a row that is not copied: its target does not exist, or an earlier
    run has done it; None when it is to be copied."""
    if row.target not in existing:
        return MailboxResult(row.login, row.target, status="failed",
                             error=f"mailbox {row.target} does not exist on RuPost (rupost mailboxes add {row.target})")
    if (row.login, row.target) in done_before:
        return MailboxResult(row.login, row.target, status="skipped", error="done in an earlier run")
    return None


def run_summary(source_url: str, results: list[MailboxResult], seconds: float) -> dict:
    return {
        "source": source_url,
        "mailboxes": len(results),
        "done": sum(r.status == "done" for r in results),
        "skipped": sum(r.status == "skipped" for r in results),
        "incomplete": sum(r.status == "incomplete" for r in results),
        "failed": sum(r.status == "failed" for r in results),
        "copied": sum(r.copied for r in results),
        "seconds": seconds,
        "results": [r.as_dict() for r in results],
    }


def _strip_secret(text: str, secret: str) -> str:
    return text.replace(secret, "***") if secret else text


def _line(res: MailboxResult) -> str:
    base = f"{res.login} -> {res.target}: {res.status}"
    if res.status in ("done", "incomplete"):
        base += (f", {res.source_messages} messages in {res.folders} folders on the source, "
                 f"{res.target_messages} on RuPost, {res.copied} new ({res.seconds} s)")
    if res.error:
        base += f": {res.error}"
    return base

