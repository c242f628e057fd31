"""Talking to a directory: attribute profiles, connections with clear errors,
paged searches, filter validation and escaping (ldap3).

Nothing here touches the RuPost databases; rupost.services.directories does.
"""
from __future__ import annotations

import re
import socket
import ssl
import uuid
from dataclasses import dataclass, field, replace
from urllib.parse import urlparse

import ldap3
from ldap3.core import exceptions as lexc
from ldap3.operation.search import (
    AND,
    MATCH_APPROX,
    MATCH_EQUAL,
    MATCH_EXTENSIBLE,
    MATCH_GREATER_OR_EQUAL,
    MATCH_LESS_OR_EQUAL,
    MATCH_PRESENT,
    MATCH_SUBSTRING,
    NOT,
    OR,
    ROOT,
    parse_filter,
)
from ldap3.utils.conv import escape_filter_chars
from ldap3.utils.dn import parse_dn

from ..errors import RuPostError, ValidationError

KINDS = ("ad", "freeipa", "aldpro")
SECURITY = ("ldaps", "starttls", "plain")
PAGE_SIZE = 500  # AD's MaxPageSize is 1000; stay well under it


class DirectoryError(RuPostError):
    """The directory could not be reached or refused what RuPost asked."""


# ------------------------------------------------------------------ profiles
@dataclass(frozen=True)
class Profile:
    """How RuPost reads one kind of directory (guide §7.5, §7.7)."""

    kind: str
    user_class_filter: str  # which entries are user accounts
    login_attr: str  # sAMAccountName | uid
    id_attr: str  # objectGUID | ipaUniqueID: the stable id
    enabled_filter: str  # matches only accounts that may log in
    group_member_attr: str = "member"
    # AD's memberOf lists direct groups only; LDAP_MATCHING_RULE_IN_CHAIN walks the nesting.
    # (389-ds/FreeIPA's memberOf plugin already lists the indirect groups.)
    in_chain_rule: str = ""
    gal: dict = field(default_factory=dict)  # directory attribute -> GAL field

    @property
    def attributes(self) -> list[str]:
        extra = ["userAccountControl"] if self.kind == "ad" else ["nsAccountLock"]
        return sorted({"mail", "proxyAddresses", "memberOf", self.login_attr, self.id_attr, *extra, *self.gal})


_GAL_COMMON = {"cn": "display_name", "givenName": "given_name", "sn": "surname", "l": "city", "st": "region",
               "street": "street", "mail": "mail", "proxyAddresses": "emails", "mobile": "mobile", "title": "title"}

PROFILES = {
    "ad": Profile(
        "ad", "(objectClass=user)", "sAMAccountName", "objectGUID",
        # the AD bit test (LDAP_MATCHING_RULE_BIT_AND): bit 2 = ACCOUNTDISABLE
        "(!(userAccountControl:1.2.840.113556.1.4.803:=2))", in_chain_rule="1.2.840.113556.1.4.1941",
        gal={**_GAL_COMMON, "homePhone": "home_phone", "facsimileTelephoneNumber": "fax", "pager": "pager",
             "company": "company", "department": "department"}),
    "freeipa": Profile(
        "freeipa", "(objectClass=person)", "uid", "ipaUniqueID", "(!(nsAccountLock=TRUE))",
        gal={**_GAL_COMMON, "facsimileTelephoneNumber": "fax", "pager": "pager", "employeeNumber": "employee_number",
             "employeeType": "role", "ou": "department"}),
    "aldpro": Profile(
        "aldpro", "(objectClass=person)", "uid", "ipaUniqueID", "(!(nsAccountLock=TRUE))",
        gal={**_GAL_COMMON, "rbtamiddlename": "middle_name", "c": "country", "telephoneNumber": "work_phone",
             "employeeNumber": "employee_number", "rbtadp": "department"}),
}

GAL_FIELDS = ("display_name", "given_name", "surname", "middle_name", "city", "region", "street", "country",
              "mail", "emails", "mobile", "work_phone", "home_phone", "fax", "pager", "title", "employee_number",
              "role", "company", "department")


# ------------------------------------------------------------------ filters
_ATTR = re.compile(r"^([A-Za-z][A-Za-z0-9-]*|\d+(\.\d+)+)(;[A-Za-z0-9-]+)*$")
_OID = re.compile(r"^([A-Za-z][A-Za-z0-9-]*|\d+(\.\d+)+)$")


def escape(value: str) -> str:
    """A value from user input, safe inside a filter assertion (RFC 4515 escaping)."""
    return escape_filter_chars(str(value))


