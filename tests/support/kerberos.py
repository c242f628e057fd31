"""Kerberos clients of the Samba AD DC (tests/support/samba_ad.py) as a user's machine has
them: a krb5.conf naming the DC's KDC, `kinit` into a private credential cache, and the mail
host's name resolving to this machine for the client alone.

The mail service account ``rupost-mail`` carries the service principals ``imap/HOST`` and
``smtp/HOST``, AES keys only (msDS-SupportedEncryptionTypes 24), and its keytab is exported
as an AD administrator would on a Samba DC (``samba-tool domain exportkeytab``).
"""
from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import ldap3

from . import samba_ad as sa

MAIL_SERVICE = "rupost-mail"
MAIL_SERVICE_DN = f"CN={MAIL_SERVICE},OU=Service,{sa.SUFFIX}"


def add_mail_service(dc: sa.SambaDC, host: str, password: str) -> str:
    """The mail service account with imap/HOST and smtp/HOST (replaced if it exists)."""
    conn = dc.admin()
    try:
        try:
            conn.delete(MAIL_SERVICE_DN)
        except ldap3.core.exceptions.LDAPNoSuchObjectResult:
            pass
        ok = conn.add(MAIL_SERVICE_DN, "user", {
            "sAMAccountName": MAIL_SERVICE, "unicodePwd": sa._unicode_pwd(password), "userAccountControl": "66048",
            "servicePrincipalName": [f"imap/{host}", f"smtp/{host}"], "msDS-SupportedEncryptionTypes": "24"})
        assert ok, conn.result
    finally:
        conn.unbind()
    return MAIL_SERVICE_DN


def set_password(dc: sa.SambaDC, dn: str, password: str) -> None:
    """A new password: the account's keys get a new version (kvno) on the DC."""
    conn = dc.admin()
    try:
        assert conn.modify(dn, {"unicodePwd": [(ldap3.MODIFY_REPLACE, [sa._unicode_pwd(password)])]}), conn.result
    finally:
        conn.unbind()


def export_keytab(dc: sa.SambaDC, path: Path, principals: list[str]) -> Path:
    path.unlink(missing_ok=True)
    for principal in principals:
        sa._run("samba-tool", "domain", "exportkeytab", str(path), f"--principal={principal}", "-s", str(dc.conf))
    return path


@dataclass
class Client:
    """One user's Kerberos environment: configuration, credential cache, /etc/hosts."""

    dc: sa.SambaDC
    base: Path
    host: str

    def __post_init__(self) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        self.conf = self.base / "krb5.conf"
        domain = self.host.split(".", 1)[1]
        self.conf.write_text("\n".join([
            "[libdefaults]", f" default_realm = {sa.REALM}", " dns_lookup_kdc = false", " dns_lookup_realm = false",
            " rdns = false", " dns_canonicalize_hostname = false", "[realms]", f" {sa.REALM} = {{",
            f"  kdc = {self.dc.ip}", " }", "[domain_realm]", f" {self.host} = {sa.REALM}", f" .{domain} = {sa.REALM}",
            ""]))
        self.hosts = self.base / "hosts"
        self.hosts.write_text(f"127.0.0.1 localhost {self.host}\n")

    def env(self, user: str) -> dict[str, str]:
        return {**os.environ, "KRB5_CONFIG": str(self.conf), "KRB5CCNAME": f"FILE:{self.base / ('cc-' + user)}",
                "HOME": str(self.base), "TERM": "xterm"}

    def kinit(self, user: str, password: str, lifetime: str = "") -> None:
        argv = ["kinit"] + (["-l", lifetime] if lifetime else []) + [f"{user}@{sa.REALM}"]
        r = subprocess.run(argv, input=password + "\n", capture_output=True, text=True, env=self.env(user),
                           timeout=30)
        assert r.returncode == 0, r.stderr

    def run(self, user: str, argv: list[str], **kw) -> subprocess.CompletedProcess:
        """argv with the mail host resolving to 127.0.0.1 in a mount namespace of its own
        (this machine's /etc/hosts is not touched: other test runs share it)."""
        wrapped = ["unshare", "--mount", "--", "sh", "-c", 'mount --bind "$0" /etc/hosts && exec "$@"',
                   str(self.hosts), *argv]
        return subprocess.run(wrapped, capture_output=True, text=True, env=self.env(user), timeout=90, **kw)
