"""A real Samba Active Directory domain controller (Debian's samba / samba-ad-dc) in its own
network namespace, provisioned once per test session.

Why a namespace: an AD DC listens on fixed ports (LDAP 389, LDAPS 636, Kerberos 88; smb.conf
has no option to move LDAP), which a shared test machine cannot give one run. The DC runs in
namespace ``rpsmb<tag>``, reached from the host (where the RuPost node under test runs) over a
veth pair: host side ``<net>.1``, DC ``<net>.2`` (a /29 of 10.200-249.x.x picked per run).

What the directory holds (all loaded with ``ldbadd`` into sam.ldb before samba starts: one
process, seconds, instead of 1,500 ``samba-tool`` calls):

- ``OU=Service``: the read-only service account ``rupost-svc``;
- ``OU=Staff``: named users (``STAFF``): a disabled one (userAccountControl 514), some with several
  ``proxyAddresses`` (``SMTP:`` primary, ``smtp:`` extras, an ``X400:`` value that is no address);
- ``OU=Groups``: ``Mail Admins`` whose member is the group ``Tier2`` whose member is ``nadia``
  (nesting, for the in-chain rule ``1.2.840.113556.1.4.1941``);
- ``OU=Bulk``: ``BULK_USERS`` users ``bulkNNNN`` for paging beyond the DC's MaxPageSize (1,000).

Simple binds need TLS (``ldap server require strong auth = yes``); LDAPS and StartTLS use a
certificate from a throwaway CA (``ca_pem``) naming the DC's address and host name.

The provisioned tree is cached under CACHE_DIR keyed by the samba version and this module's
data (``provision_key``), so a rerun copies it (a second) instead of provisioning (~30 s).
"""
from __future__ import annotations

import hashlib
import os
import random
import shutil
import socket
import ssl
import subprocess
import tarfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import ldap3

from .processes import stop_group
from .slapd import _pem, issue_server_cert, ldif_entry, make_ca

REALM = "CORP.SAMBA.TEST"
NETBIOS_DOMAIN = "CORPSMB"
SUFFIX = "DC=corp,DC=samba,DC=test"
DC_HOST = "dc1"
ADMIN_PASSWORD = "Adm1n-Pass-2026"
SERVICE_PASSWORD = 'svc "Samba" #1'  # quotes, '#', blanks: every file that carries it must quote it
STAFF_DN = f"OU=Staff,{SUFFIX}"
BULK_DN = f"OU=Bulk,{SUFFIX}"
GROUPS_DN = f"OU=Groups,{SUFFIX}"
SERVICE_DN = f"CN=rupost-svc,OU=Service,{SUFFIX}"
WRITEBACK_DN = f"CN=rupost-wb,OU=Service,{SUFFIX}"  # may write mail and proxyAddresses of OU=Staff's users
WRITEBACK_PASSWORD = "Wb-Secret-2026"
STAFF_DOMAIN = "staff.samba.test"
BULK_DOMAIN = "bulk.samba.test"
# benchmarks/samba_ad.py's 10,000-user figures set RUPOST_SAMBA_BULK_USERS (with a cache
# directory of their own, RUPOST_TEST_CACHE, so the tests' cached tree stays)
BULK_USERS = int(os.environ.get("RUPOST_SAMBA_BULK_USERS", "1500"))
CACHE_DIR = Path(os.environ.get("RUPOST_TEST_CACHE", "/var/cache/rupost-tests"))


@dataclass(frozen=True)
class StaffUser:
    login: str
    password: str
    extra: tuple[str, ...] = ()
    disabled: bool = False
    department: str = "Mail"
    title: str = ""

    @property
    def mail(self) -> str:
        return f"{self.login}@{STAFF_DOMAIN}"

    @property
    def dn(self) -> str:
        return f"CN={self.login},{STAFF_DN}"