def check_filter(text: str, what: str = "LDAP filter") -> str:
    """Parse a filter an administrator wrote; raise ValidationError naming the problem."""
    text = (text or "").strip()
    if not text:
        raise ValidationError(f"{what} is empty; example: (department=Sales)")
    if len(text) > 4096:
        raise ValidationError(f"{what} is longer than 4096 characters")
    if not text.startswith("("):
        raise ValidationError(f"{what} {text!r} must be enclosed in parentheses, e.g. ({text})")
    depth = 0
    # RFC 4515: a literal parenthesis in a value is written \28 / \29, so every bare one counts
    for i, ch in enumerate(text):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise ValidationError(f"{what} {text!r}: unbalanced ')' at position {i + 1}")
    if depth > 0:
        raise ValidationError(f"{what} {text!r}: {depth} unclosed '(' (missing ')')")
    bad_escape = re.search(r"\\(?![0-9A-Fa-f]{2})", text)
    if bad_escape:
        raise ValidationError(f"{what} {text!r}: a backslash must be followed by two hex digits "
                              f"(\\28 for '(', \\29 for ')', \\2a for '*', \\5c for '\\')")
    try:
        tree = parse_filter(text, None, auto_escape=False, auto_encode=False, validator=None, check_names=False)
    except lexc.LDAPInvalidFilterError as exc:
        raise ValidationError(f"{what} {text!r} is malformed: {exc}; expected RFC 4515 syntax such as "
                              "(&(department=Sales)(title=*manager*))") from None
    except Exception as exc:  # ldap3 raises plain errors on some shapes
        raise ValidationError(f"{what} {text!r} is malformed: {exc}") from None
    _check_tree(tree, text, what)
    _eoqualifier(tree, text, what)  # SOGo must be able to apply it too
    return text


def eoqualifier(text: str, what: str = "LDAP filter") -> str:
    """An RFC 4515 filter as SOPE's EOQualifier format, the only form SOGo's LDAP sources
    take for their `filter`: SOGo writes it back as the same LDAP filter (keys and values
    verbatim, `key = 'value'` as `(key=value)`), so a value keeps its RFC 4515 escapes and
    `*` and an extensible match is the key `attr:rule:`. Every key is quoted (`"..."` may
    hold ':' and '.'; SOPE's parser still ends a key at a space, = < > ! or a parenthesis,
    which no attribute name or OID contains) and every value a quoted string (only `\'` is
    special there; a quote is written \27 instead)."""
    tree = parse_filter(text, None, auto_escape=False, auto_encode=False, validator=None, check_names=False)
    return _eoqualifier(tree, text, what)


_EO_OPERATOR = {MATCH_EQUAL: "=", MATCH_SUBSTRING: "=", MATCH_PRESENT: "=", MATCH_EXTENSIBLE: "=",
                MATCH_GREATER_OR_EQUAL: ">=", MATCH_LESS_OR_EQUAL: "<="}


def _eoqualifier(node, text: str, what: str) -> str:
    if node.tag == ROOT:
        return _eoqualifier(node.elements[0], text, what)
    if node.tag in (AND, OR):
        joined = (" AND " if node.tag == AND else " OR ").join(_eoqualifier(e, text, what) for e in node.elements)
        return f"({joined})"
    if node.tag == NOT:
        return f"(NOT {_eoqualifier(node.elements[0], text, what)})"
    if node.tag == MATCH_APPROX:
        raise ValidationError(f"{what} {text!r}: approximate matches (~=) cannot be applied by SOGo; "
                              "use = with * wildcards")
    a = node.assertion
    key = a.get("attr") or ""
    if node.tag == MATCH_EXTENSIBLE:
        key += ":dn" if a.get("dnAttributes") else ""
        key += (f":{a['matchingRule']}" if a.get("matchingRule") else "") + ":"
    if node.tag == MATCH_PRESENT:
        value = "*"
    elif node.tag == MATCH_SUBSTRING:
        value = "*".join([(a.get("initial") or b"").decode(), *(v.decode() for v in a.get("any") or []),
                          (a.get("final") or b"").decode()])
    else:
        value = a["value"].decode()
    value = value.replace("'", "\\27")
    return f"(\"{key}\" {_EO_OPERATOR[node.tag]} '{value}')"


