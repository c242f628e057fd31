"""Cluster nodes as recorded in the rupost database."""
from __future__ import annotations

from sqlalchemy import select

from ..db.models import Node, utcnow


class NodeService:
    def __init__(self, app):
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

    def current(self, session) -> Node:
        node = session.scalar(select(Node).where(Node.name == self.app.config.node_name))
        if node is None:
            self.register()
            node = session.scalar(select(Node).where(Node.name == self.app.config.node_name))
        return node

    def report(self, state: str, components: dict, generation: int | None = None) -> None:
        with self.app.dbs.session("main") as s:
            node = self.current(s)
            node.state = state
            node.components = components
            node.last_heartbeat = utcnow()
            if generation is not None:
                node.applied_generation = generation

    def members(self) -> list[dict]:
        """The nodes a configuration is rendered for: every registered node, by name
        (state changes must not change rendered files: health checks route around a node)."""
        with self.app.dbs.session("main") as s:
            return [{"id": n.id, "name": n.name, "fqdn": n.fqdn, "address": n.address}
                    for n in s.scalars(select(Node).order_by(Node.name))]

    def list(self) -> list[dict]:
        with self.app.dbs.session("main") as s:
            return [self._as_dict(n) for n in s.scalars(select(Node).order_by(Node.name))]

    @staticmethod
    def _as_dict(n: Node) -> dict:
        return {"id": n.id, "name": n.name, "fqdn": n.fqdn, "address": n.address, "state": n.state,
                "admin_state": n.admin_state, "queue_directory": n.queue_directory,
                "applied_generation": n.applied_generation, "components": n.components,
                "last_heartbeat": n.last_heartbeat.isoformat() if n.last_heartbeat else None}
