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

import base64
import concurrent.futures
import csv
import imaplib
import os
import re
import shutil
import ssl
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from sqlalchemy import select

from .. import validation
from ..db.models import Mailbox, utcnow
from ..db.ops_models import MigrationMailbox
from ..errors import NotFoundError, RuPostError, ValidationError

_HOST = re.compile(r"^([A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*$|^\[?[0-9a-fA-F:.]+\]?$")
TARGET_SEPARATOR = "/"
DSYNC_TIMEOUT = 4 * 3600


@dataclass(frozen=True)
class Source:
    host: str
    port: int
    ssl: str  # imaps | starttls

    @property
    def url(self) -> str:
        return f"{'imaps' if self.ssl == 'imaps' else 'imap'}://{self.host}:{self.port}"


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


class MigrationError(RuPostError):
    """A source mailbox could not be read or copied (reported per mailbox)."""


def parse_source(url: str) -> Source:
    parts = urlsplit((url or "").strip())
    if parts.scheme not in ("imaps", "imap"):
        raise ValidationError(f"--source {url!r}: expected imaps://HOST[:PORT] (or imap://HOST[:PORT] for STARTTLS)")
    if parts.path not in ("", "/") or parts.query or parts.username or parts.password:
        raise ValidationError(f"--source {url!r}: give only the scheme, host and port (credentials go in the map file)")
    host = parts.hostname or ""
    if not host or not _HOST.match(host):
        raise ValidationError(f"--source {url!r}: invalid host name")
    try:
        port = parts.port or (993 if parts.scheme == "imaps" else 143)
    except ValueError:
        raise ValidationError(f"--source {url!r}: invalid port") from None
    return Source(host=host, port=port, ssl="imaps" if parts.scheme == "imaps" else "starttls")


def parse_map(text: str, master_user: bool = False, source_name: str = "map") -> list[MapRow]:
    """CSV rows `source_login,source_password,target_address` (a header line is allowed);
    with a master user, `source_login,target_address` (a password column is ignored).
    Every problem is reported with its line number; nothing runs unless all rows are good."""
    rows, problems, seen = [], [], {}
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


def decode_mutf7(name: str) -> str:
    """IMAP modified UTF-7 (RFC 3501 5.1.3) to text."""
    out, i = [], 0
    while i < len(name):
        ch = name[i]
        if ch != "&":
            out.append(ch)
            i += 1
            continue
        end = name.find("-", i)
        if end < 0:
            out.append(name[i:])
            break
        chunk = name[i + 1:end]
        if not chunk:
            out.append("&")
        else:
            data = chunk.replace(",", "/")
            data += "=" * (-len(data) % 4)
            out.append(base64.b64decode(data).decode("utf-16-be", errors="replace"))
        i = end + 1
    return "".join(out)


_LIST = re.compile(rb'^\((?P<flags>[^)]*)\) (?P<sep>"(?:[^"\\]|\\.)*"|NIL) (?P<name>.+)$')


def _unquote(raw: bytes) -> str:
    text = raw.decode("utf-8", errors="replace")
    if text.startswith('"') and text.endswith('"'):
        text = re.sub(r"\\(.)", r"\1", text[1:-1])
    return text


