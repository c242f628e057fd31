"""A real 389 Directory Server (Debian's 389-ds-base: dscreate's installer, ns-slapd) shaped like
FreeIPA / ALD Pro, on free loopback ports (389-ds's ports are settings: no namespace needed).

- instance ``rp<tag>`` created from an INF by lib389's installer (what ``dscreate from-file``
  runs), as root and without systemd: lib389 is a Debian Python package, so it runs under
  /usr/bin/python3 (INSTALLER below), not the test virtualenv;
- the server certificate comes from a throwaway CA (``ca_pem``), imported with ``dsctl tls``;
  ``nsslapd-require-secure-binds: on`` (binds with a password only over TLS);
- FreeIPA's layout (cn=users,cn=accounts / cn=groups,cn=accounts / cn=sysaccounts,cn=etc),
  ``ipaUniqueID`` (a test subset of FreeIPA's schema), ``nsAccountLock`` (389-ds refuses a
  locked account's bind itself), the memberOf plugin (nested groups resolved by the server),
  and RuPost's ``ruPostMailAccount`` loaded from ``rupost ldap-domains schema --format 389ds``;
- ACIs as FreeIPA grants a system account: the service account reads, users read themselves.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

from .instance import free_ports
from .processes import stop_group
from .slapd import _pem, issue_server_cert, ldif_entry, make_ca

SUFFIX = "dc=ipa,dc=test"
USERS_DN = f"cn=users,cn=accounts,{SUFFIX}"
GROUPS_DN = f"cn=groups,cn=accounts,{SUFFIX}"
SERVICE_DN = f"uid=rupost,cn=sysaccounts,cn=etc,{SUFFIX}"
SERVICE_PASSWORD = 'svc "389" #1'
WRITEBACK_DN = f"uid=rupost-wb,cn=sysaccounts,cn=etc,{SUFFIX}"  # may write mail, proxyAddresses, objectClass
WRITEBACK_PASSWORD = "Wb-389-Secret"
ROOT_DN = "cn=Directory Manager"
ROOT_PASSWORD = "Dm-Secret-2026"

FREEIPA_SCHEMA = """dn: cn=schema
changetype: modify
add: attributeTypes
attributeTypes: ( 2.16.840.1.113730.3.8.3.1 NAME 'ipaUniqueID' EQUALITY caseIgnoreMatch ORDERING caseIgnoreOrderingMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 X-ORIGIN 'FreeIPA (test subset)' )
-
add: objectClasses
objectClasses: ( 2.16.840.1.113730.3.8.4.1 NAME 'ipaObject' SUP top AUXILIARY MUST ipaUniqueID X-ORIGIN 'FreeIPA (test subset)' )
"""  # noqa: E501

INSTALLER = """
import logging, sys
import lib389
import lib389.instance.setup as setup
# no systemd here: lib389 starts ns-slapd itself in its "containerised" mode, whose pid file
# is a container path; the instance's own is used instead
lib389.DirSrv.pid_file = lambda self: self.ds_paths.pid_file
log = logging.getLogger("dscreate")
logging.basicConfig(level=logging.WARNING)
sys.exit(0 if setup.SetupDs(False, False, log, containerised=True).create_from_inf(sys.argv[1]) else 1)
"""

REMOVER = """
import sys
from lib389 import DirSrv
from lib389.instance.remove import remove_ds_instance
ds = DirSrv(containerised=True)
ds.systemd_override = False
ds.local_simple_allocate(serverid=sys.argv[1])
remove_ds_instance(ds)
"""


def _run(*argv: str, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(list(argv), capture_output=True, text=True, **kw)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:3])} failed ({proc.returncode}): "
                           f"{(proc.stderr or proc.stdout).strip()[-2000:]}")
    return proc


class DS389:
    def __init__(self, base: Path):
        self.base = Path(base)
        self.name = f"rp{uuid.uuid4().hex[:8]}"
        self.port, self.ldaps_port = free_ports(2)
        ca_cert, ca_key = make_ca("RuPost Test 389-ds CA")
        cert, key = issue_server_cert(ca_cert, ca_key, hosts=("localhost", "127.0.0.1"))
        self.ca_pem, self._cert, self._key = _pem(ca_cert), _pem(cert), _pem(key)
        self.other_ca_pem = _pem(make_ca("Some Other CA")[0])
        self.config_dir = Path(f"/etc/dirsrv/slapd-{self.name}")
        self.pid_file = Path(f"/run/dirsrv/slapd-{self.name}.pid")
        self.proc: subprocess.Popen | None = None
        self.created = False

    @property
    def ldaps_uri(self) -> str:
        return f"ldaps://127.0.0.1:{self.ldaps_port}"

    @property
    def ldap_uri(self) -> str:
        return f"ldap://127.0.0.1:{self.port}"

    # -------------------------------------------------------------- creation
    def create(self) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        inf = self.base / "instance.inf"
        inf.write_text(f"""[general]