def _check_tree(node, text: str, what: str) -> None:
    assertion = getattr(node, "assertion", None)
    if assertion:
        attr = assertion.get("attr") or ""
        rule = assertion.get("matchingRule")
        if not attr and rule:
            pass  # (:rule:=value) is valid
        elif not _ATTR.match(attr):
            raise ValidationError(f"{what} {text!r}: {attr!r} is not an attribute name")
        if rule and not _OID.match(rule):
            raise ValidationError(f"{what} {text!r}: {rule!r} is not a matching rule")
        if node.tag == MATCH_EQUAL and assertion.get("value") == b"":
            raise ValidationError(f"{what} {text!r}: ({attr}=) has no value; use ({attr}=*) for 'present'")
    for element in node.elements:
        _check_tree(element, text, what)


def and_filters(*parts: str) -> str:
    given = [p for p in parts if p]
    return given[0] if len(given) == 1 else "(&" + "".join(given) + ")"


def check_dn(text: str, what: str = "DN") -> str:
    text = (text or "").strip()
    if not text:
        raise ValidationError(f"{what} is empty (example: dc=corp,dc=example)")
    try:
        parse_dn(text)
    except Exception:
        raise ValidationError(f"{what} {text!r} is not a valid distinguished name "
                              "(example: ou=Users,dc=corp,dc=example)") \
            from None
    return text


def check_uri(text: str, security: str) -> str:
    uri = (text or "").strip()
    parsed = urlparse(uri)
    if parsed.scheme not in ("ldap", "ldaps") or not parsed.hostname:
        raise ValidationError(f"{uri!r} is not an LDAP URI (examples: ldaps://dc1.corp.example, ldap://dc1:389)")
    if parsed.path not in ("", "/") or parsed.query:
        raise ValidationError(f"{uri!r}: give only scheme, host and port; the base DN is a separate setting")
    try:
        _ = parsed.port  # raises on a bad port
    except ValueError:
        raise ValidationError(f"{uri!r}: invalid port") from None
    if security == "ldaps" and parsed.scheme != "ldaps":
        raise ValidationError(f"{uri!r}: security is ldaps, so the URI must start with ldaps:// "
                              "(use --security starttls for ldap:// with StartTLS)")
    if security in ("starttls", "plain") and parsed.scheme != "ldap":
        raise ValidationError(f"{uri!r}: security is {security}, so the URI must start with ldap://")
    return f"{parsed.scheme}://{parsed.hostname}{':' + str(parsed.port) if parsed.port else ''}"


# ------------------------------------------------------------------ connections
@dataclass
class Settings:
    """What a connection needs (a view of rupost.db.directory_models.LdapDomain)."""

    name: str
    kind: str
    uris: list[str]
    security: str
    ca_pem: str
    bind_dn: str
    bind_password: str
    base_dn: str
    user_filter: str = ""
    group_filter: str = ""
    timeout: int = 10

    @property
    def profile(self) -> Profile:
        return PROFILES[self.kind]


def _tls(settings: Settings) -> ldap3.Tls:
    kwargs: dict[str, object] = {"validate": ssl.CERT_REQUIRED, "version": ssl.PROTOCOL_TLS_CLIENT}
    if settings.ca_pem.strip():
        kwargs["ca_certs_data"] = settings.ca_pem
    return ldap3.Tls(**kwargs)


def _describe(exc: BaseException) -> str:
    text = str(exc)
    low = text.lower()
    if "certificate verify failed" in low or "certificate_verify_failed" in low:
        reason = text.split("certificate verify failed:", 1)[-1].strip(" )]'\"") if ":" in text else ""
        return ("TLS certificate problem: the server's certificate is not trusted"
                + (f" ({reason})" if reason and reason != text else "")
                + "; give the CA that issued it with --ca-file")
    if "hostname" in low and ("match" in low or "mismatch" in low):
        return f"TLS certificate problem: the certificate does not name this host ({text})"
    if "wrong version number" in low or "unknown protocol" in low:
        return "TLS handshake failed: the port does not speak LDAPS (ldap:// with --security starttls?)"
    if "connection refused" in low or "errno 111" in low:
        return "connection refused (is the LDAP server running and listening on this port?)"
    if "timed out" in low or "timeout" in low:
        return "no answer (timed out): the server is unreachable from this node"
    if "name or service not known" in low or "nodename nor servname" in low or "errno -2" in low:
        return "the host name does not resolve (DNS or /etc/hosts on every node)"
    return text