class MigrationService:
    def __init__(self, app):
        self.app = app

    # --------------------------------------------------------------- source
    def _tls_context(self, ca_file: str | None, insecure: bool) -> ssl.SSLContext:
        if insecure:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            return ctx
        return ssl.create_default_context(cafile=ca_file) if ca_file else ssl.create_default_context()

    def source_folders(self, source: Source, row: MapRow, tls: ssl.SSLContext, master: tuple[str, str] | None
                       ) -> tuple[dict[str, int], dict[str, str]]:
        """({folder (target syntax): messages}, {folder: why it cannot be read}) as the source reports them."""
        try:
            if source.ssl == "imaps":
                imap = imaplib.IMAP4_SSL(source.host, source.port, ssl_context=tls, timeout=60)
            else:
                imap = imaplib.IMAP4(source.host, source.port, timeout=60)
                imap.starttls(ssl_context=tls)
        except (OSError, imaplib.IMAP4.error, ssl.SSLError) as exc:
            raise MigrationError(f"cannot connect to {source.url}: {exc}") from None
        try:
            try:
                if master:
                    authz = f"{row.login}\0{master[0]}\0{master[1]}".encode()
                    imap.authenticate("PLAIN", lambda _challenge: authz)
                else:
                    imap.login(row.login, row.password)
            except imaplib.IMAP4.error as exc:
                raise MigrationError(f"login as {row.login} on {source.url} failed: {_imap_text(exc)}") from None
            typ, data = imap.list('""', "*")
            if typ != "OK":
                raise MigrationError(f"LIST failed on {source.url} for {row.login}")
            folders, unreadable = {}, {}
            for raw in data:
                if raw is None:
                    continue
                if isinstance(raw, tuple):  # a literal name
                    head, literal = raw
                    match = _LIST.match(head.rstrip() + b' ""')
                    name_raw = literal
                else:
                    match = _LIST.match(raw)
                    name_raw = match.group("name") if match else b""
                if not match:
                    continue
                flags = match.group("flags").lower()
                if b"\\noselect" in flags or b"\\nonexistent" in flags:
                    continue
                sep = _unquote(match.group("sep")) if match.group("sep") != b"NIL" else ""
                wire = _unquote(name_raw) if isinstance(name_raw, bytes) else name_raw
                name = decode_mutf7(wire)
                if sep and sep != TARGET_SEPARATOR:
                    name = TARGET_SEPARATOR.join(name.split(sep))
                if name.upper() == "INBOX":
                    name = "INBOX"
                typ, status = imap.status(_quote(wire), "(MESSAGES)")
                if typ != "OK":
                    unreadable[name] = f"cannot be read on the source: {_imap_text(status)}"
                    continue
                folders[name] = int(re.search(rb"MESSAGES (\d+)", status[0]).group(1))
            return folders, unreadable
        except (OSError, imaplib.IMAP4.abort, ssl.SSLError) as exc:
            raise MigrationError(f"connection to {source.url} lost while reading {row.login}: {exc}") from None
        finally:
            try:
                imap.logout()
            except (OSError, imaplib.IMAP4.error, ssl.SSLError):
                pass

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
            cells = dict(zip(header, line.split("\t")))
            if "mailbox" in cells and cells.get("messages", "").isdigit():
                folders[cells["mailbox"]] = int(cells["messages"])
        return folders

    def _existing_targets(self, targets: list[str]) -> set[str]:
        with self.app.dbs.session("data") as s:
            return set(s.scalars(select(Mailbox.address).where(Mailbox.address.in_(targets))))

    # ------------------------------------------------------------------ run
    def run(self, source_url: str, map_text: str, *, map_name: str = "map", ca_file: str | None = None,
            insecure: bool = False, master_user: str | None = None, master_password: str | None = None,
            resume: bool = False, workers: int = 2, progress=None) -> dict:
        source = parse_source(source_url)
        if ca_file and insecure:
            raise ValidationError("give either --ca-file or --insecure, not both")
        if ca_file and not Path(ca_file).is_file():
            raise ValidationError(f"--ca-file {ca_file}: no such file")
        if master_user and not master_password:
            raise ValidationError("--master-user needs the master password (--master-password-stdin)")
        if not 1 <= workers <= 16:
            raise ValidationError("--workers must be between 1 and 16")
        rows = parse_map(map_text, master_user=bool(master_user), source_name=map_name)
        conf = self.dovecot_conf
        tls = self._tls_context(ca_file, insecure)
        master = (master_user, master_password) if master_user else None
        say = progress or (lambda _text: None)
        existing = self._existing_targets([r.target for r in rows])
        done_before = self._done(source.url) if resume else set()

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
        started = time.monotonic()
        results: list[MailboxResult] = []
        total = len(rows)
        try:
            def one(index_row):
                index, row = index_row
                if row.target not in existing:
                    res = MailboxResult(row.login, row.target, status="failed",
                                        error=f"mailbox {row.target} does not exist on RuPost "
                                              f"(rupost mailboxes add {row.target})")
                elif (row.login, row.target) in done_before:
                    res = MailboxResult(row.login, row.target, status="skipped", error="done in an earlier run")
                else:
                    res = self._migrate_one(source, row, conf, private, tls, master, ca_copy, insecure)
                if res.status != "skipped":
                    self._record(source.url, res)
                say(f"[{index}/{total}] {_line(res)}")
                return res

            with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
                results = list(pool.map(one, enumerate(rows, start=1)))
        finally:
            shutil.rmtree(private, ignore_errors=True)
        summary = {
            "source": source.url,
            "mailboxes": len(results),
            "done": sum(r.status == "done" for r in results),
            "skipped": sum(r.status == "skipped" for r in results),
            "incomplete": sum(r.status == "incomplete" for r in results),
            "failed": sum(r.status == "failed" for r in results),
            "copied": sum(r.copied for r in results),
            "seconds": round(time.monotonic() - started, 1),
            "results": [r.as_dict() for r in results],
        }
        self.app.audit.record("migrate.imap", source.url, mailboxes=summary["mailboxes"], done=summary["done"],
                              failed=summary["failed"], incomplete=summary["incomplete"], copied=summary["copied"])
        return summary

    def _migrate_one(self, source: Source, row: MapRow, conf: Path, private: Path, tls: ssl.SSLContext,
                     master, ca_copy: Path | None, insecure: bool) -> MailboxResult:
        res = MailboxResult(row.login, row.target)
        t0 = time.monotonic()
        self._mark_running(source.url, row)
        try:
            before = sum(self.target_folders(row.target).values())
            src, unreadable = self.source_folders(source, row, tls, master)
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

    def _dsync(self, source: Source, row: MapRow, conf: Path, private: Path, master, ca_copy: Path | None,
               insecure: bool, exclude: list[str] = ()) -> None:
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
            for attempt in (1, 2):
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
    def _row(self, s, source: str, login: str, target: str) -> MigrationMailbox:
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


def _quote(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _imap_text(value) -> str:
    if isinstance(value, BaseException):
        value = value.args[0] if value.args else str(value)
    if isinstance(value, (list, tuple)):
        value = b" ".join(v if isinstance(v, bytes) else str(v).encode() for v in value if v)
    if isinstance(value, bytes):
        value = value.decode(errors="replace")
    return str(value).strip()


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