full_machine_name = localhost
start = True
systemd = False
[slapd]
instance_name = {self.name}
user = root
group = root
port = {self.port}
secure_port = {self.ldaps_port}
root_password = {ROOT_PASSWORD}
self_sign_cert = True
[backend-userroot]
suffix = {SUFFIX}
create_suffix_entry = True
sample_entries = no
""")
        (self.base / "install.py").write_text(INSTALLER)
        self.created = True  # from here on, destroy() removes what the installer left
        _run("/usr/bin/python3", str(self.base / "install.py"), str(inf))
        self._kill_daemon()  # the installer's daemonised ns-slapd; ours runs in the foreground
        tls = self.base / "tls"
        tls.mkdir(exist_ok=True)
        for name, text in (("ca.pem", self.ca_pem), ("cert.pem", self._cert), ("key.pem", self._key)):
            (tls / name).write_text(text)
        _run("dsctl", self.name, "tls", "import-server-key-cert", str(tls / "cert.pem"), str(tls / "key.pem"))
        _run("dsctl", self.name, "tls", "import-ca", str(tls / "ca.pem"), "RuPostTestCA")

    def _kill_daemon(self) -> None:
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.2)
        os.kill(pid, signal.SIGKILL)

    # -------------------------------------------------------------- running
    def start(self, timeout: float = 60) -> DS389:
        log = open(self.base / "ns-slapd.log", "ab")
        self.proc = subprocess.Popen(["ns-slapd", "-D", str(self.config_dir), "-i", str(self.pid_file), "-d", "0"],
                                     stdout=log, stderr=log, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                errors = Path(f"/var/log/dirsrv/slapd-{self.name}/errors")
                raise RuntimeError(f"ns-slapd exited: {errors.read_text()[-3000:] if errors.exists() else ''}")
            try:
                socket.create_connection(("127.0.0.1", self.ldaps_port), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("ns-slapd did not listen")

    def stop(self) -> None:
        stop_group(self.proc, wait=30)
        self.proc = None

    def destroy(self) -> None:
        self.stop()
        if self.created:
            self._kill_daemon()
            (self.base / "remove.py").write_text(REMOVER)
            subprocess.run(["/usr/bin/python3", str(self.base / "remove.py"), self.name], capture_output=True)
        shutil.rmtree(self.base, ignore_errors=True)

    # -------------------------------------------------------------- changes (as the Directory Manager, over LDAPS)
    def ldapmodify(self, ldif: str, add: bool = False) -> None:
        env = {**os.environ, "LDAPTLS_CACERT": str(self.base / "tls" / "ca.pem")}
        _run("ldapmodify", *(["-a"] if add else []), "-x", "-H", self.ldaps_uri, "-D", ROOT_DN, "-w", ROOT_PASSWORD,
             input=ldif, env=env)

    def ldapsearch(self, base: str, flt: str, *attrs: str, scope: str = "base") -> str:
        env = {**os.environ, "LDAPTLS_CACERT": str(self.base / "tls" / "ca.pem")}
        return _run("ldapsearch", "-LLL", "-o", "ldif-wrap=no", "-x", "-H", self.ldaps_uri, "-D", ROOT_DN, "-w",
                    ROOT_PASSWORD, "-s", scope, "-b", base, flt, *attrs, env=env).stdout

    def configure(self, rupost_schema_ldif: str) -> None:
        """Secure binds, memberOf, the schemas, FreeIPA's tree, ACIs, the service account."""
        self.ldapmodify("dn: cn=config\nchangetype: modify\nreplace: nsslapd-require-secure-binds\n"
                        "nsslapd-require-secure-binds: on\n")
        self.ldapmodify("dn: cn=MemberOf Plugin,cn=plugins,cn=config\nchangetype: modify\n"
                        "replace: nsslapd-pluginEnabled\nnsslapd-pluginEnabled: on\n")
        self.ldapmodify(FREEIPA_SCHEMA)
        self.ldapmodify(rupost_schema_ldif)
        self.stop()
        self.start()  # a plugin is enabled at start
        acis = [f'(targetattr="*")(version 3.0; acl "rupost service account reads"; allow (read, search, compare) '
                f'userdn="ldap:///{SERVICE_DN}";)',
                '(targetattr="*")(version 3.0; acl "users read themselves"; allow (read, search, compare) '
                'userdn="ldap:///self";)',
                f'(targetattr="mail || proxyAddresses || objectClass")(target="ldap:///{USERS_DN}")'
                f'(version 3.0; acl "rupost write-back"; allow (write) userdn="ldap:///{WRITEBACK_DN}";)']
        self.ldapmodify(f"dn: {SUFFIX}\nchangetype: modify\nadd: aci\n" + "".join(f"aci: {a}\n" for a in acis))
        entries = [ldif_entry(dn, {"objectClass": ["top", "nsContainer"], "cn": dn.split(",")[0][3:]})
                   for dn in (f"cn=accounts,{SUFFIX}", USERS_DN, GROUPS_DN, f"cn=etc,{SUFFIX}",
                              f"cn=sysaccounts,cn=etc,{SUFFIX}")]
        for dn, uid, password in ((SERVICE_DN, "rupost", SERVICE_PASSWORD),
                                  (WRITEBACK_DN, "rupost-wb", WRITEBACK_PASSWORD)):
            entries.append(ldif_entry(dn, {"objectClass": ["top", "account", "simpleSecurityObject"],
                                           "uid": uid, "userPassword": password}))
        self.ldapmodify("\n".join(entries), add=True)

    def add_user(self, login: str, mail: str | None, password: str, *, extra: tuple = (), locked: bool = False,
                 **attrs) -> tuple[str, str]:
        """(dn, ipaUniqueID) of a new FreeIPA-shaped user (without mail: no ruPostMailAccount either)."""
        dn, unique = f"uid={login},{USERS_DN}", str(uuid.uuid4())
        entry = {"objectClass": ["top", "person", "organizationalPerson", "inetOrgPerson", "inetUser", "ipaObject"],
                 "uid": login, "cn": f"{login.capitalize()} Ipa", "sn": "Ipa", "givenName": login.capitalize(),
                 "ipaUniqueID": unique, "userPassword": password, **attrs}
        if mail:
            entry["objectClass"].append("ruPostMailAccount")
            entry.update({"mail": mail, "proxyAddresses": [f"SMTP:{mail}"] + [f"smtp:{x}" for x in extra]})
        if locked:
            entry["nsAccountLock"] = "TRUE"
        self.ldapmodify(ldif_entry(dn, entry), add=True)
        return dn, unique

    def add_group(self, name: str, members: list[str]) -> str:
        dn = f"cn={name},{GROUPS_DN}"
        self.ldapmodify(ldif_entry(dn, {"objectClass": ["top", "groupOfNames"], "cn": name,
                                        "member": members}), add=True)
        return dn

    def entry(self, dn: str) -> dict[str, list[str]]:
        """The entry's user attributes as ldapsearch (Directory Manager) shows them."""
        out: dict[str, list[str]] = {}
        for line in self.ldapsearch(dn, "(objectClass=*)").splitlines():
            if ": " in line and not line.startswith("dn: "):
                name, value = line.split(": ", 1)
                out.setdefault(name.rstrip(":").lower(), []).append(value.lower())
        return {k: sorted(v) for k, v in out.items()}

    def replace(self, dn: str, **attrs) -> None:
        lines = [f"dn: {dn}", "changetype: modify"]
        for name, value in attrs.items():
            values = [] if value is None else (value if isinstance(value, list) else [value])
            lines += [f"replace: {name}", *(f"{name}: {v}" for v in values), "-"]
        self.ldapmodify("\n".join(lines) + "\n")
