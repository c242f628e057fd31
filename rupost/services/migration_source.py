"""The source side of a migration (rupost.services.migration): its address, and what
its IMAP server reports: the folders of a mailbox and their message counts, with the
folder names (modified UTF-7, the server's hierarchy separator) in RuPost's syntax."""
from __future__ import annotations

import base64
import imaplib
import re
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

from ..errors import RuPostError, ValidationError

_HOST = re.compile(r"^([A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*$"
                   r"|^\[?[0-9a-fA-F:.]+\]?$")
TARGET_SEPARATOR = "/"
_LIST = re.compile(rb'^\((?P<flags>[^)]*)\) (?P<sep>"(?:[^"\\]|\\.)*"|NIL) (?P<name>.+)$')


@dataclass(frozen=True)
class Source:
    host: str
    port: int
    ssl: str  # imaps | starttls

    @property
    def url(self) -> str:
        return f"{'imaps' if self.ssl == 'imaps' else 'imap'}://{self.host}:{self.port}"


class MigrationError(RuPostError):
    """A source mailbox could not be read or copied (reported per mailbox)."""


def tls_context(ca_file: str | None, insecure: bool) -> ssl.SSLContext:
    """The context a source server is verified with: the system CAs, a given CA file, or none."""
    if insecure:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    return ssl.create_default_context(cafile=ca_file) if ca_file else ssl.create_default_context()


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


def source_folders(source: Source, login: str, password: str, tls: ssl.SSLContext, master: tuple[str, str] | None
                   ) -> tuple[dict[str, int], dict[str, str]]:
    """({folder (target syntax): messages}, {folder: why it cannot be read}) as the source reports them."""
    try:
        imap: imaplib.IMAP4
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
                authz = f"{login}\0{master[0]}\0{master[1]}".encode()
                imap.authenticate("PLAIN", lambda _challenge: authz)
            else:
                imap.login(login, password)
        except imaplib.IMAP4.error as exc:
            raise MigrationError(f"login as {login} on {source.url} failed: {_imap_text(exc)}") from None
        typ, data = imap.list('""', "*")
        if typ != "OK":
            raise MigrationError(f"LIST failed on {source.url} for {login}")
        return _message_counts(imap, data)
    except (OSError, imaplib.IMAP4.abort, ssl.SSLError) as exc:
        raise MigrationError(f"connection to {source.url} lost while reading {login}: {exc}") from None
    finally:
        try:
            imap.logout()
        except (OSError, imaplib.IMAP4.error, ssl.SSLError):
            pass


def _message_counts(imap: imaplib.IMAP4, listing: list) -> tuple[dict[str, int], dict[str, str]]:
    folders, unreadable = {}, {}
    for raw in listing:
        folder = listed_folder(raw) if raw is not None else None
        if folder is None:
            continue
        name, wire = folder
        typ, status = imap.status(_quote(wire), "(MESSAGES)")
        if typ != "OK":
            unreadable[name] = f"cannot be read on the source: {_imap_text(status)}"
            continue
        count = re.search(rb"MESSAGES (\d+)", status[0])
        if count is None:
            unreadable[name] = f"the source did not say how many messages it holds: {_imap_text(status)}"
            continue
        folders[name] = int(count.group(1))
    return folders, unreadable


def listed_folder(raw: bytes | tuple[bytes, bytes]) -> tuple[str, str] | None:
    """One entry of a LIST answer as (its name in RuPost's syntax, its name on the wire);
    None when it cannot be selected."""
    if isinstance(raw, tuple):  # a literal name
        head, literal = raw
        match = _LIST.match(head.rstrip() + b' ""')
        name_raw = literal
    else:
        match = _LIST.match(raw)
        name_raw = match.group("name") if match else b""
    if not match:
        return None
    flags = match.group("flags").lower()
    if b"\\noselect" in flags or b"\\nonexistent" in flags:
        return None
    sep = _unquote(match.group("sep")) if match.group("sep") != b"NIL" else ""
    wire = _unquote(name_raw) if isinstance(name_raw, bytes) else name_raw
    name = decode_mutf7(wire)
    if sep and sep != TARGET_SEPARATOR:
        name = TARGET_SEPARATOR.join(name.split(sep))
    if name.upper() == "INBOX":
        name = "INBOX"
    return name, wire


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


def _unquote(raw: bytes) -> str:
    text = raw.decode("utf-8", errors="replace")
    if text.startswith('"') and text.endswith('"'):
        text = re.sub(r"\\(.)", r"\1", text[1:-1])
    return text


def _quote(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _imap_text(value: object) -> str:
    if isinstance(value, BaseException):
        value = value.args[0] if value.args else str(value)
    if isinstance(value, (list, tuple)):
        value = b" ".join(v if isinstance(v, bytes) else str(v).encode() for v in value if v)
    if isinstance(value, bytes):
        value = value.decode(errors="replace")
    return str(value).strip()
