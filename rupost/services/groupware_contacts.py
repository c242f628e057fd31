"""Contacts for the groupware migration: VCF documents (Outlook writes vCard 2.1, Exchange
and most servers 3.0, some 4.0) -> vCard 3.0 objects as SOGo's CardDAV stores them.

A line-level rewrite rather than a full vCard library: vobject (the test extra) stops at
Outlook's quoted-printable soft line breaks (a value ending in ``=`` continued on the next
line), and the rewrite below changes only what 3.0 spells differently:
- 2.1 bare parameters (``TEL;WORK;VOICE``) become ``TYPE=``; ``ENCODING=BASE64`` becomes
  ``ENCODING=b``; quoted-printable values are decoded with their CHARSET.
- 4.0 ``data:`` URIs of photos and logos become inline base64 with a TYPE.
- Groups: ``KIND:group`` / ``MEMBER`` (vCard 4) and ``X-ADDRESSBOOKSERVER-KIND`` /
  ``X-ADDRESSBOOKSERVER-MEMBER`` (Apple) are written the Apple way, the form SOGo's CardDAV
  stores and serves to CardDAV clients (Apple Contacts, DAVx5, Thunderbird); groups are
  stored after the contacts they list. SOGo keeps such a group as a card: its web interface
  does not show it as one of its own contact lists (VLIST), which SOGo creates only from its
  web list editor or its web import, not over CardDAV.
- A card without a UID gets one derived from its content (a re-run finds it again); one
  without any name (FN, N, ORG or EMAIL) is refused.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import quopri
import re
from collections.abc import Iterable

from .groupware_calendar import Item, Refusal, resource_name

_BEGIN = re.compile(r"^BEGIN:VCARD$", re.IGNORECASE)
_END = re.compile(r"^END:VCARD$", re.IGNORECASE)
_DATA_URI = re.compile(r"^data:image/([A-Za-z0-9.+-]+);base64,(.*)$", re.IGNORECASE | re.DOTALL)
_TYPE_WORDS = {"HOME", "WORK", "CELL", "VOICE", "FAX", "PAGER", "PREF", "INTERNET", "X400", "MSG", "BBS", "MODEM",
               "CAR", "ISDN", "VIDEO", "PCS", "DOM", "INTL", "POSTAL", "PARCEL", "JPEG", "PNG", "GIF", "BMP", "TIFF"}
_BINARY = {"PHOTO", "LOGO", "SOUND", "KEY"}


def decode_text(data: bytes) -> str:
    """Outlook writes VCF files in UTF-8 (with a BOM) or, older versions, in Windows-1251."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("cp1251")


def _logical_lines(text: str) -> list[str]:
    lines: list[str] = []
    quoted = False
    for raw in re.split(r"\r\n|\n|\r", text):
        if lines and quoted and lines[-1].endswith("="):  # a quoted-printable soft line break
            lines[-1] = lines[-1][:-1] + raw
            continue
        if lines and raw[:1] in (" ", "\t"):
            lines[-1] += raw[1:]
            continue
        if raw.strip():
            lines.append(raw)
            quoted = "QUOTED-PRINTABLE" in raw.split(":", 1)[0].upper()
    return lines


def _split(line: str) -> tuple[str, list[str], str]:
    """(GROUP.NAME, parameters, value); the name part ends at the first ':' outside quotes."""
    inside = False
    for index, ch in enumerate(line):
        if ch == '"':
            inside = not inside
        elif ch == ":" and not inside:
            head, value = line[:index], line[index + 1:]
            parts = head.split(";")
            return parts[0].upper(), [p for p in parts[1:] if p], value
    raise ValueError(f"not a vCard line: {line[:60]!r}")


