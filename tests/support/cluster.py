"""Several RuPost nodes on one machine: each in its own network namespace (veth pairs on
a private bridge), one shared PostgreSQL in the root namespace (or, with `ha`, a Patroni
cluster whose members sit on the same bridge: support.patroni), and a directory shared
by all nodes standing in for NFS (mail storage, per-node queue directories).

Each node's commands run inside its namespace (`ip netns exec`), so its daemons bind
the standard ports on its own address, exactly as on separate hosts.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from rupost.config import DEFAULT_PORTS, DatabaseMember, DatabaseSettings, NodeConfig
from rupost.paths import Layout

from .instance import free_ports
from .postgres import TempPostgres

if TYPE_CHECKING:
    from .patroni import PatroniCluster


def run(*argv, check=True, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(a) for a in argv], capture_output=True, text=True, **kw)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, argv))}: {(proc.stderr or proc.stdout).strip()}")
    return proc


@dataclass
class ClusterNode:
    name: str
    netns: str
    address: str
    root: Path
    database: DatabaseSettings
    mail_storage: Path
    queue_directory: Path
    agent: subprocess.Popen | None = None
    _app: object = field(default=None, repr=False)

    @property
    def layout(self) -> Layout:
        return Layout.at(self.root).with_storage(str(self.mail_storage), str(self.queue_directory))

    def config(self) -> NodeConfig:
        return NodeConfig(database=self.database, node_name=self.name, fqdn=f"{self.name}.cluster.test",
                          address=self.address, listen_address=self.address, ports=dict(DEFAULT_PORTS),
                          service_backend="direct", mail_storage=str(self.mail_storage),
                          queue_directory=str(self.queue_directory))

    def rupost(self, *args, check=True, timeout=300) -> subprocess.CompletedProcess:
        """The rupost CLI run inside this node's network namespace."""
        return run("ip", "netns", "exec", self.netns, sys.executable, "-m", "rupost.cli", "--root", self.root,
                   *args, check=check, timeout=timeout, env={**os.environ, "PYTHONUNBUFFERED": "1"})

    @property
    def app(self):
        """The service layer for reading state from the test process (root namespace)."""
        if self._app is None:
            from rupost.services import RuPost

            self._app = RuPost.open(self.root, actor="cluster-test")
        return self._app

    def start_agent(self, interval: float = 1.0, hold_down: float = 5.0) -> None:
        log = open(self.layout.logs / "agent.log", "ab")
        self.agent = subprocess.Popen(
            ["ip", "netns", "exec", self.netns, sys.executable, "-m", "rupost.cli", "--root", str(self.root), "run",
             "--interval", str(interval), "--hold-down", str(hold_down)],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def stop_agent(self) -> None:
        if self.agent and self.agent.poll() is None:
            os.killpg(self.agent.pid, signal.SIGTERM)
            try:
                self.agent.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.agent.pid, signal.SIGKILL)
        self.agent = None


