"""Validation of names and addresses an administrator types."""
from __future__ import annotations

import re

from .errors import ValidationError

_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_LOCAL_PART = re.compile(r"^[a-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[a-z0-9!#$%&'*+/=?^_`{|}~-]+)*$")
_SIZE = re.compile(r"^\s*(\d+)\s*([kmgt]?)(i?b?)\s*$", re.I)


def domain_name(value: str) -> str:
    name = (value or "").strip().lower().rstrip(".")
    try:
        name = name.encode("idna").decode("ascii")
    except UnicodeError:
        raise ValidationError(f"{value!r} is not a valid domain name") from None
    labels = name.split(".")
    if len(name) > 253 or len(labels) < 2 or not all(_LABEL.match(label) for label in labels) \
            or labels[-1].isdigit():
        raise ValidationError(f"{value!r} is not a valid domain name (expected e.g. example.org)")
    return name


def address(value: str) -> tuple[str, str]:
    """Normalise a mail address; returns (local_part, domain)."""
    text = (value or "").strip()
    if text.count("@") != 1:
        raise ValidationError(f"{value!r} is not a mail address (expected local@domain)")
    local, domain = text.rsplit("@", 1)
    local = local.lower()
    if not local or len(local) > 64 or not _LOCAL_PART.match(local):
        raise ValidationError(f"{value!r}: invalid local part {local!r}")
    return local, domain_name(domain)


def size_bytes(value: str | int) -> int:
    """'1G', '500M', '1024' -> bytes; '0' means unlimited."""
    if isinstance(value, int):
        if value < 0:
            raise ValidationError("size must not be negative")
        return value
    match = _SIZE.match(str(value))
    if not match:
        raise ValidationError(f"{value!r} is not a size (examples: 0, 500M, 2G, 1048576)")
    number, unit = int(match.group(1)), match.group(2).lower()
    return number * {"": 1, "k": 1024, "m": 1024 ** 2, "g": 1024 ** 3, "t": 1024 ** 4}[unit]
