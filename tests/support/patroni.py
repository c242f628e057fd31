"""A highly available PostgreSQL for the tests: three Patroni members (Debian's PostgreSQL,
each its own data directory) with one etcd each forming a three-member etcd cluster, every
member in its own network namespace on a private bridge, synchronous_mode on.

RuPost nodes join the same bridge (support.cluster.Cluster(database=...)), so a member's
death is a host's death as the nodes see it. Names (namespaces, bridge, subnet, scope)
carry a random tag so two runs never clash; everything is torn down by stop().
"""
from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

from .cluster import run
from .postgres import pg_bindir
from .processes import stop_group

SUPERUSER_PASSWORD = "patroni-super"
REPLICATION_PASSWORD = "patroni-repl"
API_PORT = 8008
PG_PORT = 5432


@dataclass
class Member:
    name: str
    netns: str
    address: str
    base: Path
    etcd: subprocess.Popen | None = None
    patroni: subprocess.Popen | None = None

    @property
    def data_dir(self) -> Path:
        return self.base / "data"

    def api(self, path: str, timeout: float = 2) -> tuple[int, dict]:
        """Patroni's REST API on this member: (status, body); (0, {}) when it does not answer."""
        try:
            with urllib.request.urlopen(f"http://{self.address}:{API_PORT}{path}", timeout=timeout) as resp:
                return resp.status, json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as exc:
            try:
                return exc.code, json.loads(exc.read() or b"{}")
            except ValueError:
                return exc.code, {}
        except (OSError, ValueError):
            return 0, {}

    def postmaster_pid(self) -> int | None:
        try:
            return int((self.data_dir / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None


class PatroniCluster:
    def __init__(self, size: int = 3):
        self.tag = uuid.uuid4().hex[:5]
        self.scope = f"rupost{self.tag}"
        self.base = Path(tempfile.mkdtemp(prefix="rpha", dir="/tmp"))
        os.chmod(self.base, 0o755)
        self.subnet = f"10.{100 + int(self.tag, 16) % 100}.{150 + int(self.tag[:2], 16) % 100}"
        self.bridge = f"rphb{self.tag}"
        self.gateway = f"{self.subnet}.254"
        self.members = [Member(f"pg{i}", f"rphn{self.tag}{i}", f"{self.subnet}.{10 + i}", self.base / f"pg{i}")
                        for i in range(1, size + 1)]
        self._veths: list[str] = []

    # ------------------------------------------------------------ network
    def attach(self, netns: str, address: str) -> None:
        """A namespace (a RuPost node) joins the bridge at `address` (its eth0 created here)."""
        veth = f"rphv{self.tag}{len(self._veths)}"
        run("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", netns)
        run("ip", "link", "set", veth, "master", self.bridge)
        run("ip", "link", "set", veth, "up")
        run("ip", "-n", netns, "addr", "add", f"{address}/24", "dev", "eth0")
        run("ip", "-n", netns, "link", "set", "eth0", "up")
        run("ip", "-n", netns, "link", "set", "lo", "up")
        self._veths.append(veth)

    def _network_up(self) -> None:
        run("ip", "link", "add", self.bridge, "type", "bridge")
        run("ip", "addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        run("ip", "link", "set", self.bridge, "up")
        for m in self.members:
            run("ip", "netns", "add", m.netns)
            self.attach(m.netns, m.address)

    def _network_down(self) -> None:
        for m in self.members:
            run("ip", "netns", "del", m.netns, check=False)
        for veth in self._veths:
            run("ip", "link", "del", veth, check=False)
        run("ip", "link", "del", self.bridge, check=False)

    # ------------------------------------------------------------ configuration
    def _etcd_argv(self, m: Member, state: str = "new") -> list[str]:
        peers = ",".join(f"{x.name}=http://{x.address}:2380" for x in self.members)
        # a loaded test machine: a heartbeat missed under load must not start an election
        return ["etcd", "--name", m.name, "--data-dir", str(m.base / "etcd"),
                "--listen-client-urls", f"http://{m.address}:2379,http://127.0.0.1:2379",
                "--advertise-client-urls", f"http://{m.address}:2379",
                "--listen-peer-urls", f"http://{m.address}:2380",
                "--initial-advertise-peer-urls", f"http://{m.address}:2380",
                "--initial-cluster", peers, "--initial-cluster-token", self.scope,
                "--initial-cluster-state", state, "--heartbeat-interval", "200", "--election-timeout", "2000",
                "--log-level", "warn"]

    def patroni_config(self, m: Member) -> dict:
        return {
            "scope": self.scope, "name": m.name, "namespace": "/rupost/",
            "log": {"level": "INFO"},
            "restapi": {"listen": f"{m.address}:{API_PORT}", "connect_address": f"{m.address}:{API_PORT}"},
            "etcd3": {"hosts": [f"{x.address}:2379" for x in self.members]},
            "bootstrap": {
                "dcs": {"ttl": 10, "loop_wait": 1, "retry_timeout": 4, "maximum_lag_on_failover": 16 * 1024 * 1024,
                        "synchronous_mode": True,
                        "postgresql": {"use_pg_rewind": True, "use_slots": True,
                                       "parameters": {"wal_log_hints": "on", "max_connections": 300,
                                                      "wal_keep_size": "128MB"}}},
                "initdb": [{"encoding": "UTF8"}, {"locale": "C.UTF-8"}, {"auth-local": "peer"},
                           {"auth-host": "scram-sha-256"}],
            },
            "postgresql": {
                "listen": f"{m.address},127.0.0.1:{PG_PORT}", "connect_address": f"{m.address}:{PG_PORT}",
                "data_dir": str(m.data_dir), "bin_dir": str(pg_bindir()), "pgpass": str(m.base / "pgpass"),
                "authentication": {"superuser": {"username": "postgres", "password": SUPERUSER_PASSWORD},
                                   "replication": {"username": "replicator", "password": REPLICATION_PASSWORD},
                                   "rewind": {"username": "postgres", "password": SUPERUSER_PASSWORD}},
                "pg_hba": ["local all all peer", "host replication replicator 0.0.0.0/0 scram-sha-256",
                           "host all all 0.0.0.0/0 scram-sha-256", "host all all 127.0.0.1/32 scram-sha-256"],
                # fsync only matters to a machine that loses power; the tests kill processes
                "parameters": {"unix_socket_directories": str(m.base), "fsync": "off"},
            },
        }

    # ------------------------------------------------------------ lifecycle
    def start(self, timeout: float = 180) -> "PatroniCluster":
        pw = pwd.getpwnam("postgres")
        try:
            self._network_up()
            for m in self.members:
                m.base.mkdir(parents=True)
                os.chown(m.base, pw.pw_uid, pw.pw_gid)
                os.chmod(m.base, 0o700)
                m.etcd = self._spawn(m, self._etcd_argv(m), "etcd.log", as_postgres=False)
            for m in self.members:
                config = m.base / "patroni.yml"
                config.write_text(json.dumps(self.patroni_config(m), indent=1))  # JSON is YAML
                os.chown(config, pw.pw_uid, pw.pw_gid)
                self.start_patroni(m)
            self.wait_healthy(timeout)
            return self
        except BaseException:
            self.stop()
            raise

    def _spawn(self, m: Member, argv: list[str], log: str, as_postgres: bool) -> subprocess.Popen:
        prefix = ["ip", "netns", "exec", m.netns]
        if as_postgres:
            prefix += ["setpriv", "--reuid", "postgres", "--regid", "postgres", "--init-groups"]
        out = open(m.base / log, "ab")
        return subprocess.Popen(prefix + argv, stdout=out, stderr=subprocess.STDOUT, cwd=m.base,
                                start_new_session=True)

    def start_patroni(self, m: Member) -> None:
        m.patroni = self._spawn(m, ["patroni", str(m.base / "patroni.yml")], "patroni.log", as_postgres=True)

    def wait_healthy(self, timeout: float = 120) -> None:
        """A leader and every other member streaming, one of them synchronous."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            roles = [m.api("/patroni")[1] for m in self.members]
            states = [r.get("state") for r in roles]
            if states.count("running") == len(self.members) and self.leader() and self.sync_standby():
                return
            time.sleep(0.5)
        raise RuntimeError(f"the Patroni cluster did not become healthy: {self.describe()}")

    def describe(self) -> str:
        return "; ".join(f"{m.name}: {m.api('/patroni')[1].get('role')}/{m.api('/patroni')[1].get('state')}"
                         for m in self.members)

    def cluster_state(self) -> dict:
        for m in self.members:
            status, body = m.api("/cluster")
            if status == 200:
                return body
        return {}

    def leader(self) -> Member | None:
        for item in self.cluster_state().get("members", []):
            if item.get("role") == "leader" and item.get("state") == "running":
                return self.member(item["name"])
        return None

    def sync_standby(self) -> Member | None:
        for item in self.cluster_state().get("members", []):
            if item.get("role") == "sync_standby" and item.get("state") in ("running", "streaming"):
                return self.member(item["name"])
        return None

    def member(self, name: str) -> Member:
        return next(m for m in self.members if m.name == name)

    def psql(self, sql: str, dbname: str = "postgres", member: Member | None = None) -> str:
        m = member or self.leader()
        if m is None:
            raise RuntimeError("no leader")
        return run("psql", "-X", "-q", "-tA", "-v", "ON_ERROR_STOP=1", "-h", m.address, "-p", PG_PORT,
                    "-U", "postgres", "-d", dbname, "-c", sql,
                    env={**os.environ, "PGPASSWORD": SUPERUSER_PASSWORD}).stdout

    def patronictl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        m = self.members[0]
        return run("patronictl", "-c", m.base / "patroni.yml", *args, check=check, timeout=120)

    def kill_postgres(self, m: Member) -> int:
        """SIGKILL to the member's postmaster (its backends die with it)."""
        pid = m.postmaster_pid()
        if pid is None:
            raise RuntimeError(f"{m.name}: no postmaster running")
        os.kill(pid, signal.SIGKILL)
        return pid

    def kill_member(self, m: Member) -> None:
        """The member's host dies: every process in its namespace (etcd, Patroni, PostgreSQL)
        SIGKILLed at once, nothing shut down cleanly."""
        pids = run("ip", "netns", "pids", m.netns, check=False).stdout.split()
        for pid in pids:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
        for proc in (m.patroni, m.etcd):
            if proc is not None:
                proc.wait(30)
        m.patroni = m.etcd = None

    def revive_member(self, m: Member) -> None:
        """A killed member's host back: its etcd rejoins, its Patroni rejoins as a replica
        (pg_rewind if its timeline diverged)."""
        m.etcd = self._spawn(m, self._etcd_argv(m, "existing"), "etcd.log", as_postgres=False)
        self.start_patroni(m)

    def stop_member(self, m: Member) -> None:
        """The member's Patroni and PostgreSQL stopped (a replica going away)."""
        stop_group(m.patroni, wait=60)
        pid = m.postmaster_pid()
        if pid is not None:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        m.patroni = None

    def stop(self) -> None:
        for m in self.members:
            self.stop_member(m)
            if m.etcd is not None and m.etcd.poll() is None:
                os.killpg(m.etcd.pid, signal.SIGKILL)
                m.etcd.wait(10)
        self._network_down()
        shutil.rmtree(self.base, ignore_errors=True)