STAFF = {u.login: u for u in [
    StaffUser("alice", "Alice-Pass-1", extra=("alice.smith", "a.smith"), department="Sales", title="Engineer"),
    StaffUser("bob", "Bob-Pass-1", department="Sales"),
    StaffUser("carol", "Carol-Pass-1", department="Support"),
    StaffUser("dave", "Dave-Pass-1", disabled=True),
    StaffUser("nadia", "Nadia-Pass-1", department="Board"),
    StaffUser("oleg", "Oleg-Pass-1", department="Board"),
    StaffUser("petr", "Petr-Pass-1", department="Ops"),
    StaffUser("renat", "Renat-Pass-1", department="Ops"),
]}
# users without mail: what write-back provisions (login, givenName, sn)
NO_MAIL = [("wendy", "Wendy", "Writer"), ("walter", "Walter", "Writer")]
# Mail Admins <- Tier2 <- nadia (nested); Mail Admins <- oleg (direct)
GROUPS = {"Tier2": ["nadia"], "Mail Admins": ["oleg", "group:Tier2"]}


def group_dn(name: str) -> str:
    return f"CN={name},{GROUPS_DN}"


def _unicode_pwd(password: str) -> bytes:
    return f'"{password}"'.encode("utf-16-le")


def samba_version() -> str:
    return subprocess.run(["samba", "--version"], capture_output=True, text=True, check=True).stdout.strip()


def directory_ldif() -> str:
    """Everything the directory holds beyond a fresh provision."""
    entries = [ldif_entry(dn, {"objectClass": "organizationalUnit"})
               for dn in (f"OU=Service,{SUFFIX}", STAFF_DN, BULK_DN, GROUPS_DN)]
    entries.append(ldif_entry(SERVICE_DN, {
        "objectClass": "user", "sAMAccountName": "rupost-svc", "unicodePwd": _unicode_pwd(SERVICE_PASSWORD),
        "userAccountControl": "66048"}))  # normal account, password never expires
    for u in STAFF.values():
        proxies = [f"SMTP:{u.mail}"] + [f"smtp:{x}@{STAFF_DOMAIN}" for x in u.extra] + [f"X400:c=RU;o={u.login}"]
        attrs = {"objectClass": "user", "sAMAccountName": u.login, "givenName": u.login.capitalize(),
                 "sn": "Samba", "displayName": f"{u.login.capitalize()} Samba", "mail": u.mail,
                 "proxyAddresses": proxies, "department": u.department,
                 "unicodePwd": _unicode_pwd(u.password),
                 "userAccountControl": str(66048 | (2 if u.disabled else 0))}
        if u.title:
            attrs["title"] = u.title
        entries.append(ldif_entry(u.dn, attrs))
    entries.append(ldif_entry(WRITEBACK_DN, {
        "objectClass": "user", "sAMAccountName": "rupost-wb", "unicodePwd": _unicode_pwd(WRITEBACK_PASSWORD),
        "userAccountControl": "66048"}))
    for login, given, sn in NO_MAIL:
        entries.append(ldif_entry(f"CN={login},{STAFF_DN}", {
            "objectClass": "user", "sAMAccountName": login, "givenName": given, "sn": sn, "department": "Ops",
            "unicodePwd": _unicode_pwd(f"{given}-Pass-1"), "userAccountControl": "66048"}))
    for i in range(BULK_USERS):
        login = f"bulk{i:04d}"
        entries.append(ldif_entry(f"CN={login},{BULK_DN}", {
            "objectClass": "user", "sAMAccountName": login, "sn": f"Bulk {i}", "mail": f"{login}@{BULK_DOMAIN}",
            "userAccountControl": "66080"}))  # enabled, no password (PASSWD_NOTREQD): mailboxes, no logins
    for name, members in GROUPS.items():  # a group before the groups that hold it (dict order)
        dns = [group_dn(m[6:]) if m.startswith("group:") else STAFF[m].dn for m in members]
        entries.append(ldif_entry(group_dn(name), {"objectClass": "group", "sAMAccountName": name.replace(" ", ""),
                                                   "member": dns}))
    return "\n".join(entries)


