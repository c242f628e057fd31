"""Cluster nodes as recorded in the rupost database."""
from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from sqlalchemy import select

from .. import __version__
from ..db.models import Node, utcnow
from ..errors import ConflictError, NotFoundError

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from . import Services

# a node whose core has not reported for this long is considered dead
HEARTBEAT_TIMEOUT = dt.timedelta(seconds=30)


class NodeService:
    def __init__(self, app: Services) -> None:
        self.app = app

    def register(self) -> dict:
        cfg = self.app.config
        with self.app.dbs.session("main") as s:
            node = s.scalar(select(Node).where(Node.name == cfg.node_name))
            if node is None:
                node = Node(name=cfg.node_name, fqdn=cfg.fqdn, address=cfg.address, state="registered",
                            components={}, admin_state="enabled")
                s.add(node)
            else:
                node.fqdn, node.address = cfg.fqdn, cfg.address
            node.queue_directory = str(self.app.layout.postfix_queue)
            node.last_heartbeat = utcnow()
            s.flush()
            return self._as_dict(node)

    def current(self, session: Session) -> Node:
        node = session.scalar(select(Node).where(Node.name == self.app.config.node_name))
        if node is None:
            self.register()
            node = session.scalar(select(Node).where(Node.name == self.app.config.node_name))
        return node  # type: ignore[return-value]  # registered just above

    def report(self, state: str, components: dict, generation: int | None = None) -> None:
        with self.app.dbs.session("main") as s:
            node = self.current(s)
            node.state = state
            node.components = components
            node.last_heartbeat = utcnow()
            node.software_version = __version__
            if generation is not None:
                node.applied_generation = generation

    def agent_stopped(self) -> None:
        """The agent's clean exit: rollouts stop waiting for it at once (they skip the
        node, which catches up when its agent runs again)."""
        with self.app.dbs.session("main") as s:
            node = self.current(s)
            node.components = {k: v for k, v in (node.components or {}).items() if k != "_agent"}

    def members(self) -> list[dict]:
        """The nodes a configuration is rendered for: every registered node, by name
        (state changes must not change rendered files: health checks route around a node)."""
        with self.app.dbs.session("main") as s:
            return [{"id": n.id, "name": n.name, "fqdn": n.fqdn, "address": n.address}
                    for n in s.scalars(select(Node).order_by(Node.name))]

    def list(self) -> list[dict]:
        with self.app.dbs.session("main") as s:
            return [self._as_dict(n) for n in s.scalars(select(Node).order_by(Node.name))]

    def _named(self, session: Session, name: str) -> Node:
        node = session.scalar(select(Node).where(Node.name == name))
        if node is None:
            known = ", ".join(session.scalars(select(Node.name).order_by(Node.name))) or "none"
            raise NotFoundError(f"node {name} is not registered (nodes: {known})")
        return node

    def show(self, name: str) -> dict:
        with self.app.dbs.session("main") as s:
            return self._as_dict(self._named(s, name))

    def set_admin_state(self, name: str, drained: bool) -> dict:
        """Drain: the node's HA agent reports it down so clients go to the other nodes;
        its mail components keep running (queued mail is still delivered)."""
        with self.app.dbs.session("main") as s:
            node = self._named(s, name)
            node.admin_state = "drained" if drained else "enabled"
            out = self._as_dict(node)
        self.app.audit.record("node.drain" if drained else "node.enable", name)
        return out

    def admin_state(self) -> str:
        with self.app.dbs.session("main") as s:
            node = s.scalar(select(Node).where(Node.name == self.app.config.node_name))
            return node.admin_state if node is not None else "enabled"

    def remove(self, name: str, force: bool = False) -> None:
        """Forget a node that left the cluster; refused while it still reports heartbeats, and
        always for the node this service runs on (`force` included): its agent would register
        it again at the next heartbeat, and its own deploys and queue would lose their node."""
        with self.app.dbs.session("main") as s:
            node = self._named(s, name)
            if node.name == self.app.config.node_name:
                raise ConflictError(f"node {name} is the node this RuPost runs on: it cannot remove itself; "
                                    "remove it from another node of the cluster once it is stopped")
            if not force and node.last_heartbeat and utcnow() - node.last_heartbeat < HEARTBEAT_TIMEOUT:
                raise ConflictError(f"node {name} reported {int((utcnow() - node.last_heartbeat).total_seconds())} s "
                                    "ago: stop its core first (or --force)")
            s.delete(node)
        self.app.audit.record("node.remove", name)

    @staticmethod
    def agent_alive(node: dict) -> bool:
        """Its node agent (`rupost run`) reported within the heartbeat timeout."""
        seen = (node.get("components") or {}).get("_agent")
        return bool(seen and utcnow() - dt.datetime.fromisoformat(seen) < HEARTBEAT_TIMEOUT)

    @staticmethod
    def alive(node: dict) -> bool:
        beat = node.get("last_heartbeat")
        return bool(beat and utcnow() - dt.datetime.fromisoformat(beat) < HEARTBEAT_TIMEOUT)

    @staticmethod
    def _as_dict(n: Node) -> dict:
        return {"id": n.id, "name": n.name, "fqdn": n.fqdn, "address": n.address, "state": n.state,
                "admin_state": n.admin_state, "queue_directory": n.queue_directory,
                "applied_generation": n.applied_generation, "components": n.components,
                "software_version": n.software_version,
                "last_heartbeat": n.last_heartbeat.isoformat() if n.last_heartbeat else None}