class Cluster:
    def __init__(self, size: int = 2, parameters: dict | None = None, ha: PatroniCluster | None = None):
        self.tag = uuid.uuid4().hex[:5]
        self.base = Path(tempfile.mkdtemp(prefix="rpc", dir="/tmp"))
        os.chmod(self.base, 0o755)
        self.ha = ha
        if ha is not None:  # the nodes join the database members' bridge
            self.subnet, self.bridge, self.gateway = ha.subnet, ha.bridge, ha.gateway
        else:
            octet = 100 + int(self.tag, 16) % 100
            self.subnet = f"10.{octet}.77"
            self.bridge = f"rpbr{self.tag}"
            self.gateway = f"{self.subnet}.254"
        self.size = size
        self.parameters = parameters if parameters is not None else {"reject_unknown_sender_domain": False,
                                                                     "nfs_mail_storage": True}
        self.shared = self.base / "shared"
        self.nodes: list[ClusterNode] = []
        self.pg: TempPostgres | None = None

    # ------------------------------------------------------------ network
    def _network_up(self) -> None:
        for i in range(1, self.size + 1):
            # `ip netns exec` shows /etc/netns/NS/resolv.conf as /etc/resolv.conf: the namespaces
            # have no route to this host's resolver, whom rspamd's checker must reach; a local one
            # instead, as on a host with its own caching resolver (nothing listens: lookups are
            # refused at once)
            resolver = Path("/etc/netns") / f"rpns{self.tag}{i}" / "resolv.conf"
            resolver.parent.mkdir(parents=True, exist_ok=True)
            resolver.write_text("nameserver 127.0.0.1\n")
        if self.ha is not None:
            for i in range(1, self.size + 1):
                run("ip", "netns", "add", f"rpns{self.tag}{i}")
                self.ha.attach(f"rpns{self.tag}{i}", f"{self.subnet}.{i}")
            return
        run("ip", "link", "add", self.bridge, "type", "bridge")
        run("ip", "addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        run("ip", "link", "set", self.bridge, "up")
        for i in range(1, self.size + 1):
            ns, host_if, ns_if = f"rpns{self.tag}{i}", f"rpv{self.tag}{i}", "eth0"
            run("ip", "netns", "add", ns)
            run("ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if, "netns", ns)
            run("ip", "link", "set", host_if, "master", self.bridge)
            run("ip", "link", "set", host_if, "up")
            run("ip", "-n", ns, "addr", "add", f"{self.subnet}.{i}/24", "dev", ns_if)
            run("ip", "-n", ns, "link", "set", ns_if, "up")
            run("ip", "-n", ns, "link", "set", "lo", "up")

    def _network_down(self) -> None:
        for i in range(1, self.size + 1):
            run("ip", "netns", "del", f"rpns{self.tag}{i}", check=False)
            shutil.rmtree(Path("/etc/netns") / f"rpns{self.tag}{i}", ignore_errors=True)
            run("ip", "link", "del", f"rpv{self.tag}{i}", check=False)
        if self.ha is None:
            run("ip", "link", "del", self.bridge, check=False)

    # ------------------------------------------------------------ lifecycle
    def start(self) -> "Cluster":
        try:
            self._network_up()
            db = self._database()
            (self.shared / "vmail").mkdir(parents=True)
            for i in range(1, self.size + 1):
                name = f"node{chr(ord('a') + i - 1)}"
                queue = self.shared / "queues" / name
                queue.mkdir(parents=True)
                self.nodes.append(ClusterNode(name, f"rpns{self.tag}{i}", f"{self.subnet}.{i}", self.base / name, db,
                                              self.shared / "vmail", queue))
            from rupost.services import setup

            for node in self.nodes:  # joining = the wizard against the same database
                setup.install(node.layout, node.config())
            self.nodes[0].app.settings.set("template_parameters", self.parameters)
            for node in self.nodes:
                node.rupost("deploy", "--this-node")
            return self
        except BaseException:
            self.stop()
            raise

    def _database(self) -> DatabaseSettings:
        """The role and the three databases, on the shared server or the Patroni primary."""
        if self.ha is not None:
            first = self.ha.members[0]
            db = DatabaseSettings(host=first.address, port=5432, user="rupost", password="cluster-db-pass",
                                  members=[DatabaseMember(m.address) for m in self.ha.members])
            psql = self.ha.psql
        else:
            self.pg = TempPostgres(self.base / "pg", free_ports(1)[0], listen=("127.0.0.1", self.gateway)).start()
            db = DatabaseSettings(host=self.gateway, port=self.pg.port, user="rupost", password="cluster-db-pass")
            psql = self.pg.psql
        psql(f"CREATE ROLE rupost LOGIN CREATEDB PASSWORD '{db.password}'")
        for name in (db.main, db.data, db.logs):
            psql(f"CREATE DATABASE {name} OWNER rupost")
        return db

    def stop(self) -> None:
        for node in self.nodes:
            node.stop_agent()
            if node.layout.current.exists():
                node.rupost("components", "stop", check=False, timeout=120)
            if node._app is not None:
                node._app.close()
        if self.pg is not None:
            self.pg.destroy()
        self._network_down()
        shutil.rmtree(self.base, ignore_errors=True)

    def client_address(self, k: int) -> str:
        """An extra address on the bridge for a test client (so clients differ by source IP)."""
        address = f"{self.subnet}.{200 + k}"
        run("ip", "addr", "replace", f"{address}/24", "dev", self.bridge)
        return address

    def node(self, name: str) -> ClusterNode:
        return next(n for n in self.nodes if n.name == name)


def wait_until(predicate, timeout: float, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return None


# ---------------------------------------------------------------- shared by the cluster tests and benchmarks
def health(node, host: str | None = None, port: int | None = None) -> int:
    """The HTTP status of a node's HA agent health endpoint (0: no answer)."""
    import http.client

    conn = http.client.HTTPConnection(host or node.address, port or DEFAULT_PORTS["health"], timeout=5)
    try:
        conn.request("GET", "/health")
        return conn.getresponse().status
    except OSError:
        return 0
    finally:
        conn.close()


def send(node_address: str, source: str, rcpt: str, subject: str) -> None:
    """One message through a node's public port 25, from a chosen client address."""
    import smtplib
    from email.message import EmailMessage

    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "someone@example.org", rcpt, subject
    msg.set_content("hello from the cluster harness\n")
    with smtplib.SMTP(node_address, 25, timeout=15, source_address=(source, 0)) as client:
        client.ehlo("client.example.org")
        refused = client.send_message(msg)
        if refused:
            raise RuntimeError(f"refused: {refused}")


def maildir_queue_ids(storage: Path, address: str, origin: str) -> list[str]:
    """The queue id each delivered message got on `origin` when queue_on() left it there: from
    the Received header of that hop, which names the HELO queue_on() gave. (Every node's
    postfix calls itself by the cluster's one mail host name, so `by` tells no node apart.)"""
    import re

    local, domain = address.split("@")
    pattern = re.compile(rf"from {re.escape(queue_helo(origin))} \([^)]*\)\s+by \S+ \(Postfix\) "
                         r"with E?SMTP id (\w+)")
    ids = []
    for sub in ("new", "cur"):
        for path in (storage / domain / local / "Maildir" / sub).glob("*"):
            found = pattern.search(path.read_text(errors="replace"))
            if found:
                ids.append(found.group(1))
    return ids


def kill_node(node: ClusterNode) -> None:
    """A crash: every daemon of the node killed at once, nothing shut down cleanly."""
    master = node.layout.postfix_queue / "pid" / "master.pid"  # postfix's master runs in its own session
    if master.exists():
        try:
            os.killpg(int(master.read_text().split()[0]), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass
    for name in node.app.adapters:
        pid = node.app.backend.pid(name)
        if pid:
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def evacuator(node: ClusterNode) -> subprocess.Popen:
    """`rupost mailqueues evacuate --json` started inside a node's namespace, in its own
    process group (so it can be killed half-way with everything it started)."""
    return subprocess.Popen(["ip", "netns", "exec", node.netns, sys.executable, "-m", "rupost.cli", "--root",
                             str(node.root), "mailqueues", "evacuate", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def queue_helo(node_name: str) -> str:
    return f"queue-on-{node_name}"


def queue_on(node: ClusterNode, rcpt: str, total: int, size: int = 1024) -> None:
    """`total` messages for `rcpt` accepted by the node's evacuation listener and left in its
    queue (the caller has made delivery impossible, e.g. by killing its dovecot); their HELO
    names the node, for maildir_queue_ids()."""
    run("ip", "netns", "exec", node.netns, "smtp-source", "-s", "20", "-m", total, "-l", size,
        "-M", queue_helo(node.name), "-f", "load@example.org", "-t", rcpt, f"127.0.0.1:{node.app.config.port('postfix_evacuation')}",
        timeout=300)