def provision_key() -> str:
    data = samba_version() + REALM + ADMIN_PASSWORD + directory_ldif() + WRITEBACK_SDDL
    return hashlib.sha256(data.encode()).hexdigest()[:16]


# write property (WP) on mail and on proxyAddresses, inherited (CI) by user objects only
# (schemaIDGUIDs of mail, proxyAddresses, user): all the write-back account may write
WRITEBACK_SDDL = ("(OA;CI;WP;bf967961-0de6-11d0-a285-00aa003049e2;bf967aba-0de6-11d0-a285-00aa003049e2;{sid})"
                  "(OA;CI;WP;bf967a06-0de6-11d0-a285-00aa003049e2;bf967aba-0de6-11d0-a285-00aa003049e2;{sid})")


def _run(*argv: str, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(list(argv), capture_output=True, text=True, **kw)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:4])} failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return proc


@dataclass
class SambaDC:
    base: Path
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:6])

    def __post_init__(self) -> None:
        self.base = Path(self.base)
        self.netns = f"rpsmb{self.tag}"
        self.host_if = f"rpsmh{self.tag}"
        rnd = random.Random(self.tag)
        self.net = f"10.{rnd.randint(200, 249)}.{rnd.randint(0, 255)}"
        self.octet = rnd.randrange(0, 256, 8)  # a /29 inside that /24
        self.host_ip = f"{self.net}.{self.octet + 1}"
        self.ip = f"{self.net}.{self.octet + 2}"
        self.fqdn = f"{DC_HOST}.{REALM.lower()}"
        self.proc: subprocess.Popen | None = None
        self.ca_pem = ""
        self.other_ca_pem = _pem(make_ca("Some Other CA")[0])

    # -------------------------------------------------------------- addresses
    @property
    def ldaps_uri(self) -> str:
        return f"ldaps://{self.ip}"

    @property
    def ldap_uri(self) -> str:
        return f"ldap://{self.ip}"

    @property
    def conf(self) -> Path:
        return self.base / "etc" / "smb.conf"

    @property
    def sam_ldb(self) -> Path:
        return self.base / "private" / "sam.ldb"

    # -------------------------------------------------------------- provisioning
    def _provision(self) -> None:
        """samba-tool domain provision into self.base, then the test directory by ldbadd."""
        argv = ["samba-tool", "domain", "provision", f"--targetdir={self.base}", f"--realm={REALM}",
                f"--domain={NETBIOS_DOMAIN}", "--server-role=dc", "--dns-backend=NONE", "--use-rfc2307",
                f"--adminpass={ADMIN_PASSWORD}", f"--host-name={DC_HOST}", "--option=netbios name = DC1",
                f"--option=log file = {self.base}/log.%m"]
        try:
            _run(*argv)
        except RuntimeError:
            # seen once on the loaded machine: "Unable to load file .../etc/smb.conf" from the
            # sysvol ACL step, cause unknown; a second provision from scratch then succeeded
            shutil.rmtree(self.base, ignore_errors=True)
            _run(*argv)
        ldif = self.base / "directory.ldif"
        ldif.write_text(directory_ldif())
        _run("ldbadd", "-H", str(self.sam_ldb), str(ldif))
        ldif.unlink()
        sid = _run("ldbsearch", "-H", str(self.sam_ldb), "-b", WRITEBACK_DN, "-s", "base", "objectSid").stdout
        sid = next(line.split(": ", 1)[1] for line in sid.splitlines() if line.startswith("objectSid: "))
        _run("samba-tool", "dsacl", "set", "-H", str(self.sam_ldb), f"--objectdn={STAFF_DN}",
             f"--sddl={WRITEBACK_SDDL.format(sid=sid)}")

    def _install_tree(self) -> None:
        """A cached provisioned tree when there is one for this samba and this data, else provision
        and cache. The tree's paths are absolute in smb.conf only: rewritten for this copy."""
        archive = CACHE_DIR / f"samba-ad-{provision_key()}.tar"
        if archive.exists():
            self.base.mkdir(parents=True)
            with tarfile.open(archive) as tar:
                tar.extractall(self.base, filter="tar")
            old = (self.base / "provisioned-at").read_text().strip()
            self.conf.write_text(self.conf.read_text().replace(old, str(self.base)))
            return
        self._provision()
        (self.base / "provisioned-at").write_text(str(self.base))
        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        partial = archive.with_suffix(f".{self.tag}.part")
        with tarfile.open(partial, "w") as tar:
            for item in self.base.iterdir():
                tar.add(item, arcname=item.name)
        partial.rename(archive)  # atomic: a parallel run never reads half an archive
        for stale in CACHE_DIR.glob("samba-ad-*.tar"):
            if stale != archive:  # another samba version's or older data's: ~50 MB each
                stale.unlink(missing_ok=True)

    def _configure(self) -> None:
        ca_cert, ca_key = make_ca("RuPost Test Samba CA")
        cert, key = issue_server_cert(ca_cert, ca_key, hosts=(self.fqdn, self.ip))
        self.ca_pem = _pem(ca_cert)
        tls = self.base / "tls"
        tls.mkdir(exist_ok=True)
        (tls / "ca.pem").write_text(self.ca_pem)
        (tls / "cert.pem").write_text(_pem(cert))
        (tls / "key.pem").write_text(_pem(key))
        os.chmod(tls / "key.pem", 0o600)  # samba refuses a key others can read
        run_dir = self.base / "run"
        run_dir.mkdir(exist_ok=True)
        extra = {
            "server services": "ldap, kdc",  # what RuPost uses: fewer processes on a loaded machine
            "ldap server require strong auth": "yes",  # AD's default: simple binds only over TLS
            "tls enabled": "yes", "tls keyfile": tls / "key.pem", "tls certfile": tls / "cert.pem",
            "tls cafile": tls / "ca.pem", "pid directory": run_dir, "ncalrpc dir": run_dir / "ncalrpc",
            "winbindd socket directory": run_dir / "winbindd", "interfaces": f"lo {self.ip}/29",
            "bind interfaces only": "yes", "dns proxy": "no",
        }
        text = self.conf.read_text()
        lines = "".join(f"\t{k} = {v}\n" for k, v in extra.items())
        self.conf.write_text(text.replace("[global]\n", "[global]\n" + lines, 1))

    # -------------------------------------------------------------- network
    def _network_up(self) -> None:
        _run("ip", "netns", "add", self.netns)
        _run("ip", "link", "add", self.host_if, "type", "veth", "peer", "name", "eth0", "netns", self.netns)
        _run("ip", "addr", "add", f"{self.host_ip}/29", "dev", self.host_if)
        _run("ip", "link", "set", self.host_if, "up")
        _run("ip", "-n", self.netns, "addr", "add", f"{self.ip}/29", "dev", "eth0")
        _run("ip", "-n", self.netns, "link", "set", "eth0", "up")
        _run("ip", "-n", self.netns, "link", "set", "lo", "up")

    def _network_down(self) -> None:
        subprocess.run(["ip", "netns", "del", self.netns], capture_output=True)
        subprocess.run(["ip", "link", "del", self.host_if], capture_output=True)

    # -------------------------------------------------------------- lifecycle
    def setup(self) -> SambaDC:
        self._install_tree()
        self._configure()
        self._network_up()
        return self.start()

    def start(self, timeout: float = 120) -> SambaDC:
        log = open(self.base / "samba.log", "ab")
        # -i: foreground, log to stdout; single process model: one process, not a dozen
        self.proc = subprocess.Popen(["ip", "netns", "exec", self.netns, "samba", "-i", "-M", "single",
                                      "-s", str(self.conf)], stdout=log, stderr=log, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"samba exited: {(self.base / 'samba.log').read_text()[-3000:]}")
            try:
                self.admin().unbind()
                return self
            except (OSError, ldap3.core.exceptions.LDAPException):
                time.sleep(0.5)
        raise RuntimeError(f"samba did not answer LDAPS in {timeout} s: "
                           f"{(self.base / 'samba.log').read_text()[-3000:]}")

    def stop(self) -> None:
        stop_group(self.proc, wait=20)
        self.proc = None

    def destroy(self) -> None:
        self.stop()
        self._network_down()
        if not os.environ.get("RUPOST_KEEP_TEST_ROOT"):
            shutil.rmtree(self.base, ignore_errors=True)

    def listening(self, port: int = 636) -> bool:
        try:
            socket.create_connection((self.ip, port), timeout=2).close()
            return True
        except OSError:
            return False

    # -------------------------------------------------------------- administration (as a user would)
    def admin(self) -> ldap3.Connection:
        """Administrator over LDAPS, the DC's CA verified."""
        tls = ldap3.Tls(validate=ssl.CERT_REQUIRED, ca_certs_data=self.ca_pem, version=ssl.PROTOCOL_TLS_CLIENT)
        server = ldap3.Server(self.ip, port=636, use_ssl=True, tls=tls, connect_timeout=5)
        return ldap3.Connection(server, f"CN=Administrator,CN=Users,{SUFFIX}", ADMIN_PASSWORD, auto_bind=True,
                                receive_timeout=30, raise_exceptions=True)

    def modify(self, dn: str, **attrs) -> None:
        """Replace attributes (None or [] deletes them)."""
        changes = {k: [(ldap3.MODIFY_REPLACE, [] if v is None else (v if isinstance(v, list) else [v]))]
                   for k, v in attrs.items()}
        conn = self.admin()
        try:
            conn.modify(dn, changes)
        finally:
            conn.unbind()

    def set_disabled(self, dn: str, disabled: bool) -> None:
        self.modify(dn, userAccountControl=str(66048 | (2 if disabled else 0)))

    def add_user(self, login: str, mail: str, password: str, ou: str = STAFF_DN, **attrs) -> str:
        dn = f"CN={login},{ou}"
        conn = self.admin()
        try:
            conn.add(dn, "user", {"sAMAccountName": login, "mail": mail, "proxyAddresses": [f"SMTP:{mail}"],
                                  "unicodePwd": _unicode_pwd(password), "userAccountControl": "66048",
                                  "givenName": login.capitalize(), "sn": "Samba", **attrs})
        finally:
            conn.unbind()
        return dn

    def rename(self, dn: str, new_cn: str) -> str:
        conn = self.admin()
        try:
            conn.modify_dn(dn, f"CN={new_cn}")
        finally:
            conn.unbind()
        return f"CN={new_cn},{dn.split(',', 1)[1]}"

    def delete(self, dn: str) -> None:
        conn = self.admin()
        try:
            conn.delete(dn)
        finally:
            conn.unbind()

    def ldbsearch(self, base: str, flt: str, *attrs: str) -> str:
        """The entry as the DC's own tool shows it, read from sam.ldb (no LDAP in between)."""
        return _run("ldbsearch", "-H", str(self.sam_ldb), "-b", base, "-s", "base", flt, *attrs).stdout

    def entry(self, dn: str) -> dict[str, list[str]]:
        """The entry's attributes as ldbsearch shows them: {name: sorted values}."""
        out: dict[str, list[str]] = {}
        for line in self.ldbsearch(dn, "(objectClass=*)").splitlines():
            if ": " in line and not line.startswith((" ", "#", "dn: ")):
                name, value = line.split(": ", 1)
                out.setdefault(name.rstrip(":"), []).append(value)
        return {k: sorted(v) for k, v in out.items()}

    def guid(self, dn: str) -> str:
        raw = self.ldbsearch(dn, "(objectClass=*)", "objectGUID")
        for line in raw.splitlines():
            if line.startswith("objectGUID: "):
                return line.split(": ", 1)[1].strip().lower()
        raise LookupError(f"no objectGUID for {dn}")


