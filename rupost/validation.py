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


# Names that always mean "this machine" to a resolver: a mail host called so points every
# client and every other mail server at itself (RFC 6761 §6.3 reserves .localhost).
_LOOPBACK_NAMES = ("localhost", "localhost.localdomain", "localhost6", "localhost6.localdomain6", "ip6-localhost",
                   "ip6-loopback")
UNQUALIFIED_FLAG = "--allow-unqualified-host"


def host_name(value: str, what: str = "host name") -> str:
    """A syntactically valid host name (letters, digits, hyphens, dots), lowercased, no trailing dot."""
    name = (value or "").strip().lower().rstrip(".")
    try:
        name = name.encode("idna").decode("ascii")
    except UnicodeError:
        raise ValidationError(f"{what} {value!r} is not a valid host name") from None
    if not name or len(name) > 253 or not all(_LABEL.match(label) for label in name.split(".")):
        raise ValidationError(f"{what} {value!r} is not a valid host name (letters, digits, hyphens and dots, "
                              "e.g. mail.example.org)")
    return name


def is_ip_address(value: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address((value or "").strip().strip("[]"))
        return True
    except ValueError:
        return False


def mail_host_problem(name: str) -> str | None:
    """Why a syntactically valid host name is not a usable mail host name, or None: it must be a
    fully qualified name that other machines can look up, not a loopback name."""
    if name in _LOOPBACK_NAMES or name.endswith(".localhost"):
        return "is a loopback name: to every other machine it means that machine itself"
    if "." not in name:
        return "is not fully qualified (no domain): other mail servers and clients cannot look it up"
    if name.rsplit(".", 1)[-1].isdigit():
        return "ends in a number: not a domain name"
    return None


def mail_host(value: str, allow_unqualified: bool = False) -> str:
    """The mail host name (SMTP banner and EHLO, autoconfig, MX target, certificate name),
    normalised; a loopback or unqualified name only with `allow_unqualified`. Never an IP
    address: postfix's myhostname and a certificate's main name must be names."""
    if is_ip_address(value):
        raise ValidationError(f"mail host name {value.strip()!r} is an IP address: the mail host must be a name "
                              "(e.g. mail.example.org); to tell mail clients an address use the template "
                              "parameter client_mail_host")
    name = host_name(value, "mail host name")
    problem = mail_host_problem(name)
    if problem and not allow_unqualified:
        raise ValidationError(f"mail host name {name!r} {problem}; give a fully qualified name such as "
                              f"mail.example.org, or pass {UNQUALIFIED_FLAG} to use it anyway (a test machine: "
                              "clients are then told the node's address)")
    return name
