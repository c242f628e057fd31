"""Kerberos single sign-on of an LDAP domain (``rupost ldap-domains kerberos``), the part of
DirectoryService that takes the keytab an AD administrator exported and checks it.

The administrator creates a service account with the service principals ``imap/MAILHOST``
and ``smtp/MAILHOST`` and exports its keys (``ktpass`` on Windows, ``samba-tool domain
exportkeytab`` on Samba, ``msktutil`` from Linux; docs/directories.md). Before anything is
stored the keytab is checked as the mail server will use it:

1. ``klist -k``: a keytab at all, one realm, both service principals in it;
2. ``kinit -k`` with a principal of the keytab against the domain's KDCs (the DCs of its URIs
   unless given): the clocks agree, the KDC knows the account, the key is the account's;
3. ``kvno -k``: the KDC issues tickets for both service principals and the keytab decrypts
   them (the key version the DC uses is in the keytab: no password change since the export).

Any failure names the problem and stores nothing. The keytab is kept in the ``rupost``
database (a secret like the bind password, replicated with it) and written by each node's
core to a file only dovecot's group reads (adapters/dovecot.py); dovecot's GSSAPI passdb maps
a principal ``LOGIN@REALM`` to the mailbox of the directory account with that login
(view ``lookup_kerberos_logins``).
"""
from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from sqlalchemy import select

from rupost.ldap import client as dl

from .. import validation
from ..db.directory_models import LdapDomain
from ..errors import ConflictError, ValidationError

if TYPE_CHECKING:
    from . import Services

SERVICES = ("imap", "smtp")  # dovecot asks for imap/HOST (IMAP) and smtp/HOST (postfix's SASL)
KEYTAB_MAX = 64 * 1024
TIMEOUT = 30
_KLIST_LINE = re.compile(r"^\s*(\d+)\s+(?:\S+\s+\S+\s+)?(\S+@\S+)\s+\(([^)]+)\)\s*$")


class KerberosError(dl.DirectoryError):
    """The keytab does not fit the domain or its KDC; nothing was stored."""


@dataclass(frozen=True)
class KeytabEntry:
    kvno: int
    principal: str
    enctype: str


def keytab_dir(state: Path) -> Path:
    return state / "dovecot" / "kerberos"


def keytab_name(sha256: str) -> str:
    return f"{sha256[:16]}.keytab"


def parse_klist(text: str) -> list[KeytabEntry]:
    """The entries of ``klist -k -e`` (with or without -t timestamps)."""
    out = []
    for line in text.splitlines():
        m = _KLIST_LINE.match(line)
        if m:
            out.append(KeytabEntry(int(m.group(1)), m.group(2), m.group(3)))
    return out


def krb5_conf(realm: str, kdcs: Sequence[str]) -> str:
    """A client configuration of this realm alone: no DNS lookups, the given KDCs. No
    kdc_timesync: kinit would otherwise correct for a skewed clock, which dovecot, checking
    each client's authenticator against this node's clock, cannot."""
    lines = ["[libdefaults]", f" default_realm = {realm}", " dns_lookup_kdc = false", " dns_lookup_realm = false",
             " kdc_timesync = 0",
             " rdns = false", " dns_canonicalize_hostname = false", " udp_preference_limit = 1",
             "[realms]", f" {realm} = {{"]
    lines += [f"  kdc = {k}" for k in kdcs]
    return "\n".join(lines + [" }", ""])


def kdcs_of(uris: Sequence[str]) -> list[str]:
    """In AD every DC is a KDC: the hosts of the LDAP domain's URIs."""
    hosts = []
    for uri in uris:
        host = urlparse(uri).hostname
        if host:
            hosts.append(f"[{host}]" if ":" in host else host)
    return list(dict.fromkeys(hosts))


def _problem(stderr: str) -> str:
    """What a kinit/kvno failure means, in the administrator's terms ('' = not understood)."""
    text = stderr.lower()
    if "clock skew" in text:
        return ("the clocks of this node and the KDC differ by more than Kerberos allows (5 minutes): "
                "synchronise this node's time with the domain controllers (NTP) and try again")
    if "cannot contact any kdc" in text or "cannot find kdc" in text or "unable to reach any kdc" in text:
        return "no KDC answered"
    if "key version number for principal in key table is incorrect" in text or "kvno" in text and "incorrect" in text:
        return "kvno"
    if "preauthentication failed" in text or "password incorrect" in text or "integrity check" in text:
        return "key"
    if "not found in kerberos database" in text or "no suitable keys" in text:
        return "unknown"
    return ""


