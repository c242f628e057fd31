"""A whole RuPost node under a temporary root, on unprivileged loopback ports."""
from __future__ import annotations

import os
import socket
from pathlib import Path

from rupost.config import DEFAULT_PORTS, DatabaseSettings, NodeConfig
from rupost.paths import Layout

# every throwaway node of the tests and benchmarks shares rspamd's compiled expressions: each
# would otherwise compile them at its first start (over a minute on a busy 2-core machine)
os.environ.setdefault("RUPOST_RSPAMD_HS_CACHE", "/var/tmp/rupost-test-rspamd-hyperscan")


def free_ports(count: int) -> list[int]:
    sockets, ports = [], []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in sockets:
            s.close()
    return ports


class Instance:
    """Wizard + deploy of the builtin template into `root`, against a database server."""

    def __init__(self, root: Path, database: DatabaseSettings, node_name: str = "node1",
                 fqdn: str = "node1.rupost.test", mail_host: str = "mail.rupost.test", parameters: dict | None = None):
        self.root = Path(root)
        self.layout = Layout.at(self.root)
        ports = dict(zip(DEFAULT_PORTS, free_ports(len(DEFAULT_PORTS))))
        self.config = NodeConfig(database=database, node_name=node_name, fqdn=fqdn, address="127.0.0.1",
                                 listen_address="127.0.0.1", ports=ports, service_backend="direct")
        # the mail host name differs from the node's own name, as in a cluster: whatever clients
        # are told or see in the banner must come from the one, not the other
        self.mail_host = mail_host
        self.parameters = parameters if parameters is not None else {"reject_unknown_sender_domain": False}
        self._app = None

    @property
    def ports(self) -> dict[str, int]:
        return self.config.ports

    def configure(self):
        from rupost.services import setup

        report = setup.install(self.layout, self.config, setup.MailHostChoice(self.mail_host))
        app = self.app
        app.settings.set("template_parameters", self.parameters)
        return report

    @property
    def app(self):
        if self._app is None:
            from rupost.services import RuPost

            self._app = RuPost.open(self.root, actor="test")
        return self._app

    def deploy(self):
        return self.app.deploys.deploy()

    def stop(self) -> None:
        if self.layout.current.exists():
            self.app.component_runtime.stop()
        if self._app is not None:
            self._app.close()