def _convert(name: str, params: list[str], value: str) -> tuple[str, list[str], str]:
    base = name.rsplit(".", 1)[-1]
    out: list[str] = []
    charset = "utf-8"
    quoted = False
    types: list[str] = []
    for param in params:
        key, _, val = param.partition("=")
        key_u = key.upper()
        if not _ and key_u in _TYPE_WORDS:  # vCard 2.1: TEL;WORK;VOICE
            types.append(key_u)
        elif key_u == "CHARSET":
            charset = val.strip('"') or "utf-8"
        elif key_u == "ENCODING" and val.upper() == "QUOTED-PRINTABLE":
            quoted = True
        elif key_u == "ENCODING" and val.upper() in ("BASE64", "B"):
            out.append("ENCODING=b")
        elif key_u == "VALUE" and val.upper() == "URI" and _DATA_URI.match(value):
            continue
        else:
            out.append(f"{key_u}={val}" if _ else key_u)
    if quoted:
        value = quopri.decodestring(value.encode("ascii", "replace")).decode(charset, "replace")
        value = value.replace("\r\n", "\\n").replace("\n", "\\n")
    if types:
        out.append("TYPE=" + ",".join(types))
    match = _DATA_URI.match(value) if base in _BINARY else None
    if match:
        out = [p for p in out if not p.startswith("TYPE=")] + ["ENCODING=b", f"TYPE={match.group(1).upper()}"]
        value = match.group(2)
    if base in _BINARY and "ENCODING=b" in out:
        value = "".join(value.split())
        try:
            base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(f"{base} is not valid base64") from None
    return name, out, value


def _fold(line: str) -> str:
    """RFC 6350 §3.2: lines of at most 75 octets, never splitting a UTF-8 character."""
    out, current, size = [], "", 0
    for ch in line:
        width = len(ch.encode())
        if size + width > 75:
            out.append(current)
            current, size = " ", 1
        current += ch
        size += width
    out.append(current)
    return "\r\n".join(out)


def _card(lines: list[str]) -> tuple[str, str, str, str]:
    """(kind, uid, display name, vCard 3.0 text) of one card; ValueError says why not."""
    props: list[tuple[str, list[str], str]] = []
    for line in lines:
        name, params, value = _convert(*_split(line))
        base = name.rsplit(".", 1)[-1]
        if base in ("BEGIN", "END", "VERSION", "PRODID"):
            continue
        if base == "KIND":
            name, value = "X-ADDRESSBOOKSERVER-KIND", value.lower()
        elif base == "MEMBER":
            name = "X-ADDRESSBOOKSERVER-MEMBER"
        props.append((name, params, value))
    values = {name: value for name, _, value in reversed(props)}
    kind = "group" if values.get("X-ADDRESSBOOKSERVER-KIND", "").lower() == "group" else "contact"
    display = (values.get("FN") or " ".join(p for p in values.get("N", "").split(";")[::-1] if p).strip()
               or values.get("ORG", "").split(";")[0] or values.get("EMAIL", ""))
    if not display:
        raise ValueError("a contact without a name (no FN, N, ORG or EMAIL)")
    if "FN" not in values:
        props.append(("FN", [], display))
    body_props = [(n, p, v) for n, p, v in props if n != "UID"]
    uid = values.get("UID", "").strip()
    if not uid:
        digest = hashlib.sha256(repr(body_props).encode()).hexdigest()[:32]
        uid = f"rupost-{digest}"
    rows = ["BEGIN:VCARD", "VERSION:3.0", f"UID:{uid}"]
    rows += [_fold(";".join([n, *p]) + ":" + v) for n, p, v in body_props]
    rows.append("END:VCARD")
    return kind, uid, display, "\r\n".join(rows) + "\r\n"


def contact_items(documents: Iterable[tuple[str, str]]) -> tuple[list[Item], list[Refusal]]:
    """(origin, VCF text) pairs -> contacts first, then groups; and what is refused, with why."""
    cards: dict[str, Item] = {}
    refused: list[Refusal] = []
    for origin, text in documents:
        current: list[str] | None = None
        for line in _logical_lines(text):
            if _BEGIN.match(line.strip()):
                current = []
            elif _END.match(line.strip()) and current is not None:
                try:
                    kind, uid, display, body = _card(current)
                except ValueError as exc:
                    refused.append(Refusal("contact", "", _guess_name(current), str(exc)))
                else:
                    cards.setdefault(uid, Item(kind, uid, resource_name(uid, "vcf"), body, display))
                current = None
            elif current is not None:
                current.append(line)
        if current is not None:
            refused.append(Refusal("contact", "", origin, "the last card has no END:VCARD (a truncated file?)"))
    items = sorted(cards.values(), key=lambda item: item.kind == "group")
    return items, refused


def _guess_name(lines: list[str]) -> str:
    for line in lines:
        if line.upper().startswith(("FN:", "FN;", "EMAIL")):
            return line.split(":", 1)[-1][:80]
    return ""
