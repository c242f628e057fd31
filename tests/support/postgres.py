"""A throwaway PostgreSQL cluster under a temporary directory, on a loopback port."""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import time
from pathlib import Path


def pg_bindir() -> Path:
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]))
    if not candidates:
        raise RuntimeError("PostgreSQL server binaries not found under /usr/lib/postgresql (apt-get install postgresql)")
    return Path(candidates[-1])


class TempPostgres:
    """initdb + pg_ctl as the postgres OS user (PostgreSQL refuses to run as root)."""

    def __init__(self, base: Path, port: int, superuser_password: str = "pgadmin",
                 listen: tuple[str, ...] = ("127.0.0.1",)):
        self.base = Path(base)
        self.data = self.base / "data"
        self.port = port
        self.password = superuser_password
        self.bin = pg_bindir()
        self.user = "postgres"
        self.listen = listen
        # the standard socket directory too, so the wizard's "local server" path
        # (peer authentication as the postgres OS user) works against this cluster
        shared = Path("/var/run/postgresql")
        self.socket_dirs = f"{shared},{self.base}" if shared.is_dir() else str(self.base)

    def psql(self, sql: str, dbname: str = "postgres") -> str:
        return self._run("psql", "-X", "-q", "-tA", "-v", "ON_ERROR_STOP=1", "-h", self.base, "-p", self.port,
                         "-d", dbname, "-c", sql).stdout

    def _run(self, *argv, check=True, **kw):
        pw = pwd.getpwnam(self.user)
        proc = subprocess.run([str(a) for a in argv], user=pw.pw_uid, group=pw.pw_gid,
                              capture_output=True, text=True, cwd="/", **kw)
        if check and proc.returncode != 0:
            raise RuntimeError(f"{Path(str(argv[0])).name} failed: {(proc.stderr or proc.stdout).strip()}")
        return proc

    def start(self) -> "TempPostgres":
        pw = pwd.getpwnam(self.user)
        self.base.mkdir(parents=True, exist_ok=True)
        os.chown(self.base, pw.pw_uid, pw.pw_gid)
        if not (self.data / "PG_VERSION").exists():
            pwfile = self.base / "pwfile"
            pwfile.write_text(self.password + "\n")
            os.chown(pwfile, pw.pw_uid, pw.pw_gid)
            self._run(self.bin / "initdb", "-D", self.data, "-U", "postgres", "--pwfile", pwfile,
                      "--auth-local=peer", "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8")
            pwfile.unlink()
            if self.listen != ("127.0.0.1",):  # other hosts (network namespaces) log in with passwords
                with open(self.data / "pg_hba.conf", "a") as fh:
                    fh.write("host all all 0.0.0.0/0 scram-sha-256\n")
            with open(self.data / "postgresql.conf", "a") as fh:
                fh.write(f"\nlisten_addresses = '{','.join(self.listen)}'\nport = {self.port}\n"
                         f"unix_socket_directories = '{self.socket_dirs}'\nfsync = off\n"
                         "synchronous_commit = off\nfull_page_writes = off\nmax_connections = 300\n")
        self._run(self.bin / "pg_ctl", "-D", self.data, "-l", self.base / "server.log", "-w", "-t", "60", "start")
        return self

    def stop(self, mode: str = "immediate") -> None:
        """`immediate` for teardown; `fast` for a server stopped and started again within a test
        (with synchronous_commit off, an immediate stop forgets the last commits)."""
        if (self.data / "postmaster.pid").exists():
            self._run(self.bin / "pg_ctl", "-D", self.data, "-m", mode, "-w", "stop", check=False)

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            r = self._run(self.bin / "pg_isready", "-h", "127.0.0.1", "-p", self.port, check=False)
            if r.returncode == 0:
                return
            time.sleep(0.2)
        raise RuntimeError("temporary PostgreSQL did not become ready")