def connect(settings: Settings, bind_dn: str | None = None, password: str | None = None,
            read_only: bool = True) -> ldap3.Connection:
    """The first URI that connects, secures and binds wins (failover in order).
    Raises DirectoryError listing each URI's reason when none does. Read-only unless
    asked: only the write-back writes."""
    problems = []
    bind_dn = settings.bind_dn if bind_dn is None else bind_dn
    password = settings.bind_password if password is None else password
    for uri in settings.uris:
        parsed = urlparse(uri)
        use_ssl = parsed.scheme == "ldaps"
        port = parsed.port or (636 if use_ssl else 389)
        tls = _tls(settings) if settings.security != "plain" else None
        server = ldap3.Server(parsed.hostname, port=port, use_ssl=use_ssl, tls=tls, get_info=ldap3.NONE,
                              connect_timeout=settings.timeout)
        conn = ldap3.Connection(server, user=bind_dn, password=password, auto_bind=ldap3.AUTO_BIND_NONE,
                                receive_timeout=settings.timeout, raise_exceptions=False, read_only=read_only,
                                auto_referrals=False)
        try:
            conn.open()
            if settings.security == "starttls" and not conn.start_tls():
                problems.append(f"{uri}: StartTLS refused: {conn.result.get('message') or conn.result}")
                conn.unbind()
                continue
        except lexc.LDAPException as exc:
            problems.append(f"{uri}: {_describe(exc)}")
            continue
        except (OSError, ssl.SSLError) as exc:
            problems.append(f"{uri}: {_describe(exc)}")
            continue
        try:
            ok = conn.bind()
        except lexc.LDAPException as exc:
            problems.append(f"{uri}: {_describe(exc)}")
            continue
        if not ok:
            result = conn.result or {}
            code = result.get("description")
            conn.unbind()
            if code == "invalidCredentials":
                # wrong credentials are wrong on every replica: stop here
                raise DirectoryError(f"LDAP domain {settings.name}: {uri}: bind as {bind_dn!r} refused: "
                                     "invalid credentials (check the DN and the password)")
            if code in ("strongerAuthRequired", "confidentialityRequired"):
                # AD's `LDAPServerIntegrity` / Samba's `ldap server require strong auth` /
                # 389-ds's `nsslapd-require-secure-binds`
                problems.append(f"{uri}: the server requires TLS for simple binds ({code}); "
                                "use --security ldaps or starttls")
                continue
            problems.append(f"{uri}: bind as {bind_dn!r} refused: {code} {result.get('message', '')}".rstrip())
            continue
        return conn
    raise DirectoryError(f"LDAP domain {settings.name}: no server could be used: " + "; ".join(problems))


def try_bind(settings: Settings, dn: str, password: str) -> bool:
    """Does this DN's password bind? (False on wrong credentials; DirectoryError when unreachable)."""
    if not password:
        return False  # an empty password is an anonymous bind in LDAP: never a login
    try:
        connect(settings, dn, password).unbind()
        return True
    except DirectoryError as exc:
        if "invalid credentials" in str(exc):
            return False
        raise


def search(conn: ldap3.Connection, settings: Settings, base: str, flt: str, attributes: list[str],
           scope=ldap3.SUBTREE, size_limit: int = 0):
    """Paged search; yields (dn, {lowercased attribute: [raw bytes values]})."""
    cookie = None
    returned = 0
    while True:
        ok = conn.search(base, flt, search_scope=scope, attributes=attributes, paged_size=PAGE_SIZE,
                         paged_cookie=cookie, size_limit=size_limit)
        result = conn.result or {}
        if not ok and result.get("description") not in ("success", "sizeLimitExceeded"):
            code = result.get("description")
            if code == "noSuchObject":
                raise DirectoryError(f"LDAP domain {settings.name}: base DN {base!r} does not exist on the server"
                                     + (f" (closest existing entry: {result.get('dn')!r})" if result.get("dn") else ""))
            if code == "filterError":
                raise DirectoryError(f"LDAP domain {settings.name}: the server rejected the filter {flt!r}")
            raise DirectoryError(f"LDAP domain {settings.name}: search under {base!r} failed: {code} "
                                 f"{result.get('message', '')}".rstrip())
        for item in conn.response or []:
            if item.get("type") != "searchResEntry":
                continue
            raw = {k.lower(): v for k, v in (item.get("raw_attributes") or {}).items()}
            yield item["dn"], raw
            returned += 1
            if size_limit and returned >= size_limit:
                return
        controls = result.get("controls") or {}
        cookie = controls.get("1.2.840.113556.1.4.319", {}).get("value", {}).get("cookie")
        if not cookie:
            return


def texts(raw: dict, attr: str) -> list[str]:
    out = []
    for v in raw.get(attr.lower(), []):
        if isinstance(v, bytes):
            try:
                out.append(v.decode("utf-8"))
            except UnicodeDecodeError:
                out.append(v.decode("latin-1"))
        else:
            out.append(str(v))
    return out


def first(raw: dict, attr: str) -> str:
    values = texts(raw, attr)
    return values[0].strip() if values else ""


