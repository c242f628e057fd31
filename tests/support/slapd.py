"""A real OpenLDAP slapd under a temporary directory, on free loopback ports.

Two shapes of directory, each in its own slapd (their ``proxyAddresses`` and
``memberOf`` definitions differ, as they do in the real products):

- ``ad``: shaped like Active Directory: ``user``/``group`` classes with
  ``sAMAccountName``, ``proxyAddresses``, binary ``objectGUID``,
  ``userAccountControl`` (INTEGER, so the AD bit-test rule
  ``userAccountControl:1.2.840.113556.1.4.803:=2`` works: OpenLDAP implements it),
  ``memberOf``, ``department``, ``company``. OpenLDAP ships no usable AD schema
  (msuser.schema has no matching rules), hence the small test schema below, with
  the real AD OIDs.
- ``freeipa``: shaped like FreeIPA / ALD Pro: ``uid``, ``ipaUniqueID``,
  ``nsAccountLock``, ``memberOf``, ALD Pro's ``rbtadp``/``rbtamiddlename``, plus
  RuPost's ``ruPostMailAccount`` extension (rupost.ldap.schema).

Both listen on ldap:// (StartTLS offered) and ldaps:// with a server certificate
issued by a throwaway test CA (``ca_pem``); ``other_ca_pem`` is a CA that did not
issue it, for certificate-failure tests.
"""
from __future__ import annotations

import base64
import datetime as dt
import hashlib
import ipaddress
import os
import shutil
import socket
import subprocess
import time
import uuid
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from rupost.ldap.schema import openldap_schema

from .instance import free_ports
from .processes import stop_group

SCHEMA_DIR = Path("/etc/ldap/schema")
MODULE_DIR = Path("/usr/lib/ldap")

AD_SCHEMA = """# Test-only subset of the Active Directory schema (real AD OIDs), with matching rules
attributetype ( 1.2.840.113556.1.4.221 NAME 'sAMAccountName'
  EQUALITY caseIgnoreMatch SUBSTR caseIgnoreSubstringsMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
attributetype ( 1.2.840.113556.1.4.2 NAME 'objectGUID'
  EQUALITY octetStringMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.40 SINGLE-VALUE )
attributetype ( 1.2.840.113556.1.4.8 NAME 'userAccountControl'
  EQUALITY integerMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.27 SINGLE-VALUE )
attributetype ( 1.2.840.113556.1.2.102 NAME 'memberOf'
  EQUALITY distinguishedNameMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.12 )
attributetype ( 1.2.840.113556.1.2.210 NAME 'proxyAddresses'
  EQUALITY caseIgnoreMatch SUBSTR caseIgnoreSubstringsMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 )
attributetype ( 1.2.840.113556.1.2.141 NAME 'department'
  EQUALITY caseIgnoreMatch SUBSTR caseIgnoreSubstringsMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
attributetype ( 1.2.840.113556.1.2.146 NAME 'company'
  EQUALITY caseIgnoreMatch SUBSTR caseIgnoreSubstringsMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
attributetype ( 1.2.840.113556.1.4.750 NAME 'groupType'
  EQUALITY integerMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.27 SINGLE-VALUE )
objectclass ( 1.2.840.113556.1.5.9 NAME 'user' SUP inetOrgPerson STRUCTURAL
  MAY ( sAMAccountName $ objectGUID $ userAccountControl $ memberOf $ proxyAddresses $ department $ company ) )
objectclass ( 1.2.840.113556.1.5.8 NAME 'group' SUP top STRUCTURAL
  MUST cn MAY ( member $ sAMAccountName $ objectGUID $ groupType $ mail $ description $ proxyAddresses ) )
"""

FREEIPA_SCHEMA = """# Test-only subset of the FreeIPA / ALD Pro schema
attributetype ( 2.16.840.1.113730.3.8.3.1 NAME 'ipaUniqueID'
  EQUALITY caseIgnoreMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 )
attributetype ( 2.16.840.1.113730.3.1.610 NAME 'nsAccountLock'
  EQUALITY caseIgnoreMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
attributetype ( 1.2.840.113556.1.2.102 NAME 'memberOf'
  EQUALITY distinguishedNameMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.12 )
attributetype ( 1.3.6.1.4.1.99999.57980.1 NAME 'rbtadp' DESC 'ALD Pro: department (test OID)'
  EQUALITY caseIgnoreMatch SUBSTR caseIgnoreSubstringsMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 )
attributetype ( 1.3.6.1.4.1.99999.57980.2 NAME 'rbtamiddlename' DESC 'ALD Pro: middle name (test OID)'
  EQUALITY caseIgnoreMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 )
objectclass ( 2.16.840.1.113730.3.8.4.1 NAME 'ipaObject' SUP top AUXILIARY MUST ipaUniqueID )
objectclass ( 2.16.840.1.113730.3.2.130 NAME 'inetUser' SUP top AUXILIARY MAY ( uid $ memberOf $ nsAccountLock ) )
objectclass ( 1.3.6.1.4.1.99999.57980.3 NAME 'rbtaUser' SUP top AUXILIARY MAY ( rbtadp $ rbtamiddlename ) )
"""