class KeytabCheck:
    """One check of a keytab against a realm's KDCs, in a private temporary directory."""

    def __init__(self, keytab: bytes, host: str, kdcs: Sequence[str]) -> None:
        self.keytab, self.host, self.kdcs = keytab, host, list(kdcs)
        self.dir = Path(tempfile.mkdtemp(prefix="rupost-krb5-"))
        self.path = self.dir / "check.keytab"
        self.path.write_bytes(keytab)
        os.chmod(self.path, 0o600)
        self.env: dict[str, str] = {}

    def close(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    def _run(self, *argv: str) -> subprocess.CompletedProcess:
        try:
            return subprocess.run(list(argv), capture_output=True, text=True, timeout=TIMEOUT,
                                  env=self.env or None, stdin=subprocess.DEVNULL)
        except FileNotFoundError:
            raise KerberosError(f"{argv[0]} is not installed (Debian package krb5-user)") from None
        except subprocess.TimeoutExpired:
            raise KerberosError(f"{argv[0]} got no answer from the KDC ({', '.join(self.kdcs)}) "
                                f"in {TIMEOUT} s") from None

    def entries(self) -> tuple[str, list[KeytabEntry]]:
        r = self._run("klist", "-k", "-e", str(self.path))
        entries = parse_klist(r.stdout) if r.returncode == 0 else []
        if not entries:
            raise KerberosError("the file is not a keytab or holds no keys (klist -k: "
                                f"{(r.stderr or r.stdout).strip()[-200:] or 'empty'})")
        realms = sorted({e.principal.rsplit("@", 1)[1] for e in entries})
        if len(realms) != 1:
            raise KerberosError(f"the keytab holds principals of several realms ({', '.join(realms)}): "
                                "export the mail service account's keys of one realm")
        return realms[0], entries

    def needed(self, realm: str) -> list[str]:
        return [f"{service}/{self.host}@{realm}" for service in SERVICES]

    def check(self) -> dict[str, Any]:
        realm, entries = self.entries()
        principals = list(dict.fromkeys(e.principal for e in entries))
        missing = [p for p in self.needed(realm) if p not in principals]
        if missing:
            raise KerberosError(f"the keytab has no key for {', '.join(missing)} (it holds {', '.join(principals)}): "
                                f"export the service account with the principals {', '.join(self.needed(realm))} "
                                "(the mail host name clients connect to)")
        if not self.kdcs:
            raise KerberosError("no KDC to check the keytab against: give --kdc (a domain controller)")
        (self.dir / "krb5.conf").write_text(krb5_conf(realm, self.kdcs))
        # this realm's configuration and a private credential cache, never the node's own
        self.env = {**os.environ, "KRB5_CONFIG": str(self.dir / "krb5.conf"),
                    "KRB5CCNAME": f"FILE:{self.dir / 'ccache'}", "KRB5_KTNAME": f"FILE:{self.path}"}
        client = self._initial_credentials(realm, principals, entries)
        kvnos = self._service_tickets(realm, entries)
        return {"realm": realm, "principals": principals, "kvnos": kvnos, "checked_with": client}

    def _initial_credentials(self, realm: str, principals: list[str], entries: list[KeytabEntry]) -> str:
        """kinit -k with the first principal of the keytab the KDC lets in (an SPN is no
        client name in AD unless it is the account's userPrincipalName, as ktpass sets it)."""
        mismatched = []
        order = sorted(principals, key=lambda p: p in self.needed(realm))  # the account's own name first
        for principal in order:
            r = self._run("kinit", "-k", "-t", str(self.path), principal)
            if r.returncode == 0:
                return principal
            why = _problem(r.stderr)
            if why in ("key", "kvno"):
                mismatched.append(principal)
            elif why != "unknown":
                raise KerberosError(f"kinit -k {principal} against {', '.join(self.kdcs)}: "
                                    f"{why or r.stderr.strip()[-300:]}")
        if mismatched:
            kvno = max(e.kvno for e in entries if e.principal == mismatched[0])
            raise KerberosError(f"the keytab's key for {mismatched[0]} (kvno {kvno}) is not the account's key on the "
                                "DC: its password changed after the export; export the keytab again")
        raise KerberosError(f"no principal of the keytab may get a ticket from the KDC ({', '.join(principals)}): "
                            "include the service account's own principal (ACCOUNT@REALM; samba-tool domain "
                            "exportkeytab --principal=ACCOUNT, msktutil does) or map the keytab to the "
                            "account (ktpass -mapuser sets its userPrincipalName)")

    def _service_tickets(self, realm: str, entries: list[KeytabEntry]) -> dict[str, int]:
        kvnos: dict[str, int] = {}
        for principal in self.needed(realm):
            r = self._run("kvno", "-k", str(self.path), principal)
            m = re.search(r"kvno = (\d+)", r.stdout)
            if r.returncode == 0 and m:
                kvnos[principal] = int(m.group(1))
                continue
            why = _problem(r.stderr)
            have = sorted({e.kvno for e in entries if e.principal == principal})
            if why == "unknown":
                raise KerberosError(f"the KDC knows no account with the service principal {principal}: add it to "
                                    "the mail service account (setspn -S or samba-tool spn add)")
            if why in ("kvno", "key"):
                raise KerberosError(f"the DC's key for {principal} is not in the keytab (the keytab has kvno "
                                    f"{', '.join(map(str, have))}): the account's password changed after the "
                                    "export; export the keytab again")
            raise KerberosError(f"kvno {principal}: {why or r.stderr.strip()[-300:]}")
        return kvnos


def check_keytab(keytab: bytes, host: str, kdcs: Sequence[str]) -> dict[str, Any]:
    if not keytab:
        raise ValidationError("the keytab file is empty")
    if len(keytab) > KEYTAB_MAX:
        raise ValidationError(f"the keytab is larger than {KEYTAB_MAX // 1024} KiB: not a service keytab")
    check = KeytabCheck(keytab, host, kdcs)
    try:
        return check.check()
    finally:
        check.close()


class DirectoryKerberos:
    """Inherited by DirectoryService; uses its ``app`` and ``_row``."""

    app: Services
    _row: Callable[[Any, str], LdapDomain]

    def kerberos_set(self, name: str, keytab: bytes, *, kdcs: Sequence[str] = ()) -> dict:
        # the name clients connect to (what autoconfig tells them): their tickets are for it
        host = validation.domain_name(self.app.settings.client_mail_host() or self.app.settings.mail_host())
        with self.app.dbs.session("main") as s:
            row = self._row(s, name)
            if row.kind != "ad":
                raise ValidationError(f"Kerberos single sign-on is for Active Directory domains; {row.name} is "
                                      f"{row.kind}")
            if not row.mail_domains:
                raise ValidationError(f"LDAP domain {row.name} has no mail domain: bind one first (--mail-domain)")
            other = s.scalar(select(LdapDomain.name).where(LdapDomain.name != row.name,
                                                           LdapDomain.kerberos != {}))
            if other:
                raise ConflictError(f"Kerberos is already set up for LDAP domain {other}: dovecot reads one keytab "
                                    f"(rupost ldap-domains kerberos {other} --off first)")
            name, uris = row.name, list(row.uris)
        kdcs = [k.strip() for part in kdcs for k in str(part).replace(",", " ").split()] or kdcs_of(uris)
        report = check_keytab(keytab, host, kdcs)
        sha = hashlib.sha256(keytab).hexdigest()
        config = {"realm": report["realm"], "host": host, "principals": report["principals"],
                  "kvnos": report["kvnos"], "kdcs": kdcs, "sha256": sha,
                  "keytab": base64.b64encode(keytab).decode(), "checked_at": dt.datetime.now(dt.UTC).isoformat()}
        with self.app.dbs.session("main") as s:
            self._row(s, name).kerberos = config
        self.app.audit.record("ldap_domain.kerberos.set", name, realm=config["realm"], kvnos=config["kvnos"],
                              sha256=sha[:16])
        return {"name": name, **kerberos_public(config)}

    def kerberos_off(self, name: str) -> dict:
        with self.app.dbs.session("main") as s:
            row = self._row(s, name)
            was = bool(row.kerberos)
            row.kerberos = {}
            name = row.name
        if was:
            self.app.audit.record("ldap_domain.kerberos.off", name)
        return {"name": name, "enabled": False}

    def kerberos_context(self, rows: Sequence[LdapDomain]) -> dict:
        """The template context ``directories.kerberos``: the one LDAP domain with a keytab."""
        for r in rows:
            config = r.kerberos or {}
            if config.get("sha256") and r.mail_domains:
                return {"enabled": True, "directory": r.name, "realm": config["realm"], "host": config["host"],
                        "domains": list(r.mail_domains),
                        "keytab": str(keytab_dir(self.app.layout.state) / keytab_name(config["sha256"]))}
        return {"enabled": False, "directory": "", "realm": "", "host": "", "domains": [], "keytab": ""}


def kerberos_public(config: dict) -> dict:
    """What may be shown of the Kerberos settings (never the keys)."""
    if not config:
        return {"enabled": False}
    return {"enabled": True, **{k: config[k] for k in ("realm", "host", "principals", "kvnos", "kdcs",
                                                       "checked_at") if k in config},
            "keytab_sha256": config.get("sha256", "")[:16]}


def keytabs(rows: Sequence[LdapDomain]) -> list[tuple[str, bytes]]:
    """(file name, keytab) of every LDAP domain with Kerberos (NodeData for dovecot)."""
    out = []
    for r in rows:
        config = r.kerberos or {}
        if config.get("sha256"):
            try:
                out.append((keytab_name(config["sha256"]), base64.b64decode(config["keytab"])))
            except (KeyError, binascii.Error):
                continue
    return out