# ------------------------------------------------------------------ users
@dataclass
class DirectoryUser:
    dn: str
    stable_id: str
    login: str
    mail: str
    extra: list[str]
    disabled: bool
    groups: list[str]
    gal: dict
    # addresses the directory does not rank: several ``mail`` values and no ``SMTP:`` mark
    # (FreeIPA / ALD Pro, where the write-back adds aliases as further ``mail`` values). LDAP
    # keeps no order among values, so "the first" may change between two searches: the sync
    # keeps the mailbox's address while it is still one of these (DirectoryUser.keeping)
    unranked: tuple[str, ...] = ()

    def keeping(self, address: str) -> DirectoryUser:
        """This user with ``address`` as the primary, if it is one of the unranked values."""
        if address == self.mail or address not in self.unranked:
            return self
        return replace(self, mail=address, extra=[a for a in dict.fromkeys([self.mail, *self.extra]) if a != address])


def stable_id(profile: Profile, raw: dict) -> str:
    values = raw.get(profile.id_attr.lower()) or []
    if not values:
        return ""
    value = values[0]
    if profile.id_attr == "objectGUID":
        if isinstance(value, bytes) and len(value) == 16:
            return str(uuid.UUID(bytes_le=value))  # AD stores the GUID little-endian
        text = value.decode() if isinstance(value, bytes) else str(value)
        return text.strip("{}").lower()
    return (value.decode() if isinstance(value, bytes) else str(value)).strip().lower()


def to_user(profile: Profile, dn: str, raw: dict) -> DirectoryUser:
    mails = [m.strip().lower() for m in texts(raw, "mail") if m.strip()]
    primary = mails[0] if mails else ""
    extra: list[str] = [m for m in mails[1:]]
    for value in texts(raw, "proxyAddresses"):
        prefix, _, address = value.partition(":")
        address = address.strip().lower()
        if prefix.lower() != "smtp" or not address:
            continue  # X400:, SIP: ... are not mail addresses
        if prefix == "SMTP" and not primary:
            primary = address
        extra.append(address)
    extra = [a for a in dict.fromkeys(extra) if a != primary]
    ranked = profile.kind == "ad" or len(mails) < 2 or any(v.startswith("SMTP:") for v in texts(raw, "proxyAddresses"))
    if profile.kind == "ad":
        try:
            disabled = bool(int(first(raw, "userAccountControl") or "0") & 2)
        except ValueError:
            disabled = False
    else:
        disabled = first(raw, "nsAccountLock").lower() == "true"
    gal = {}
    for attr, fieldname in profile.gal.items():
        if attr == "proxyAddresses":
            gal[fieldname] = ", ".join([primary] + extra)
        elif attr == "mail":
            gal[fieldname] = primary
        else:
            value = first(raw, attr)
            if value:
                gal[fieldname] = value[:512]
    return DirectoryUser(dn=dn, stable_id=stable_id(profile, raw), login=first(raw, profile.login_attr),
                         mail=primary, extra=extra, disabled=disabled, groups=texts(raw, "memberOf"), gal=gal,
                         unranked=() if ranked else tuple(dict.fromkeys(mails)))


def nested_groups(conn: ldap3.Connection, settings: Settings, dn: str, groups: list[str]) -> set[str]:
    """Those of ``groups`` (DNs) the entry ``dn`` is in through nested groups, asked of the
    server with the in-chain rule (one base search per group: a handful of mapped groups)."""
    rule = settings.profile.in_chain_rule
    found = set()
    for group in groups if rule else []:
        flt = f"(memberOf:{rule}:={escape(group)})"
        if any(True for _ in search(conn, settings, dn, flt, ["1.1"], scope=ldap3.BASE)):
            found.add(group.lower())
    return found


def user_filter(settings: Settings, *extra: str) -> str:
    return and_filters(settings.profile.user_class_filter, settings.user_filter, *extra)


def iter_users(conn: ldap3.Connection, settings: Settings, extra_filter: str = "", size_limit: int = 0):
    flt = user_filter(settings, "(mail=*)", extra_filter)
    for dn, raw in search(conn, settings, settings.base_dn, flt, settings.profile.attributes, size_limit=size_limit):
        yield to_user(settings.profile, dn, raw)


def tcp_reachable(uri: str, timeout: float = 3) -> str | None:
    parsed = urlparse(uri)
    port = parsed.port or (636 if parsed.scheme == "ldaps" else 389)
    try:
        socket.create_connection((parsed.hostname, port), timeout=timeout).close()
        return None
    except OSError as exc:
        return _describe(exc)