# quotes, '#' and blanks: every configuration file that carries it must quote it right
SERVICE_PASSWORD = 'svc "Secret" #1'


# ------------------------------------------------------------------ TLS
def _key():
    return ec.generate_private_key(ec.SECP256R1())


def _pem(obj) -> str:
    if isinstance(obj, x509.Certificate):
        return obj.public_bytes(serialization.Encoding.PEM).decode()
    return obj.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def make_ca(name: str = "RuPost Test LDAP CA"):
    key = _key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    return cert, key


def issue_server_cert(ca_cert, ca_key, hosts=("localhost", "127.0.0.1")):
    key = _key()
    sans = []
    for h in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            sans.append(x509.DNSName(h))
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
            .issuer_name(ca_cert.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    return cert, key


def ssha(password: str) -> str:
    salt = os.urandom(8)
    digest = hashlib.sha1(password.encode() + salt).digest()
    return "{SSHA}" + base64.b64encode(digest + salt).decode()


def ldif_value(name: str, value) -> str:
    if isinstance(value, bytes) or (isinstance(value, str) and (not value.isascii() or value[:1] in " :<"
                                                               or value.endswith(" "))):
        raw = value if isinstance(value, bytes) else value.encode()
        return f"{name}:: {base64.b64encode(raw).decode()}"
    return f"{name}: {value}"


def ldif_entry(dn: str, attrs: dict) -> str:
    lines = [ldif_value("dn", dn)]
    for name, values in attrs.items():
        for v in values if isinstance(values, (list, tuple)) else [values]:
            lines.append(ldif_value(name, v))
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ the server
class TempSlapd:
    """slapd -f slapd.conf in the foreground under `base`; data loaded with slapadd before start."""

    def __init__(self, base: Path, kind: str = "ad", suffix: str | None = None):
        if kind not in ("ad", "freeipa"):
            raise ValueError(kind)
        self.base = Path(base)
        self.kind = kind
        self.suffix = suffix or ("dc=corp,dc=test" if kind == "ad" else "dc=ipa,dc=test")
        self.port, self.ldaps_port = free_ports(2)
        self.root_dn = f"cn=admin,{self.suffix}"
        self.root_password = "root-Secret-1"
        if kind == "ad":
            self.users_dn = f"ou=Users,{self.suffix}"
            self.groups_dn = f"ou=Groups,{self.suffix}"
            self.service_dn = f"cn=rupost-svc,ou=Service,{self.suffix}"
        else:
            self.users_dn = f"cn=users,cn=accounts,{self.suffix}"
            self.groups_dn = f"cn=groups,cn=accounts,{self.suffix}"
            self.service_dn = f"uid=rupost,cn=sysaccounts,cn=etc,{self.suffix}"
        self.service_password = SERVICE_PASSWORD
        ca_cert, ca_key = make_ca()
        server_cert, server_key = issue_server_cert(ca_cert, ca_key)
        self.ca_pem = _pem(ca_cert)
        self.other_ca_pem = _pem(make_ca("Some Other CA")[0])
        self._server_pem, self._server_key_pem = _pem(server_cert), _pem(server_key)
        self.proc: subprocess.Popen | None = None

    # -------------------------------------------------------------- URIs
    @property
    def ldap_uri(self) -> str:
        return f"ldap://127.0.0.1:{self.port}"

    @property
    def ldaps_uri(self) -> str:
        return f"ldaps://127.0.0.1:{self.ldaps_port}"

    # -------------------------------------------------------------- setup
    def _write_config(self) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        (self.base / "data").mkdir(exist_ok=True)
        (self.base / "ca.pem").write_text(self.ca_pem)
        (self.base / "server.pem").write_text(self._server_pem)
        key = self.base / "server.key"
        key.write_text(self._server_key_pem)
        os.chmod(key, 0o600)
        schemas = ["core", "cosine", "inetorgperson", "nis"]
        includes = [f"include {SCHEMA_DIR / s}.schema" for s in schemas]
        if self.kind == "ad":
            (self.base / "ad.schema").write_text(AD_SCHEMA)
            includes.append(f"include {self.base / 'ad.schema'}")
        else:
            (self.base / "freeipa.schema").write_text(FREEIPA_SCHEMA)
            (self.base / "rupost.schema").write_text(openldap_schema())
            includes += [f"include {self.base / 'freeipa.schema'}", f"include {self.base / 'rupost.schema'}"]
        conf = "\n".join(includes + [
            f"pidfile {self.base / 'slapd.pid'}",
            f"argsfile {self.base / 'slapd.args'}",
            f"modulepath {MODULE_DIR}",
            "moduleload back_mdb",
            f"TLSCACertificateFile {self.base / 'ca.pem'}",
            f"TLSCertificateFile {self.base / 'server.pem'}",
            f"TLSCertificateKeyFile {self.base / 'server.key'}",
            "sizelimit 500",
            "database mdb",
            "maxsize 1073741824",
            f"suffix \"{self.suffix}\"",
            f"rootdn \"{self.root_dn}\"",
            f"rootpw {self.root_password}",
            f"directory {self.base / 'data'}",
            "index objectClass eq",
            "index mail,proxyAddresses,uid,cn eq,sub",
            "index sAMAccountName,department eq" if self.kind == "ad" else "index ipaUniqueID,ou eq",
            "index memberOf,member eq",
            f"limits dn.exact=\"{self.service_dn}\" size=unlimited time=unlimited",
            # like AD and 389-ds: a disabled account cannot bind
            "access to filter=" + ("(userAccountControl:1.2.840.113556.1.4.803:=2)" if self.kind == "ad"
                                   else "(nsAccountLock=TRUE)") + " attrs=userPassword",
            "  by * none",
            "access to attrs=userPassword",
            "  by anonymous auth",
            "  by self write",
            "  by * none",
            "access to *",
            f"  by dn.exact=\"{self.service_dn}\" read",
            "  by self read",
            "  by users search",
            "  by * none",
        ]) + "\n"
        (self.base / "slapd.conf").write_text(conf)

    def base_entries(self) -> list[str]:
        parts = self.suffix.split(",")
        dc = parts[0].split("=", 1)[1]
        entries = [ldif_entry(self.suffix, {"objectClass": ["top", "dcObject", "organization"], "dc": dc,
                                            "o": dc})]
        if self.kind == "ad":
            for ou in ("Users", "Groups", "Service"):
                entries.append(ldif_entry(f"ou={ou},{self.suffix}", {"objectClass": "organizationalUnit", "ou": ou}))
            entries.append(ldif_entry(self.service_dn, {
                "objectClass": ["top", "person", "organizationalPerson", "inetOrgPerson", "user"],
                "cn": "rupost-svc", "sn": "service", "sAMAccountName": "rupost-svc",
                "userPassword": ssha(self.service_password), "userAccountControl": "66048"}))
        else:
            for dn, cn in ((f"cn=accounts,{self.suffix}", "accounts"), (self.users_dn, "users"),
                           (self.groups_dn, "groups"), (f"cn=etc,{self.suffix}", "etc"),
                           (f"cn=sysaccounts,cn=etc,{self.suffix}", "sysaccounts")):
                entries.append(ldif_entry(dn, {"objectClass": ["top", "organizationalRole"], "cn": cn}))
            entries.append(ldif_entry(self.service_dn, {
                "objectClass": ["top", "account", "simpleSecurityObject"], "uid": "rupost",
                "userPassword": ssha(self.service_password)}))
        return entries

    def load(self, ldif: str) -> None:
        """slapadd (server stopped): fast bulk load."""
        path = self.base / "load.ldif"
        path.write_text(ldif)
        proc = subprocess.run(["slapadd", "-q", "-f", str(self.base / "slapd.conf"), "-l", str(path)],
                              capture_output=True, text=True)
        path.unlink()
        if proc.returncode != 0:
            raise RuntimeError(f"slapadd failed: {proc.stderr.strip()}")

    def start(self, initial_ldif: str = "") -> "TempSlapd":
        fresh = not (self.base / "slapd.conf").exists()
        if fresh:
            self._write_config()
            self.load("\n".join(self.base_entries()) + ("\n" + initial_ldif if initial_ldif else ""))
        log = open(self.base / "slapd.log", "ab")
        self.proc = subprocess.Popen(
            ["slapd", "-d", "0", "-f", str(self.base / "slapd.conf"), "-h", f"{self.ldap_uri}/ {self.ldaps_uri}/"],
            stdout=log, stderr=log, start_new_session=True)
        log.close()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"slapd exited: {(self.base / 'slapd.log').read_text()[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                socket.create_connection(("127.0.0.1", self.ldaps_port), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("slapd did not start listening")

    def stop(self) -> None:
        stop_group(self.proc, wait=10)
        self.proc = None

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)

    # -------------------------------------------------------------- changes while running
    def ldapmodify(self, ldif: str, add: bool = False) -> None:
        argv = ["ldapmodify" if not add else "ldapadd", "-x", "-H", self.ldap_uri, "-D", self.root_dn,
                "-w", self.root_password]
        proc = subprocess.run(argv, input=ldif, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"{argv[0]} failed: {proc.stderr.strip()}")

    def add(self, dn: str, attrs: dict) -> None:
        self.ldapmodify(ldif_entry(dn, attrs), add=True)

    def replace(self, dn: str, **attrs) -> None:
        lines = [f"dn: {dn}", "changetype: modify"]
        for name, values in attrs.items():
            lines.append(f"replace: {name}")
            for v in values if isinstance(values, (list, tuple)) else ([] if values is None else [values]):
                lines.append(ldif_value(name, v))
            lines.append("-")
        self.ldapmodify("\n".join(lines) + "\n")

    def delete(self, dn: str) -> None:
        proc = subprocess.run(["ldapdelete", "-x", "-H", self.ldap_uri, "-D", self.root_dn, "-w",
                               self.root_password, dn], capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"ldapdelete failed: {proc.stderr.strip()}")

    # -------------------------------------------------------------- users
    def user_entry(self, login: str, mail: str | None, password: str, *, extra: tuple = (), disabled: bool = False,
                   given: str = "Test", surname: str | None = None, **attrs) -> tuple[str, dict, str]:
        """(dn, attributes, stable id) of a user of this directory's shape."""
        surname = surname or login.capitalize()
        common = {"cn": f"{given} {surname}", "sn": surname, "givenName": given,
                  "userPassword": ssha(password)}
        if mail:
            common["mail"] = mail
        if self.kind == "ad":
            guid = uuid.uuid4()
            dn = f"cn={login},{self.users_dn}"
            entry = {"objectClass": ["top", "person", "organizationalPerson", "inetOrgPerson", "user"],
                     "sAMAccountName": login, "objectGUID": guid.bytes_le,
                     "userAccountControl": str(514 if disabled else 512), **common}
            if mail:
                entry["proxyAddresses"] = [f"SMTP:{mail}"] + [f"smtp:{a}" for a in extra]
            stable = str(guid)
        else:
            stable = str(uuid.uuid4())
            dn = f"uid={login},{self.users_dn}"
            entry = {"objectClass": ["top", "person", "organizationalPerson", "inetOrgPerson", "inetUser",
                                     "ipaObject", "ruPostMailAccount", "rbtaUser"],
                     "uid": login, "ipaUniqueID": stable, **common}
            if disabled:
                entry["nsAccountLock"] = "TRUE"
            if mail:
                entry["proxyAddresses"] = [f"SMTP:{mail}"] + [f"smtp:{a}" for a in extra]
        entry.update({k: v for k, v in attrs.items() if v is not None})
        return dn, entry, stable

    def add_user(self, login: str, mail: str | None, password: str, **kw) -> tuple[str, str]:
        """Add a user while running; returns (dn, stable id)."""
        dn, entry, stable = self.user_entry(login, mail, password, **kw)
        self.add(dn, entry)
        return dn, stable

    def set_disabled(self, dn: str, disabled: bool) -> None:
        if self.kind == "ad":
            self.replace(dn, userAccountControl=str(514 if disabled else 512))
        else:
            self.replace(dn, nsAccountLock="TRUE" if disabled else None)

    def add_group(self, name: str, members: list[str]) -> str:
        if self.kind == "ad":
            dn = f"cn={name},{self.groups_dn}"
            self.add(dn, {"objectClass": ["top", "group"], "cn": name, "sAMAccountName": name,
                          "groupType": "-2147483646", "member": members})
        else:
            dn = f"cn={name},{self.groups_dn}"
            self.add(dn, {"objectClass": ["top", "groupOfNames"], "cn": name, "member": members})
        for m in members:
            self._add_value(m, "memberOf", dn)
        return dn

    def _add_value(self, dn: str, attr: str, value: str) -> None:
        self.ldapmodify(f"dn: {dn}\nchangetype: modify\nadd: {attr}\n{attr}: {value}\n-\n")
