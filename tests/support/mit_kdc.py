"""A private MIT Kerberos KDC on a loopback port (krb5-kdc), for tests that need a KDC to
check a keytab against but not a whole Active Directory (tests/support/samba_ad.py is that).

Its realm database, stash, configuration and log live under one temporary directory; the KDC
runs in the foreground of its own process group (``krb5kdc -n``) and is killed by its pid.
``service_keytab`` exports the keys of service principals as an AD administrator's keytab
would hold them (``kadmin.local ktadd``)."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from support.instance import free_ports

MASTER_PASSWORD = "kdc-master-Passw0rd"


class MitKdc:
    def __init__(self, root: Path, realm: str) -> None:
        self.root, self.realm = root, realm
        self.port = free_ports(1)[0]
        self.proc: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "KRB5_CONFIG": str(self.root / "krb5.conf"),
                "KRB5_KDC_PROFILE": str(self.root / "kdc.conf")}

    def _write_configuration(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "kdc.conf").write_text("\n".join([
            "[kdcdefaults]", f" kdc_ports = {self.port}", f" kdc_tcp_ports = {self.port}",
            "[realms]", f" {self.realm} = {{", f"  database_name = {self.root / 'principal'}",
            f"  key_stash_file = {self.root / 'stash'}", f"  acl_file = {self.root / 'kadm5.acl'}",
            f"  kdc_ports = {self.port}", f"  kdc_tcp_ports = {self.port}", "  max_life = 1h", " }",
            "[logging]", f" kdc = FILE:{self.root / 'kdc.log'}", ""]))
        (self.root / "kadm5.acl").write_text("")
        (self.root / "krb5.conf").write_text("\n".join([
            "[libdefaults]", f" default_realm = {self.realm}", " dns_lookup_kdc = false",
            "[realms]", f" {self.realm} = {{", f"  kdc = {self.address}", " }", ""]))

    def start(self) -> MitKdc:
        self._write_configuration()
        self._run("kdb5_util", "-r", self.realm, "create", "-s", "-P", MASTER_PASSWORD)
        self.proc = subprocess.Popen(["krb5kdc", "-n", "-r", self.realm], env=self.env, start_new_session=True,
                                     stdout=subprocess.DEVNULL, stderr=open(self.root / "krb5kdc.err", "w"))
        for _ in range(300):  # bounded: 30 s on a loaded machine
            if self.proc.poll() is not None:
                raise RuntimeError("krb5kdc exited: " + (self.root / "krb5kdc.err").read_text()[-2000:])
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"krb5kdc does not listen on {self.address}")

    def service_keytab(self, path: Path, principals: list[str]) -> bytes:
        """Random keys for the principals (NAME@REALM is added), exported to ``path``."""
        for principal in principals:
            self._run("kadmin.local", "-r", self.realm, "-q", f"addprinc -randkey {principal}")
        self._run("kadmin.local", "-r", self.realm, "-q", f"ktadd -k {path} {' '.join(principals)}")
        return path.read_bytes()

    def _run(self, *argv: str) -> None:
        r = subprocess.run(list(argv), env=self.env, capture_output=True, text=True, timeout=60,
                           stdin=subprocess.DEVNULL)
        if r.returncode != 0 or "error" in r.stderr.lower():
            raise RuntimeError(f"{' '.join(argv)}: {r.stderr.strip()[-2000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=30)
        shutil.rmtree(self.root, ignore_errors=True)
